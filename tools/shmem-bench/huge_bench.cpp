#include "huge_bench.hpp"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "errors.hpp"
#include "weft/channel.hpp"
#include "weft/numa.hpp"
#include "weft/spsc.hpp"

namespace shmem_bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kNrHugepages = "/proc/sys/vm/nr_hugepages";

// Words shared with the consumer child, each on its own 128-byte block.
struct alignas(128) SharedWord {
  std::atomic<std::uint64_t> value{0};
};
struct Shared {
  SharedWord stop;            // Parent -> child: 1 to stop.
  SharedWord bytes_consumed;  // Child -> parent.
  SharedWord ready;           // Child -> parent: 1 attached, 2 failed.
  SharedWord checksum;        // Child: keeps the reads alive.
};

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}
double min_of(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}
double max_of(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

long read_long(const char* path) {
  std::ifstream in(path);
  long value = -1;
  if (!(in >> value)) return -1;
  return value;
}

void pin_or_throw(int cpu, const char* who) {
  if (cpu < 0) return;
  if (auto ok = weft::pin_thread_to_cpu(cpu); !ok) {
    throw RunError(fmt::format("{}: {}", who, ok.error().message()));
  }
}

// What the benchmark changed for huge pages, undone on every way out.
class HugeSetup {
 public:
  HugeSetup(std::uint64_t pages_needed, bool reserve, std::string* notes) {
    auto info = weft::huge_page_info(weft::kHugePageBytes);
    if (!info) throw RunError(info.error().message());
    std::string mount = info->mount;
    if (mount.empty()) {
      if (!reserve) {
        throw RunError(
            "--huge: no hugetlbfs of 2 MiB pages is mounted: mount one (mount -t hugetlbfs -o "
            "pagesize=2M none /dev/hugepages) or pass --reserve-huge to mount a private one for "
            "this run");
      }
      char pattern[] = "/tmp/shmem-bench-huge-XXXXXX";
      if (mkdtemp(pattern) == nullptr)
        throw RunError(fmt::format("mkdtemp: {}", errno_text(errno)));
      if (::mount("none", pattern, "hugetlbfs", 0, "pagesize=2M") != 0) {
        const int err = errno;
        rmdir(pattern);
        throw RunError(fmt::format("--reserve-huge: cannot mount hugetlbfs on {}: {} (run as root)",
                                   pattern, errno_text(err)));
      }
      mounted_ = pattern;
      mount = pattern;
      *notes += fmt::format("mounted a private hugetlbfs at {} for the run; ", pattern);
    }
    dir_ = fmt::format("{}/shmem-bench-{}", mount, getpid());
    const std::uint64_t available = info->pages_available();
    if (available < pages_needed) {
      if (!reserve) {
        throw RunError(fmt::format(
            "--huge: needs {} huge pages of 2 MiB, {} of {} reserved are free: reserve them "
            "(sysctl -w vm.nr_hugepages={}) or pass --reserve-huge to raise vm.nr_hugepages for "
            "this run only",
            pages_needed, available, info->pages_total,
            info->pages_total + pages_needed - available));
      }
      old_total_ = read_long(kNrHugepages);
      const long wanted = old_total_ + static_cast<long>(pages_needed - available);
      std::ofstream(kNrHugepages) << wanted << '\n';
      auto after = weft::huge_page_info(weft::kHugePageBytes);
      if (!after || after->pages_available() < pages_needed) {
        restore();
        throw RunError(fmt::format(
            "--reserve-huge: set vm.nr_hugepages to {} but only {} huge pages are free: memory "
            "is too fragmented or too small",
            wanted, after ? after->pages_available() : 0));
      }
      *notes += fmt::format("raised vm.nr_hugepages from {} to {} for the run (restored after); ",
                            old_total_, wanted);
    }
  }
  ~HugeSetup() { restore(); }
  HugeSetup(const HugeSetup&) = delete;
  HugeSetup& operator=(const HugeSetup&) = delete;
  [[nodiscard]] const std::string& dir() const { return dir_; }

 private:
  void restore() noexcept {
    rmdir(dir_.c_str());
    if (!mounted_.empty()) {
      ::umount(mounted_.c_str());
      rmdir(mounted_.c_str());
      mounted_.clear();
    }
    if (old_total_ >= 0) {
      std::ofstream(kNrHugepages) << old_total_ << '\n';
      old_total_ = -1;
    }
  }
  std::string mounted_;
  std::string dir_;
  long old_total_ = -1;
};

std::string describe_pages(const weft::Channel& channel) {
  auto placement = channel.placement();
  if (!placement || !placement->pages_known) return "unknown (no NUMA support)";
  std::string text;
  for (std::size_t node = 0; node < placement->pages.pages_on_node.size(); ++node) {
    if (placement->pages.pages_on_node[node] == 0) continue;
    text += fmt::format("{}{} on node {}", text.empty() ? "" : ", ",
                        placement->pages.pages_on_node[node], node);
  }
  if (placement->pages.pages_absent != 0) {
    text += fmt::format(", {} absent", placement->pages.pages_absent);
  }
  return fmt::format("{} pages of {} KiB: {}", placement->pages.pages, placement->page_bytes / 1024,
                     text);
}

// The consumer: opens the channel by name, reads every payload word, counts bytes.
[[noreturn]] void consumer_child(Shared* shared, const std::string& name, const std::string& dir,
                                 int cpu) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Not weft::pin_thread_to_cpu: it checks the affinity inherited from the pinned parent.
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<std::size_t>(cpu), &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) _exit(3);
  }
  weft::OpenOptions open;
  open.dir = dir;
  auto consumer = weft::SpscConsumer::open(name, open);
  if (!consumer) {
    std::fprintf(stderr, "consumer: %s\n", consumer.error().message().c_str());
    // Release: publishes the failure to the parent's acquire load of `ready`.
    shared->ready.value.store(2, std::memory_order_release);
    _exit(2);
  }
  // Release: pairs with the parent's acquire load; the consumer role is held from here on.
  shared->ready.value.store(1, std::memory_order_release);
  std::uint64_t bytes = 0;
  std::uint64_t sum = 0;
  // Acquire: pairs with the parent's release store of `stop`.
  while (shared->stop.value.load(std::memory_order_acquire) == 0) {
    const weft::PollResult r = consumer->poll(
        [&](std::span<const std::byte> record) {
          const auto* words = reinterpret_cast<const std::uint64_t*>(record.data());
          for (std::size_t i = 0; i < record.size() / 8; ++i) sum += words[i];
          bytes += record.size();
        },
        16);
    if (r.status == weft::PollStatus::kCorrupted) _exit(4);
    if (r.count != 0) {
      // Relaxed: a progress counter the parent samples; no data is published through it.
      shared->bytes_consumed.value.store(bytes, std::memory_order_relaxed);
    }
  }
  // Relaxed: only keeps the reads from being optimised away.
  shared->checksum.value.store(sum, std::memory_order_relaxed);
  _exit(0);
}

