// Figures, tables and JSON; see report.hpp.
#include "report.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace shmem_bench {
namespace {

void print_lines(std::FILE* out, const std::vector<std::string>& lines) {
  for (const auto& line : lines) fmt::print(out, "{}\n", line);
}

const char* benchmark_name(const EndpointSpec& spec, bool latency) {
  switch (spec.transport) {
    case Transport::kMpsc:
      return latency ? "mpsc_latency" : "mpsc_throughput";
    case Transport::kBroadcast:
      return latency ? "broadcast_latency" : "broadcast_throughput";
    default:
      return latency ? "spsc_latency" : "spsc_throughput";
  }
}

void kind_json(nlohmann::json& j, const EndpointSpec& spec) {
  j["kind"] = transport_name(spec.transport);
  j["producers"] = spec.producers;
  j["consumers"] = spec.consumers;
  if (spec.transport == Transport::kBroadcast) j["lossy"] = spec.lossy;
}

std::string kind_text(const EndpointSpec& spec) {
  switch (spec.transport) {
    case Transport::kMpsc:
      return fmt::format("MPSC ({} producer{})", spec.producers, spec.producers == 1 ? "" : "s");
    case Transport::kBroadcast:
      return fmt::format("broadcast ({} consumer{}, {})", spec.consumers,
                         spec.consumers == 1 ? "" : "s", spec.lossy ? "lossy" : "reliable");
    default:
      return "SPSC";
  }
}

}  // namespace

nlohmann::json spread_json(const Spread& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

std::string ratio_text(const Spread& s) {
  return fmt::format("{:.2f} [{:.2f}..{:.2f}]", s.median, s.min, s.max);
}

std::string rate_text(double msgs_per_s) {
  if (msgs_per_s >= 1e6) return fmt::format("{:.1f} Mmsg/s", msgs_per_s / 1e6);
  return fmt::format("{:.0f} kmsg/s", msgs_per_s / 1e3);
}

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
  s.has_spsc = result.config.spec.transport != Transport::kSpsc;
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
    if (s.has_spsc) {
      const double spsc_p50 = clock.to_ns(run.spsc.value_at_percentile(50));
      s.spsc_p50_ns.push_back(spsc_p50);
      s.spsc_p99_ns.push_back(clock.to_ns(run.spsc.value_at_percentile(99)));
      s.ratio_to_spsc.push_back(spsc_p50 > 0 ? p50 / spsc_p50 : 0);
    }
  }
  s.floor = spread_of(s.floor_p50_ns);
  s.p50 = spread_of(s.p50_ns);
  s.p99 = spread_of(s.p99_ns);
  s.p999 = spread_of(s.p999_ns);
  s.ratio_spread = spread_of(s.ratio);
  s.spsc_p50 = spread_of(s.spsc_p50_ns);
  s.spsc_p99 = spread_of(s.spsc_p99_ns);
  s.ratio_to_spsc_spread = spread_of(s.ratio_to_spsc);
  return s;
}

ThroughputSummary summarize(const ThroughputResult& result) {
  ThroughputSummary s;
  const EndpointSpec& spec = result.config.spec;
  s.has_spsc = spec.transport != Transport::kSpsc;
  s.has_one_producer = spec.transport == Transport::kMpsc && spec.producers > 1;
  std::vector<std::vector<double>> consumer_rates;
  for (const ThroughputRun& run : result.runs) {
    s.msgs_per_s.push_back(run.msgs_per_s);
    s.bytes_per_s.push_back(run.bytes_per_s);
    s.memcpy_bytes_per_s.push_back(run.memcpy_bytes_per_s);
    s.ratio.push_back(run.memcpy_bytes_per_s > 0 ? run.bytes_per_s / run.memcpy_bytes_per_s : 0);
    s.messages.push_back(static_cast<double>(run.messages));
    s.messages_total += run.messages;
    s.claims_refused += run.claims_refused;
    if (s.has_spsc) {
      s.spsc_msgs_per_s.push_back(run.spsc_msgs_per_s);
      s.ratio_to_spsc.push_back(run.spsc_msgs_per_s > 0 ? run.msgs_per_s / run.spsc_msgs_per_s : 0);
    }
    if (s.has_one_producer) {
      s.one_producer_msgs_per_s.push_back(run.one_producer_msgs_per_s);
      s.ratio_to_one_producer.push_back(
          run.one_producer_msgs_per_s > 0 ? run.msgs_per_s / run.one_producer_msgs_per_s : 0);
    }
    if (s.consumers.size() < run.consumers.size()) {
      s.consumers.resize(run.consumers.size());
      consumer_rates.resize(run.consumers.size());
    }
    for (std::size_t i = 0; i < run.consumers.size(); ++i) {
      s.consumers[i].received += run.consumers[i].received;
      s.consumers[i].lost += run.consumers[i].lost;
      s.lost_records += run.consumers[i].lost;
      consumer_rates[i].push_back(run.consumers[i].msgs_per_s);
    }
  }
  for (std::size_t i = 0; i < s.consumers.size(); ++i) {
    s.consumers[i].msgs_per_s = spread_of(consumer_rates[i]).median;
  }
  s.msgs = spread_of(s.msgs_per_s);
  s.bytes = spread_of(s.bytes_per_s);
  s.memcpy_bytes = spread_of(s.memcpy_bytes_per_s);
  s.ratio_spread = spread_of(s.ratio);
  s.spsc_msgs = spread_of(s.spsc_msgs_per_s);
  s.ratio_to_spsc_spread = spread_of(s.ratio_to_spsc);
  s.one_producer_msgs = spread_of(s.one_producer_msgs_per_s);
  s.ratio_to_one_producer_spread = spread_of(s.ratio_to_one_producer);
  return s;
}

