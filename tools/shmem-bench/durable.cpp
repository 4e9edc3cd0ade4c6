#include "durable.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "peer.hpp"
#include "weft/journal.hpp"
#include "weft/recorder.hpp"
#include "weft/spsc.hpp"

namespace shmem_bench {
namespace {

constexpr std::uint64_t kFloorFileBytes = std::uint64_t{256} << 20;
constexpr std::uint64_t kSyncSamples = 1000;
constexpr std::uint64_t kSegmentBytes = std::uint64_t{64} << 20;

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t percentile(std::vector<std::int64_t> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
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
    if (fd < 0) throw RunError(fmt::format("{}: {}", path, std::strerror(errno)));
    std::vector<char> zeros(std::size_t{1} << 20);
    for (std::uint64_t offset = 0; offset < bytes; offset += zeros.size()) {
      if (pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(offset)) < 0) {
        throw RunError(fmt::format("{}: write: {}", path, std::strerror(errno)));
      }
    }
    fdatasync(fd);
    close(fd);
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | extra_flags);
  if (fd < 0) throw RunError(fmt::format("{}: {}", path, std::strerror(errno)));
  return fd;
}

struct Floor {
  std::int64_t sync_p50_ns = 0;
  std::int64_t sync_p99_ns = 0;
  double seq_bytes_per_s = 0;
  std::string seq_best;  // Which way of writing gave it.
};

