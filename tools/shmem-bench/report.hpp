// Turning runs into figures: medians and spreads across runs, the human-readable tables and the
// JSON documents. Key names in the JSON are a stable interface for scripts.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "endpoint.hpp"
#include "env_info.hpp"
#include "kinds_bench.hpp"
#include "timebase.hpp"

namespace shmem_bench {

struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
};
Spread spread_of(std::vector<double> values);
nlohmann::json spread_json(const Spread& s);
// "0.97 [0.95..0.98]"
std::string ratio_text(const Spread& s);
// "195.3 Mmsg/s", or "286 kmsg/s" below a million records per second.
std::string rate_text(double msgs_per_s);

// What every report needs besides the result.
struct ReportContext {
  const EnvInfo* env;
  const Placement* placement;
  const Timebase* clock;
};

// Figures of a latency result, in nanoseconds; per run and summarised.
struct LatencySummary {
  std::vector<double> floor_p50_ns, floor_p99_ns, p50_ns, p99_ns, p999_ns, max_ns, ratio;
  std::vector<double> round_trips, floor_round_trips;
  std::vector<double> spsc_p50_ns, spsc_p99_ns, ratio_to_spsc;  // Kinds other than SPSC.
  Spread floor, p50, p99, p999, ratio_spread, spsc_p50, spsc_p99, ratio_to_spsc_spread;
  double max_ns_all = 0;
  std::uint64_t round_trips_total = 0;
  bool has_spsc = false;
};
LatencySummary summarize(const LatencyResult& result, const Timebase& clock);

struct ThroughputSummary {
  std::vector<double> msgs_per_s, bytes_per_s, memcpy_bytes_per_s, ratio, messages;
  std::vector<double> spsc_msgs_per_s, ratio_to_spsc, one_producer_msgs_per_s,
      ratio_to_one_producer;
  Spread msgs, bytes, memcpy_bytes, ratio_spread, spsc_msgs, ratio_to_spsc_spread,
      one_producer_msgs, ratio_to_one_producer_spread;
  std::uint64_t messages_total = 0;
  std::uint64_t claims_refused = 0;
  std::vector<ConsumerCount> consumers;  // Per consumer: totals over runs; rate: median.
  std::uint64_t lost_records = 0;        // Every consumer, every run.
  bool has_spsc = false;
  bool has_one_producer = false;
};
ThroughputSummary summarize(const ThroughputResult& result);

nlohmann::json to_json(const LatencyResult& result, const ReportContext& context);
nlohmann::json to_json(const ThroughputResult& result, const ReportContext& context);
nlohmann::json processes_json(const std::vector<ProcessSlot>& processes);

void print_environment(std::FILE* out, const ReportContext& context);
// "placement: producer 0 (parent) CPU 0, consumer 0 (child) CPU 1, ...", noting shared CPUs.
void print_processes(std::FILE* out, const std::vector<ProcessSlot>& processes);
void print_table(std::FILE* out, const LatencyResult& result, const ReportContext& context);
void print_table(std::FILE* out, const ThroughputResult& result, const ReportContext& context);

// "64 B", "4 KiB", "1 MiB".
std::string format_bytes(std::uint64_t bytes);

}  // namespace shmem_bench
