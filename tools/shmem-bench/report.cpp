// Figures, tables and JSON; see report.hpp.
#include "report.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace shmem_bench {
namespace {

nlohmann::json spread_json(const Spread& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

std::string ratio_text(const Spread& s) {
  return fmt::format("{:.2f} [{:.2f}..{:.2f}]", s.median, s.min, s.max);
}

// "195.3 Mmsg/s", or "286 kmsg/s" below a million records per second.
std::string rate_text(double msgs_per_s) {
  if (msgs_per_s >= 1e6) return fmt::format("{:.1f} Mmsg/s", msgs_per_s / 1e6);
  return fmt::format("{:.0f} kmsg/s", msgs_per_s / 1e3);
}

void print_lines(std::FILE* out, const std::vector<std::string>& lines) {
  for (const auto& line : lines) fmt::print(out, "{}\n", line);
}

}  // namespace

std::string format_bytes(std::uint64_t bytes) {
  if (bytes >= (1U << 20) && bytes % (1U << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  if (bytes >= 1024 && bytes % 1024 == 0) return fmt::format("{} KiB", bytes >> 10);
  return fmt::format("{} B", bytes);
}

Spread spread_of(std::vector<double> values) {
  Spread s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  s.median = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  s.min = values.front();
  s.max = values.back();
  return s;
}

LatencySummary summarize(const LatencyResult& result, const Timebase& clock) {
  LatencySummary s;
  for (const LatencyRun& run : result.runs) {
    const double floor_p50 = clock.to_ns(run.floor.value_at_percentile(50));
    const double p50 = clock.to_ns(run.weft.value_at_percentile(50));
    s.floor_p50_ns.push_back(floor_p50);
    s.floor_p99_ns.push_back(clock.to_ns(run.floor.value_at_percentile(99)));
    s.p50_ns.push_back(p50);
    s.p99_ns.push_back(clock.to_ns(run.weft.value_at_percentile(99)));
    s.p999_ns.push_back(clock.to_ns(run.weft.value_at_percentile(99.9)));
    s.max_ns.push_back(clock.to_ns(run.weft.max()));
    s.ratio.push_back(floor_p50 > 0 ? p50 / floor_p50 : 0);
    s.round_trips.push_back(static_cast<double>(run.weft.count()));
    s.floor_round_trips.push_back(static_cast<double>(run.floor.count()));
    s.round_trips_total += run.weft.count();
    s.max_ns_all = std::max(s.max_ns_all, s.max_ns.back());
  }
  s.floor = spread_of(s.floor_p50_ns);
  s.p50 = spread_of(s.p50_ns);
  s.p99 = spread_of(s.p99_ns);
  s.p999 = spread_of(s.p999_ns);
  s.ratio_spread = spread_of(s.ratio);
  return s;
}

ThroughputSummary summarize(const ThroughputResult& result) {
  ThroughputSummary s;
  for (const ThroughputRun& run : result.runs) {
    s.msgs_per_s.push_back(run.msgs_per_s);
    s.bytes_per_s.push_back(run.bytes_per_s);
    s.memcpy_bytes_per_s.push_back(run.memcpy_bytes_per_s);
    s.ratio.push_back(run.memcpy_bytes_per_s > 0 ? run.bytes_per_s / run.memcpy_bytes_per_s : 0);
    s.messages.push_back(static_cast<double>(run.messages));
    s.messages_total += run.messages;
  }
  s.msgs = spread_of(s.msgs_per_s);
  s.bytes = spread_of(s.bytes_per_s);
  s.memcpy_bytes = spread_of(s.memcpy_bytes_per_s);
  s.ratio_spread = spread_of(s.ratio);
  return s;
}

nlohmann::json to_json(const LatencyResult& result, const ReportContext& context) {
  const LatencySummary s = summarize(result, *context.clock);
  const LatencyConfig& c = result.config;
  nlohmann::json j;
  j["benchmark"] = "spsc_latency";
  j["units"] = "nanoseconds; one round trip = ping A->B + pong B->A";
  j["size"] = c.size_bytes;
  j["capacity"] = c.capacity_bytes;
  j["runs"] = c.runs;
  j["messages"] = s.round_trips_total;
  j["warmup_messages"] = c.limits.warmup;
  j["rtt_p50_ns"] = s.p50.median;
  j["rtt_p99_ns"] = s.p99.median;
  j["rtt_p999_ns"] = s.p999.median;
  j["rtt_max_ns"] = s.max_ns_all;
  j["floor_rtt_ns"] = s.floor.median;
  j["ratio_p50_to_floor"] = s.ratio_spread.median;
  j["ratio_p50_to_floor_min"] = s.ratio_spread.min;
  j["ratio_p50_to_floor_max"] = s.ratio_spread.max;
  j["spread"] = {{"rtt_p50_ns", spread_json(s.p50)},
                 {"rtt_p99_ns", spread_json(s.p99)},
                 {"rtt_p999_ns", spread_json(s.p999)},
                 {"floor_rtt_ns", spread_json(s.floor)},
                 {"ratio_p50_to_floor", spread_json(s.ratio_spread)}};
  j["per_run"] = {{"floor_rtt_ns", s.floor_p50_ns},
                  {"floor_rtt_p99_ns", s.floor_p99_ns},
                  {"rtt_p50_ns", s.p50_ns},
                  {"rtt_p99_ns", s.p99_ns},
                  {"rtt_p999_ns", s.p999_ns},
                  {"rtt_max_ns", s.max_ns},
                  {"ratio_p50_to_floor", s.ratio},
                  {"messages", s.round_trips},
                  {"floor_messages", s.floor_round_trips}};
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

nlohmann::json to_json(const ThroughputResult& result, const ReportContext& context) {
  const ThroughputSummary s = summarize(result);
  const ThroughputConfig& c = result.config;
  nlohmann::json j;
  j["benchmark"] = "spsc_throughput";
  j["units"] =
      "msgs_per_s: records per second; bytes_per_s: payload bytes per second (record "
      "headers excluded), both seen by the consumer; memcpy_bytes_per_s: bytes copied "
      "per second by one thread";
  j["size"] = c.size_bytes;
  j["capacity"] = c.capacity_bytes;
  j["runs"] = c.runs;
  j["messages"] = s.messages_total;
  j["mode"] = c.copy ? "copy (try_send)" : "zero-copy (try_claim + commit)";
  j["consumer_reads"] = c.touch_all ? "every payload byte" : "the first 8 bytes";
  j["batch"] = c.batch;
  j["msgs_per_s"] = s.msgs.median;
  j["bytes_per_s"] = s.bytes.median;
  j["memcpy_bytes_per_s"] = s.memcpy_bytes.median;
  j["ratio_to_memcpy"] = s.ratio_spread.median;
  j["ratio_to_memcpy_min"] = s.ratio_spread.min;
  j["ratio_to_memcpy_max"] = s.ratio_spread.max;
  j["spread"] = {{"msgs_per_s", spread_json(s.msgs)},
                 {"bytes_per_s", spread_json(s.bytes)},
                 {"memcpy_bytes_per_s", spread_json(s.memcpy_bytes)},
                 {"ratio_to_memcpy", spread_json(s.ratio_spread)}};
  j["per_run"] = {{"msgs_per_s", s.msgs_per_s},
                  {"bytes_per_s", s.bytes_per_s},
                  {"memcpy_bytes_per_s", s.memcpy_bytes_per_s},
                  {"ratio_to_memcpy", s.ratio},
                  {"messages", s.messages}};
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

void print_environment(std::FILE* out, const ReportContext& context) {
  print_lines(out, env_lines(*context.env, *context.placement, *context.clock));
}

void print_table(std::FILE* out, const LatencyResult& result, const ReportContext& context) {
  const LatencySummary s = summarize(result, *context.clock);
  const LatencyConfig& c = result.config;
  fmt::print(out,
             "shmem-bench latency: SPSC ping-pong between two processes, {} payload, {} ring, "
             "{} runs\n",
             format_bytes(c.size_bytes), format_bytes(c.capacity_bytes), c.runs);
  print_environment(out, context);
  fmt::print(out,
             "\nRound-trip times (RTT) in nanoseconds; one RTT = ping A->B + pong B->A, both sides "
             "busy-spinning.\nfloor = one cache line bounced between the same two processes, "
             "measured right before each weft run.\n\n");
  fmt::print(out, "{:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}\n", "run", "floor p50",
             "weft p50", "p99", "p99.9", "max", "p50/floor", "round trips");
  for (std::size_t i = 0; i < s.p50_ns.size(); ++i) {
    fmt::print(out, "{:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.0f} {:>10.2f} {:>12.0f}\n",
               i + 1, s.floor_p50_ns[i], s.p50_ns[i], s.p99_ns[i], s.p999_ns[i], s.max_ns[i],
               s.ratio[i], s.round_trips[i]);
  }
  fmt::print(out, "{:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.0f} {:>10.2f} {:>12}\n",
             "median", s.floor.median, s.p50.median, s.p99.median, s.p999.median, s.max_ns_all,
             s.ratio_spread.median, s.round_trips_total);
  fmt::print(out,
             "\nweft RTT p50 {:.1f} ns = {} x the same-run floor ({:.1f} ns); median [min..max] "
             "over {} runs. The max column's median row is the maximum of all runs.\n",
             s.p50.median, ratio_text(s.ratio_spread), s.floor.median, c.runs);
}

void print_table(std::FILE* out, const ThroughputResult& result, const ReportContext& context) {
  const ThroughputSummary s = summarize(result);
  const ThroughputConfig& c = result.config;
  fmt::print(out,
             "shmem-bench throughput: SPSC stream between two processes, {} payload, {} ring, {}, "
             "{} runs\n",
             format_bytes(c.size_bytes), format_bytes(c.capacity_bytes),
             c.copy ? "copy (try_send)" : "zero-copy (try_claim + write in place + commit)",
             c.runs);
  print_environment(out, context);
  fmt::print(out,
             "\nMeasured by the consumer, which polls up to {} records per call and reads {} of "
             "every record.\nMmsg/s = 10^6 records/s; GB/s = 10^9 payload bytes/s (8-byte record "
             "headers not counted).\nmemcpy = one thread copying {} blocks into a {} buffer at the "
             "ring's record stride, right before each weft run.\n\n",
             c.batch, c.touch_all ? "all bytes" : "the first 8 bytes", format_bytes(c.size_bytes),
             format_bytes(c.capacity_bytes));
  fmt::print(out, "{:>6} {:>12} {:>12} {:>12} {:>12} {:>14}\n", "run", "memcpy GB/s", "weft Mmsg/s",
             "weft GB/s", "weft/memcpy", "records");
  for (std::size_t i = 0; i < s.msgs_per_s.size(); ++i) {
    fmt::print(out, "{:>6} {:>12.2f} {:>12.2f} {:>12.2f} {:>12.3f} {:>14.0f}\n", i + 1,
               s.memcpy_bytes_per_s[i] / 1e9, s.msgs_per_s[i] / 1e6, s.bytes_per_s[i] / 1e9,
               s.ratio[i], s.messages[i]);
  }
  fmt::print(out, "{:>6} {:>12.2f} {:>12.2f} {:>12.2f} {:>12.3f} {:>14}\n", "median",
             s.memcpy_bytes.median / 1e9, s.msgs.median / 1e6, s.bytes.median / 1e9,
             s.ratio_spread.median, s.messages_total);
  fmt::print(out,
             "\nweft {:.2f} Mmsg/s, {:.2f} GB/s = {} x same-run memcpy ({:.2f} GB/s); median "
             "[min..max] over {} runs.\n",
             s.msgs.median / 1e6, s.bytes.median / 1e9, ratio_text(s.ratio_spread),
             s.memcpy_bytes.median / 1e9, c.runs);
}

void print_suite_table(std::FILE* out, const SuiteResults& results, const ReportContext& context) {
  fmt::print(out, "shmem-bench: default suite (SPSC, two processes, busy-spin)\n");
  print_environment(out, context);
  fmt::print(out,
             "\nEach figure is the median over runs; each run measures its baseline right before "
             "the weft figure.\nlatency: round-trip time (ns) vs a cache-line ping-pong floor; "
             "throughput: consumer-side rate vs single-thread memcpy.\n"
             "Mmsg/s = 10^6 records/s, kmsg/s = 10^3 records/s, GB/s = 10^9 payload bytes/s.\n\n");
  fmt::print(out, "{:<22} {:>34} {:>22} {:>22}\n", "benchmark", "weft (median)",
             "same-run baseline", "ratio median [min..max]");
  for (const LatencyResult& r : results.latency) {
    const LatencySummary s = summarize(r, *context.clock);
    fmt::print(out, "{:<22} {:>34} {:>22} {:>22}\n",
               fmt::format("latency {} {}", format_bytes(r.config.size_bytes), "RTT"),
               fmt::format("p50 {:.0f} p99 {:.0f} p99.9 {:.0f} ns", s.p50.median, s.p99.median,
                           s.p999.median),
               fmt::format("floor {:.0f} ns", s.floor.median), ratio_text(s.ratio_spread));
  }
  for (const ThroughputResult& r : results.throughput) {
    const ThroughputSummary s = summarize(r);
    fmt::print(out, "{:<22} {:>34} {:>22} {:>22}\n",
               fmt::format("throughput {}", format_bytes(r.config.size_bytes)),
               fmt::format("{} {:.2f} GB/s", rate_text(s.msgs.median), s.bytes.median / 1e9),
               fmt::format("memcpy {:.2f} GB/s", s.memcpy_bytes.median / 1e9),
               ratio_text(s.ratio_spread));
  }
}

nlohmann::json suite_json(const SuiteResults& results, const ReportContext& context) {
  nlohmann::json j;
  j["suite"] = "default";
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  nlohmann::json list = nlohmann::json::array();
  for (const LatencyResult& r : results.latency) list.push_back(to_json(r, context));
  for (const ThroughputResult& r : results.throughput) list.push_back(to_json(r, context));
  j["results"] = list;
  return j;
}

}  // namespace shmem_bench