// Keeps one CPU busy while it lives, as the producer spinning in wait_durable does during the
// durable measurement. On a virtual machine a halted vCPU woken by the disk's interrupt can take a
// host scheduler tick (4 ms here under load) to run again: without this, the floor would pay that
// and the durable path would not, and their ratio would mean nothing.
class Spinner {
 public:
  Spinner()
      : thread_([this] {
          // Relaxed: a stop request only.
          while (!stop_.load(std::memory_order_relaxed)) {
          }
        }) {}
  ~Spinner() {
    stop_.store(true, std::memory_order_relaxed);  // Relaxed: see above.
    thread_.join();
  }
  Spinner(const Spinner&) = delete;
  Spinner& operator=(const Spinner&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The disk's floor: 4 KiB pwrite + fdatasync at queue depth 1 on a pre-written file, and the
// best of several ways to write sequentially and durably.
Floor measure_floor(const std::string& dir, bool spin) {
  Floor floor;
  std::optional<Spinner> spinner;
  if (spin) spinner.emplace();
  const std::string path = dir + "/floor.dat";
  {
    const int fd = prepared_file(path, std::uint64_t{8} << 20, 0);
    void* block = aligned_buffer(4096, 0xab);
    std::vector<std::int64_t> samples;
    for (std::uint64_t i = 0; i < kSyncSamples; ++i) {
      const std::int64_t start = now_ns();
      if (pwrite(fd, block, 4096, static_cast<off_t>((i * 4096) % (std::uint64_t{8} << 20))) !=
              4096 ||
          fdatasync(fd) != 0) {
        throw RunError(fmt::format("{}: write+fdatasync: {}", path, std::strerror(errno)));
      }
      samples.push_back(now_ns() - start);
    }
    free(block);
    close(fd);
    floor.sync_p50_ns = percentile(samples, 0.5);
    floor.sync_p99_ns = percentile(samples, 0.99);
  }
  for (const bool direct : {false, true}) {
    for (const std::uint64_t chunk : {std::uint64_t{1} << 20, std::uint64_t{4} << 20}) {
      const int fd = prepared_file(path, kFloorFileBytes, direct ? O_DIRECT | O_DSYNC : 0);
      void* buffer = aligned_buffer(chunk, 0xcd);
      const std::int64_t start = now_ns();
      for (std::uint64_t offset = 0; offset < kFloorFileBytes; offset += chunk) {
        if (pwrite(fd, buffer, chunk, static_cast<off_t>(offset)) != static_cast<ssize_t>(chunk) ||
            (!direct && fdatasync(fd) != 0)) {
          throw RunError(fmt::format("{}: sequential write: {}", path, std::strerror(errno)));
        }
      }
      const double seconds = static_cast<double>(now_ns() - start) / 1e9;
      free(buffer);
      close(fd);
      const double rate = static_cast<double>(kFloorFileBytes) / seconds;
      if (rate > floor.seq_bytes_per_s) {
        floor.seq_bytes_per_s = rate;
        floor.seq_best =
            fmt::format("{} MiB {}", chunk >> 20, direct ? "O_DIRECT|O_DSYNC" : "write+fdatasync");
      }
    }
  }
  std::filesystem::remove(path);
  return floor;
}

weft::RecorderOptions recorder_options(const std::string& shm_dir, weft::JournalSync sync,
                                       bool spin, bool saturate) {
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
  return options;
}

struct Phase {
  std::int64_t p50_ns = 0;
  std::int64_t p99_ns = 0;
  std::int64_t p999_ns = 0;
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

Phase measure_latency(const DurableConfig& config, const std::string& shm_dir,
                      const std::string& journal_dir, weft::JournalSync sync) {
  weft::ChannelOptions channel_options;
  channel_options.dir = shm_dir;
  channel_options.capacity_bytes = std::uint64_t{1} << 22;
  channel_options.record_bytes_max = std::max<std::uint64_t>(config.size_bytes, 64);
  auto producer = weft::SpscProducer::create("lat", channel_options);
  if (!producer) throw RunError(producer.error().message());
  std::vector<std::int64_t> samples;
  samples.reserve(config.latency_samples);
  const weft::DurableWait how =
      config.producer_wait == "spin" ? weft::DurableWait::kSpin : weft::DurableWait::kSleep;
  const auto stats = with_recorder(
      "lat", journal_dir, recorder_options(shm_dir, sync, config.recorder_idle == "spin", false),
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
          if (i >= warmup) samples.push_back(now_ns() - start);
        }
      });
  Phase phase;
  phase.p50_ns = percentile(samples, 0.5);
  phase.p99_ns = percentile(samples, 0.99);
  phase.p999_ns = percentile(samples, 0.999);
  phase.flushes = stats.journal.flushes;
  static_cast<void>(weft::Channel::unlink("lat", shm_dir));
  return phase;
}

Phase measure_throughput(const DurableConfig& config, const std::string& shm_dir,
                         const std::string& journal_dir, weft::JournalSync sync) {
  weft::ChannelOptions channel_options;
  channel_options.dir = shm_dir;
  channel_options.capacity_bytes = std::uint64_t{64} << 20;
  channel_options.record_bytes_max = std::max<std::uint64_t>(config.size_bytes, 64);
  auto producer = weft::SpscProducer::create("tput", channel_options);
  if (!producer) throw RunError(producer.error().message());
  Phase phase;
  std::uint64_t counted_records = 0;
  double seconds = 0;
  const auto stats = with_recorder(
      "tput", journal_dir, recorder_options(shm_dir, sync, config.recorder_idle == "spin", true),
      [&] {
        std::vector<std::byte> payload(config.size_bytes, std::byte{0x42});
        std::vector<std::uint64_t> ends;
        const std::int64_t start = now_ns();
        const auto deadline = start + static_cast<std::int64_t>(config.throughput_s * 1e9);
        // Durable position at the start of the measured window (after a short warm-up).
        const std::int64_t warm = start + static_cast<std::int64_t>(0.2e9);
        std::uint64_t start_position = 0;
        std::int64_t window_start = 0;
        std::uint64_t sent = 0;
        while (now_ns() < deadline) {
          if (producer->try_send(payload) == weft::SendStatus::kOk) {
            ++sent;
            continue;
          }
          if (window_start == 0 && now_ns() >= warm) {
            window_start = now_ns();
            start_position = weft::durable_position(producer->channel());
          }
          static_cast<void>(producer->wait(std::chrono::milliseconds(10)));
        }
        const std::int64_t end_ns = now_ns();
        const std::uint64_t end_position = weft::durable_position(producer->channel());
        if (window_start == 0) {
          window_start = start;
          start_position = 0;
        }
        seconds = static_cast<double>(end_ns - window_start) / 1e9;
        const std::uint64_t record_span = (8 + config.size_bytes + 7) / 8 * 8;
        counted_records = (end_position - start_position) / record_span;
        static_cast<void>(sent);
      });
  phase.msgs_per_s = static_cast<double>(counted_records) / seconds;
  phase.bytes_per_s = phase.msgs_per_s * static_cast<double>(config.size_bytes);
  phase.flushes = stats.journal.flushes;
  static_cast<void>(weft::Channel::unlink("tput", shm_dir));
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
                      "Seconds of saturating load per run and sync mode (default 2)");
  durable->add_option("--sync", config.sync, "fdatasync, direct or both (default both)")
      ->check(CLI::IsMember({"fdatasync", "direct", "both"}));
  durable
      ->add_option("--recorder-idle", config.recorder_idle,
                   "spin (default: poll, yielding the CPU) or sleep (futex and io_uring waits)")
      ->check(CLI::IsMember({"sleep", "spin"}));
  durable->add_option("--producer-wait", config.producer_wait, "spin (default) or sleep")
      ->check(CLI::IsMember({"spin", "sleep"}));
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
  ScratchDir disk(config.dir, "weft-durable");
  ScratchDir shm("/dev/shm", "weft-durable");
  std::vector<weft::JournalSync> modes;
  if (config.sync != "direct") modes.push_back(weft::JournalSync::kWriteFdatasync);
  if (config.sync != "fdatasync") modes.push_back(weft::JournalSync::kDirectDsync);

