#include "durable.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "peer.hpp"
#include "policy_spec.hpp"
#include "weft/idle.hpp"
#include "weft/journal.hpp"
#include "weft/recorder.hpp"
#include "weft/spsc.hpp"

namespace shmem_bench {
namespace {

// The floor's file: written with zeros and synced once, then overwritten (sequential writes wrap
// around at its end), as the journal overwrites its pre-zeroed and recycled segments.
constexpr std::uint64_t kFloorFileBytes = std::uint64_t{512} << 20;
constexpr std::uint64_t kSyncRegionBytes = std::uint64_t{8} << 20;
constexpr std::uint64_t kSegmentBytes = std::uint64_t{64} << 20;
// Leading part of every saturating phase (the journal's and the floor's) left out of the rate.
constexpr std::int64_t kWarmupNs = 200'000'000;
// How long a saturating phase waits for a flush to become durable before it calls the disk stalled.
constexpr std::int64_t kStallLimitNs = 60'000'000'000;

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t percentile(std::vector<std::int64_t> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index =
      static_cast<std::size_t>(std::llround(p * static_cast<double>(values.size() - 1)));
  return values[std::min(index, values.size() - 1)];
}

struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
};

Spread spread(std::vector<double> values) {
  Spread out;
  if (values.empty()) return out;
  std::sort(values.begin(), values.end());
  out.median = values[values.size() / 2];
  out.min = values.front();
  out.max = values.back();
  return out;
}

nlohmann::json spread_json(const Spread& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

void* aligned_buffer(std::size_t bytes, unsigned char fill) {
  void* memory = nullptr;
  if (posix_memalign(&memory, 4096, bytes) != 0) throw RunError("out of memory");
  std::memset(memory, fill, bytes);
  return memory;
}

// A file of `bytes` written with zeros and synced: the state of a journal's pre-zeroed segment.
int prepared_file(const std::string& path, std::uint64_t bytes, int extra_flags) {
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw RunError(fmt::format("{}: {}", path, errno_text(errno)));
    std::vector<char> zeros(std::size_t{1} << 20);
    for (std::uint64_t offset = 0; offset < bytes; offset += zeros.size()) {
      if (pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(offset)) < 0) {
        throw RunError(fmt::format("{}: write: {}", path, errno_text(errno)));
      }
    }
    fdatasync(fd);
    close(fd);
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | extra_flags);
  if (fd < 0) throw RunError(fmt::format("{}: {}", path, errno_text(errno)));
  return fd;
}

// One way of writing sequentially and durably (see sequential_rate).
struct Way {
  bool direct = false;
  std::uint64_t chunk = 0;
  unsigned depth = 1;
};

struct Floor {
  double seq_bytes_per_s = 0;
  std::string seq_best;  // Which way of writing gave it.
  Way best_way;
  std::vector<std::pair<std::string, double>> seq_ways;  // Every way measured, bytes/s.
};

// Keeps one CPU busy while it is on, as the producer spinning in wait_durable does during the
// durable measurement (and, like it, yields the CPU for a moment every 1024 spins); while it is
// off it sleeps. On a virtual machine a halted vCPU woken by the disk's interrupt can take a host
// scheduler tick (4 ms here under load) to run again: without this, the floor would pay that and
// the durable path would not, and their ratio would mean nothing. It is switched on only around
// the floor's own writes, so that it never competes with the journal's threads.
class Spinner {
 public:
  Spinner()
      : thread_([this] {
          std::uint64_t spins = 0;
          for (;;) {
            // Relaxed: the state is a request and carries no data; pairs with the stores in on(),
            // off() and the destructor.
            const int state = state_.load(std::memory_order_relaxed);
            if (state == kStop) return;
            if (state == kOff) {
              state_.wait(kOff, std::memory_order_relaxed);  // Futex wait until on() or stop.
              continue;
            }
            weft::cpu_relax();
            if (++spins % 1024 == 0) std::this_thread::yield();
          }
        }) {}
  ~Spinner() {
    state_.store(kStop, std::memory_order_relaxed);  // Relaxed: see the thread's load.
    state_.notify_one();
    thread_.join();
  }
  Spinner(const Spinner&) = delete;
  Spinner& operator=(const Spinner&) = delete;

  void on() {
    state_.store(kOn, std::memory_order_relaxed);  // Relaxed: see the thread's load.
    state_.notify_one();
  }
  void off() { state_.store(kOff, std::memory_order_relaxed); }  // Relaxed: see the thread's load.

 private:
  static constexpr int kOff = 0;
  static constexpr int kOn = 1;
  static constexpr int kStop = 2;
  std::atomic<int> state_{kOff};
  std::thread thread_;
};

