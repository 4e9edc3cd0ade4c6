#include "batch_sweep.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "durable.hpp"
#include "errors.hpp"
#include "histogram.hpp"
#include "peer.hpp"
#include "policy_spec.hpp"
#include "svg.hpp"
#include "weft/adaptive_policy.hpp"
#include "weft/flush_policy.hpp"
#include "weft/journal.hpp"

namespace shmem_bench {
namespace {

constexpr double kKeepUp = 0.98;      // The bar: achieved >= 0.98 x offered keeps up.
constexpr double kP99Slack = 1.1;     // The bar: adaptive p99 <= 1.1 x the best fixed one's.
constexpr double kThroughput = 0.95;  // The bar: at saturation, >= 0.95 x the best fixed one's.
// Sends at most this many due records before reaping completions again.
constexpr int kSendBurstMax = 64;
// --sender sleep: a gap to the next send longer than this is slept (or waited on the journal).
constexpr std::int64_t kSleepGapNs = 50'000;
// --sender spin: polls of the journal between yields of the CPU (a few microseconds).
constexpr std::uint64_t kPollsPerYield = 32;
// How long the journal may take to make the last records durable after the load ends.
constexpr std::int64_t kDrainLimitNs = 20'000'000'000;

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void sleep_until(std::int64_t deadline_ns) {
  timespec ts{deadline_ns / 1'000'000'000, deadline_ns % 1'000'000'000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// "1e6", "250000", "2.5M", "500k"; > 0.
double parse_rate(const std::string& text) {
  std::string t = text;
  double scale = 1;
  if (!t.empty() && (t.back() == 'k' || t.back() == 'K')) {
    scale = 1e3;
    t.pop_back();
  } else if (!t.empty() && (t.back() == 'm' || t.back() == 'M')) {
    scale = 1e6;
    t.pop_back();
  }
  char* end = nullptr;
  errno = 0;
  const double value = t.empty() ? -1 : std::strtod(t.c_str(), &end) * scale;
  if (t.empty() || end != t.c_str() + t.size() || errno != 0 || !std::isfinite(value) ||
      value <= 0 || value > 1e8) {
    throw UsageError(fmt::format(
        "--rates '{}': expected records per second above 0 and at most 1e8, as in 300, 5k or 1M",
        text));
  }
  return value;
}

// SplitMix64, for the seeded arrival schedule.
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  double exponential(double mean) {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return -mean * std::log1p(-static_cast<double>(z >> 11) * 0x1.0p-53);
  }

 private:
  std::uint64_t state_;
};

// The disk's floor right now: the p50 of kFloorSamples 4 KiB pwrite + fdatasync on a file
// written ahead, the way the journal overwrites its pre-zeroed segments.
constexpr int kFloorSamples = 40;
constexpr std::uint64_t kFloorFileBytes = std::uint64_t{1} << 20;

double measure_floor_ns(const std::string& dir) {
  const std::string path = dir + "/floor.dat";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw RunError(fmt::format("{}: {}", path, errno_text(errno)));
  std::vector<char> block(4096, 'f');
  std::vector<double> samples;
  bool ok = true;
  if (::lseek(fd, 0, SEEK_END) < static_cast<off_t>(kFloorFileBytes)) {
    for (std::uint64_t offset = 0; offset < kFloorFileBytes && ok; offset += block.size()) {
      ok = ::pwrite(fd, block.data(), block.size(), static_cast<off_t>(offset)) ==
           static_cast<ssize_t>(block.size());
    }
    ok = ok && ::fdatasync(fd) == 0;
  }
  for (int i = 0; i < kFloorSamples && ok; ++i) {
    const std::int64_t start = now_ns();
    const auto offset =
        static_cast<off_t>((static_cast<std::uint64_t>(i) * block.size()) % kFloorFileBytes);
    ok = ::pwrite(fd, block.data(), block.size(), offset) == static_cast<ssize_t>(block.size()) &&
         ::fdatasync(fd) == 0;
    samples.push_back(static_cast<double>(now_ns() - start));
  }
  const int err = errno;
  ::close(fd);
  if (!ok) throw RunError(fmt::format("{}: write + fdatasync: {}", path, errno_text(err)));
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

struct PointRun {
  double scheduled_per_s = 0;  // What the Poisson schedule offered in the window, per second.
  double achieved_per_s = 0;
  double p50_ns = 0;
  double p99_ns = 0;
  std::uint64_t unsent = 0;  // Records the sender never got to before the load ended.
  std::uint64_t flushes = 0;
  weft::FlushPolicyStats stats;
};

std::string journal_error(const weft::Error& e) { return e.message(); }

// One (policy, rate) point: a fresh journal, an open-loop load, the durable latencies.
PointRun run_point(const PolicySpec& spec, double rate, double duration_s,
                   const BatchSweepConfig& config, weft::JournalSync sync, const std::string& dir,
                   std::uint64_t seed) {
  weft::JournalOptions options;
  options.policy = make_policy(spec, config.target_ms);
  options.sync = sync;
  // Two spares ready before the load starts and retention that recycles every segment after the
  // second: no spare is written with zeros while the policies are measured (at 300k records/s a
  // segment fills every 0.7 s, and zeroing the next one beside the flushes would be measured as
  // their latency).
  options.spare_segments = 2;
  options.retain_bytes = 2 * options.segment_bytes;
  auto opened = weft::Journal::open(dir, std::move(options));
  if (!opened) throw RunError(journal_error(opened.error()));
  weft::Journal journal = std::move(*opened);

  const auto duration_ns = static_cast<std::int64_t>(duration_s * 1e9);
  const auto warmup_ns = static_cast<std::int64_t>(config.warmup_s * 1e9);
  std::vector<std::byte> payload(config.size_bytes, std::byte{0x5a});
  // The whole arrival schedule, drawn before the load starts (the sender's own cost is not the
  // journal's: drawn as it went, the draws took a sixth of the appending thread at saturation):
  // intended send times as offsets from the start, by sequence - first_sequence.
  std::vector<std::int64_t> schedule;
  schedule.reserve(static_cast<std::size_t>(rate * duration_s * 1.1) + 1024);
  {
    Random random(seed);
    const double mean_gap_ns = 1e9 / rate;
    for (double t = random.exponential(mean_gap_ns); t < static_cast<double>(duration_ns);
         t += random.exponential(mean_gap_ns)) {
      schedule.push_back(static_cast<std::int64_t>(t));
    }
  }
  const std::uint64_t first_sequence = journal.next_sequence();
  std::uint64_t durable_seen = journal.durable_sequence();

  const std::int64_t start_ns = now_ns() + 1'000'000;
  const std::int64_t measure_from_ns = start_ns + warmup_ns;
  const std::int64_t end_ns = start_ns + duration_ns;
  std::size_t next = 0;  // The next record of the schedule to send.
  const auto send_time = [&](std::size_t i) { return start_ns + schedule[i]; };
  Histogram latencies;
  std::uint64_t durable_in_window = 0;
  std::uint64_t scheduled_in_window = 0;

  const auto collect = [&] {
    const std::uint64_t durable = journal.durable_sequence();
    if (durable <= durable_seen) return;
    const std::int64_t seen_ns = now_ns();
    for (std::uint64_t s = durable_seen + 1; s <= durable; ++s) {
      const std::int64_t sent_ns = send_time(s - first_sequence);
      if (sent_ns >= measure_from_ns && sent_ns < end_ns) {
        latencies.record(static_cast<std::uint64_t>(std::max<std::int64_t>(0, seen_ns - sent_ns)));
      }
    }
    if (seen_ns >= measure_from_ns && seen_ns < end_ns) durable_in_window += durable - durable_seen;
    durable_seen = durable;
  };

  const bool spin = config.sender == "spin";
  std::uint64_t idle_polls = 0;
  sleep_until(start_ns);
  for (;;) {
    const std::int64_t now = now_ns();
    if (now >= end_ns || next == schedule.size()) break;
    int sent = 0;
    while (next < schedule.size() && send_time(next) <= now && sent < kSendBurstMax) {
      auto appended = journal.append(payload);
      if (!appended) throw RunError(journal_error(appended.error()));
      if (send_time(next) >= measure_from_ns) ++scheduled_in_window;
      ++next;
      ++sent;
    }
    if (auto polled = journal.poll(); !polled) throw RunError(journal_error(polled.error()));
    collect();
    if (next == schedule.size()) break;
    const std::int64_t gap_ns = send_time(next) - now_ns();
    if (spin) {
      // Poll until the next send, handing the CPU over for a moment now and then: the kernel
      // threads that complete the flushes may be queued behind this one.
      if (gap_ns > 0 && ++idle_polls % kPollsPerYield == 0) std::this_thread::yield();
    } else if (gap_ns > kSleepGapNs) {
      // Block on the journal (a completion or the policy's recheck time wakes it), or sleep
      // when it has nothing in flight and nothing pending.
      const std::int64_t wake_ns = send_time(next) - kSleepGapNs / 2;
      if (journal.in_flight() != 0 || journal.pending_bytes() != 0) {
        auto waited = journal.wait(std::chrono::nanoseconds(wake_ns - now_ns()));
        if (!waited) throw RunError(journal_error(waited.error()));
      } else {
        sleep_until(wake_ns);
      }
      collect();
    }
  }
  // Records the schedule meant to send before the end but the sender never reached: they count
  // as waiting until now, at least (a lower bound of their latency).
  PointRun out;
  const std::int64_t stop_ns = now_ns();
  // The policy's estimates and choices as the load ends (the drain that follows has no arrivals).
  out.stats = journal.stats().policy;
  for (; next < schedule.size(); ++next) {
    const std::int64_t sent_ns = send_time(next);
    if (sent_ns >= measure_from_ns) {
      latencies.record(static_cast<std::uint64_t>(std::max<std::int64_t>(0, stop_ns - sent_ns)));
    }
    ++out.unsent;
    if (sent_ns >= measure_from_ns) ++scheduled_in_window;
  }
  // Drain: the policy still decides; the loop only waits for what was sent to become durable.
  const std::uint64_t last = journal.next_sequence() - 1;
  while (durable_seen < last) {
    if (now_ns() - stop_ns > kDrainLimitNs) {
      throw RunError(
          fmt::format("policy {} at {:.0f}/s: records still not durable {} s after the "
                      "load ended",
                      spec.name, rate, kDrainLimitNs / 1'000'000'000));
    }
    auto waited = journal.wait(std::chrono::milliseconds(10));
    if (!waited) throw RunError(journal_error(waited.error()));
    collect();
  }
  const auto window_ns = static_cast<double>(end_ns - measure_from_ns);
  out.achieved_per_s = static_cast<double>(durable_in_window) * 1e9 / window_ns;
  out.scheduled_per_s = static_cast<double>(scheduled_in_window) * 1e9 / window_ns;
  out.p50_ns = static_cast<double>(latencies.value_at_percentile(50));
  out.p99_ns = static_cast<double>(latencies.value_at_percentile(99));
  out.flushes = journal.stats().flushes;
  return out;
}

struct Spread {
  double median = 0, min = 0, max = 0;
};

Spread spread_of(std::vector<double> values) {
  Spread s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.median = values.size() % 2 == 1
                 ? values[values.size() / 2]
                 : (values[values.size() / 2 - 1] + values[values.size() / 2]) / 2;
  s.min = values.front();
  s.max = values.back();
  return s;
}

struct Point {
  std::string policy;
  double offered = 0;
  Spread achieved, p50, p99;
  Spread scheduled;
  bool keeps_up = false;      // Median over runs of achieved >= 0.98 x what the schedule offered.
  std::uint64_t unsent = 0;   // Summed over runs.
  std::uint64_t flushes = 0;  // Summed over runs.
  weft::FlushPolicyStats last_stats;
  bool fixed = false;
};

std::string ns_text(double ns) {
  if (ns >= 1e9) return fmt::format("{:.2f} s", ns / 1e9);
  if (ns >= 1e6) return fmt::format("{:.2f} ms", ns / 1e6);
  if (ns >= 1e3) return fmt::format("{:.0f} us", ns / 1e3);
  return fmt::format("{:.0f} ns", ns);
}

std::string rate_text(double r) {
  if (r >= 1e6) return fmt::format("{:.2f}M", r / 1e6);
  if (r >= 1e3) return fmt::format("{:.1f}k", r / 1e3);
  return fmt::format("{:.0f}", r);
}

void write_file(const std::string& dir, const std::string& name, const std::string& text,
                std::vector<std::string>* written) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    throw RunError(fmt::format("--plot {}: cannot create the directory: {}", dir, ec.message()));
  }
  const std::string path = (std::filesystem::path(dir) / name).string();
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw RunError(fmt::format("cannot write {}: {}", path, errno_text(errno)));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) throw RunError(fmt::format("writing {} failed", path));
  written->push_back(path);
}

}  // namespace

CLI::App* add_batch_sweep_subcommand(CLI::App& app, BatchSweepConfig& config) {
  CLI::App* sweep = app.add_subcommand(
      "batch-sweep",
      "Flush policies on a real journal: open-loop load at fixed offered rates, durable latency "
      "from the intended send time, adaptive against fixed ones and natural batching");
  sweep->add_option("--dir", config.dir,
                    "Directory for the journals, on the disk to measure (default /tmp)");
  sweep
      ->add_option("--rates", config.rates,
                   "Offered records/s (default 300,1k,3k,10k,30k,100k,300k,1M,3M,10M)")
      ->delimiter(',');
  sweep
      ->add_option("--policies", config.policies,
                   "adaptive[-x<in flight>][-w<io-wq workers, 0: no cap>], natural, every, "
                   "fixed-<bytes>-<delay>[-x<in flight>]; a name with a tag (natural#2) runs that "
                   "policy again as a control (default adaptive,natural,natural#2,every,every#2,"
                   "fixed-16KiB-200us,fixed-32KiB-100us-x4,fixed-64KiB-1ms,fixed-256KiB-2ms-x4)")
      ->delimiter(',');
  sweep->add_option("--duration", config.duration_s,
                    "Seconds of offered load per point (default 1.5), longer at low rates to "
                    "measure --min-records");
  sweep->add_option("--min-records", config.min_records,
                    "Records measured per point at least (after the warm-up), so that a p99 is "
                    "not one of a handful of samples: low rates run longer, up to "
                    "10 x --duration (default 3000)");
  sweep->add_option("--warmup", config.warmup_s,
                    "Leading seconds of each point left out of the figures (default 0.3)");
  sweep->add_option("--size", config.size_bytes, "Payload bytes per record (default 256)");
  sweep->add_option("--runs", config.runs, "Runs; medians and spread reported (default 3)");
  sweep->add_option("--target-ms", config.target_ms,
                    "The adaptive policy's commit-to-durable p99 target, ms (default 2)");
  sweep
      ->add_option("--sync", config.sync,
                   "auto (default: the mode the journal picks on this file system, "
                   "O_DIRECT|O_DSYNC where it takes direct writes), fdatasync or direct")
      ->check(CLI::IsMember({"auto", "fdatasync", "direct"}));
  sweep->add_option("--seed", config.seed, "Seed of the arrival schedule (default 1)");
  sweep
      ->add_option("--sender", config.sender,
                   "spin (default: the appending thread polls the journal until the next send, "
                   "yielding now and then) or sleep (it blocks on the journal or sleeps; then a "
                   "virtual CPU's wake-up latency is measured too)")
      ->check(CLI::IsMember({"spin", "sleep"}));
  sweep->add_flag("--json", config.json, "Print a JSON array, one object per (policy, rate)");
  sweep->add_option("--plot", config.plot_dir, "Write SVG charts into this directory")
      ->type_name("DIR");
  return sweep;
}

int run_batch_sweep(const BatchSweepConfig& config) {
  if (config.size_bytes == 0 || config.size_bytes > (std::uint64_t{512} << 10)) {
    throw UsageError(fmt::format("--size {}: expected 1 to 524288 bytes", config.size_bytes));
  }
  if (config.runs < 1 || config.runs > 100) {
    throw UsageError(fmt::format("--runs {}: expected 1 to 100", config.runs));
  }
  if (!(config.duration_s >= 0.2 && config.duration_s <= 600)) {
    throw UsageError(fmt::format("--duration {}: expected 0.2 to 600 seconds", config.duration_s));
  }
  if (!(config.warmup_s >= 0 && config.warmup_s < config.duration_s * 0.8)) {
    throw UsageError(fmt::format("--warmup {}: expected 0 up to 80% of --duration ({} s)",
                                 config.warmup_s, config.duration_s));
  }
  if (!(config.target_ms > 0 && config.target_ms <= 60'000)) {
    throw UsageError(
        fmt::format("--target-ms {}: expected above 0, at most 60000", config.target_ms));
  }
  std::vector<double> rates;
  for (const std::string& r : config.rates.empty()
                                  ? std::vector<std::string>{"300", "1k", "3k", "10k", "30k",
                                                             "100k", "300k", "1M", "3M", "10M"}
                                  : config.rates) {
    rates.push_back(parse_rate(r));
  }
  std::sort(rates.begin(), rates.end());
  std::vector<PolicySpec> specs;
  for (const std::string& p :
       config.policies.empty()
           // Two controls: natural batching run again (what two runs of one policy differ by),
           // and a fixed policy run again (where it is the best fixed one, what the bar's test
           // gives a copy of the policy it compares with).
           ? std::vector<std::string>{"adaptive", "natural", "natural#2", "every", "every#2",
                                      "fixed-16KiB-200us", "fixed-32KiB-100us-x4",
                                      "fixed-64KiB-1ms", "fixed-256KiB-2ms-x4"}
           : config.policies) {
    specs.push_back(parse_policy(p, "--policies"));
  }
  // repeats[p]: for a control, the index of the policy it runs again.
  std::vector<std::optional<std::size_t>> repeats(specs.size());
  for (std::size_t p = 0; p < specs.size(); ++p) {
    for (std::size_t q = 0; q < specs.size(); ++q) {
      if (q < p && specs[q].name == specs[p].name) {
        throw UsageError(fmt::format(
            "--policies names {} twice: to run a policy again as a control, tag it, as in {}#2",
            specs[p].name, specs[p].name));
      }
      if (!specs[p].control_of.empty() && specs[q].name == specs[p].control_of) repeats[p] = q;
    }
    if (!specs[p].control_of.empty() && !repeats[p]) {
      throw UsageError(fmt::format(
          "--policies {}: a control repeats a policy of the sweep, and {} is not in the list",
          specs[p].name, specs[p].control_of));
    }
  }
  // Intended-time bookkeeping holds 8 bytes per record of the schedule.
  if (rates.back() * config.duration_s > 2e8) {
    throw UsageError(fmt::format("--rates {} x --duration {}: more than 2e8 records per point",
                                 rates.back(), config.duration_s));
  }
  // Low rates run long enough for --min-records measured records, within 10 x --duration.
  const auto point_seconds = [&](double rate) {
    return std::min(10 * config.duration_s,
                    std::max(config.duration_s,
                             config.warmup_s + static_cast<double>(config.min_records) / rate));
  };
  ScratchDir scratch(config.dir, "weft-batch-sweep");
  // Every point runs in one mode: the one named, or the one the library picks in --dir.
  const weft::JournalSync sync = config.sync == "direct"      ? weft::JournalSync::kDirectDsync
                                 : config.sync == "fdatasync" ? weft::JournalSync::kWriteFdatasync
                                                              : default_sync_mode(scratch.path());
  const std::string sync_name = weft::journal_sync_name(sync);
  if (sync == weft::JournalSync::kNone) {
    std::fprintf(stderr,
                 "batch-sweep: %s is on tmpfs, where the journal does not sync: the latencies are "
                 "memory's, not a disk's (give --dir on the disk to measure)\n",
                 config.dir.c_str());
  }
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);  // Sleep to the microsecond, not 50 us late.

  // runs[policy][rate] -> the runs' results.
  std::vector<std::vector<std::vector<PointRun>>> results(
      specs.size(), std::vector<std::vector<PointRun>>(rates.size()));
  std::uint64_t point = 0;
  std::vector<std::vector<double>> floor_runs(rates.size());
  for (int run = 0; run < config.runs; ++run) {
    for (std::size_t r = 0; r < rates.size(); ++r) {
      floor_runs[r].push_back(measure_floor_ns(scratch.path()));
      // The order turns by one policy each run, so that none always goes first after the probe.
      for (std::size_t i = 0; i < specs.size(); ++i) {
        const std::size_t p = (i + static_cast<std::size_t>(run)) % specs.size();
        const std::string dir = fmt::format("{}/p{}", scratch.path(), point++);
        std::filesystem::create_directories(dir);
        if (!config.json) {
          std::fprintf(stderr, "\r[run %d/%d] %-24s at %10s/s   ", run + 1, config.runs,
                       specs[p].name.c_str(), rate_text(rates[r]).c_str());
        }
        // The same schedule for every policy at a rate within a run. Each point on a thread of
        // its own: the kernel's io-wq worker pool belongs to the thread that submits, not to the
        // ring, and outlives a burst by about 5 s, so on one thread a policy would run with the
        // workers that the policy before it started (and pay for them: docs/batcher.md).
        std::optional<PointRun> outcome;
        std::exception_ptr failure;
        std::thread runner([&] {
          try {
            outcome = run_point(specs[p], rates[r], point_seconds(rates[r]), config, sync, dir,
                                config.seed + static_cast<std::uint64_t>(run) * 1000 + r);
          } catch (...) {
            failure = std::current_exception();
          }
        });
        runner.join();
        if (failure) std::rethrow_exception(failure);
        results[p][r].push_back(*outcome);
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
      }
    }
  }
  if (!config.json) std::fprintf(stderr, "\r%70s\r", "");

  std::vector<Spread> floors;
  floors.reserve(floor_runs.size());
  for (const auto& f : floor_runs) floors.push_back(spread_of(f));
  std::vector<Point> points;
  for (std::size_t p = 0; p < specs.size(); ++p) {
    for (std::size_t r = 0; r < rates.size(); ++r) {
      Point pt;
      pt.policy = specs[p].name;
      pt.offered = rates[r];
      pt.fixed = specs[p].fixed;
      std::vector<double> a, p50, p99, scheduled, kept;
      for (const PointRun& run : results[p][r]) {
        a.push_back(run.achieved_per_s);
        scheduled.push_back(run.scheduled_per_s);
        kept.push_back(run.achieved_per_s / std::max(1e-9, run.scheduled_per_s));
        p50.push_back(run.p50_ns);
        p99.push_back(run.p99_ns);
        pt.unsent += run.unsent;
        pt.flushes += run.flushes;
        pt.last_stats = run.stats;
      }
      pt.achieved = spread_of(a);
      pt.p50 = spread_of(p50);
      pt.p99 = spread_of(p99);
      pt.scheduled = spread_of(scheduled);
      pt.keeps_up = spread_of(kept).median >= kKeepUp;
      points.push_back(pt);
    }
  }
  const auto at = [&](std::size_t p, std::size_t r) -> const Point& {
    return points[p * rates.size() + r];
  };
  // Policy a's figure over policy b's, run by run at rate r: median and range over the runs.
  const auto same_run_ratios = [&](std::size_t a, std::size_t b, std::size_t r, auto figure) {
    std::vector<double> ratios;
    for (std::size_t k = 0; k < results[a][r].size() && k < results[b][r].size(); ++k) {
      ratios.push_back(figure(results[a][r][k]) / std::max(1e-9, figure(results[b][r][k])));
    }
    return spread_of(std::move(ratios));
  };

  // The bar: per rate, the best fixed policy (by median p99) among those that keep up, and the
  // adaptive policy's p99 over its p99 in the same run (the VM drifts between fast and slow
  // regimes within seconds: only a ratio taken in one run compares like with like), median over
  // the runs.
  struct Verdict {
    std::string best_fixed;
    std::size_t best_fixed_index = 0;
    double best_fixed_p99 = 0;
    Spread p99_ratio;  // Same-run ratios, adaptive / best fixed.
    bool any_fixed_keeps_up = false;
    bool adaptive_keeps_up = false;
    bool p99_ok = true;
  };
  const auto p99_of = [](const PointRun& run) { return run.p99_ns; };
  std::optional<std::size_t> adaptive_index, natural_index;
  // The bar judges the first adaptive policy named (others, as adaptive-x1, are for comparison).
  for (std::size_t p = 0; p < specs.size(); ++p) {
    if (repeats[p]) continue;  // A control is never a contender of the bar.
    if (specs[p].adaptive && !adaptive_index) adaptive_index = p;
    if (specs[p].natural && !natural_index) natural_index = p;
  }
  // The bar's p99 test for policy p at rate r against the best fixed policy of `v` (which must
  // have one): its same-run ratio, and whether it keeps up with the ratio within kP99Slack.
  struct P99Bar {
    Spread ratio;
    bool met = false;
  };
  const auto p99_bar = [&](std::size_t p, std::size_t r, const Verdict& v) {
    P99Bar bar;
    bar.ratio = same_run_ratios(p, v.best_fixed_index, r, p99_of);
    bar.met = at(p, r).keeps_up && bar.ratio.median <= kP99Slack;
    return bar;
  };
  std::vector<Verdict> verdicts(rates.size());
  bool bar_met = adaptive_index.has_value();
  for (std::size_t r = 0; r < rates.size(); ++r) {
    Verdict& v = verdicts[r];
    for (std::size_t p = 0; p < specs.size(); ++p) {
      const Point& pt = at(p, r);
      if (!pt.fixed || !pt.keeps_up || repeats[p]) continue;
      if (!v.any_fixed_keeps_up || pt.p99.median < v.best_fixed_p99) {
        v.best_fixed = pt.policy;
        v.best_fixed_index = p;
        v.best_fixed_p99 = pt.p99.median;
      }
      v.any_fixed_keeps_up = true;
    }
    if (adaptive_index) {
      const Point& a = at(*adaptive_index, r);
      v.adaptive_keeps_up = a.keeps_up;
      if (v.any_fixed_keeps_up) {
        const P99Bar bar = p99_bar(*adaptive_index, r, v);
        v.p99_ratio = bar.ratio;
        v.p99_ok = bar.met;
        bar_met = bar_met && v.p99_ok;
      }
    }
  }
  // Saturation: the highest offered rate; same-run ratios again.
  const std::size_t top = rates.size() - 1;
  double best_fixed_throughput = 0;
  std::size_t best_throughput_index = 0;
  std::string best_throughput_policy;
  for (std::size_t p = 0; p < specs.size(); ++p) {
    if (specs[p].fixed && !repeats[p] && at(p, top).achieved.median > best_fixed_throughput) {
      best_fixed_throughput = at(p, top).achieved.median;
      best_throughput_index = p;
      best_throughput_policy = specs[p].name;
    }
  }
  bool saturation_throughput_ok = false, beats_natural = false;
  Spread saturation_ratio, natural_throughput_ratio, natural_p99_ratio;
  const auto achieved_of = [](const PointRun& run) { return run.achieved_per_s; };
  if (adaptive_index) {
    if (best_fixed_throughput > 0) {
      saturation_ratio = same_run_ratios(*adaptive_index, best_throughput_index, top, achieved_of);
    }
    saturation_throughput_ok = saturation_ratio.median >= kThroughput;
    if (natural_index) {
      natural_throughput_ratio = same_run_ratios(*adaptive_index, *natural_index, top, achieved_of);
      natural_p99_ratio = same_run_ratios(*adaptive_index, *natural_index, top, p99_of);
      beats_natural = natural_throughput_ratio.median > 1.0 || natural_p99_ratio.median < 1.0;
    }
    bar_met = bar_met && saturation_throughput_ok && (!natural_index || beats_natural);
  }

  // Controls: a policy run again under a tagged name. Its same-run p99 ratio to the policy it
  // repeats is what two runs of one policy differ by here: the resolution of every ratio above.
  const auto control_ratio = [&](std::size_t p, std::size_t r) {
    return same_run_ratios(p, *repeats[p], r, p99_of);
  };

  if (config.json) {
    nlohmann::json out = nlohmann::json::array();
    for (std::size_t p = 0; p < specs.size(); ++p) {
      for (std::size_t r = 0; r < rates.size(); ++r) {
        const Point& pt = at(p, r);
        nlohmann::json o = {
            {"policy", pt.policy},
            {"offered_per_s", pt.offered},
            {"achieved_per_s", pt.achieved.median},
            {"durable_p50_ns", pt.p50.median},
            {"durable_p99_ns", pt.p99.median},
            {"achieved_per_s_min", pt.achieved.min},
            {"achieved_per_s_max", pt.achieved.max},
            {"durable_p99_ns_min", pt.p99.min},
            {"durable_p99_ns_max", pt.p99.max},
            {"runs", config.runs},
            {"duration_s", point_seconds(pt.offered)},
            {"record_bytes", config.size_bytes},
            {"sync", sync_name},
            {"flushes", pt.flushes},
            {"unsent", pt.unsent},
            {"scheduled_per_s", pt.scheduled.median},
            {"keeps_up", pt.keeps_up},
            {"disk_fdatasync_p50_ns", floors[r].median},
        };
        // Run by run (same order for every policy), for same-run ratios of your own.
        nlohmann::json p99_runs = nlohmann::json::array(), achieved_runs = nlohmann::json::array();
        nlohmann::json flushes_runs = nlohmann::json::array(), slots_runs = nlohmann::json::array();
        for (const PointRun& run : results[p][r]) {
          p99_runs.push_back(run.p99_ns);
          achieved_runs.push_back(run.achieved_per_s);
          flushes_runs.push_back(run.flushes);
          slots_runs.push_back(run.stats.max_in_flight);
        }
        o["durable_p99_ns_runs"] = std::move(p99_runs);
        o["achieved_per_s_runs"] = std::move(achieved_runs);
        o["flushes_runs"] = std::move(flushes_runs);
        // The adaptive policy's slot verdict as each run's load ended.
        if (specs[p].adaptive) o["max_in_flight_runs"] = std::move(slots_runs);
        if (repeats[p]) {
          const Spread ratio = control_ratio(p, r);
          o["control_of"] = specs[p].control_of;
          o["p99_over_control_of_same_run"] = {
              {"median", ratio.median}, {"min", ratio.min}, {"max", ratio.max}};
        }
        if (specs[p].adaptive) {
          const weft::FlushPolicyStats& s = pt.last_stats;
          o["target_p99_ns"] = config.target_ms * 1e6;
          o["policy_stats"] = {{"arrival_records_per_s", s.arrival_records_per_s},
                               {"arrival_bytes_per_s", s.arrival_bytes_per_s},
                               {"flush_fixed_ns", s.flush_fixed_ns},
                               {"flush_ns_per_byte", s.flush_ns_per_byte},
                               {"flush_cost_spread_ns", s.flush_cost_spread_ns},
                               {"gather_bytes", s.gather_bytes},
                               {"max_delay_ns", s.max_delay_ns},
                               {"max_in_flight", s.max_in_flight},
                               {"max_io_workers", s.max_io_workers}};
        }
        if (specs[p].adaptive || repeats[p]) {
          // Each adaptive policy against the same best fixed one (the verdict above is the first
          // adaptive policy's); and each control, by the same test: a policy run again that
          // misses it shows the bar finer than this machine resolves.
          const Verdict& v = verdicts[r];
          o["best_fixed"] = v.best_fixed;
          o["best_fixed_p99_ns"] = v.best_fixed_p99;
          bool p99_ok = true;
          if (v.any_fixed_keeps_up) {  // Otherwise there is nothing to divide by.
            const P99Bar bar = p99_bar(p, r, v);
            o["p99_over_best_fixed_same_run"] = {
                {"median", bar.ratio.median}, {"min", bar.ratio.min}, {"max", bar.ratio.max}};
            p99_ok = bar.met;
          }
          o["bar_p99_met"] = p99_ok;
        }
        out.push_back(std::move(o));
      }
    }
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf(
        "batch-sweep: %s, %llu-byte records, %s, %d run(s) of %.1f s per point (%.1f s at "
        "%s/s, for %llu records; first %.1f s left out), sender %s; medians [min-max]\n",
        config.dir.c_str(), static_cast<unsigned long long>(config.size_bytes), sync_name.c_str(),
        config.runs, config.duration_s, point_seconds(rates.front()),
        rate_text(rates.front()).c_str(), static_cast<unsigned long long>(config.min_records),
        config.warmup_s, config.sender.c_str());
    std::printf("%-22s %10s %22s %24s %26s\n", "policy", "offered/s", "achieved/s", "durable p50",
                "durable p99");
    for (std::size_t r = 0; r < rates.size(); ++r) {
      for (std::size_t p = 0; p < specs.size(); ++p) {
        const Point& pt = at(p, r);
        const std::string achieved =
            fmt::format("{} [{}-{}]", rate_text(pt.achieved.median), rate_text(pt.achieved.min),
                        rate_text(pt.achieved.max));
        const std::string p50 = fmt::format("{} [{}-{}]", ns_text(pt.p50.median),
                                            ns_text(pt.p50.min), ns_text(pt.p50.max));
        const std::string p99 = fmt::format("{} [{}-{}]", ns_text(pt.p99.median),
                                            ns_text(pt.p99.min), ns_text(pt.p99.max));
        std::printf("%-22s %10s %22s %24s %26s%s\n", pt.policy.c_str(),
                    rate_text(pt.offered).c_str(), achieved.c_str(), p50.c_str(), p99.c_str(),
                    pt.keeps_up ? "" : "  (falls behind)");
      }
      std::printf(
          "%-22s disk floor: 4 KiB write + fdatasync p50 %s [%s-%s], probed before each "
          "run's points at this rate\n\n",
          "", ns_text(floors[r].median).c_str(), ns_text(floors[r].min).c_str(),
          ns_text(floors[r].max).c_str());
    }
    if (adaptive_index) {
      std::printf(
          "The bar: adaptive against the best fixed policy that keeps up (by median p99): its p99 "
          "over that policy's in the same run, median [min-max] over the runs; and the ratio of "
          "the medians\n");
      for (std::size_t r = 0; r < rates.size(); ++r) {
        const Verdict& v = verdicts[r];
        const Point& a = at(*adaptive_index, r);
        if (!v.any_fixed_keeps_up) {
          std::printf("  %10s/s: no fixed policy keeps up; adaptive %s\n",
                      rate_text(rates[r]).c_str(), v.adaptive_keeps_up ? "does" : "does not");
          continue;
        }
        std::printf(
            "  %10s/s: best fixed %-22s p99 %10s; adaptive p99 %10s: same run %.2fx [%.2f-%.2f], "
            "medians %.2fx%s  %s\n",
            rate_text(rates[r]).c_str(), v.best_fixed.c_str(), ns_text(v.best_fixed_p99).c_str(),
            ns_text(a.p99.median).c_str(), v.p99_ratio.median, v.p99_ratio.min, v.p99_ratio.max,
            a.p99.median / v.best_fixed_p99, v.adaptive_keeps_up ? "" : ", falls behind",
            v.p99_ok ? "ok" : "MISSED");
      }
      const Point& a = at(*adaptive_index, top);
      std::printf(
          "  saturation (%s/s): adaptive %s/s, best fixed %s %s/s: same run %.2fx [%.2f-%.2f], "
          "medians %.2fx  %s\n",
          rate_text(rates[top]).c_str(), rate_text(a.achieved.median).c_str(),
          best_throughput_policy.c_str(), rate_text(best_fixed_throughput).c_str(),
          saturation_ratio.median, saturation_ratio.min, saturation_ratio.max,
          best_fixed_throughput > 0 ? a.achieved.median / best_fixed_throughput : 0.0,
          saturation_throughput_ok ? "ok" : "MISSED");
      if (natural_index) {
        const Point& n = at(*natural_index, top);
        std::printf(
            "  saturation: adaptive %s/s p99 %s; natural %s/s p99 %s; same run: throughput "
            "%.2fx [%.2f-%.2f], p99 %.2fx [%.2f-%.2f]  %s\n",
            rate_text(a.achieved.median).c_str(), ns_text(a.p99.median).c_str(),
            rate_text(n.achieved.median).c_str(), ns_text(n.p99.median).c_str(),
            natural_throughput_ratio.median, natural_throughput_ratio.min,
            natural_throughput_ratio.max, natural_p99_ratio.median, natural_p99_ratio.min,
            natural_p99_ratio.max,
            beats_natural ? "ok (beats natural)" : "MISSED (does not beat natural)");
      }
      std::printf("  bar %s\n", bar_met ? "met" : "NOT met");
    }
    for (std::size_t p = 0; p < specs.size(); ++p) {
      if (!repeats[p]) continue;
      std::printf(
          "Control: %s is %s run again; its p99 over %s's in the same run, median [min-max] over "
          "the runs (what two runs of one policy differ by here), and the bar's test applied to "
          "it (its p99 over the best fixed policy's; a fixed policy run again that misses it "
          "shows the bar finer than this machine resolves):\n",
          specs[p].name.c_str(), specs[p].control_of.c_str(), specs[p].control_of.c_str());
      int as_best = 0, met_as_best = 0;  // Rates where the policy it repeats is the best fixed.
      for (std::size_t r = 0; r < rates.size(); ++r) {
        const Spread ratio = control_ratio(p, r);
        std::printf("  %10s/s: %.2fx [%.2f-%.2f]", rate_text(rates[r]).c_str(), ratio.median,
                    ratio.min, ratio.max);
        const Verdict& v = verdicts[r];
        if (v.any_fixed_keeps_up) {
          const P99Bar bar = p99_bar(p, r, v);
          std::printf("; over best fixed %s %.2fx [%.2f-%.2f]  %s", v.best_fixed.c_str(),
                      bar.ratio.median, bar.ratio.min, bar.ratio.max, bar.met ? "ok" : "MISSED");
          if (v.best_fixed_index == *repeats[p]) {
            ++as_best;
            met_as_best += bar.met ? 1 : 0;
          }
        }
        std::printf("\n");
      }
      if (as_best != 0) {
        std::printf(
            "  where %s was the best fixed policy (%d rate(s)), the same policy run again met the "
            "bar's test at %d\n",
            specs[p].control_of.c_str(), as_best, met_as_best);
      }
    }
  }

  if (!config.plot_dir.empty()) {
    svg::LineChart p99;
    p99.title = "Durable p99 against offered load, per flush policy";
    p99.subtitle = fmt::format(
        "{}-byte records on a journal ({}), open loop, latency from the intended send time; "
        "median of {} run(s); adaptive target {} ms",
        config.size_bytes, sync_name, config.runs, config.target_ms);
    p99.footer = config.dir;
    p99.x.label = "offered load (records per second)";
    p99.x.unit = svg::Unit::kRate;
    p99.y.label = "commit-to-durable p99";
    p99.y.unit = svg::Unit::kNanoseconds;
    svg::LineChart throughput = p99;
    throughput.title = "Achieved throughput against offered load, per flush policy";
    throughput.y.label = "records made durable per second";
    throughput.y.unit = svg::Unit::kRate;
    for (std::size_t p = 0; p < specs.size(); ++p) {
      svg::Series latency_line{specs[p].name, svg::palette(p), {}, specs[p].fixed, true, false};
      svg::Series rate_line = latency_line;
      for (std::size_t r = 0; r < rates.size(); ++r) {
        latency_line.points.emplace_back(rates[r], at(p, r).p99.median);
        rate_line.points.emplace_back(rates[r], at(p, r).achieved.median);
      }
      p99.series.push_back(std::move(latency_line));
      throughput.series.push_back(std::move(rate_line));
    }
    throughput.series.push_back(
        svg::Series{"achieved = offered",
                    "#9aa5b1",
                    {{rates.front(), rates.front()}, {rates.back(), rates.back()}},
                    true,
                    false,
                    false});
    std::vector<std::string> written;
    write_file(config.plot_dir, "batch_sweep_p99.svg", svg::render(p99), &written);
    write_file(config.plot_dir, "batch_sweep_throughput.svg", svg::render(throughput), &written);
    if (!config.json) {
      for (const std::string& path : written) std::printf("wrote %s\n", path.c_str());
    }
  }
  return 0;
}

}  // namespace shmem_bench