struct PhaseResult {
  double prefault_ns = 0;
  double bytes_per_s = 0;
  std::string pages_where;
  std::uint64_t file_bytes = 0;
};

PhaseResult run_phase(const HugeBenchConfig& config, const Placement& placement,
                      const std::string& dir, std::uint64_t page_bytes, Shared* shared) {
  const std::string name = page_bytes > weft::kBasePageBytes ? "huge" : "base";
  weft::ChannelOptions options;
  options.dir = dir;
  options.capacity_bytes = config.capacity_bytes;
  options.record_bytes_max = config.size_bytes;
  options.page_bytes = page_bytes;
  options.numa_node = config.node;
  PhaseResult result;
  {  // The producer unmaps at the end of this block, before the file is removed.
    const auto t0 = Clock::now();
    auto producer = weft::SpscProducer::create(name, options);
    const auto t1 = Clock::now();
    if (!producer) throw RunError(producer.error().message());
    result.prefault_ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
    result.file_bytes = producer->channel().mapped_bytes();
    result.pages_where = describe_pages(producer->channel());

    // Relaxed (all three): the child is not forked yet.
    shared->stop.value.store(0, std::memory_order_relaxed);
    shared->bytes_consumed.value.store(0, std::memory_order_relaxed);
    shared->ready.value.store(0, std::memory_order_relaxed);
    const pid_t child = fork();
    if (child < 0) throw RunError(fmt::format("fork: {}", errno_text(errno)));
    if (child == 0) consumer_child(shared, name, dir, placement.cpu_b);
    const auto reap = [&] {
      // Release: pairs with the child's acquire load of `stop`.
      shared->stop.value.store(1, std::memory_order_release);
      int status = 0;
      waitpid(child, &status, 0);
      return status;
    };
    // Acquire: pairs with the child's release store of `ready`.
    while (shared->ready.value.load(std::memory_order_acquire) == 0) {
      int status = 0;
      if (waitpid(child, &status, WNOHANG) == child) {
        throw RunError(fmt::format("the consumer of '{}' died before it attached (status {:#x})",
                                   name, status));
      }
    }
    if (shared->ready.value.load(std::memory_order_acquire) != 1) {
      reap();
      throw RunError(fmt::format("the consumer could not open channel '{}' in {}", name, dir));
    }
    std::vector<std::byte> source(config.size_bytes);
    for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::byte>(i * 131);
    const auto produce_until = [&](Clock::time_point end) {
      while (Clock::now() < end) {
        for (int i = 0; i < 64; ++i) {
          const weft::ClaimResult claim = producer->try_claim(config.size_bytes);
          if (!claim) break;
          std::memcpy(claim.bytes.data(), source.data(), source.size());
          producer->commit();
        }
      }
    };
    produce_until(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(config.warmup_s)));
    // Relaxed (both samples): a progress counter; see consumer_child.
    const std::uint64_t bytes_start = shared->bytes_consumed.value.load(std::memory_order_relaxed);
    const auto start = Clock::now();
    produce_until(start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(config.duration_s)));
    const std::uint64_t bytes_end = shared->bytes_consumed.value.load(std::memory_order_relaxed);
    const auto end = Clock::now();
    const int status = reap();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw RunError(fmt::format("the consumer of '{}' failed (status {:#x})", name, status));
    }
    result.bytes_per_s = static_cast<double>(bytes_end - bytes_start) /
                         std::chrono::duration<double>(end - start).count();
  }
  if (auto ok = weft::Channel::unlink(name, dir); !ok) throw RunError(ok.error().message());
  return result;
}

}  // namespace

