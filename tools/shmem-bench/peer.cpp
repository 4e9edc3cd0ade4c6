// The child process, its control block, CPU placement and the scratch directory; see peer.hpp.
#include "peer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>
#include <string_view>

#include <fmt/format.h>

#include "errors.hpp"
#include "weft/idle.hpp"

namespace shmem_bench {
namespace {

// State the signal handler needs, kept in plain memory it can read safely.
volatile sig_atomic_t g_child_pid = 0;
char g_scratch_dir[256] = {};

// Removes every entry of g_scratch_dir, then the directory, with async-signal-safe system calls
// only (no opendir: it allocates).
void remove_scratch_dir_from_signal() noexcept {
  if (g_scratch_dir[0] == '\0') return;
  const int dir_fd = open(g_scratch_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    alignas(8) char buffer[4096];
    for (;;) {
      const long n = syscall(SYS_getdents64, dir_fd, buffer, sizeof(buffer));
      if (n <= 0) break;
      for (long offset = 0; offset < n;) {
        // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[].
        unsigned short reclen = 0;
        std::memcpy(&reclen, buffer + offset + 16, sizeof(reclen));
        const char* name = buffer + offset + 19;
        if (std::strcmp(name, ".") != 0 && std::strcmp(name, "..") != 0) {
          unlinkat(dir_fd, name, 0);
        }
        offset += reclen;
      }
    }
    close(dir_fd);
  }
  rmdir(g_scratch_dir);
}

extern "C" void on_fatal_signal(int signal_number) {
  if (g_child_pid > 0) {
    kill(g_child_pid, SIGKILL);
    waitpid(g_child_pid, nullptr, 0);
  }
  remove_scratch_dir_from_signal();
  // Die of the same signal, so the caller sees the usual status.
  ::signal(signal_number, SIG_DFL);
  raise(signal_number);
}

constexpr int kCleanupSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};

void install_cleanup_handlers() {
  struct sigaction action {};
  action.sa_handler = on_fatal_signal;
  sigemptyset(&action.sa_mask);
  for (const int s : kCleanupSignals) sigaction(s, &action, nullptr);
}

void reset_signal_handlers() {
  for (const int s : kCleanupSignals) ::signal(s, SIG_DFL);
}

void pin_to(int cpu, const char* who) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    throw RunError(fmt::format("cannot pin the {} to CPU {}: {}", who, cpu, std::strerror(errno)));
  }
}

[[noreturn]] void child_main(Control& control, const ChildHandler& handler, pid_t parent) {
  // Die with the parent, whatever kills it; and check it did not die before the request.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(kExitRunError);
  std::uint64_t seen = 0;
  for (;;) {
    std::uint64_t word = 0;
    // Between commands (while the parent measures a baseline alone, or prints) the child spins
    // for about a millisecond, then sleeps in 100 us steps: a vCPU spinning for nothing costs the
    // host's CPU quota, and this machine is throttled after seconds of two busy vCPUs.
    std::uint32_t spins = 0;
    constexpr std::uint32_t kSpinsBeforeSleep = 1 << 16;
    // Acquire: pairs with the parent's release store in post(); params are visible.
    while ((word = control.command.value.load(std::memory_order_acquire)) == seen) {
      if (spins < kSpinsBeforeSleep) {
        ++spins;
        weft::cpu_relax();
      } else {
        usleep(100);
      }
    }
    seen = word;
    const auto command = static_cast<Command>(word & 0xff);
    ChildReport& report = control.report;
    report = ChildReport{};
    if (command != Command::kQuit) {
      try {
        handler(command, control);
        report.ok = 1;
      } catch (const std::exception& e) {
        copy_text(report.error, e.what());
      }
    } else {
      report.ok = 1;
    }
    // Release: publishes `report` to the parent's acquire load in wait_done().
    control.done.value.store(word >> 8, std::memory_order_release);
    if (command == Command::kQuit) _exit(0);
  }
}

}  // namespace

Placement choose_placement(const std::optional<std::pair<int, int>>& requested) {
  Placement placement;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    throw RunError(fmt::format("sched_getaffinity: {}", std::strerror(errno)));
  }
  const auto is_allowed = [&](int cpu) {
    return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(static_cast<std::size_t>(cpu), &allowed);
  };
  if (requested) {
    const auto [a, b] = *requested;
    if (a == b) throw UsageError(fmt::format("--cpus {},{}: the two CPUs must differ", a, b));
    for (const int cpu : {a, b}) {
      if (!is_allowed(cpu)) {
        throw UsageError(fmt::format(
            "--cpus: CPU {} is not online or not in this process's affinity mask ({} allowed)", cpu,
            CPU_COUNT(&allowed)));
      }
    }
    placement.cpu_a = a;
    placement.cpu_b = b;
  } else {
    for (int cpu = 0; cpu < CPU_SETSIZE && placement.cpu_b < 0; ++cpu) {
      if (!is_allowed(cpu)) continue;
      (placement.cpu_a < 0 ? placement.cpu_a : placement.cpu_b) = cpu;
    }
    if (placement.cpu_b < 0) {
      placement.cpu_a = -1;
      placement.note =
          "fewer than 2 CPUs allowed; both processes share one CPU, results are "
          "dominated by the scheduler";
      return placement;
    }
  }
  placement.pinned = true;
  placement.node_a = numa_node_of(placement.cpu_a);
  placement.node_b = numa_node_of(placement.cpu_b);
  return placement;
}

