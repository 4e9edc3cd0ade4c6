// Open-loop runs and their reports; see open_loop.hpp.
#include "open_loop.hpp"

#include <fmt/format.h>

#include "errors.hpp"
#include "floor.hpp"

namespace shmem_bench {
namespace {

std::string rate_label(double rate_per_s) {
  return rate_per_s > 0 ? fmt::format("{} offered", rate_text(rate_per_s)) : "closed loop";
}

}  // namespace

std::uint64_t open_loop_phases(const OpenLoopConfig& config) noexcept {
  return static_cast<std::uint64_t>(config.runs) *
         (config.spec.transport != Transport::kSpsc ? 3 : 2);
}

OpenLoopResult run_open_loop(const OpenLoopConfig& config, BenchContext& context,
                             Progress& progress) {
  const EndpointSpec& spec = config.spec;
  if (spec.size_bytes < 8) {
    throw UsageError(fmt::format(
        "--size {} with --rate: open-loop messages carry their 8-byte send time, so --size must "
        "be at least 8",
        spec.size_bytes));
  }
  std::unique_ptr<Endpoint> kind = open_endpoint(spec, EndpointMode::kStream, context);
  std::unique_ptr<Endpoint> spsc;
  if (spec.transport != Transport::kSpsc) {
    EndpointSpec s = spec;
    s.transport = Transport::kSpsc;
    s.producers = 1;
    s.consumers = 1;
    s.lossy = false;
    s.slots_max = 0;
    spsc = open_endpoint(s, EndpointMode::kStream, context);
  }
  OpenLoopResult result;
  result.config = config;
  result.processes = kind->processes();
  const std::string what = fmt::format("{} {} {}", describe(spec), format_bytes(spec.size_bytes),
                                       rate_label(config.limits.rate_per_s));
  for (int run = 0; run < config.runs; ++run) {
    OpenLoopRunResult r;
    progress.phase(fmt::format("open loop floor for {}  run {}/{}", what, run + 1, config.runs));
    r.floor = measure_floor(context.peer(), context.clock(), config.floor_limits);
    const bool kind_first = run % 2 == 1;
    if (spsc && !kind_first) {
      progress.phase(
          fmt::format("open loop spsc reference for {}  run {}/{}", what, run + 1, config.runs));
      r.spsc = spsc->open_loop(config.limits);
    }
    progress.phase(fmt::format("open loop {}  run {}/{}", what, run + 1, config.runs));
    r.weft = kind->open_loop(config.limits);
    if (spsc && kind_first) {
      progress.phase(
          fmt::format("open loop spsc reference for {}  run {}/{}", what, run + 1, config.runs));
      r.spsc = spsc->open_loop(config.limits);
    }
    result.runs.push_back(std::move(r));
  }
  return result;
}

OpenLoopSummary summarize(const OpenLoopResult& result, const Timebase& clock) {
  OpenLoopSummary s;
  s.has_spsc = result.config.spec.transport != Transport::kSpsc;
  for (const OpenLoopRunResult& run : result.runs) {
    const Histogram& h = run.weft.latency;
    const double p50 = clock.to_ns(h.value_at_percentile(50));
    const double floor_rtt = clock.to_ns(run.floor.value_at_percentile(50));
    s.p50_ns.push_back(p50);
    s.p95_ns.push_back(clock.to_ns(h.value_at_percentile(95)));
    s.p99_ns.push_back(clock.to_ns(h.value_at_percentile(99)));
    s.p999_ns.push_back(clock.to_ns(h.value_at_percentile(99.9)));
    s.max_ns.push_back(clock.to_ns(h.max()));
    s.max_ns_all = std::max(s.max_ns_all, s.max_ns.back());
    s.achieved.push_back(run.weft.achieved_per_s);
    s.floor_rtt_ns.push_back(floor_rtt);
    // One-way latency over the one-way floor (half the cache-line round trip).
    s.ratio.push_back(floor_rtt > 0 ? p50 / (floor_rtt / 2) : 0);
    s.messages += run.weft.messages;
    s.claims_refused += run.weft.claims_refused;
    s.late += run.weft.late_messages;
    s.lost += run.weft.lost_records;
    s.clock_negative += run.weft.clock_negative;
    s.merged.add(h);
    if (s.has_spsc) {
      const double spsc_p50 = clock.to_ns(run.spsc.latency.value_at_percentile(50));
      s.spsc_p50_ns.push_back(spsc_p50);
      s.spsc_p99_ns.push_back(clock.to_ns(run.spsc.latency.value_at_percentile(99)));
      s.ratio_to_spsc.push_back(spsc_p50 > 0 ? p50 / spsc_p50 : 0);
    }
  }
  s.p50 = spread_of(s.p50_ns);
  s.p95 = spread_of(s.p95_ns);
  s.p99 = spread_of(s.p99_ns);
  s.p999 = spread_of(s.p999_ns);
  s.achieved_spread = spread_of(s.achieved);
  s.floor = spread_of(s.floor_rtt_ns);
  s.ratio_spread = spread_of(s.ratio);
  s.spsc_p50 = spread_of(s.spsc_p50_ns);
  s.spsc_p99 = spread_of(s.spsc_p99_ns);
  s.ratio_to_spsc_spread = spread_of(s.ratio_to_spsc);
  return s;
}

nlohmann::json to_json(const OpenLoopResult& result, const ReportContext& context) {
  const OpenLoopSummary s = summarize(result, *context.clock);
  const OpenLoopConfig& c = result.config;
  nlohmann::json j;
  j["benchmark"] = fmt::format("{}_open_loop", transport_name(c.spec.transport));
  j["kind"] = transport_name(c.spec.transport);
  j["producers"] = c.spec.producers;
  j["consumers"] = c.spec.consumers;
  if (c.spec.transport == Transport::kBroadcast) j["lossy"] = c.spec.lossy;
  j["units"] =
      "nanoseconds, one way: from each message's intended send time to its receipt; rates in "
      "messages per second";
  j["size"] = c.spec.size_bytes;
  j["capacity"] = c.spec.capacity_bytes;
  j["runs"] = c.runs;
  j["rate"] = c.limits.rate_per_s;  // 0: closed loop (as fast as possible).
  j["messages"] = s.messages;
  j["latency_p50_ns"] = s.p50.median;
  j["latency_p95_ns"] = s.p95.median;
  j["latency_p99_ns"] = s.p99.median;
  j["latency_p999_ns"] = s.p999.median;
  j["latency_max_ns"] = s.max_ns_all;
  j["msgs_per_s"] = s.achieved_spread.median;
  j["claims_refused"] = s.claims_refused;
  j["late_messages"] = s.late;
  j["clock_negative"] = s.clock_negative;
  j["floor_rtt_ns"] = s.floor.median;
  j["ratio_p50_to_floor"] = s.ratio_spread.median;  // Over half the floor round trip.
  if (c.spec.transport == Transport::kBroadcast) j["lost_records"] = s.lost;
  j["spread"] = {{"latency_p50_ns", spread_json(s.p50)},
                 {"latency_p99_ns", spread_json(s.p99)},
                 {"latency_p999_ns", spread_json(s.p999)},
                 {"msgs_per_s", spread_json(s.achieved_spread)},
                 {"floor_rtt_ns", spread_json(s.floor)},
                 {"ratio_p50_to_floor", spread_json(s.ratio_spread)}};
  j["per_run"] = {{"latency_p50_ns", s.p50_ns},    {"latency_p95_ns", s.p95_ns},
                  {"latency_p99_ns", s.p99_ns},    {"latency_p999_ns", s.p999_ns},
                  {"latency_max_ns", s.max_ns},    {"msgs_per_s", s.achieved},
                  {"floor_rtt_ns", s.floor_rtt_ns}};
  if (s.has_spsc) {
    j["spsc_latency_p50_ns"] = s.spsc_p50.median;
    j["spsc_latency_p99_ns"] = s.spsc_p99.median;
    j["ratio_to_spsc"] = s.ratio_to_spsc_spread.median;
    j["ratio_to_spsc_min"] = s.ratio_to_spsc_spread.min;
    j["ratio_to_spsc_max"] = s.ratio_to_spsc_spread.max;
    j["spread"]["ratio_to_spsc"] = spread_json(s.ratio_to_spsc_spread);
    j["per_run"]["ratio_to_spsc"] = s.ratio_to_spsc;
  }
  j["processes"] = processes_json(result.processes);
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

void print_table(std::FILE* out, const OpenLoopResult& result, const ReportContext& context) {
  const OpenLoopSummary s = summarize(result, *context.clock);
  const OpenLoopConfig& c = result.config;
  fmt::print(out, "shmem-bench open loop: {}, {} payload, {} ring, {}, {} runs\n", describe(c.spec),
             format_bytes(c.spec.size_bytes), format_bytes(c.spec.capacity_bytes),
             rate_label(c.limits.rate_per_s), c.runs);
  print_environment(out, context);
  print_processes(out, result.processes);
  fmt::print(out,
             "\nOne-way latency in nanoseconds, from each message's intended send time (the "
             "schedule, written into the\npayload) to its receipt: time a producer spends behind "
             "schedule counts. floor = cache-line round trip\nmeasured right before each run; "
             "p50/floor divides by half of it (one way).{}\n\n",
             s.has_spsc ? "\n/spsc = this kind's p50 over SPSC's at the same rate, same run." : "");
  std::string header =
      fmt::format("{:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}", "run", "floor RTT",
                  "p50", "p95", "p99", "p99.9", "max", "msgs/s", "p50/floor");
  if (s.has_spsc) header += fmt::format(" {:>9} {:>7}", "spsc p50", "/spsc");
  fmt::print(out, "{}\n", header);
  for (std::size_t i = 0; i < s.p50_ns.size(); ++i) {
    std::string line =
        fmt::format("{:>6} {:>9.0f} {:>9.0f} {:>9.0f} {:>9.0f} {:>9.0f} {:>10.0f} {:>10} {:>9.2f}",
                    i + 1, s.floor_rtt_ns[i], s.p50_ns[i], s.p95_ns[i], s.p99_ns[i], s.p999_ns[i],
                    s.max_ns[i], rate_text(s.achieved[i]), s.ratio[i]);
    if (s.has_spsc) line += fmt::format(" {:>9.0f} {:>7.2f}", s.spsc_p50_ns[i], s.ratio_to_spsc[i]);
    fmt::print(out, "{}\n", line);
  }
  std::string line =
      fmt::format("{:>6} {:>9.0f} {:>9.0f} {:>9.0f} {:>9.0f} {:>9.0f} {:>10.0f} {:>10} {:>9.2f}",
                  "median", s.floor.median, s.p50.median, s.p95.median, s.p99.median, s.p999.median,
                  s.max_ns_all, rate_text(s.achieved_spread.median), s.ratio_spread.median);
  if (s.has_spsc) {
    line += fmt::format(" {:>9.0f} {:>7.2f}", s.spsc_p50.median, s.ratio_to_spsc_spread.median);
  }
  fmt::print(out, "{}\n", line);
  fmt::print(out,
             "\n{} messages; back pressure: {} claims refused, {} messages sent more than 1 us "
             "late{}{}.\n",
             s.messages, s.claims_refused, s.late,
             c.spec.transport == Transport::kBroadcast ? fmt::format(", {} lost", s.lost) : "",
             s.clock_negative != 0
                 ? fmt::format("; {} receipts stamped before their send time (clock skew between "
                               "CPUs; counted as 0 ns)",
                               s.clock_negative)
                 : "");
}

}  // namespace shmem_bench
