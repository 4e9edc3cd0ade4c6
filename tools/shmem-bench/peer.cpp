// The child process, its control block, CPU placement and the scratch directory; see peer.hpp.
#include "peer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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
volatile sig_atomic_t g_child_pids[kProcessesMax] = {};
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
  for (int i = 0; i < kProcessesMax; ++i) {
    const auto pid = static_cast<pid_t>(g_child_pids[i]);
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
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
    throw RunError(fmt::format("cannot pin the {} to CPU {}: {}", who, cpu, errno_text(errno)));
  }
}

[[noreturn]] void child_main(ChildContext& context, const ChildHandler& handler, pid_t parent) {
  // Die with the parent, whatever kills it; and check it did not die before the request.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(kExitRunError);
  Control& control = context.control;
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
        if (getppid() != parent) _exit(kExitRunError);
      }
    }
    seen = word;
    const auto command = static_cast<Command>(word & 0xff);
    ChildReport& report = control.report;
    report = ChildReport{};
    if (command != Command::kQuit) {
      try {
        handler(command, context);
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

Placement choose_placement(const std::optional<std::vector<int>>& requested) {
  Placement placement;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    throw RunError(fmt::format("sched_getaffinity: {}", errno_text(errno)));
  }
  const auto is_allowed = [&](int cpu) {
    return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(static_cast<std::size_t>(cpu), &allowed);
  };
  if (requested) {
    const std::vector<int>& cpus = *requested;
    for (std::size_t i = 0; i < cpus.size(); ++i) {
      if (!is_allowed(cpus[i])) {
        throw UsageError(fmt::format(
            "--cpus: CPU {} is not online or not in this process's affinity mask ({} allowed)",
            cpus[i], CPU_COUNT(&allowed)));
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (cpus[j] == cpus[i]) {
          throw UsageError(
              fmt::format("--cpus: CPU {} is listed twice; the CPUs must differ", cpus[i]));
        }
      }
    }
    placement.cpus = cpus;
  } else {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (is_allowed(cpu)) placement.cpus.push_back(cpu);
    }
    if (placement.cpus.size() < 2) {
      placement.cpus.clear();
      placement.note =
          "fewer than 2 CPUs allowed; all processes share one CPU, results are "
          "dominated by the scheduler";
      return placement;
    }
  }
  placement.cpu_a = placement.cpus[0];
  placement.cpu_b = placement.cpus[1];
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
    throw RunError(fmt::format("mkdtemp {}: {}", templ, errno_text(errno)));
  }
  path_ = templ;
  copy_text(g_scratch_dir, path_);
  signal_cleanup_ = true;
  install_cleanup_handlers();
}

ScratchDir::ScratchDir(const std::string& base, std::string_view prefix) {
  std::string templ = fmt::format("{}/{}-XXXXXX", base, prefix);
  if (mkdtemp(templ.data()) == nullptr) {
    throw UsageError(
        fmt::format("--dir {}: cannot create a directory there: {}", base, errno_text(errno)));
  }
  path_ = templ;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (signal_cleanup_) g_scratch_dir[0] = '\0';
}

struct SharedBlock {
  Control controls[kProcessesMax];
  Board board;
  Histogram histograms[kProcessesMax];
};

Peer::Peer(const Placement& placement, ChildHandler handler) : handler_(std::move(handler)) {
  void* mapping = mmap(nullptr, sizeof(SharedBlock), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mapping == MAP_FAILED) {
    throw RunError(fmt::format("mmap of the control blocks: {}", errno_text(errno)));
  }
  shared_ = new (mapping) SharedBlock{};
  pids_.fill(-1);
  cpus_.fill(-1);
  fd_sockets_.fill(-1);
  parent_ = getpid();
  pin_to(placement.cpu_a, "parent (side A)");
  try {
    fork_child(0, placement.cpu_b);
  } catch (...) {
    munmap(shared_, sizeof(SharedBlock));
    shared_ = nullptr;
    throw;
  }
}

Control& Peer::control(int index) noexcept {
  return shared_->controls[static_cast<std::size_t>(index)];
}

Board& Peer::board() noexcept { return shared_->board; }

Histogram& Peer::histogram(int index) noexcept {
  return shared_->histograms[static_cast<std::size_t>(index)];
}

