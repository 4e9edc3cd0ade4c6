// shmem-bench: what weft's shared-memory channels do on this machine, measured between two real
// processes and reported beside same-run baselines (DESIGN.md, decision 10).
//
//   shmem-bench                      the default suite, one summary table
//   shmem-bench latency --size 64    ping-pong RTT percentiles vs the cache-line floor
//   shmem-bench throughput --size 32 streaming rate vs memcpy bandwidth
//
// Exit status: 0 success, 1 the run failed (system call, channel, child process), 2 bad usage.
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "env_info.hpp"
#include "errors.hpp"
#include "floor.hpp"
#include "peer.hpp"
#include "report.hpp"
#include "spsc_bench.hpp"
#include "timebase.hpp"

namespace shmem_bench {
namespace {

constexpr std::uint64_t kLatencyWarmup = 10'000;
constexpr std::uint64_t kCapacityBytesMin = 4096;
constexpr std::uint64_t kCapacityBytesMax = std::uint64_t{1} << 34;  // 16 GiB of shared memory.

struct Options {
  std::string cpus;
  bool json = false;
  std::string clock = "tsc";
  int runs = 5;
  double duration_s = 0;  // 0: the subcommand's default.
  std::uint64_t messages = 0;
  std::uint64_t size = 0;      // 0: the subcommand's default.
  std::uint64_t capacity = 0;  // 0: the subcommand's default.
  std::uint64_t batch = 256;
  bool copy = false;
  std::string touch = "all";
};

std::optional<std::pair<int, int>> parse_cpus(const std::string& text) {
  if (text.empty()) return std::nullopt;
  const auto comma = text.find(',');
  const auto parse_one = [&](const std::string& part) {
    std::size_t used = 0;
    int value = -1;
    try {
      value = std::stoi(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != part.size() || part.empty() || value < 0) {
      throw UsageError(
          fmt::format("--cpus '{}': expected two CPU numbers, as in --cpus 0,1", text));
    }
    return value;
  };
  if (comma == std::string::npos) {
    throw UsageError(fmt::format("--cpus '{}': expected two CPU numbers, as in --cpus 0,1", text));
  }
  return std::make_pair(parse_one(text.substr(0, comma)), parse_one(text.substr(comma + 1)));
}

void validate_common(const Options& o, std::uint64_t size, std::uint64_t capacity) {
  if (o.runs < 1) throw UsageError(fmt::format("--runs {}: at least one run is needed", o.runs));
  if (o.duration_s < 0 || o.duration_s > 3600) {
    throw UsageError(fmt::format("--duration {}: expected seconds in (0, 3600]", o.duration_s));
  }
  if (capacity < kCapacityBytesMin || capacity > kCapacityBytesMax ||
      (capacity & (capacity - 1)) != 0) {
    throw UsageError(fmt::format("--capacity {}: expected a power of two from {} to {}", capacity,
                                 format_bytes(kCapacityBytesMin), format_bytes(kCapacityBytesMax)));
  }
  if (size == 0) throw UsageError("--size 0: records must carry at least one byte");
  // weft's default record_bytes_max is a quarter of the ring.
  if (size > capacity / 4) {
    throw UsageError(fmt::format(
        "--size {} exceeds the channel's record_bytes_max {} (capacity / 4 for --capacity {}): "
        "raise --capacity to at least {}",
        size, capacity / 4, capacity, std::bit_ceil(size * 4)));
  }
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

void progress(const std::string& text) {
  if (isatty(STDERR_FILENO) != 0) fmt::print(stderr, "shmem-bench: {}...\n", text);
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "shmem-bench: weft shared-memory channels between two pinned processes, measured beside "
      "same-run baselines (cache-line ping-pong floor, memcpy bandwidth). With no subcommand it "
      "runs the default suite."};
  app.require_subcommand(0, 1);
  const auto add_common = [&](CLI::App* a) {
    a->add_option("--cpus", o.cpus, "The two CPUs, side A (parent) and side B (child): A,B")
        ->type_name("A,B");
    a->add_flag("--json", o.json, "Print JSON instead of a table");
    a->add_option("--runs", o.runs, "Runs, each measuring its baseline then weft (default 5)");
    a->add_option("--clock", o.clock, "Time source: tsc (rdtsc, calibrated) or monotonic")
        ->check(CLI::IsMember({"tsc", "monotonic"}));
    a->add_option("--capacity", o.capacity, "Channel ring bytes, a power of two");
  };
  add_common(&app);
  app.add_option("--duration", o.duration_s, "Seconds per measured phase (default 0.25)");

  CLI::App* latency = app.add_subcommand(
      "latency", "Ping-pong round-trip time over two SPSC channels vs the cache-line floor");
  add_common(latency);
  latency->add_option("--size", o.size, "Payload bytes per message (default 64)");
  auto* lat_messages =
      latency->add_option("--messages", o.messages, "Round trips per phase, after 10k warm-up");
  latency->add_option("--duration", o.duration_s, "Seconds per phase (default 0.5)")
      ->excludes(lat_messages);

  CLI::App* throughput = app.add_subcommand(
      "throughput", "Streaming rate of one SPSC channel vs memcpy bandwidth for the same size");
  add_common(throughput);
  throughput->add_option("--size", o.size, "Payload bytes per record (default 32)");
  auto* tput_messages =
      throughput->add_option("--messages", o.messages, "Records per phase, after the warm-up");
  throughput->add_option("--duration", o.duration_s, "Seconds per phase (default 0.5)")
      ->excludes(tput_messages);
  throughput->add_option("--batch", o.batch, "Records per poll() call at most (default 256)");
  throughput->add_flag("--copy", o.copy, "Producer uses try_send (copy) instead of try_claim");
  throughput->add_option("--touch", o.touch, "Consumer reads 'all' payload bytes or the 'first' 8")
      ->check(CLI::IsMember({"all", "first"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    fmt::print(stderr,
               "shmem-bench: {}; the subcommands are 'latency' and 'throughput' (see --help)\n",
               e.what());
    return kExitUsage;
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  const auto placement_choice = parse_cpus(o.cpus);
  if (o.batch == 0) throw UsageError("--batch 0: poll at least one record per call");

  const bool is_latency = latency->parsed();
  const bool is_throughput = throughput->parsed();
  const bool is_suite = !is_latency && !is_throughput;
  std::uint64_t default_capacity = 0;
  std::uint64_t default_size = 0;
  double default_duration_s = 0.5;
  if (is_latency) {
    default_capacity = std::uint64_t{1} << 16;
    default_size = 64;
  } else if (is_throughput) {
    default_capacity = std::uint64_t{4} << 20;
    default_size = 32;
  } else {
    default_capacity = std::uint64_t{4} << 20;
    default_size = 64;
    default_duration_s = 0.25;
  }
  const std::uint64_t size = o.size != 0 ? o.size : default_size;
  const std::uint64_t capacity = o.capacity != 0 ? o.capacity : default_capacity;
  if (is_suite) {
    // The suite's largest record must fit the ring it uses.
    validate_common(o, 65536, o.capacity != 0 ? o.capacity : default_capacity);
  } else {
    validate_common(o, size, capacity);
  }

  const Placement placement = choose_placement(placement_choice);
  const EnvInfo env = EnvInfo::collect();
  const Timebase clock = Timebase::calibrate(o.clock == "tsc");
  const ReportContext context{&env, &placement, &clock};

  ScratchDir dir;
  Peer peer(placement, [clock](Command command, Control& control) {
    if (command == Command::kFloorEcho) {
      floor_echo(control);
    } else {
      spsc_child(command, control, clock);
    }
  });

  const PhaseLimits limits = make_limits(o, default_duration_s, clock);
  const auto latency_config = [&](std::uint64_t bytes, std::uint64_t ring) {
    LatencyConfig c;
    c.size_bytes = bytes;
    c.capacity_bytes = ring;
    c.runs = o.runs;
    c.limits = limits;
    c.limits.warmup = kLatencyWarmup;
    return c;
  };
  const auto throughput_config = [&](std::uint64_t bytes, std::uint64_t ring) {
    ThroughputConfig c;
    c.size_bytes = bytes;
    c.capacity_bytes = ring;
    c.runs = o.runs;
    c.limits = limits;
    c.batch = o.batch;
    c.copy = o.copy;
    c.touch_all = o.touch == "all";
    return c;
  };

  if (is_latency) {
    progress(fmt::format("latency, {} payload", format_bytes(size)));
    const LatencyResult r = run_spsc_latency(latency_config(size, capacity), peer, dir, clock, "0");
    if (o.json) {
      fmt::print("{}\n", to_json(r, context).dump(2));
    } else {
      print_table(stdout, r, context);
    }
    return 0;
  }
  if (is_throughput) {
    progress(fmt::format("throughput, {} payload", format_bytes(size)));
    const ThroughputResult r =
        run_spsc_throughput(throughput_config(size, capacity), peer, dir, clock, "0");
    if (o.json) {
      fmt::print("{}\n", to_json(r, context).dump(2));
    } else {
      print_table(stdout, r, context);
    }
    return 0;
  }

  // The default suite. Latency uses a 64 KiB ring unless --capacity says otherwise.
  SuiteResults results;
  const std::uint64_t latency_ring = o.capacity != 0 ? o.capacity : std::uint64_t{1} << 16;
  int tag = 0;
  for (const std::uint64_t bytes : {std::uint64_t{64}, std::uint64_t{1024}}) {
    progress(fmt::format("latency, {} payload", format_bytes(bytes)));
    results.latency.push_back(run_spsc_latency(latency_config(bytes, latency_ring), peer, dir,
                                               clock, std::to_string(tag++)));
  }
  for (const std::uint64_t bytes : {std::uint64_t{32}, std::uint64_t{64}, std::uint64_t{1024},
                                    std::uint64_t{4096}, std::uint64_t{65536}}) {
    progress(fmt::format("throughput, {} payload", format_bytes(bytes)));
    results.throughput.push_back(run_spsc_throughput(throughput_config(bytes, capacity), peer, dir,
                                                     clock, std::to_string(tag++)));
  }
  if (o.json) {
    fmt::print("{}\n", suite_json(results, context).dump(2));
  } else {
    print_suite_table(stdout, results, context);
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