HugeBenchResult run_huge_bench(const HugeBenchConfig& config, const Placement& placement) {
  HugeBenchResult result;
  result.config = config;
  const std::uint64_t huge_file =
      (weft::kBasePageBytes + config.capacity_bytes + weft::kHugePageBytes - 1) /
      weft::kHugePageBytes * weft::kHugePageBytes;
  HugeSetup setup(huge_file / weft::kHugePageBytes, config.reserve, &result.notes);
  result.huge_dir = setup.dir();

  char pattern[] = "/dev/shm/shmem-bench-4k-XXXXXX";
  if (mkdtemp(pattern) == nullptr) throw RunError(fmt::format("mkdtemp: {}", errno_text(errno)));
  const std::string base_dir = pattern;
  struct DirGuard {
    std::string path;
    ~DirGuard() { rmdir(path.c_str()); }
  } base_guard{base_dir};

  void* mapping = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mapping == MAP_FAILED) throw RunError(fmt::format("mmap: {}", errno_text(errno)));
  auto* shared = new (mapping) Shared{};
  struct MapGuard {
    void* address;
    ~MapGuard() { munmap(address, sizeof(Shared)); }
  } map_guard{mapping};

  pin_or_throw(placement.cpu_a, "producer");
  for (int run = 0; run < config.runs; ++run) {
    // Alternate which variant goes first, so that drift within a run favours neither.
    const bool huge_first = run % 2 == 1;
    PhaseResult base;
    PhaseResult huge;
    for (int step = 0; step < 2; ++step) {
      const bool is_huge = (step == 0) == huge_first;
      if (is_huge) {
        huge = run_phase(config, placement, setup.dir(), weft::kHugePageBytes, shared);
      } else {
        base = run_phase(config, placement, base_dir, weft::kBasePageBytes, shared);
      }
      std::fprintf(stderr, "\rrun %d/%d %s done   ", run + 1, config.runs, is_huge ? "2M" : "4K");
    }
    result.base.prefault_ns.push_back(base.prefault_ns);
    result.base.bytes_per_s.push_back(base.bytes_per_s);
    result.base.pages_where = base.pages_where;
    result.base.file_bytes = base.file_bytes;
    result.huge.prefault_ns.push_back(huge.prefault_ns);
    result.huge.bytes_per_s.push_back(huge.bytes_per_s);
    result.huge.pages_where = huge.pages_where;
    result.huge.file_bytes = huge.file_bytes;
    result.prefault_ratio.push_back(huge.prefault_ns / base.prefault_ns);
    result.bytes_ratio.push_back(huge.bytes_per_s / base.bytes_per_s);
  }
  std::fprintf(stderr, "\r                         \r");
  result.base.page_bytes = weft::kBasePageBytes;
  result.huge.page_bytes = weft::kHugePageBytes;
  return result;
}