void Peer::fork_child(int index, int cpu) {
  const auto i = static_cast<std::size_t>(index);
  int sockets[2] = {-1, -1};
  if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sockets) != 0) {
    throw RunError(fmt::format("socketpair: {}", errno_text(errno)));
  }
  Control& control = shared_->controls[i];
  // The slot may have served a child that was killed: start its serials afresh. Relaxed: no child
  // reads this block yet; fork publishes it.
  control.command.value.store(0, std::memory_order_relaxed);
  control.done.value.store(0, std::memory_order_relaxed);
  serials_[i] = 0;
  std::fflush(nullptr);  // The child must not flush the parent's buffered output again.
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(sockets[0]);
    close(sockets[1]);
    throw RunError(fmt::format("fork: {}", errno_text(err)));
  }
  if (pid == 0) {
    reset_signal_handlers();
    for (auto& p : g_child_pids) p = 0;
    g_scratch_dir[0] = '\0';
    close(sockets[0]);
    for (const int fd : fd_sockets_) {
      if (fd >= 0) close(fd);
    }
    try {
      pin_to(cpu, index == 0 ? "child (side B)" : "worker process");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shmem-bench: %s\n", e.what());
      _exit(kExitRunError);
    }
    ChildContext context{control, shared_->board,
                         shared_->histograms[static_cast<std::size_t>(index)], index, sockets[1]};
    child_main(context, handler_, parent_);
  }
  close(sockets[1]);
  fd_sockets_[i] = sockets[0];
  pids_[i] = pid;
  cpus_[i] = cpu;
  g_child_pids[i] = pid;
}

int Peer::spawn(int cpu) {
  for (int index = 1; index < kProcessesMax; ++index) {
    if (pids_[static_cast<std::size_t>(index)] > 0) continue;
    fork_child(index, cpu);
    return index;
  }
  throw RunError(fmt::format("more than {} worker processes", kWorkersMax));
}

std::uint64_t Peer::kill_child(int index) {
  const auto i = static_cast<std::size_t>(index);
  const std::uint64_t now_ns = monotonic_ns();
  if (pids_[i] > 0) {
    kill(pids_[i], SIGKILL);
    while (waitpid(pids_[i], nullptr, 0) < 0 && errno == EINTR) {
    }
    pids_[i] = -1;
    g_child_pids[i] = 0;
  }
  if (fd_sockets_[i] >= 0) {
    close(fd_sockets_[i]);
    fd_sockets_[i] = -1;
  }
  return now_ns;
}