namespace {

// Removes scratch directories left by shmem-bench processes that no longer exist (a SIGKILLed
// run cannot clean up; its channel files were already unlinked, so only the directory remains).
void remove_stale_scratch_dirs(const char* base) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(base, ec)) {
    const std::string name = entry.path().filename().string();
    constexpr std::string_view kPrefix = "shmem-bench.";
    if (name.rfind(kPrefix, 0) != 0) continue;
    const std::size_t dot = name.find('.', kPrefix.size());
    if (dot == std::string::npos) continue;
    const std::string pid_text = name.substr(kPrefix.size(), dot - kPrefix.size());
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(pid_text));
    if (kill(pid, 0) != 0 && errno == ESRCH) std::filesystem::remove_all(entry.path(), ec);
  }
}

}  // namespace

ScratchDir::ScratchDir() {
  const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  remove_stale_scratch_dirs(base);
  std::string templ = fmt::format("{}/shmem-bench.{}.XXXXXX", base, getpid());
  if (mkdtemp(templ.data()) == nullptr) {
    throw RunError(fmt::format("mkdtemp {}: {}", templ, std::strerror(errno)));
  }
  path_ = templ;
  copy_text(g_scratch_dir, path_);
  install_cleanup_handlers();
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  g_scratch_dir[0] = '\0';
}

Peer::Peer(const Placement& placement, ChildHandler handler) {
  void* mapping = mmap(nullptr, sizeof(Control), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mapping == MAP_FAILED) {
    throw RunError(fmt::format("mmap of the control block: {}", std::strerror(errno)));
  }
  control_ = new (mapping) Control{};
  pin_to(placement.cpu_a, "parent (side A)");
  std::fflush(nullptr);  // The child must not flush the parent's buffered output again.
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    munmap(mapping, sizeof(Control));
    throw RunError(fmt::format("fork: {}", std::strerror(err)));
  }
  if (pid == 0) {
    reset_signal_handlers();
    g_child_pid = 0;
    g_scratch_dir[0] = '\0';
    try {
      pin_to(placement.cpu_b, "child (side B)");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shmem-bench: %s\n", e.what());
      _exit(kExitRunError);
    }
    child_main(*control_, handler, parent);
  }
  pid_ = pid;
  g_child_pid = pid;
}

Peer::~Peer() {
  if (pid_ > 0) {
    bool exited = false;
    if (control_ != nullptr) {
      post(Command::kQuit);
      // Relaxed: only ends an echo loop the child may still be in after a failed run; the quit
      // command is published by post()'s release store.
      control_->stop.value.store(1, std::memory_order_relaxed);
      const std::uint64_t deadline_ns = monotonic_ns() + 1'000'000'000;
      while (monotonic_ns() < deadline_ns) {
        if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
          exited = true;
          break;
        }
        usleep(1000);
      }
    }
    if (!exited) {
      kill(pid_, SIGKILL);
      while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    g_child_pid = 0;
  }
  if (control_ != nullptr) munmap(control_, sizeof(Control));
}

void Peer::post(Command command) {
  Control& c = *control_;
  // Relaxed (these three): the release store of `command` below publishes them to the child.
  c.stop.value.store(0, std::memory_order_relaxed);
  c.consumer_stop.value.store(0, std::memory_order_relaxed);
  c.produced.value.store(0, std::memory_order_relaxed);
  ++serial_;
  // Release: publishes params and the resets above to the child's acquire load.
  c.command.value.store((serial_ << 8) | static_cast<std::uint64_t>(command),
                        std::memory_order_release);
}

const ChildReport& Peer::wait_done(double timeout_s) {
  const std::uint64_t deadline_ns = monotonic_ns() + static_cast<std::uint64_t>(timeout_s * 1e9);
  std::uint64_t spins = 0;
  // Acquire: pairs with the child's release store of `done`; the report is visible.
  while (control_->done.value.load(std::memory_order_acquire) != serial_) {
    weft::cpu_relax();
    if ((++spins & 0xffff) == 0) {
      check_alive();
      if (monotonic_ns() > deadline_ns) {
        throw RunError(
            fmt::format("the child process did not finish its command within {:.0f} s", timeout_s));
      }
    }
  }
  const ChildReport& report = control_->report;
  if (report.ok == 0) {
    throw RunError(fmt::format("child process: {}", report.error));
  }
  return report;
}

void Peer::check_alive() {
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    g_child_pid = 0;
    if (WIFSIGNALED(status)) {
      throw RunError(fmt::format("the child process died of signal {} ({})", WTERMSIG(status),
                                 strsignal(WTERMSIG(status))));
    }
    throw RunError(
        fmt::format("the child process exited early with status {}", WEXITSTATUS(status)));
  }
}

void StallGuard::slow_check() {
  peer_->check_alive();
  const std::uint64_t now_ns = monotonic_ns();
  if (stalled_since_ns_ == 0) {
    stalled_since_ns_ = now_ns;
  } else if (now_ns - stalled_since_ns_ > stall_ns_) {
    throw RunError(fmt::format("no progress from the child process for {:.1f} s",
                               static_cast<double>(now_ns - stalled_since_ns_) / 1e9));
  }
}

}  // namespace shmem_bench