// The floor's lone write: 4 KiB pwrite + fdatasync at queue depth 1 on the floor's file, at the
// `index`th block of its first kSyncRegionBytes, with `spinner` (if any) on around it. Returns its
// duration in ns.
std::int64_t floor_sync_write(int fd, const std::string& path, const void* block,
                              std::uint64_t index, Spinner* spinner) {
  if (spinner != nullptr) spinner->on();
  const std::int64_t start = now_ns();
  const bool ok =
      pwrite(fd, block, 4096, static_cast<off_t>((index * 4096) % kSyncRegionBytes)) == 4096 &&
      fdatasync(fd) == 0;
  const std::int64_t took = now_ns() - start;
  const int err = errno;
  if (spinner != nullptr) spinner->off();
  if (!ok) throw RunError(fmt::format("{}: write+fdatasync: {}", path, errno_text(err)));
  return took;
}

// One way of writing sequentially and durably, as fio would: `chunk`-byte writes at increasing
// offsets (wrapping at the file's end), `depth` of them in flight through io_uring, each durable on
// completion (O_DIRECT|O_DSYNC), or, with `direct` false, pwrite + fdatasync one at a time. Runs
// for `seconds`. As in the journal's saturating phase, the rate is measured from one completion to
// another: the window opens at the first completion after kWarmupNs (its bytes were written
// before, so they are not counted) and closes at the last one, at least half as long as planned
// however slow the disk (kStallLimitNs beyond the end without that is an error).
double sequential_rate(const std::string& path, bool direct, std::uint64_t chunk, unsigned depth,
                       double seconds) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (direct ? O_DIRECT | O_DSYNC : 0));
  if (fd < 0) {
    throw RunError(
        fmt::format("{}: open{}: {}", path, direct ? " with O_DIRECT" : "", errno_text(errno)));
  }
  void* buffer = aligned_buffer(chunk, 0xcd);
  const std::int64_t start = now_ns();
  const std::int64_t from = start + kWarmupNs;
  const std::int64_t end = start + static_cast<std::int64_t>(seconds * 1e9);
  std::uint64_t offset = 0;
  std::uint64_t counted = 0;
  std::int64_t counted_from = 0;
  std::int64_t counted_to = 0;
  const auto next_offset = [&] {
    const std::uint64_t at = offset;
    offset = offset + chunk + chunk > kFloorFileBytes ? 0 : offset + chunk;
    return at;
  };
  const auto count = [&](std::uint64_t bytes) {
    const std::int64_t now = now_ns();
    if (now < from) return;
    if (counted_from == 0) {
      counted_from = now;
      return;
    }
    counted += bytes;
    counted_to = now;
  };
  // Whether to start another write: until the end, and on until the window spans at least half
  // the planned one (a slow disk completes its writes in bursts far apart).
  std::string failure;
  const std::int64_t min_window = (end - from) / 2;
  const auto more = [&] {
    const std::int64_t now = now_ns();
    if (now < end) return true;
    if (counted != 0 && counted_to - counted_from >= min_window) return false;
    if (now - end > kStallLimitNs) {
      failure = fmt::format("no write completed in {} s", kStallLimitNs / 1'000'000'000);
      return false;
    }
    return true;
  };
  if (!direct) {
    while (failure.empty() && more()) {
      if (pwrite(fd, buffer, chunk, static_cast<off_t>(next_offset())) !=
              static_cast<ssize_t>(chunk) ||
          fdatasync(fd) != 0) {
        failure = errno_text(errno);
      }
      count(chunk);
    }
  } else {
    io_uring ring{};
    if (const int rc = io_uring_queue_init(depth, &ring, 0); rc < 0) {
      free(buffer);
      close(fd);
      throw RunError(fmt::format("io_uring_queue_init: {}", errno_text(-rc)));
    }
    unsigned in_flight = 0;
    for (;;) {
      const bool again = failure.empty() && more();
      while (again && in_flight < depth) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_write(sqe, fd, buffer, static_cast<unsigned>(chunk), next_offset());
        ++in_flight;
      }
      if (in_flight == 0) break;
      io_uring_submit(&ring);
      io_uring_cqe* cqe = nullptr;
      if (const int rc = io_uring_wait_cqe(&ring, &cqe); rc < 0) {
        if (rc == -EINTR) continue;
        failure = errno_text(-rc);
        break;
      }
      if (cqe->res != static_cast<int>(chunk)) {
        failure = cqe->res < 0 ? errno_text(-cqe->res) : "short write";
      } else {
        count(chunk);
      }
      io_uring_cqe_seen(&ring, cqe);
      --in_flight;
    }
    io_uring_queue_exit(&ring);
  }
  free(buffer);
  close(fd);
  if (!failure.empty()) {
    throw RunError(fmt::format("{}: sequential {} write: {}", path,
                               direct ? "O_DIRECT|O_DSYNC" : "write+fdatasync", failure));
  }
  return static_cast<double>(counted) * 1e9 / static_cast<double>(counted_to - counted_from);
}