void Peer::reap(int index, bool post_quit) {
  const auto i = static_cast<std::size_t>(index);
  if (pids_[i] <= 0) return;
  bool exited = false;
  if (post_quit) post(index, Command::kQuit);
  // Relaxed: only ends a loop the child may still be in after a failed run; the quit command is
  // published by post()'s release store.
  control(index).stop.value.store(1, std::memory_order_relaxed);
  shared_->board.stop.value.store(1, std::memory_order_relaxed);
  const std::uint64_t deadline_ns = monotonic_ns() + 1'000'000'000;
  while (monotonic_ns() < deadline_ns) {
    if (waitpid(pids_[i], nullptr, WNOHANG) == pids_[i]) {
      exited = true;
      break;
    }
    usleep(1000);
  }
  if (!exited) {
    kill(pids_[i], SIGKILL);
    while (waitpid(pids_[i], nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  pids_[i] = -1;
  g_child_pids[i] = 0;
  if (fd_sockets_[i] >= 0) {
    close(fd_sockets_[i]);
    fd_sockets_[i] = -1;
  }
}

void Peer::retire(int index) { reap(index, true); }

Peer::~Peer() {
  if (shared_ == nullptr) return;
  // Ask them all at once, then reap: a second each at most, in parallel.
  for (int index = 0; index < kProcessesMax; ++index) {
    if (pids_[static_cast<std::size_t>(index)] > 0) post(index, Command::kQuit);
  }
  for (int index = 0; index < kProcessesMax; ++index) reap(index, false);
  munmap(shared_, sizeof(SharedBlock));
}

void Peer::post(int index, Command command) {
  Control& c = control(index);
  // Relaxed (these three): the release store of `command` below publishes them to the child.
  c.stop.value.store(0, std::memory_order_relaxed);
  c.consumer_stop.value.store(0, std::memory_order_relaxed);
  c.produced.value.store(0, std::memory_order_relaxed);
  const auto i = static_cast<std::size_t>(index);
  ++serials_[i];
  // Release: publishes params and the resets above to the child's acquire load.
  c.command.value.store((serials_[i] << 8) | static_cast<std::uint64_t>(command),
                        std::memory_order_release);
}

const ChildReport& Peer::wait_done(int index, double timeout_s) {
  const std::uint64_t deadline_ns = monotonic_ns() + static_cast<std::uint64_t>(timeout_s * 1e9);
  std::uint64_t spins = 0;
  Control& c = control(index);
  const std::uint64_t serial = serials_[static_cast<std::size_t>(index)];
  // Acquire: pairs with the child's release store of `done`; the report is visible.
  while (c.done.value.load(std::memory_order_acquire) != serial) {
    weft::cpu_relax();
    if ((++spins & 0xffff) == 0) {
      check_alive(index);
      if (monotonic_ns() > deadline_ns) {
        throw RunError(
            fmt::format("the child process did not finish its command within {:.0f} s", timeout_s));
      }
      // A long wait (the child drains, or several processes share a CPU): let the others run.
      if (spins > (1U << 20)) sched_yield();
    }
  }
  const ChildReport& report = c.report;
  if (report.ok == 0) {
    throw RunError(fmt::format("child process: {}", report.error));
  }
  return report;
}

void Peer::check_alive(int index) {
  for (int i = 0; i < kProcessesMax; ++i) {
    if (index >= 0 && i != index) continue;
    const auto u = static_cast<std::size_t>(i);
    if (pids_[u] <= 0) continue;
    int status = 0;
    const pid_t r = waitpid(pids_[u], &status, WNOHANG);
    if (r != pids_[u]) continue;
    pids_[u] = -1;
    g_child_pids[u] = 0;
    const std::string who = i == 0 ? "the child process (side B)" : fmt::format("worker {}", i);
    if (WIFSIGNALED(status)) {
      const char* name = sigdescr_np(WTERMSIG(status));  // Thread-safe, unlike strsignal.
      throw RunError(fmt::format("{} died of signal {} ({})", who, WTERMSIG(status),
                                 name != nullptr ? name : "unknown signal"));
    }
    throw RunError(fmt::format("{} exited early with status {}", who, WEXITSTATUS(status)));
  }
}

void Peer::check_failed() {
  for (int i = 0; i < kProcessesMax; ++i) {
    const auto u = static_cast<std::size_t>(i);
    if (pids_[u] <= 0 || serials_[u] == 0) continue;
    Control& c = control(i);
    // Acquire: pairs with the child's release store of `done`; the report is visible.
    if (c.done.value.load(std::memory_order_acquire) == serials_[u] && c.report.ok == 0) {
      throw RunError(fmt::format("{}: {}", i == 0 ? "child process" : fmt::format("worker {}", i),
                                 c.report.error));
    }
  }
}

void Peer::send_fds(int index, std::span<const int> fds) {
  const int socket = fd_sockets_[static_cast<std::size_t>(index)];
  if (socket < 0) throw RunError("send_fds: no such child");
  constexpr std::size_t kFdsMax = 8;
  if (fds.size() > kFdsMax || fds.empty()) throw RunError("send_fds: 1 to 8 descriptors");
  char byte = 'f';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char buffer[CMSG_SPACE(sizeof(int) * kFdsMax)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = buffer;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  if (sendmsg(socket, &msg, MSG_NOSIGNAL) != 1) {
    throw RunError(fmt::format("sendmsg (passing descriptors): {}", errno_text(errno)));
  }
}

std::vector<int> receive_fds(int fd_socket, std::size_t count) {
  constexpr std::size_t kFdsMax = 8;
  if (count > kFdsMax || count == 0) throw RunError("receive_fds: 1 to 8 descriptors");
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char buffer[CMSG_SPACE(sizeof(int) * kFdsMax)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = buffer;
  msg.msg_controllen = sizeof(buffer);
  if (recvmsg(fd_socket, &msg, MSG_CMSG_CLOEXEC) != 1) {
    throw RunError(fmt::format("recvmsg (receiving descriptors): {}", errno_text(errno)));
  }
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  if (cmsg == nullptr || cmsg->cmsg_type != SCM_RIGHTS ||
      cmsg->cmsg_len != CMSG_LEN(sizeof(int) * count)) {
    throw RunError("recvmsg: the descriptors did not arrive as expected");
  }
  std::vector<int> fds(count);
  std::memcpy(fds.data(), CMSG_DATA(cmsg), sizeof(int) * count);
  return fds;
}

void StallGuard::slow_check() {
  peer_->check_alive();
  peer_->check_failed();
  const std::uint64_t now_ns = monotonic_ns();
  if (stalled_since_ns_ == 0) {
    stalled_since_ns_ = now_ns;
  } else if (now_ns - stalled_since_ns_ > stall_ns_) {
    throw RunError(fmt::format("no progress from the child process for {:.1f} s",
                               static_cast<double>(now_ns - stalled_since_ns_) / 1e9));
  }
}

void ChildStallGuard::slow_check() {
  const std::uint64_t now_ns = monotonic_ns();
  if (stalled_since_ns_ == 0) {
    stalled_since_ns_ = now_ns;
  } else if (now_ns - stalled_since_ns_ > stall_ns_) {
    throw RunError(fmt::format("no progress from the other processes for {:.1f} s",
                               static_cast<double>(now_ns - stalled_since_ns_) / 1e9));
  }
}

}  // namespace shmem_bench