  struct ModeRuns {
    std::vector<double> p50, p99, p999, msgs, bytes, lat_ratio, bw_ratio;
  };
  std::vector<ModeRuns> per_mode(modes.size());
  std::vector<double> sync_p50, sync_p99, seq_bw;
  std::string seq_best;
  for (int run = 0; run < config.runs; ++run) {
    const Floor floor = measure_floor(disk.path(), config.producer_wait == "spin");
    sync_p50.push_back(static_cast<double>(floor.sync_p50_ns));
    sync_p99.push_back(static_cast<double>(floor.sync_p99_ns));
    seq_bw.push_back(floor.seq_bytes_per_s);
    seq_best = floor.seq_best;
    for (std::size_t m = 0; m < modes.size(); ++m) {
      const std::string journal_dir = fmt::format("{}/journal-{}-{}", disk.path(), run, m);
      const Phase latency = measure_latency(config, shm.path(), journal_dir + "-lat", modes[m]);
      const Phase throughput =
          measure_throughput(config, shm.path(), journal_dir + "-tput", modes[m]);
      std::filesystem::remove_all(journal_dir + "-lat");
      std::filesystem::remove_all(journal_dir + "-tput");
      ModeRuns& r = per_mode[m];
      r.p50.push_back(static_cast<double>(latency.p50_ns));
      r.p99.push_back(static_cast<double>(latency.p99_ns));
      r.p999.push_back(static_cast<double>(latency.p999_ns));
      r.msgs.push_back(throughput.msgs_per_s);
      r.bytes.push_back(throughput.bytes_per_s);
      r.lat_ratio.push_back(static_cast<double>(latency.p50_ns) /
                            static_cast<double>(floor.sync_p50_ns));
      r.bw_ratio.push_back(throughput.bytes_per_s / floor.seq_bytes_per_s);
      if (!config.json) {
        fmt::print(stderr,
                   "run {} {}: durable p50 {:.1f} us (disk write+fdatasync p50 {:.1f} us, "
                   "ratio {:.2f}); {:.0f} MB/s durable (disk best {:.0f} MB/s, ratio {:.2f})\n",
                   run + 1, weft::journal_sync_name(modes[m]),
                   static_cast<double>(latency.p50_ns) / 1e3,
                   static_cast<double>(floor.sync_p50_ns) / 1e3, r.lat_ratio.back(),
                   throughput.bytes_per_s / 1e6, floor.seq_bytes_per_s / 1e6, r.bw_ratio.back());
      }
    }
  }
  // The journal's mode for the headline figures: the faster (lower p50) of those measured.
  std::size_t best = 0;
  for (std::size_t m = 1; m < modes.size(); ++m) {
    if (spread(per_mode[m].p50).median < spread(per_mode[best].p50).median) best = m;
  }
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
  out["disk_sync_p50_ns"] = spread(sync_p50).median;
  out["disk_sync_p99_ns"] = spread(sync_p99).median;
  out["disk_seq_bytes_per_s"] = spread(seq_bw).median;
  out["disk_seq_best"] = seq_best;
  out["disk_sync_p50_ns_spread"] = spread_json(spread(sync_p50));
  out["disk_seq_bytes_per_s_spread"] = spread_json(spread(seq_bw));
  out["sync_mode"] = weft::journal_sync_name(modes[best]);
  const ModeRuns& b = per_mode[best];
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
    modes_json.push_back({{"sync_mode", weft::journal_sync_name(modes[m])},
                          {"durable_p50_ns", spread_json(spread(r.p50))},
                          {"durable_p99_ns", spread_json(spread(r.p99))},
                          {"durable_p999_ns", spread_json(spread(r.p999))},
                          {"msgs_per_s", spread_json(spread(r.msgs))},
                          {"bytes_per_s", spread_json(spread(r.bytes))},
                          {"latency_ratio", spread_json(spread(r.lat_ratio))},
                          {"bandwidth_ratio", spread_json(spread(r.bw_ratio))}});
  }
  out["modes"] = modes_json;
  if (config.json) {
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("shmem-bench durable: {} B records, journal in {}, {} runs (median [min..max])\n",
             config.size_bytes, config.dir, config.runs);
  const auto range = [](const std::vector<double>& v, double scale) {
    const Spread s = spread(v);
    return fmt::format("{:.1f} [{:.1f}..{:.1f}]", s.median / scale, s.min / scale, s.max / scale);
  };
  fmt::print(
      "  disk floor: 4 KiB write+fdatasync p50 {} us, p99 {} us; best sequential {} MB/s "
      "({})\n",
      range(sync_p50, 1e3), range(sync_p99, 1e3), range(seq_bw, 1e6), seq_best);
  for (std::size_t m = 0; m < modes.size(); ++m) {
    const ModeRuns& r = per_mode[m];
    fmt::print("  {:<18} durable p50 {} us  p99 {} us  p99.9 {} us   ratio to disk p50 {}\n",
               weft::journal_sync_name(modes[m]), range(r.p50, 1e3), range(r.p99, 1e3),
               range(r.p999, 1e3), range(r.lat_ratio, 1));
    fmt::print("  {:<18} saturating: {} MB/s, {} kmsg/s   ratio to disk best {}\n", "",
               range(r.bytes, 1e6), range(r.msgs, 1e3), range(r.bw_ratio, 1));
  }
  fmt::print(
      "  bars: durable p50 <= 1.15 x disk p50 ({}: {:.2f}); durable bytes/s >= 0.8 x disk "
      "best ({:.2f})\n",
      weft::journal_sync_name(modes[best]), spread(b.lat_ratio).median, spread(b.bw_ratio).median);
  return 0;
}

}  // namespace shmem_bench