nlohmann::json processes_json(const std::vector<ProcessSlot>& processes) {
  nlohmann::json list = nlohmann::json::array();
  for (const ProcessSlot& p : processes) {
    list.push_back({{"role", p.role},
                    {"cpu", p.cpu},
                    {"shares_cpu", p.yields},
                    {"idle", p.yields ? "spin 100 x PAUSE, then sched_yield" : "busy-spin"}});
  }
  return list;
}

nlohmann::json to_json(const LatencyResult& result, const ReportContext& context) {
  const LatencySummary s = summarize(result, *context.clock);
  const LatencyConfig& c = result.config;
  nlohmann::json j;
  j["benchmark"] = benchmark_name(c.spec, true);
  kind_json(j, c.spec);
  j["units"] = "nanoseconds; one round trip = ping A->B + pong B->A";
  j["size"] = c.spec.size_bytes;
  j["capacity"] = c.spec.capacity_bytes;
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
  if (s.has_spsc) {
    // RTT of this kind over RTT of SPSC in the same run: above 1 means slower than SPSC.
    j["spsc_rtt_p50_ns"] = s.spsc_p50.median;
    j["spsc_rtt_p99_ns"] = s.spsc_p99.median;
    j["ratio_to_spsc"] = s.ratio_to_spsc_spread.median;
    j["ratio_to_spsc_min"] = s.ratio_to_spsc_spread.min;
    j["ratio_to_spsc_max"] = s.ratio_to_spsc_spread.max;
    j["spread"]["spsc_rtt_p50_ns"] = spread_json(s.spsc_p50);
    j["spread"]["ratio_to_spsc"] = spread_json(s.ratio_to_spsc_spread);
    j["per_run"]["spsc_rtt_p50_ns"] = s.spsc_p50_ns;
    j["per_run"]["ratio_to_spsc"] = s.ratio_to_spsc;
  }
  j["processes"] = processes_json(result.processes);
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

nlohmann::json to_json(const ThroughputResult& result, const ReportContext& context) {
  const ThroughputSummary s = summarize(result);
  const ThroughputConfig& c = result.config;
  nlohmann::json j;
  j["benchmark"] = benchmark_name(c.spec, false);
  kind_json(j, c.spec);
  j["units"] =
      "msgs_per_s: records per second; bytes_per_s: payload bytes per second (record "
      "headers excluded), both seen by the consumer (broadcast: published by the producer); "
      "memcpy_bytes_per_s: bytes copied per second by one thread";
  j["size"] = c.spec.size_bytes;
  j["capacity"] = c.spec.capacity_bytes;
  j["runs"] = c.runs;
  j["messages"] = s.messages_total;
  j["mode"] = c.spec.copy ? "copy (try_send)" : "zero-copy (try_claim + commit)";
  j["consumer_reads"] = c.spec.touch_all ? "every payload byte" : "the first 8 bytes";
  j["batch"] = c.spec.batch;
  j["msgs_per_s"] = s.msgs.median;
  j["bytes_per_s"] = s.bytes.median;
  j["memcpy_bytes_per_s"] = s.memcpy_bytes.median;
  j["ratio_to_memcpy"] = s.ratio_spread.median;
  j["ratio_to_memcpy_min"] = s.ratio_spread.min;
  j["ratio_to_memcpy_max"] = s.ratio_spread.max;
  j["claims_refused"] = s.claims_refused;
  j["spread"] = {{"msgs_per_s", spread_json(s.msgs)},
                 {"bytes_per_s", spread_json(s.bytes)},
                 {"memcpy_bytes_per_s", spread_json(s.memcpy_bytes)},
                 {"ratio_to_memcpy", spread_json(s.ratio_spread)}};
  j["per_run"] = {{"msgs_per_s", s.msgs_per_s},
                  {"bytes_per_s", s.bytes_per_s},
                  {"memcpy_bytes_per_s", s.memcpy_bytes_per_s},
                  {"ratio_to_memcpy", s.ratio},
                  {"messages", s.messages}};
  if (s.has_spsc) {
    // This kind's rate over SPSC's in the same run, on the same CPUs: above 1 means faster.
    j["spsc_msgs_per_s"] = s.spsc_msgs.median;
    j["ratio_to_spsc"] = s.ratio_to_spsc_spread.median;
    j["ratio_to_spsc_min"] = s.ratio_to_spsc_spread.min;
    j["ratio_to_spsc_max"] = s.ratio_to_spsc_spread.max;
    j["spread"]["spsc_msgs_per_s"] = spread_json(s.spsc_msgs);
    j["spread"]["ratio_to_spsc"] = spread_json(s.ratio_to_spsc_spread);
    j["per_run"]["spsc_msgs_per_s"] = s.spsc_msgs_per_s;
    j["per_run"]["ratio_to_spsc"] = s.ratio_to_spsc;
  }
  if (s.has_one_producer) {
    j["one_producer_msgs_per_s"] = s.one_producer_msgs.median;
    j["ratio_to_1_producer"] = s.ratio_to_one_producer_spread.median;
    j["ratio_to_1_producer_min"] = s.ratio_to_one_producer_spread.min;
    j["ratio_to_1_producer_max"] = s.ratio_to_one_producer_spread.max;
    j["spread"]["one_producer_msgs_per_s"] = spread_json(s.one_producer_msgs);
    j["spread"]["ratio_to_1_producer"] = spread_json(s.ratio_to_one_producer_spread);
    j["per_run"]["one_producer_msgs_per_s"] = s.one_producer_msgs_per_s;
    j["per_run"]["ratio_to_1_producer"] = s.ratio_to_one_producer;
  }
  if (c.spec.transport == Transport::kBroadcast) {
    j["lost_records"] = s.lost_records;
    nlohmann::json consumers = nlohmann::json::array();
    for (std::size_t i = 0; i < s.consumers.size(); ++i) {
      consumers.push_back({{"consumer", i},
                           {"received", s.consumers[i].received},
                           {"lost_records", s.consumers[i].lost},
                           {"received_msgs_per_s", s.consumers[i].msgs_per_s}});
    }
    j["per_consumer"] = consumers;
  }
  j["processes"] = processes_json(result.processes);
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

void print_environment(std::FILE* out, const ReportContext& context) {
  print_lines(out, env_lines(*context.env, *context.placement, *context.clock));
}

void print_processes(std::FILE* out, const std::vector<ProcessSlot>& processes) {
  std::string line = "processes: ";
  bool any_shared = false;
  for (std::size_t i = 0; i < processes.size(); ++i) {
    const ProcessSlot& p = processes[i];
    line += fmt::format("{}{} on {}", i == 0 ? "" : ", ", p.role,
                        p.cpu < 0 ? std::string("any CPU") : fmt::format("CPU {}", p.cpu));
    any_shared = any_shared || p.yields;
  }
  fmt::print(out, "{}\n", line);
  if (any_shared) {
    fmt::print(out,
               "           more processes than CPUs: producers share side A's CPU, consumers side "
               "B's;\n           a process that shares a CPU spins 100 PAUSEs, then sched_yield()s "
               "when it cannot make progress\n");
  }
}

void print_table(std::FILE* out, const LatencyResult& result, const ReportContext& context) {
  const LatencySummary s = summarize(result, *context.clock);
  const LatencyConfig& c = result.config;
  fmt::print(out,
             "shmem-bench latency: {} ping-pong between two processes, {} payload, {} ring, "
             "{} runs\n",
             kind_text(c.spec), format_bytes(c.spec.size_bytes),
             format_bytes(c.spec.capacity_bytes), c.runs);
  print_environment(out, context);
  print_processes(out, result.processes);
  fmt::print(out,
             "\nRound-trip times (RTT) in nanoseconds; one RTT = ping A->B + pong B->A, both sides "
             "busy-spinning.\nfloor = one cache line bounced between the same two processes, "
             "measured right before each weft run.\n{}\n",
             s.has_spsc ? "spsc = SPSC channels of the same ring and payload, measured in the same "
                          "run; /spsc = this kind's p50 over SPSC's (above 1: slower).\n"
                        : "");
  if (s.has_spsc) {
    fmt::print(out, "{:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}\n", "run",
               "floor p50", "spsc p50", "weft p50", "p99", "p99.9", "max", "p50/floor", "/spsc",
               "round trips");
    for (std::size_t i = 0; i < s.p50_ns.size(); ++i) {
      fmt::print(out,
                 "{:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.0f} {:>10.2f} "
                 "{:>8.2f} {:>10.0f}\n",
                 i + 1, s.floor_p50_ns[i], s.spsc_p50_ns[i], s.p50_ns[i], s.p99_ns[i], s.p999_ns[i],
                 s.max_ns[i], s.ratio[i], s.ratio_to_spsc[i], s.round_trips[i]);
    }
    fmt::print(
        out,
        "{:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.0f} {:>10.2f} {:>8.2f} "
        "{:>10}\n",
        "median", s.floor.median, s.spsc_p50.median, s.p50.median, s.p99.median, s.p999.median,
        s.max_ns_all, s.ratio_spread.median, s.ratio_to_spsc_spread.median, s.round_trips_total);
  } else {
    fmt::print(out, "{:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}\n", "run", "floor p50",
               "weft p50", "p99", "p99.9", "max", "p50/floor", "round trips");
    for (std::size_t i = 0; i < s.p50_ns.size(); ++i) {
      fmt::print(out,
                 "{:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.0f} {:>10.2f} {:>12.0f}\n",
                 i + 1, s.floor_p50_ns[i], s.p50_ns[i], s.p99_ns[i], s.p999_ns[i], s.max_ns[i],
                 s.ratio[i], s.round_trips[i]);
    }
    fmt::print(out, "{:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.0f} {:>10.2f} {:>12}\n",
               "median", s.floor.median, s.p50.median, s.p99.median, s.p999.median, s.max_ns_all,
               s.ratio_spread.median, s.round_trips_total);
  }
  fmt::print(out,
             "\nweft RTT p50 {:.1f} ns = {} x the same-run floor ({:.1f} ns){}; median [min..max] "
             "over {} runs. The max column's median row is the maximum of all runs.\n",
             s.p50.median, ratio_text(s.ratio_spread), s.floor.median,
             s.has_spsc ? fmt::format(" = {} x same-run SPSC ({:.1f} ns)",
                                      ratio_text(s.ratio_to_spsc_spread), s.spsc_p50.median)
                        : std::string{},
             c.runs);
}

void print_table(std::FILE* out, const ThroughputResult& result, const ReportContext& context) {
  const ThroughputSummary s = summarize(result);
  const ThroughputConfig& c = result.config;
  const bool broadcast = c.spec.transport == Transport::kBroadcast;
  fmt::print(
      out,
      "shmem-bench throughput: {} stream between processes, {} payload, {} ring, {}, "
      "{} runs\n",
      kind_text(c.spec), format_bytes(c.spec.size_bytes), format_bytes(c.spec.capacity_bytes),
      c.spec.copy ? "copy (try_send)" : "zero-copy (try_claim + write in place + commit)", c.runs);
  print_environment(out, context);
  print_processes(out, result.processes);
  fmt::print(out,
             "\nMeasured by {}; consumers poll up to {} records per call and read {} of "
             "every record.\nMmsg/s = 10^6 records/s; GB/s = 10^9 payload bytes/s (record "
             "headers not counted).\nmemcpy = one thread copying {} blocks into a {} buffer at the "
             "ring's record stride, right before each weft run.\n",
             broadcast ? "the producer (records published to every consumer)" : "the consumer",
             c.spec.batch, c.spec.touch_all ? "all bytes" : "the first 8 bytes",
             format_bytes(c.spec.size_bytes), format_bytes(c.spec.capacity_bytes));
  if (s.has_spsc) {
    fmt::print(out,
               "spsc = one SPSC producer and consumer on side A's and side B's CPUs, same ring and "
               "payload, in the same run;\n/spsc = this kind's rate over SPSC's (above 1: "
               "faster).{}\n",
               s.has_one_producer ? " 1-prod = the same MPSC channel kind with one producer, same "
                                    "run; /1-prod = ratio to it."
                                  : "");
  }
  fmt::print(out, "\n");
  std::string header = fmt::format("{:>6} {:>12}", "run", "memcpy GB/s");
  if (s.has_spsc) header += fmt::format(" {:>11}", "spsc Mmsg/s");
  if (s.has_one_producer) header += fmt::format(" {:>12}", "1-prod Mmsg/s");
  header += fmt::format(" {:>12} {:>10} {:>12}", "weft Mmsg/s", "weft GB/s", "weft/memcpy");
  if (s.has_spsc) header += fmt::format(" {:>7}", "/spsc");
  if (s.has_one_producer) header += fmt::format(" {:>8}", "/1-prod");
  header += fmt::format(" {:>12}", "records");
  fmt::print(out, "{}\n", header);
  const auto row = [&](const std::string& name, double memcpy_bps, double spsc, double one,
                       double msgs, double bps, double ratio, double to_spsc, double to_one,
                       const std::string& records) {
    std::string line = fmt::format("{:>6} {:>12.2f}", name, memcpy_bps / 1e9);
    if (s.has_spsc) line += fmt::format(" {:>11.2f}", spsc / 1e6);
    if (s.has_one_producer) line += fmt::format(" {:>12.2f}", one / 1e6);
    line += fmt::format(" {:>12.2f} {:>10.2f} {:>12.3f}", msgs / 1e6, bps / 1e9, ratio);
    if (s.has_spsc) line += fmt::format(" {:>7.2f}", to_spsc);
    if (s.has_one_producer) line += fmt::format(" {:>8.2f}", to_one);
    line += fmt::format(" {:>12}", records);
    fmt::print(out, "{}\n", line);
  };
  for (std::size_t i = 0; i < s.msgs_per_s.size(); ++i) {
    row(std::to_string(i + 1), s.memcpy_bytes_per_s[i], s.has_spsc ? s.spsc_msgs_per_s[i] : 0,
        s.has_one_producer ? s.one_producer_msgs_per_s[i] : 0, s.msgs_per_s[i], s.bytes_per_s[i],
        s.ratio[i], s.has_spsc ? s.ratio_to_spsc[i] : 0,
        s.has_one_producer ? s.ratio_to_one_producer[i] : 0, fmt::format("{:.0f}", s.messages[i]));
  }
  row("median", s.memcpy_bytes.median, s.spsc_msgs.median, s.one_producer_msgs.median,
      s.msgs.median, s.bytes.median, s.ratio_spread.median, s.ratio_to_spsc_spread.median,
      s.ratio_to_one_producer_spread.median, std::to_string(s.messages_total));
  if (broadcast) {
    fmt::print(out, "\nper consumer (all runs): ");
    for (std::size_t i = 0; i < s.consumers.size(); ++i) {
      fmt::print(out, "{}#{} received {} lost {} ({:.2f} Mmsg/s median)", i == 0 ? "" : "; ", i,
                 s.consumers[i].received, s.consumers[i].lost, s.consumers[i].msgs_per_s / 1e6);
    }
    fmt::print(out, "\n");
  }
  if (s.claims_refused != 0) {
    fmt::print(out, "back pressure: {} claims refused (ring full), all runs\n", s.claims_refused);
  }
  fmt::print(out, "\nweft {:.2f} Mmsg/s, {:.2f} GB/s = {} x same-run memcpy ({:.2f} GB/s)",
             s.msgs.median / 1e6, s.bytes.median / 1e9, ratio_text(s.ratio_spread),
             s.memcpy_bytes.median / 1e9);
  if (s.has_spsc) {
    fmt::print(out, " = {} x same-run SPSC ({:.2f} Mmsg/s)", ratio_text(s.ratio_to_spsc_spread),
               s.spsc_msgs.median / 1e6);
  }
  if (s.has_one_producer) {
    fmt::print(out, " = {} x same-run 1-producer MPSC ({:.2f} Mmsg/s)",
               ratio_text(s.ratio_to_one_producer_spread), s.one_producer_msgs.median / 1e6);
  }
  fmt::print(out, "; median [min..max] over {} runs.\n", c.runs);
}

}  // namespace shmem_bench
