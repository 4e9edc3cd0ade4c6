// shmem-bench: what weft's shared-memory channels do on this machine, measured between real
// processes and reported beside same-run baselines (DESIGN.md, decision 10).
//
//   shmem-bench                           the default suite, one summary table (about a minute)
//   shmem-bench latency --kind mpsc       ping-pong RTT percentiles vs the cache-line floor & SPSC
//   shmem-bench throughput --producers 2  streaming rate vs memcpy, SPSC and MPSC-1
//   shmem-bench throughput --consumers 2 --lossy
//   shmem-bench latency --rate 1e6        open loop: one-way latency from the intended send time
//   shmem-bench recovery --timeout-ms 200 how long a dead MPSC producer blocks the consumer
//   shmem-bench compare                   weft SPSC beside a pipe, a Unix socket, mq and TCP
//   shmem-bench sweep --csv out.csv       producers x offered rate x size grid
//   shmem-bench durable --dir /var/tmp    producer -> recorder -> disk vs the disk's own floor
//   shmem-bench batch-sweep --plot charts flush policies on a journal, open loop, rate ladder
//
// Exit status: 0 success, 1 the run failed (system call, channel, child process), 2 bad usage.
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "batch_sweep.hpp"
#include "compare.hpp"
#include "durable.hpp"
#include "endpoint.hpp"
#include "env_info.hpp"
#include "errors.hpp"
#include "floor.hpp"
#include "huge_bench.hpp"
#include "kinds_bench.hpp"
#include "open_loop.hpp"
#include "peer.hpp"
#include "plots.hpp"
#include "progress.hpp"
#include "recovery.hpp"
#include "report.hpp"
#include "suite.hpp"
#include "sweep.hpp"
#include "timebase.hpp"
#include "weft/numa.hpp"