// The disk's best durable sequential bandwidth, on `path` (a prepared file): the best of several
// ways to write sequentially and durably, each for as long as the journal's saturating phase (a
// virtual disk can sustain less than it bursts). The 4 KiB write + fdatasync floor is measured
// inside the latency phase, interleaved with the journal's records (measure_latency).
std::string way_name(const Way& way) {
  constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
  return fmt::format("{} MiB {} QD{}", way.chunk / kMiB,
                     way.direct ? "O_DIRECT|O_DSYNC" : "write+fdatasync", way.depth);
}

double way_rate(const std::string& path, const Way& way, double seconds) {
  return sequential_rate(path, way.direct, way.chunk, way.depth, seconds);
}

Floor measure_floor(const std::string& path, double seconds) {
  Floor floor;
  constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
  for (const Way way : {Way{false, 4 * kMiB, 1}, Way{true, 4 * kMiB, 1}, Way{true, kMiB, 4},
                        Way{true, 4 * kMiB, 4}}) {
    const double rate = way_rate(path, way, seconds);
    if (rate > floor.seq_bytes_per_s) {
      floor.seq_bytes_per_s = rate;
      floor.seq_best = way_name(way);
      floor.best_way = way;
    }
    floor.seq_ways.emplace_back(way_name(way), rate);
  }
  return floor;
}

// Removes a journal directory and waits until the file system has committed the removal. This VM's
// ext4 is mounted with `discard`: freed blocks are discarded at the next journal commit, and a
// floor measured while hundreds of MiB are being discarded reads low. syncfs forces that commit
// now.
void remove_journal(const std::string& path, const std::string& dir) {
  std::filesystem::remove_all(path);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw RunError(fmt::format("{}: {}", dir, errno_text(errno)));
  const int rc = ::syncfs(fd);
  const int err = errno;
  close(fd);
  if (rc != 0) throw RunError(fmt::format("{}: syncfs: {}", dir, errno_text(err)));
}

}  // namespace

weft::JournalSync default_sync_mode(const std::string& dir) {
  const std::string path = dir + "/default-mode";
  weft::JournalOptions options;
  options.segment_bytes = std::uint64_t{64} << 10;
  options.buffer_bytes = std::uint64_t{32} << 10;
  options.buffers = 2;
  options.spare_segments = 0;
  weft::JournalSync mode = weft::JournalSync::kAuto;
  {
    auto journal = weft::Journal::open(path, std::move(options));
    if (!journal) throw RunError(journal.error().message());
    mode = journal->sync_mode();
  }
  std::filesystem::remove_all(path);
  return mode;
}

