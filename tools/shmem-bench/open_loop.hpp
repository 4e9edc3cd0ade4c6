// Open-loop runs: messages offered at a fixed rate, one-way latency measured from each message's
// intended send time (written into the payload, on the calibrated TSC or CLOCK_MONOTONIC, which
// every process reads alike), so back pressure and a late producer count against the latency
// instead of thinning the samples (no coordinated omission). Each run measures the cache-line
// floor first; kinds other than SPSC also run SPSC at the same rate in the same run.
#pragma once

#include <cstdio>
#include <vector>

#include <nlohmann/json.hpp>

#include "endpoint.hpp"
#include "histogram.hpp"
#include "progress.hpp"
#include "report.hpp"

namespace shmem_bench {

struct OpenLoopConfig {
  EndpointSpec spec;
  int runs = 5;
  OpenLoopLimits limits;
  PhaseLimits floor_limits;  // The floor phase before each run.
};

struct OpenLoopRunResult {
  Histogram floor;  // Cache-line round trips, ticks.
  OpenLoopRun weft;
  OpenLoopRun spsc;  // Kinds other than SPSC.
};

struct OpenLoopResult {
  OpenLoopConfig config;
  std::vector<OpenLoopRunResult> runs;
  std::vector<ProcessSlot> processes;
};

OpenLoopResult run_open_loop(const OpenLoopConfig& config, BenchContext& context,
                             Progress& progress);
std::uint64_t open_loop_phases(const OpenLoopConfig& config) noexcept;

// Per-run and summarised figures, in nanoseconds.
struct OpenLoopSummary {
  std::vector<double> p50_ns, p95_ns, p99_ns, p999_ns, max_ns, achieved, floor_rtt_ns, ratio;
  std::vector<double> spsc_p50_ns, spsc_p99_ns, ratio_to_spsc;
  Spread p50, p95, p99, p999, achieved_spread, floor, ratio_spread, spsc_p50, spsc_p99,
      ratio_to_spsc_spread;
  double max_ns_all = 0;
  std::uint64_t messages = 0, claims_refused = 0, late = 0, lost = 0, clock_negative = 0;
  bool has_spsc = false;
  Histogram merged;  // Every run's weft latencies, for the percentile chart.
};
OpenLoopSummary summarize(const OpenLoopResult& result, const Timebase& clock);

nlohmann::json to_json(const OpenLoopResult& result, const ReportContext& context);
void print_table(std::FILE* out, const OpenLoopResult& result, const ReportContext& context);

}  // namespace shmem_bench