namespace shmem_bench {
namespace {

constexpr std::uint64_t kLatencyWarmup = 10'000;
constexpr std::uint64_t kCapacityBytesMin = 4096;
constexpr std::uint64_t kCapacityBytesMax = std::uint64_t{1} << 34;  // 16 GiB of shared memory.

struct Options {
  std::string cpus;
  bool json = false;
  std::string clock = "tsc";
  int runs = 0;           // 0: the subcommand's default.
  double duration_s = 0;  // 0: the subcommand's default.
  std::uint64_t messages = 0;
  std::uint64_t size = 0;      // 0: the subcommand's default.
  std::uint64_t capacity = 0;  // 0: the subcommand's default.
  std::uint64_t batch = 256;
  bool copy = false;
  std::string touch = "all";
  std::string kind;
  std::uint32_t producers = 1;
  std::uint32_t consumers = 1;
  std::uint32_t producers_max = 0;
  std::uint32_t consumers_max = 0;
  bool lossy = false;
  std::string rate;
  std::string plot_dir;
  std::vector<std::string> sizes;           // compare, sweep
  std::vector<std::string> transports;      // compare
  std::vector<std::string> producers_list;  // sweep
  std::vector<std::string> rates;           // sweep
  std::string csv;                          // sweep
  std::uint64_t timeout_ms = 200;           // recovery
  std::string scenario = "both";            // recovery
  std::string consumer_idle = "both";       // recovery
  std::string live_rate = "2e5";            // recovery
  int node = -1;                            // --node: channels' NUMA node
  bool huge = false;                        // throughput --huge
  bool reserve_huge = false;                // throughput --reserve-huge
};

std::vector<int> parse_cpus(const std::string& text) {
  std::vector<int> cpus;
  const auto fail = [&] {
    throw UsageError(fmt::format(
        "--cpus '{}': expected two or more CPU numbers, as in --cpus 0,1 (side A, side B, then "
        "CPUs for extra processes)",
        text));
  };
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = text.substr(start, comma - start);
    std::size_t used = 0;
    int value = -1;
    try {
      value = std::stoi(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != part.size() || part.empty() || value < 0) fail();
    cpus.push_back(value);
    start = comma + 1;
  }
  if (cpus.size() < 2) fail();
  return cpus;
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
  std::size_t used = 0;
  double value = -1;
  try {
    value = std::stod(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != t.size() || t.empty() || !std::isfinite(value)) {
    throw UsageError(
        fmt::format("--rate '{}': expected messages per second, as in 1e6 or 500k", text));
  }
  value *= scale;
  if (value <= 0) {
    throw UsageError(fmt::format(
        "--rate {}: the offered rate must be above 0 messages per second (leave --rate out for "
        "closed-loop runs)",
        text));
  }
  if (value > 1e9) {
    throw UsageError(
        fmt::format("--rate {}: above 10^9 messages per second is not a schedule", text));
  }
  return value;
}

// "64", "1K", "64KiB", "1M" -> bytes; > 0.
std::uint64_t parse_size(const std::string& text, const char* flag) {
  std::string t = text;
  std::uint64_t scale = 1;
  for (const auto& [suffix, factor] : {std::pair<const char*, std::uint64_t>{"KiB", 1024},
                                       {"MiB", 1 << 20},
                                       {"K", 1024},
                                       {"k", 1024},
                                       {"M", 1 << 20}}) {
    const std::string sfx = suffix;
    if (t.size() > sfx.size() && t.compare(t.size() - sfx.size(), sfx.size(), sfx) == 0) {
      t.resize(t.size() - sfx.size());
      scale = factor;
      break;
    }
  }
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != t.size() || t.empty() || t[0] == '-') {
    throw UsageError(
        fmt::format("{} '{}': expected a byte count, as in 64, 1K or 64KiB", flag, text));
  }
  if (value == 0) throw UsageError(fmt::format("{} 0: records must carry at least one byte", flag));
  return value * scale;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    parts.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return parts;
}

std::vector<std::uint64_t> parse_sizes(const std::vector<std::string>& items, const char* flag) {
  std::vector<std::uint64_t> sizes;
  for (const std::string& item : items) {
    for (const std::string& part : split_list(item)) sizes.push_back(parse_size(part, flag));
  }
  return sizes;
}

void validate_common(const Options& o, std::uint64_t capacity) {
  if (o.runs < 0) throw UsageError(fmt::format("--runs {}: at least one run is needed", o.runs));
  if (o.duration_s < 0 || o.duration_s > 3600) {
    throw UsageError(fmt::format("--duration {}: expected seconds in (0, 3600]", o.duration_s));
  }
  if (capacity < kCapacityBytesMin || capacity > kCapacityBytesMax ||
      (capacity & (capacity - 1)) != 0) {
    throw UsageError(fmt::format("--capacity {}: expected a power of two from {} to {}", capacity,
                                 format_bytes(kCapacityBytesMin), format_bytes(kCapacityBytesMax)));
  }
  if (o.batch == 0) throw UsageError("--batch 0: poll at least one record per call");
}

PhaseLimits make_limits(const Options& o, double default_duration_s, const Timebase& clock) {
  PhaseLimits limits;
  limits.messages = o.messages;
  limits.duration_s = o.duration_s > 0 ? o.duration_s : default_duration_s;
  limits.duration_ticks = o.messages != 0 ? 0 : clock.ticks_from_ns(limits.duration_s * 1e9);
  // Waits on the child: the phase itself plus a generous margin; unbounded message counts get
  // ten minutes.
  limits.timeout_s = o.messages != 0 ? 600.0 : limits.duration_s * 4 + 30;
  return limits;
}

void write_file(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    throw RunError(fmt::format("cannot write {}: {}", path, errno_text(errno)));
  }
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) throw RunError(fmt::format("writing {} failed", path));
}

// Prints a result as JSON or as a table, after writing its charts when --plot asks for them.
template <class Result, class Plot, class Table>
void emit(const Options& o, const Result& result, const ReportContext& context, Plot&& plot_fn,
          Table&& table) {
  std::vector<std::string> charts;
  if (!o.plot_dir.empty()) charts = plot_fn(result);
  if (o.json) {
    nlohmann::json j = to_json(result, context);
    if (!charts.empty()) j["charts"] = charts;
    fmt::print("{}\n", j.dump(2));
    return;
  }
  table(result);
  if (!charts.empty()) {
    fmt::print("\ncharts: {}\n", fmt::join(charts, ", "));
  }
}