namespace {

// The adaptive policy's commit-to-durable target when --policy adaptive is chosen.
constexpr double kAdaptiveTargetMs = 2.0;

weft::RecorderOptions recorder_options(const std::string& shm_dir, weft::JournalSync sync,
                                       bool spin, bool saturate, const PolicySpec& policy) {
  weft::RecorderOptions options;
  options.shm_dir = shm_dir;
  options.spin = spin;
  options.idle_sleep = std::chrono::milliseconds(50);
  options.journal.sync = sync;
  options.journal.segment_bytes = kSegmentBytes;
  options.journal.buffer_bytes = std::uint64_t{4} << 20;
  options.journal.buffers = 8;
  // Pre-zeroed spares, and retention that recycles segments once the journal holds this much:
  // no segment is zero-filled while the run writes.
  options.journal.spare_segments = saturate ? 6 : 2;
  options.journal.retain_bytes = saturate ? 6 * kSegmentBytes : 0;
  options.journal.policy = make_policy(policy, kAdaptiveTargetMs);
  return options;
}

struct Phase {
  std::int64_t p50_ns = 0;
  std::int64_t p99_ns = 0;
  std::int64_t p999_ns = 0;
  // The latency phase's floor: 4 KiB write + fdatasync samples interleaved with its records.
  std::int64_t floor_p50_ns = 0;
  std::int64_t floor_p99_ns = 0;
  double msgs_per_s = 0;
  double bytes_per_s = 0;
  std::uint64_t flushes = 0;
};

// Runs a recorder thread on channel `name` while `body` produces; returns the recorder's stats.
template <class Body>
weft::RecorderStats with_recorder(const std::string& name, const std::string& journal_dir,
                                  weft::RecorderOptions options, Body&& body) {
  auto recorder = weft::Recorder::open(name, journal_dir, std::move(options));
  if (!recorder) throw RunError(recorder.error().message());
  std::atomic<bool> stop{false};
  weft::Result<void> result;
  std::thread thread([&] { result = recorder->run(stop); });
  try {
    body();
  } catch (...) {
    stop.store(true, std::memory_order_relaxed);  // Relaxed: a request.
    thread.join();
    throw;
  }
  stop.store(true, std::memory_order_relaxed);  // Relaxed: a request.
  thread.join();
  if (!result) throw RunError(result.error().message());
  return recorder->stats();
}

// Records sent one at a time, each waited for until durable, interleaved with the disk's floor:
// after every record, one 4 KiB write + fdatasync on the floor's file at `floor_path`, timed alone.
// This VM's disk moves between a fast and a slow regime within seconds (write+fdatasync p50 110
// to 220 us); a floor measured before the phase can fall in the other regime, while samples taken
// in turn share it.
Phase measure_latency(const DurableConfig& config, const std::string& shm_dir,
                      const std::string& journal_dir, weft::JournalSync sync,
                      const std::string& floor_path) {
  weft::ChannelOptions channel_options;
  channel_options.dir = shm_dir;
  channel_options.capacity_bytes = std::uint64_t{1} << 22;
  channel_options.record_bytes_max = std::max<std::uint64_t>(config.size_bytes, 64);
  auto producer = weft::SpscProducer::create("lat", channel_options);
  if (!producer) throw RunError(producer.error().message());
  const int floor_fd = ::open(floor_path.c_str(), O_RDWR | O_CLOEXEC);
  if (floor_fd < 0) throw RunError(fmt::format("{}: {}", floor_path, errno_text(errno)));
  struct Closer {
    int fd;
    void* block;
    ~Closer() {
      free(block);
      close(fd);
    }
  } floor_file{floor_fd, aligned_buffer(4096, 0xab)};
  // While the floor's thread waits in fdatasync, the journal's producer would be spinning: the
  // spinner stands in for it (see Spinner).
  std::optional<Spinner> spinner;
  if (config.producer_wait == "spin") spinner.emplace();
  std::vector<std::int64_t> samples;
  std::vector<std::int64_t> floor_samples;
  samples.reserve(config.latency_samples);
  floor_samples.reserve(config.latency_samples);
  const weft::DurableWait how =
      config.producer_wait == "spin" ? weft::DurableWait::kSpin : weft::DurableWait::kSleep;
  const auto stats = with_recorder(
      "lat", journal_dir,
      recorder_options(shm_dir, sync, config.recorder_idle == "spin", false,
                       parse_policy(config.policy, "--policy")),
      [&] {
        std::vector<std::byte> payload(config.size_bytes, std::byte{0x42});
        const std::uint64_t warmup = 100;
        for (std::uint64_t i = 0; i < config.latency_samples + warmup; ++i) {
          const std::int64_t start = now_ns();
          if (producer->try_send(payload) != weft::SendStatus::kOk) {
            throw RunError("the channel is full although every record was waited for");
          }
          if (weft::wait_durable(producer->channel(), producer->position(),
                                 std::chrono::seconds(10), how) != weft::WaitStatus::kReady) {
            throw RunError("a record did not become durable within 10 s");
          }
          const std::int64_t took = now_ns() - start;
          const std::int64_t floor_took = floor_sync_write(
              floor_file.fd, floor_path, floor_file.block, i, spinner ? &*spinner : nullptr);
          if (i >= warmup) {
            samples.push_back(took);
            floor_samples.push_back(floor_took);
          }
        }
      });
  Phase phase;
  phase.p50_ns = percentile(samples, 0.5);
  phase.p99_ns = percentile(samples, 0.99);
  phase.p999_ns = percentile(samples, 0.999);
  phase.floor_p50_ns = percentile(floor_samples, 0.5);
  phase.floor_p99_ns = percentile(floor_samples, 0.99);
  phase.flushes = stats.journal.flushes;
  static_cast<void>(weft::Channel::unlink("lat", shm_dir));
  return phase;
}

// Saturating load on `shards` independent channel -> recorder -> journal pairs at once, as
// weft-recorder runs them (one recorder thread per channel), each channel fed by its own producer
// thread as fast as the recorder makes room. The rate is the growth of the channels' durable
// positions between the end of the warm-up and the end of the phase, summed over the shards.
Phase measure_throughput(const DurableConfig& config, const std::string& shm_dir,
                         const std::string& journal_dir, weft::JournalSync sync, unsigned shards) {
  struct Shard {
    std::optional<weft::SpscProducer> producer;
    std::optional<weft::Recorder> recorder;
    weft::Result<void> result;
    // Set after result is written (release), read with acquire: the recorder stopped early.
    std::atomic<bool> finished{false};
    std::uint64_t start_position = 0;
    std::uint64_t end_position = 0;
  };
  std::vector<Shard> all(shards);
  const auto channel_name = [](unsigned i) { return fmt::format("tput-{}", i); };
  for (unsigned i = 0; i < shards; ++i) {
    weft::ChannelOptions channel_options;
    channel_options.dir = shm_dir;
    channel_options.capacity_bytes = std::uint64_t{64} << 20;
    channel_options.record_bytes_max = std::max<std::uint64_t>(config.size_bytes, 64);
    auto producer = weft::SpscProducer::create(channel_name(i), channel_options);
    if (!producer) throw RunError(producer.error().message());
    all[i].producer.emplace(std::move(*producer));
    auto recorder =
        weft::Recorder::open(channel_name(i), fmt::format("{}-{}", journal_dir, i),
                             recorder_options(shm_dir, sync, config.recorder_idle == "spin", true,
                                              parse_policy(config.policy, "--policy")));
    if (!recorder) throw RunError(recorder.error().message());
    all[i].recorder.emplace(std::move(*recorder));
  }
  std::atomic<bool> stop_producers{false};
  std::atomic<bool> stop_recorders{false};
  std::vector<std::thread> threads;
  for (Shard& shard : all) {
    threads.emplace_back([&] {
      shard.result = shard.recorder->run(stop_recorders);
      shard.finished.store(true, std::memory_order_release);  // Pairs with the acquire below.
    });
    threads.emplace_back([&] {
      std::vector<std::byte> payload(config.size_bytes, std::byte{0x42});
      // Relaxed: a stop request; the producer sees it within one wait.
      while (!stop_producers.load(std::memory_order_relaxed)) {
        if (shard.producer->try_send(payload) != weft::SendStatus::kOk) {
          static_cast<void>(shard.producer->wait(std::chrono::milliseconds(10)));
        }
      }
    });
  }
  // The window opens after the warm-up, once every shard has made a flush durable (a slow disk
  // takes longer than the warm-up to complete the first flushes in flight), lasts the rest of the
  // phase, and closes only once every shard has made another flush durable, so that a rate is
  // never a window that fell between two completions. A disk that completes nothing for
  // kStallLimitNs is an error, not a zero.
  const std::int64_t start = now_ns();
  const std::int64_t window_ns = static_cast<std::int64_t>(config.throughput_s * 1e9) - kWarmupNs;
  std::string stalled;
  const auto wait_for_every_shard = [&](std::int64_t not_before, auto&& moved, const char* what) {
    const std::int64_t limit = std::max(now_ns(), not_before) + kStallLimitNs;
    for (;;) {
      const std::int64_t now = now_ns();
      unsigned waiting = shards;
      for (unsigned i = 0; i < shards; ++i) {
        // Acquire: pairs with the release after result is written; the error is reported below.
        if (all[i].finished.load(std::memory_order_acquire)) return;
        if (moved(all[i], weft::durable_position(all[i].producer->channel()))) --waiting;
      }
      if (now >= not_before && waiting == 0) return;
      if (now >= limit) {
        stalled = fmt::format("{} of {} shard(s) made no flush durable in {} s {}", waiting, shards,
                              kStallLimitNs / 1'000'000'000, what);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  wait_for_every_shard(
      start + kWarmupNs, [](const Shard&, std::uint64_t position) { return position > 0; },
      "after the start");
  const std::int64_t window_start = now_ns();
  for (Shard& shard : all) {
    shard.start_position = weft::durable_position(shard.producer->channel());
  }
  if (stalled.empty()) {
    wait_for_every_shard(
        window_start + window_ns,
        [](const Shard& shard, std::uint64_t position) { return position > shard.start_position; },
        "in the measured window");
  }
  const std::int64_t window_end = now_ns();
  for (Shard& shard : all) shard.end_position = weft::durable_position(shard.producer->channel());
  stop_producers.store(true, std::memory_order_relaxed);  // Relaxed: a request.
  stop_recorders.store(true, std::memory_order_relaxed);  // Relaxed: a request.
  for (std::thread& thread : threads) thread.join();
  for (const Shard& shard : all) {
    if (!shard.result) throw RunError(shard.result.error().message());
  }
  if (!stalled.empty()) throw RunError(fmt::format("the disk stalled: {}", stalled));
  Phase phase;
  const std::uint64_t record_span = (8 + config.size_bytes + 7) / 8 * 8;
  const double seconds = static_cast<double>(window_end - window_start) / 1e9;
  std::uint64_t records = 0;
  for (unsigned i = 0; i < shards; ++i) {
    Shard& shard = all[i];
    records += (shard.end_position - shard.start_position) / record_span;
    phase.flushes += shard.recorder->stats().journal.flushes;
    shard.recorder.reset();
    shard.producer.reset();
    static_cast<void>(weft::Channel::unlink(channel_name(i), shm_dir));
  }
  phase.msgs_per_s = static_cast<double>(records) / seconds;
  phase.bytes_per_s = phase.msgs_per_s * static_cast<double>(config.size_bytes);
  return phase;
}

}  // namespace

CLI::App* add_durable_subcommand(CLI::App& app, DurableConfig& config) {
  CLI::App* durable = app.add_subcommand(
      "durable",
      "Producer -> channel -> recorder -> journal on disk: durable latency (commit to durable) "
      "and throughput, beside the disk's floor measured in the same run");
  durable->add_option("--dir", config.dir,
                      "Directory for the journal and the floor's files (default /tmp)");
  durable->add_option("--size", config.size_bytes, "Payload bytes per record (default 4096)");
  durable->add_option("--runs", config.runs, "Runs; medians and spread are reported (default 3)");
  durable->add_option("--samples", config.latency_samples,
                      "Records sent one at a time per run and sync mode (default 2000)");
  durable->add_option("--duration", config.throughput_s,
                      "Seconds of saturating load per run, sync mode and shard count, and of each "
                      "way the floor writes sequentially (default 2)");
  durable->add_option("--sync", config.sync, "fdatasync, direct or both (default both)")
      ->check(CLI::IsMember({"fdatasync", "direct", "both"}));
  durable
      ->add_option("--recorder-idle", config.recorder_idle,
                   "spin (default: poll, yielding the CPU) or sleep (futex and io_uring waits)")
      ->check(CLI::IsMember({"sleep", "spin"}));
  durable->add_option("--producer-wait", config.producer_wait, "spin (default) or sleep")
      ->check(CLI::IsMember({"spin", "sleep"}));
  durable->add_option(
      "--policy", config.policy,
      "The recorders' flush policy: natural (default), adaptive[-x<in flight>][-w<io-wq "
      "workers>], every or "
      "fixed-<bytes>-<delay>[-x<in flight>]");
  durable
      ->add_option("--shards", config.shards,
                   "Shard counts for the saturating phase: N channel -> recorder -> journal "
                   "pairs at once, one recorder thread each (default 1; e.g. 1,2,4)")
      ->delimiter(',');
  durable->add_flag("--json", config.json, "Print one JSON document instead of the table");
  return durable;
}

int run_durable(const DurableConfig& config) {
  if (config.size_bytes == 0 || config.size_bytes > (std::uint64_t{1} << 20)) {
    throw UsageError(fmt::format("--size {}: expected 1 to 1048576 bytes", config.size_bytes));
  }
  if (config.runs < 1 || config.latency_samples < 10 || config.throughput_s <= 0.3) {
    throw UsageError("--runs must be >= 1, --samples >= 10 and --duration > 0.3");
  }
  static_cast<void>(parse_policy(config.policy, "--policy"));  // A bad name is a usage error.
  std::vector<unsigned> shard_counts = config.shards;
  if (shard_counts.empty()) shard_counts.push_back(1);
  for (const unsigned count : shard_counts) {
    if (count < 1 || count > 64) {
      throw UsageError(fmt::format("--shards {}: expected shard counts from 1 to 64", count));
    }
  }
  if (std::find(shard_counts.begin(), shard_counts.end(), 1u) == shard_counts.end()) {
    shard_counts.insert(shard_counts.begin(), 1);  // The headline throughput is one shard's.
  }
  ScratchDir disk(config.dir, "weft-durable");
  ScratchDir shm("/dev/shm", "weft-durable");
  // The mode a journal opened with the default options takes on this file system comes first:
  // its figures are the headline.
  const weft::JournalSync default_mode = default_sync_mode(disk.path());
  std::vector<weft::JournalSync> modes;
  if (config.sync != "direct") modes.push_back(weft::JournalSync::kWriteFdatasync);
  if (config.sync != "fdatasync") modes.push_back(weft::JournalSync::kDirectDsync);
  std::stable_partition(modes.begin(), modes.end(),
                        [&](weft::JournalSync mode) { return mode == default_mode; });

  // The floor's file, written once: every run overwrites it.
  const std::string floor_path = disk.path() + "/floor.dat";
  close(prepared_file(floor_path, kFloorFileBytes, 0));

  struct ModeRuns {
    std::vector<double> p50, p99, p999, msgs, bytes, lat_ratio, bw_ratio;
    std::vector<double> floor_p50, floor_p99, floor_bw;  // The floor paired with each figure.
    // [shard count index][run]
    std::vector<std::vector<double>> shard_bytes, shard_ratio, shard_floor;
  };
  std::vector<ModeRuns> per_mode(modes.size());
  for (ModeRuns& r : per_mode) {
    r.shard_bytes.resize(shard_counts.size());
    r.shard_ratio.resize(shard_counts.size());
    r.shard_floor.resize(shard_counts.size());
  }
  std::vector<std::pair<std::string, std::vector<double>>> seq_ways;
  std::string seq_best;
  for (int run = 0; run < config.runs; ++run) {
    // Every way of writing sequentially, to find the best one; then the best way again right
    // after each saturating phase, whose floor is the mean of the best way's rates measured just
    // before and just after it (the disk's rate drifts within seconds).
    const Floor floor = measure_floor(floor_path, config.throughput_s);
    seq_best = floor.seq_best;
    for (std::size_t w = 0; w < floor.seq_ways.size(); ++w) {
      if (seq_ways.size() <= w) seq_ways.push_back({floor.seq_ways[w].first, {}});
      seq_ways[w].second.push_back(floor.seq_ways[w].second);
    }
    double best_before = floor.seq_bytes_per_s;
    for (std::size_t m = 0; m < modes.size(); ++m) {
      const std::string journal_dir = fmt::format("{}/journal-{}-{}", disk.path(), run, m);
      const Phase latency =
          measure_latency(config, shm.path(), journal_dir + "-lat", modes[m], floor_path);
      remove_journal(journal_dir + "-lat", disk.path());
      ModeRuns& r = per_mode[m];
      r.p50.push_back(static_cast<double>(latency.p50_ns));
      r.p99.push_back(static_cast<double>(latency.p99_ns));
      r.p999.push_back(static_cast<double>(latency.p999_ns));
      r.floor_p50.push_back(static_cast<double>(latency.floor_p50_ns));
      r.floor_p99.push_back(static_cast<double>(latency.floor_p99_ns));
      r.lat_ratio.push_back(static_cast<double>(latency.p50_ns) /
                            static_cast<double>(latency.floor_p50_ns));
      for (std::size_t c = 0; c < shard_counts.size(); ++c) {
        const std::string dir = fmt::format("{}-tput{}", journal_dir, shard_counts[c]);
        const Phase throughput =
            measure_throughput(config, shm.path(), dir, modes[m], shard_counts[c]);
        for (unsigned i = 0; i < shard_counts[c]; ++i) {
          remove_journal(fmt::format("{}-{}", dir, i), disk.path());
        }
        const double best_after = way_rate(floor_path, floor.best_way, config.throughput_s);
        const double floor_bw = (best_before + best_after) / 2;
        best_before = best_after;
        r.shard_bytes[c].push_back(throughput.bytes_per_s);
        r.shard_floor[c].push_back(floor_bw);
        r.shard_ratio[c].push_back(throughput.bytes_per_s / floor_bw);
        if (shard_counts[c] == 1) {
          r.msgs.push_back(throughput.msgs_per_s);
          r.bytes.push_back(throughput.bytes_per_s);
          r.floor_bw.push_back(floor_bw);
          r.bw_ratio.push_back(throughput.bytes_per_s / floor_bw);
        }
      }
      if (!config.json) {
        fmt::print(
            stderr,
            "run {} {}: durable p50 {:.1f} us (disk write+fdatasync p50 {:.1f} us, "
            "interleaved; ratio {:.2f}); {:.0f} MB/s durable (disk {:.0f} MB/s, {}, "
            "before and after; ratio {:.2f})\n",
            run + 1, weft::journal_sync_name(modes[m]), static_cast<double>(latency.p50_ns) / 1e3,
            static_cast<double>(latency.floor_p50_ns) / 1e3, r.lat_ratio.back(),
            r.bytes.back() / 1e6, r.floor_bw.back() / 1e6, floor.seq_best, r.bw_ratio.back());
      }
    }
  }
  std::filesystem::remove(floor_path);
  // The headline figures are the first mode's: the journal's default (JournalSync::kAuto) when it
  // was measured; every mode's are in "modes".
  const std::size_t best = 0;
  utsname host{};
  uname(&host);
  nlohmann::json out;
  out["benchmark"] = "durable";
  out["dir"] = config.dir;
  out["size_bytes"] = config.size_bytes;
  out["runs"] = config.runs;
  out["kernel"] = host.release;
  out["recorder_idle"] = config.recorder_idle;
  out["producer_wait"] = config.producer_wait;
  out["policy"] = config.policy;
  const ModeRuns& b = per_mode[best];
  // The headline mode's floors: the write+fdatasync samples interleaved with its records, and the
  // best way's bandwidth around its one-shard saturating phase.
  out["disk_sync_p50_ns"] = spread(b.floor_p50).median;
  out["disk_sync_p99_ns"] = spread(b.floor_p99).median;
  out["disk_seq_bytes_per_s"] = spread(b.floor_bw).median;
  out["disk_seq_best"] = seq_best;
  out["disk_sync_p50_ns_spread"] = spread_json(spread(b.floor_p50));
  out["disk_seq_bytes_per_s_spread"] = spread_json(spread(b.floor_bw));
  out["disk_sync_method"] =
      "interleaved with the journal's records, one write+fdatasync after each";
  out["disk_seq_method"] =
      "the best of disk_seq_ways, measured just before and just after each saturating phase; "
      "the mean of the two";
  nlohmann::json ways_json = nlohmann::json::array();
  for (const auto& [name, rates] : seq_ways) {
    ways_json.push_back({{"way", name}, {"bytes_per_s", spread_json(spread(rates))}});
  }
  out["disk_seq_ways"] = ways_json;
  out["sync_mode"] = weft::journal_sync_name(modes[best]);
  out["default_sync_mode"] = weft::journal_sync_name(default_mode);
  out["durable_p50_ns"] = spread(b.p50).median;
  out["durable_p99_ns"] = spread(b.p99).median;
  out["durable_p999_ns"] = spread(b.p999).median;
  out["msgs_per_s"] = spread(b.msgs).median;
  out["bytes_per_s"] = spread(b.bytes).median;
  out["latency_ratio"] = spread(b.lat_ratio).median;
  out["bandwidth_ratio"] = spread(b.bw_ratio).median;
  nlohmann::json modes_json = nlohmann::json::array();
  for (std::size_t m = 0; m < modes.size(); ++m) {
    const ModeRuns& r = per_mode[m];
    nlohmann::json shards_json = nlohmann::json::array();
    for (std::size_t c = 0; c < shard_counts.size(); ++c) {
      shards_json.push_back({{"shards", shard_counts[c]},
                             {"bytes_per_s", spread_json(spread(r.shard_bytes[c]))},
                             {"disk_seq_bytes_per_s", spread_json(spread(r.shard_floor[c]))},
                             {"bandwidth_ratio", spread_json(spread(r.shard_ratio[c]))}});
    }
    modes_json.push_back({{"sync_mode", weft::journal_sync_name(modes[m])},
                          {"durable_p50_ns", spread_json(spread(r.p50))},
                          {"durable_p99_ns", spread_json(spread(r.p99))},
                          {"durable_p999_ns", spread_json(spread(r.p999))},
                          {"disk_sync_p50_ns", spread_json(spread(r.floor_p50))},
                          {"disk_sync_p99_ns", spread_json(spread(r.floor_p99))},
                          {"disk_seq_bytes_per_s", spread_json(spread(r.floor_bw))},
                          {"msgs_per_s", spread_json(spread(r.msgs))},
                          {"bytes_per_s", spread_json(spread(r.bytes))},
                          {"latency_ratio", spread_json(spread(r.lat_ratio))},
                          {"bandwidth_ratio", spread_json(spread(r.bw_ratio))},
                          {"shards", shards_json}});
  }
  out["modes"] = modes_json;
  if (config.json) {
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print(
      "shmem-bench durable: {} B records, journal in {}, policy {}, {} runs (median "
      "[min..max])\n",
      config.size_bytes, config.dir, config.policy, config.runs);
  const auto range = [](const std::vector<double>& v, double scale) {
    const Spread s = spread(v);
    return fmt::format("{:.1f} [{:.1f}..{:.1f}]", s.median / scale, s.min / scale, s.max / scale);
  };
  fmt::print(
      "  disk floor: 4 KiB write+fdatasync at QD1, one after each of the journal's records;\n"
      "              best sequential way (best of four, probed at the start of each run), "
      "measured\n"
      "              again after each saturating phase; its floor is the mean of before and "
      "after\n");
  fmt::print("              probe over {:.1f} s each, by way of writing:\n", config.throughput_s);
  for (const auto& [name, rates] : seq_ways) {
    fmt::print("                {:<30} {} MB/s\n", name, range(rates, 1e6));
  }
  for (std::size_t m = 0; m < modes.size(); ++m) {
    const ModeRuns& r = per_mode[m];
    fmt::print("  {:<18} durable p50 {} us  p99 {} us  p99.9 {} us\n",
               weft::journal_sync_name(modes[m]), range(r.p50, 1e3), range(r.p99, 1e3),
               range(r.p999, 1e3));
    fmt::print("  {:<18} disk    p50 {} us  p99 {} us   ratio of p50s {}\n", "",
               range(r.floor_p50, 1e3), range(r.floor_p99, 1e3), range(r.lat_ratio, 1));
    for (std::size_t c = 0; c < shard_counts.size(); ++c) {
      fmt::print("  {:<18} saturating, {} shard{}: {} MB/s, disk {} MB/s   ratio {}\n", "",
                 shard_counts[c], shard_counts[c] == 1 ? "" : "s", range(r.shard_bytes[c], 1e6),
                 range(r.shard_floor[c], 1e6), range(r.shard_ratio[c], 1));
    }
  }
  for (std::size_t m = 0; m < modes.size(); ++m) {
    const double latency = spread(per_mode[m].lat_ratio).median;
    const double bandwidth = spread(per_mode[m].bw_ratio).median;
    fmt::print(
        "  bars, {:<16}: durable p50 <= 1.15 x disk p50: {:.2f} ({}); durable bytes/s >= 0.8 x "
        "disk best: {:.2f} ({})\n",
        weft::journal_sync_name(modes[m]), latency, latency <= 1.15 ? "met" : "NOT met", bandwidth,
        bandwidth >= 0.8 ? "met" : "NOT met");
  }
  return 0;
}

}  // namespace shmem_bench
