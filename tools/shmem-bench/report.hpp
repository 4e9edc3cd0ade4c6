// Turning runs into figures: medians and spreads across runs, the human-readable tables and the
// JSON documents. Key names in the JSON are a stable interface for scripts.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "env_info.hpp"
#include "spsc_bench.hpp"
#include "timebase.hpp"

namespace shmem_bench {

struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
};
Spread spread_of(std::vector<double> values);

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
  Spread floor, p50, p99, p999, ratio_spread;
  double max_ns_all = 0;
  std::uint64_t round_trips_total = 0;
};
LatencySummary summarize(const LatencyResult& result, const Timebase& clock);

struct ThroughputSummary {
  std::vector<double> msgs_per_s, bytes_per_s, memcpy_bytes_per_s, ratio, messages;
  Spread msgs, bytes, memcpy_bytes, ratio_spread;
  std::uint64_t messages_total = 0;
};
ThroughputSummary summarize(const ThroughputResult& result);

nlohmann::json to_json(const LatencyResult& result, const ReportContext& context);
nlohmann::json to_json(const ThroughputResult& result, const ReportContext& context);

void print_environment(std::FILE* out, const ReportContext& context);
void print_table(std::FILE* out, const LatencyResult& result, const ReportContext& context);
void print_table(std::FILE* out, const ThroughputResult& result, const ReportContext& context);

// The default suite's one-table summary.
struct SuiteResults {
  std::vector<LatencyResult> latency;
  std::vector<ThroughputResult> throughput;
};
void print_suite_table(std::FILE* out, const SuiteResults& results, const ReportContext& context);
nlohmann::json suite_json(const SuiteResults& results, const ReportContext& context);

// "64 B", "4 KiB", "1 MiB".
std::string format_bytes(std::uint64_t bytes);

}  // namespace shmem_bench