// A short floor phase, for figures that only need the floor as a reference point.
PhaseLimits short_floor_limits(const Timebase& clock) {
  PhaseLimits limits;
  limits.warmup = 1000;
  limits.duration_s = 0.02;
  limits.duration_ticks = clock.ticks_from_ns(limits.duration_s * 1e9);
  limits.timeout_s = 30;
  return limits;
}

// The kind a command line asks for: --kind, else what --producers/--consumers/--lossy imply.
EndpointSpec resolve_spec(const Options& o, bool producers_given, bool consumers_given) {
  EndpointSpec spec;
  if (o.kind == "spsc") {
    spec.transport = Transport::kSpsc;
  } else if (o.kind == "mpsc") {
    spec.transport = Transport::kMpsc;
  } else if (o.kind == "broadcast") {
    spec.transport = Transport::kBroadcast;
  } else if (producers_given && consumers_given && o.producers > 1 && o.consumers > 1) {
    throw UsageError(fmt::format(
        "--producers {} with --consumers {}: no channel kind has several producers and several "
        "consumers (MPSC: many producers, broadcast: many consumers)",
        o.producers, o.consumers));
  } else if (producers_given && !(consumers_given && o.consumers > 1)) {
    spec.transport = Transport::kMpsc;
  } else if (consumers_given || o.lossy) {
    spec.transport = Transport::kBroadcast;
  }
  spec.producers = o.producers;
  spec.consumers = o.consumers;
  spec.lossy = o.lossy;
  if (o.producers_max != 0 && spec.transport != Transport::kMpsc) {
    throw UsageError("--producers-max applies to MPSC channels only");
  }
  if (o.consumers_max != 0 && spec.transport != Transport::kBroadcast) {
    throw UsageError("--consumers-max applies to broadcast channels only");
  }
  spec.slots_max = spec.transport == Transport::kMpsc ? o.producers_max : o.consumers_max;
  spec.batch = o.batch;
  spec.copy = o.copy;
  spec.touch_all = o.touch == "all";
  spec.numa_node = o.node;
  return spec;
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "shmem-bench: weft shared-memory channels between pinned processes, measured beside "
      "same-run baselines (cache-line ping-pong floor, memcpy bandwidth, SPSC, kernel IPC). With "
      "no subcommand it runs the default suite."};
  app.require_subcommand(0, 1);
  const auto add_common = [&](CLI::App* a) {
    a->add_option("--cpus", o.cpus,
                  "CPUs: side A (parent) and side B (child), then CPUs for extra processes")
        ->type_name("A,B[,C...]");
    a->add_flag("--json", o.json, "Print JSON instead of a table");
    a->add_option("--runs", o.runs, "Runs, each measuring its baselines then weft (default 5)");
    a->add_option("--clock", o.clock, "Time source: tsc (rdtsc, calibrated) or monotonic")
        ->check(CLI::IsMember({"tsc", "monotonic"}));
    a->add_option("--capacity", o.capacity, "Channel ring bytes, a power of two");
    a->add_option("--plot", o.plot_dir, "Write SVG charts into this directory")->type_name("DIR");
    a->add_option("--node", o.node, "Place the channels' memory on this NUMA node (verified)")
        ->type_name("N");
  };
  const auto add_kind = [&](CLI::App* a) {
    a->add_option("--kind", o.kind, "Channel kind: spsc, mpsc or broadcast")
        ->check(CLI::IsMember({"spsc", "mpsc", "broadcast"}));
    a->add_option("--producers-max", o.producers_max,
                  "MPSC: the channel's producer slots (default: --producers)");
    a->add_option("--consumers-max", o.consumers_max,
                  "Broadcast: the channel's consumer slots (default: --consumers)");
    a->add_flag("--lossy", o.lossy, "Broadcast: the lossy flavour (the producer never waits)");
  };
  add_common(&app);
  app.add_option("--duration", o.duration_s,
                 "Seconds per measured phase of the suite (default 0.2; the suite takes about "
                 "240 phases with --runs 5)");

  CLI::App* latency = app.add_subcommand(
      "latency", "Ping-pong round-trip time over a channel kind vs the cache-line floor and SPSC");
  add_common(latency);
  add_kind(latency);
  auto* lat_size = latency->add_option("--size", o.size, "Payload bytes per message (default 64)");
  auto* lat_messages =
      latency->add_option("--messages", o.messages, "Round trips per phase, after 10k warm-up");
  latency->add_option("--duration", o.duration_s, "Seconds per phase (default 0.5)")
      ->excludes(lat_messages);
  auto* lat_producers =
      latency->add_option("--producers", o.producers, "With --rate: MPSC producer processes");
  auto* lat_consumers =
      latency->add_option("--consumers", o.consumers, "With --rate: broadcast consumer processes");
  latency->add_option("--rate", o.rate,
                      "Open loop: offered messages/s; one-way latency from the intended send time");

  CLI::App* throughput = app.add_subcommand(
      "throughput", "Streaming rate of a channel kind vs memcpy bandwidth and SPSC");
  add_common(throughput);
  add_kind(throughput);
  auto* tput_size =
      throughput->add_option("--size", o.size, "Payload bytes per record (default 32)");
  auto* tput_messages =
      throughput->add_option("--messages", o.messages, "Records per phase, after the warm-up");
  throughput->add_option("--duration", o.duration_s, "Seconds per phase (default 0.5)")
      ->excludes(tput_messages);
  throughput->add_option("--batch", o.batch, "Records per poll() call at most (default 256)");
  throughput->add_flag("--copy", o.copy, "Producer uses try_send (copy) instead of try_claim");
  throughput->add_option("--touch", o.touch, "Consumer reads 'all' payload bytes or the 'first' 8")
      ->check(CLI::IsMember({"all", "first"}));
  auto* tput_producers = throughput->add_option(
      "--producers", o.producers, "MPSC: producer processes (1 allowed: MPSC-1 beside SPSC)");
  auto* tput_consumers =
      throughput->add_option("--consumers", o.consumers, "Broadcast: consumer processes");
  throughput->add_option("--rate", o.rate, "Open loop: offered messages/s (see latency --rate)");
  throughput->add_flag("--huge", o.huge,
                       "Compare 4 KiB and 2 MiB pages in one run: create+prefault time and "
                       "streaming rate (default --capacity 1G, --size 64K, --runs 5)");
  throughput->add_flag("--reserve-huge", o.reserve_huge,
                       "With --huge: mount a private hugetlbfs and raise vm.nr_hugepages for the "
                       "run when needed (root; restored after)");

  CLI::App* compare = app.add_subcommand(
      "compare", "weft SPSC beside a pipe, a Unix socket, POSIX mq and TCP: RTT and msgs/s");
  add_common(compare);
  compare->add_option("--size", o.sizes, "Payload sizes (default 64,1K,64K)")
      ->delimiter(',')
      ->type_name("LIST");
  compare
      ->add_option("--transports", o.transports,
                   "Transports besides weft: pipe, unix, mq, tcp (default all)")
      ->delimiter(',')
      ->type_name("LIST");
  compare->add_option("--duration", o.duration_s, "Seconds per phase (default 0.1)");

  CLI::App* sweep =
      app.add_subcommand("sweep",
                         "Grid of producers x offered rate x size: open-loop latency percentiles, "
                         "throughput and back pressure per cell");
  add_common(sweep);
  sweep
      ->add_option("--producers", o.producers_list,
                   "Producer counts (default 1,2); 1 uses SPSC, more use MPSC")
      ->delimiter(',')
      ->type_name("LIST");
  sweep
      ->add_option("--rate", o.rates,
                   "Offered rates, messages/s, all producers together; 'max' = closed loop "
                   "(default 1e5,1e6,5e6,max)")
      ->delimiter(',')
      ->type_name("LIST");
  sweep->add_option("--size", o.sizes, "Payload sizes (default 64,1K)")
      ->delimiter(',')
      ->type_name("LIST");
  sweep->add_option("--csv", o.csv, "Also write the grid as CSV to FILE ('-': stdout, no table)")
      ->type_name("FILE");
  sweep->add_option("--duration", o.duration_s, "Seconds per cell and run (default 0.2)");

  CLI::App* recovery = app.add_subcommand(
      "recovery",
      "How long a SIGKILLed MPSC producer blocks the consumer (bar: unblock_timeout "
      "+ 100 ms)");
  add_common(recovery);
  recovery->add_option("--timeout-ms", o.timeout_ms,
                       "The channel's unblock_timeout in milliseconds (default 200)");
  recovery
      ->add_option("--scenario", o.scenario,
                   "claim (killed between try_claim and commit), stream (killed mid-stream) "
                   "or both (default)")
      ->check(CLI::IsMember({"claim", "stream", "both"}));
  recovery
      ->add_option("--consumer", o.consumer_idle,
                   "How the consumer idles: spin, block (MpscConsumer::wait) or both (default)")
      ->check(CLI::IsMember({"spin", "block", "both"}));
  auto* recovery_size =
      recovery->add_option("--size", o.size, "Payload bytes per record (default 64)");
  recovery->add_option("--live-rate", o.live_rate, "Messages/s each producer sends (default 2e5)");

  DurableConfig durable_config;
  CLI::App* durable = add_durable_subcommand(app, durable_config);
  BatchSweepConfig batch_sweep_config;
  CLI::App* batch_sweep = add_batch_sweep_subcommand(app, batch_sweep_config);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    fmt::print(stderr,
               "shmem-bench: {}; the subcommands are latency, throughput, recovery, compare, "
               "sweep, durable and batch-sweep (see --help)\n",
               e.what());
    return kExitUsage;
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  if (durable->parsed()) return run_durable(durable_config);
  if (batch_sweep->parsed()) return run_batch_sweep(batch_sweep_config);

  if (o.size == 0 &&
      (lat_size->count() != 0 || tput_size->count() != 0 || recovery_size->count() != 0)) {
    throw UsageError("--size 0: records must carry at least one byte");
  }
  const bool is_latency = latency->parsed();
  const bool is_throughput = throughput->parsed();
  const bool is_compare = compare->parsed();
  const bool is_sweep = sweep->parsed();
  const bool is_recovery = recovery->parsed();
  std::optional<std::vector<int>> cpus;
  if (!o.cpus.empty()) cpus = parse_cpus(o.cpus);
  if (o.node != -1) {
    if (auto ok = weft::check_numa_node(o.node); !ok) {
      throw UsageError(fmt::format("--node {}: {}", o.node, ok.error().detail));
    }
  }
  if (o.reserve_huge && !o.huge) throw UsageError("--reserve-huge goes with throughput --huge");
  if (o.node != -1 && !is_latency && !is_throughput) {
    throw UsageError("--node applies to the latency and throughput subcommands");
  }
  if (is_throughput && o.huge) {
    HugeBenchConfig c;
    if (o.capacity != 0) c.capacity_bytes = o.capacity;
    if (o.size != 0) c.size_bytes = o.size;
    if (o.runs != 0) c.runs = o.runs;
    if (o.duration_s > 0) c.duration_s = o.duration_s;
    c.node = o.node;
    c.reserve = o.reserve_huge;
    if (!std::has_single_bit(c.capacity_bytes) || c.capacity_bytes < (std::uint64_t{1} << 21) ||
        c.capacity_bytes > kCapacityBytesMax) {
      throw UsageError(
          fmt::format("--capacity {}: --huge needs a power of two from 2 MiB to {} bytes",
                      c.capacity_bytes, kCapacityBytesMax));
    }
    if (c.size_bytes < 8 || c.size_bytes > c.capacity_bytes / 4) {
      throw UsageError(fmt::format("--size {}: expected 8 to {} bytes (capacity / 4)", c.size_bytes,
                                   c.capacity_bytes / 4));
    }
    const Placement placement = choose_placement(cpus);
    const EnvInfo env = EnvInfo::collect();
    const Timebase clock = Timebase::calibrate(o.clock == "tsc");
    const HugeBenchResult r = run_huge_bench(c, placement);
    if (o.json) {
      nlohmann::json j = huge_json(r);
      j["env"] = env_json(env, placement, clock);
      fmt::print("{}\n", j.dump(2));
    } else {
      print_huge_table(r, env_lines(env, placement, clock));
    }
    return 0;
  }

  std::uint64_t default_capacity = std::uint64_t{4} << 20;
  std::uint64_t default_size = 64;
  double default_duration_s = 0.5;
  if (is_latency) {
    default_capacity = std::uint64_t{1} << 16;
  } else if (is_throughput) {
    default_size = 32;
  }
  const std::uint64_t size = o.size != 0 ? o.size : default_size;
  std::uint64_t capacity = o.capacity != 0 ? o.capacity : default_capacity;
  validate_common(o, capacity);
  const bool is_suite = !is_latency && !is_throughput && !is_compare && !is_sweep && !is_recovery;
  const int runs = o.runs != 0 ? o.runs : (is_compare || is_sweep ? 3 : 5);
  if (is_suite && o.capacity != 0 && 65536 > o.capacity / 4) {
    throw UsageError(fmt::format(
        "--capacity {}: the suite's largest record (64 KiB) needs a ring of at least 256 KiB",
        o.capacity));
  }

  RecoveryConfig recovery_config;
  if (is_recovery) {
    if (o.timeout_ms == 0 || o.timeout_ms > 600'000) {
      throw UsageError(
          fmt::format("--timeout-ms {}: expected 1 to 600000 milliseconds", o.timeout_ms));
    }
    recovery_config.timeout_ns = o.timeout_ms * 1'000'000;
    recovery_config.runs = runs;
    recovery_config.size_bytes = o.size != 0 ? o.size : 64;
    recovery_config.capacity_bytes = o.capacity != 0 ? o.capacity : std::uint64_t{1} << 20;
    validate_common(o, recovery_config.capacity_bytes);
    if (recovery_config.size_bytes < 8 ||
        recovery_config.size_bytes > recovery_config.capacity_bytes / 4) {
      throw UsageError(fmt::format(
          "--size {}: recovery records carry an 8-byte sequence word and must fit the ring "
          "(8 to {} bytes for --capacity {})",
          recovery_config.size_bytes, recovery_config.capacity_bytes / 4,
          recovery_config.capacity_bytes));
    }
    recovery_config.live_rate_per_s = parse_rate(o.live_rate);
    if (o.scenario != "both") {
      recovery_config.scenarios = {o.scenario == "claim" ? RecoveryScenario::kClaim
                                                         : RecoveryScenario::kStream};
    }
    if (o.consumer_idle != "both") {
      recovery_config.idles = {o.consumer_idle == "spin" ? ConsumerIdle::kSpin
                                                         : ConsumerIdle::kBlock};
    }
  }

  SweepConfig sweep_config;
  if (is_sweep) {
    for (const std::string& item :
         o.producers_list.empty() ? std::vector<std::string>{"1", "2"} : o.producers_list) {
      std::size_t used = 0;
      long value = 0;
      try {
        value = std::stol(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != item.size() || item.empty() || value < 1 || value > kWorkersMax + 1) {
        throw UsageError(fmt::format(
            "--producers '{}': expected producer counts from 1 to {}, as in --producers 1,2,4",
            item, kWorkersMax + 1));
      }
      sweep_config.producers.push_back(static_cast<std::uint32_t>(value));
    }
    for (const std::string& item :
         o.rates.empty() ? std::vector<std::string>{"1e5", "1e6", "5e6", "max"} : o.rates) {
      sweep_config.rates.push_back(item == "max" ? 0 : parse_rate(item));
    }
    sweep_config.sizes =
        o.sizes.empty() ? std::vector<std::uint64_t>{64, 1024} : parse_sizes(o.sizes, "--size");
    sweep_config.capacity_bytes = o.capacity != 0 ? o.capacity : std::uint64_t{1} << 20;
    validate_common(o, sweep_config.capacity_bytes);
    for (const std::uint64_t sz : sweep_config.sizes) {
      if (sz < 8) {
        throw UsageError(fmt::format(
            "--size {}: sweep messages carry their 8-byte send time; use sizes of 8 or more", sz));
      }
      for (const std::uint32_t p : sweep_config.producers) {
        EndpointSpec spec;
        spec.transport = p > 1 ? Transport::kMpsc : Transport::kSpsc;
        spec.producers = p;
        spec.size_bytes = sz;
        spec.capacity_bytes = sweep_config.capacity_bytes;
        validate_spec(spec);
      }
    }
    sweep_config.runs = runs;
  }

  CompareConfig compare_config;
  if (is_compare) {
    compare_config.sizes = o.sizes.empty() ? std::vector<std::uint64_t>{64, 1024, 65536}
                                           : parse_sizes(o.sizes, "--size");
    compare_config.transports = {Transport::kSpsc};
    const std::vector<std::string> names =
        o.transports.empty() ? std::vector<std::string>{"pipe", "unix", "mq", "tcp"} : o.transports;
    for (const std::string& name : names) {
      const Transport t = name == "pipe"   ? Transport::kPipe
                          : name == "unix" ? Transport::kUnix
                          : name == "mq"   ? Transport::kMq
                          : name == "tcp"  ? Transport::kTcp
                                           : Transport::kSpsc;
      if (t == Transport::kSpsc) {
        throw UsageError(fmt::format(
            "--transports: '{}' is not one of pipe, unix, mq, tcp (weft SPSC is always measured)",
            name));
      }
      compare_config.transports.push_back(t);
    }
    for (const std::uint64_t sz : compare_config.sizes) {
      if (sz > (std::uint64_t{16} << 20)) {
        throw UsageError(fmt::format("--size {}: compare handles messages up to 16 MiB", sz));
      }
    }
    compare_config.runs = runs;
  }

  EndpointSpec spec;
  if (is_latency || is_throughput) {
    const bool producers_given = (is_latency ? lat_producers : tput_producers)->count() != 0;
    const bool consumers_given = (is_latency ? lat_consumers : tput_consumers)->count() != 0;
    spec = resolve_spec(o, producers_given, consumers_given);
    spec.size_bytes = size;
    spec.capacity_bytes = capacity;
    if (is_latency && o.rate.empty() && (spec.producers > 1 || spec.consumers > 1)) {
      throw UsageError(
          "latency: ping-pong takes one producer and one consumer per direction; use --rate for "
          "open-loop latency with several producers or consumers, or throughput");
    }
    validate_spec(spec);
  }
  const double rate = o.rate.empty() ? 0 : parse_rate(o.rate);
  if (rate > 0 && spec.size_bytes < 8) {
    throw UsageError(fmt::format(
        "--size {} with --rate: open-loop messages carry their 8-byte send time; use --size 8 or "
        "more",
        spec.size_bytes));
  }

  const Placement placement = choose_placement(cpus);
  const EnvInfo env = EnvInfo::collect();
  const Timebase clock = Timebase::calibrate(o.clock == "tsc");
  const ReportContext context{&env, &placement, &clock};

  ScratchDir dir;
  Peer peer(placement, [clock](Command command, ChildContext& child) {
    if (command == Command::kFloorEcho) {
      floor_echo(child.control);
    } else if (command == Command::kRecoveryProduce) {
      recovery_child(child, clock);
    } else {
      endpoint_child(command, child, clock);
    }
  });
  BenchContext bench(peer, dir.path(), clock, placement);
  const PlotContext plots{o.plot_dir, &clock, env_summary(env, placement)};
  Progress progress(!o.json);

  PhaseLimits limits = make_limits(o, default_duration_s, clock);
  if (is_recovery) {
    progress.set_total(recovery_phases(recovery_config));
    const RecoveryResult r = run_recovery(recovery_config, bench, progress);
    progress.clear();
    emit(
        o, r, context, [&](const auto& x) { return plot(x, plots); },
        [&](const auto& x) { print_table(stdout, x, context); });
    return 0;
  }
  if (is_sweep) {
    sweep_config.limits.duration_s = o.duration_s > 0 ? o.duration_s : 0.2;
    sweep_config.limits.warmup_s = 0.03;
    sweep_config.limits.timeout_s = limits.timeout_s;
    sweep_config.floor_limits = short_floor_limits(clock);
    progress.set_total(sweep_phases(sweep_config));
    const SweepResult r = run_sweep(sweep_config, bench, progress);
    progress.clear();
    const bool csv_stdout = o.csv == "-";
    // The CSV names where it was measured in '#' lines first (pandas: comment='#').
    const std::string csv =
        fmt::format("# shmem-bench sweep: {}\n", env_summary(env, placement)) + to_csv(r, clock);
    if (!o.csv.empty() && !csv_stdout) write_file(o.csv, csv);
    if (csv_stdout) {
      if (!o.plot_dir.empty()) (void)plot(r, plots);
      fmt::print("{}", csv);
      return 0;
    }
    emit(
        o, r, context, [&](const auto& x) { return plot(x, plots); },
        [&](const auto& x) { print_table(stdout, x, context); });
    return 0;
  }
  if (is_compare) {
    const double phase_s = o.duration_s > 0 ? o.duration_s : 0.1;
    compare_config.ping_limits = make_limits(o, phase_s, clock);
    compare_config.ping_limits.warmup = 2000;
    compare_config.ping_limits.warmup_ticks_max = clock.ticks_from_ns(20e6);
    compare_config.stream_limits = make_limits(o, phase_s, clock);
    compare_config.floor_limits = short_floor_limits(clock);
    progress.set_total(compare_phases(compare_config));
    const CompareResult r = run_compare(compare_config, bench, progress);
    progress.clear();
    emit(
        o, r, context, [&](const auto& x) { return plot(x, plots); },
        [&](const auto& x) { print_table(stdout, x, context, true); });
    return 0;
  }
  if ((is_latency || is_throughput) && rate > 0) {
    OpenLoopConfig c;
    c.spec = spec;
    c.runs = runs;
    c.limits.rate_per_s = rate;
    c.limits.duration_s = limits.duration_s;
    c.limits.timeout_s = limits.timeout_s;
    c.floor_limits = short_floor_limits(clock);
    progress.set_total(open_loop_phases(c));
    const OpenLoopResult r = run_open_loop(c, bench, progress);
    progress.clear();
    emit(
        o, r, context, [&](const auto& x) { return plot(x, plots); },
        [&](const auto& x) { print_table(stdout, x, context); });
    return 0;
  }
  if (is_latency) {
    LatencyConfig c;
    c.spec = spec;
    c.runs = runs;
    c.limits = limits;
    c.limits.warmup = kLatencyWarmup;
    c.limits.warmup_ticks_max = clock.ticks_from_ns(50e6);
    progress.set_total(latency_phases(c));
    const LatencyResult r = run_latency(c, bench, progress);
    progress.clear();
    emit(
        o, r, context, [&](const auto& x) { return plot(x, plots); },
        [&](const auto& x) { print_table(stdout, x, context); });
    return 0;
  }
  if (is_throughput) {
    ThroughputConfig c;
    c.spec = spec;
    c.runs = runs;
    c.limits = limits;
    progress.set_total(throughput_phases(c));
    const ThroughputResult r = run_throughput(c, bench, progress);
    progress.clear();
    emit(
        o, r, context, [&](const auto& x) { return plot(x, plots); },
        [&](const auto& x) { print_table(stdout, x, context); });
    return 0;
  }

  // The default suite.
  SuiteConfig c;
  c.runs = runs;
  c.capacity_bytes = o.capacity;
  const double phase_s = o.duration_s > 0 ? o.duration_s : 0.2;
  c.ping_limits = make_limits(o, phase_s, clock);
  c.ping_limits.warmup = 2000;
  c.ping_limits.warmup_ticks_max = clock.ticks_from_ns(20e6);
  c.stream_limits = make_limits(o, phase_s, clock);
  c.memcpy_limits = make_limits(o, phase_s / 2, clock);
  c.floor_limits = make_limits(o, phase_s / 2, clock);
  c.floor_limits.warmup = 1000;
  progress.set_total(suite_phases(c));
  const SuiteResult r = run_suite(c, bench, progress);
  progress.clear();
  std::vector<std::string> charts;
  if (!o.plot_dir.empty()) charts = plot(r, plots);
  if (o.json) {
    nlohmann::json j = suite_json(r, context);
    if (!charts.empty()) j["charts"] = charts;
    fmt::print("{}\n", j.dump(2));
  } else {
    print_suite_table(stdout, r, context);
    if (!charts.empty()) fmt::print("\ncharts: {}\n", fmt::join(charts, ", "));
  }
  return 0;
}

}  // namespace
}  // namespace shmem_bench

int main(int argc, char** argv) {
  try {
    return shmem_bench::run(argc, argv);
  } catch (const shmem_bench::UsageError& e) {
    std::fprintf(stderr, "shmem-bench: %s\n", e.what());
    return shmem_bench::kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmem-bench: %s\n", e.what());
    return shmem_bench::kExitRunError;
  }
}