nlohmann::json huge_json(const HugeBenchResult& r) {
  const auto stats = [](const std::vector<double>& v) {
    return nlohmann::json{
        {"median", median(v)}, {"min", min_of(v)}, {"max", max_of(v)}, {"runs", v}};
  };
  nlohmann::json j;
  j["benchmark"] = "throughput --huge";
  j["capacity_bytes"] = r.config.capacity_bytes;
  j["size_bytes"] = r.config.size_bytes;
  j["runs"] = r.config.runs;
  j["node"] = r.config.node;
  j["prefault_ns_4k"] = median(r.base.prefault_ns);
  j["prefault_ns_huge"] = median(r.huge.prefault_ns);
  j["bytes_per_s_4k"] = median(r.base.bytes_per_s);
  j["bytes_per_s_huge"] = median(r.huge.bytes_per_s);
  j["prefault_ratio_huge_to_4k"] = stats(r.prefault_ratio);
  j["bytes_per_s_ratio_huge_to_4k"] = stats(r.bytes_ratio);
  j["detail"] = {{"prefault_ns_4k", stats(r.base.prefault_ns)},
                 {"prefault_ns_huge", stats(r.huge.prefault_ns)},
                 {"bytes_per_s_4k", stats(r.base.bytes_per_s)},
                 {"bytes_per_s_huge", stats(r.huge.bytes_per_s)}};
  j["file_bytes_4k"] = r.base.file_bytes;
  j["file_bytes_huge"] = r.huge.file_bytes;
  j["pages_4k"] = r.base.pages_where;
  j["pages_huge"] = r.huge.pages_where;
  j["huge_dir"] = r.huge_dir;
  j["notes"] = r.notes;
  return j;
}

void print_huge_table(const HugeBenchResult& r, const std::vector<std::string>& env_lines) {
  for (const std::string& line : env_lines) fmt::print("{}\n", line);
  if (!r.notes.empty()) fmt::print("setup: {}\n", r.notes);
  fmt::print(
      "channel: SPSC, ring {} MiB, records of {} bytes, {} runs (4 KiB and 2 MiB "
      "interleaved in each){}\n",
      r.config.capacity_bytes >> 20, r.config.size_bytes, r.config.runs,
      r.config.node >= 0 ? fmt::format(", placed on node {}", r.config.node) : "");
  fmt::print("4 KiB pages: {}\n2 MiB pages: {}\n\n", r.base.pages_where, r.huge.pages_where);
  fmt::print("{:<28} {:>14} {:>14} {:>14}\n", "median [min..max]", "4 KiB pages", "2 MiB pages",
             "2M / 4K");
  const auto ms = [](const std::vector<double>& v) {
    return fmt::format("{:.1f} ms", median(v) / 1e6);
  };
  const auto gbs = [](const std::vector<double>& v) {
    return fmt::format("{:.2f} GB/s", median(v) / 1e9);
  };
  fmt::print("{:<28} {:>14} {:>14} {:>8.3f} [{:.3f}..{:.3f}]\n", "create + prefault",
             ms(r.base.prefault_ns), ms(r.huge.prefault_ns), median(r.prefault_ratio),
             min_of(r.prefault_ratio), max_of(r.prefault_ratio));
  fmt::print("{:<28} {:>14} {:>14} {:>8.3f} [{:.3f}..{:.3f}]\n", "throughput",
             gbs(r.base.bytes_per_s), gbs(r.huge.bytes_per_s), median(r.bytes_ratio),
             min_of(r.bytes_ratio), max_of(r.bytes_ratio));
  fmt::print("(ratios are per run, huge over 4K measured back to back, then the median)\n");
}

}  // namespace shmem_bench
