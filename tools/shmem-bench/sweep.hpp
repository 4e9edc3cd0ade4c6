// `sweep`: a grid of open-loop configurations (producers x offered rate x size), each cell with its
// one-way latency percentiles from the intended send time, the rate achieved and the back pressure
// met (claims refused, messages sent late). One producer uses SPSC, more use MPSC. Cells are
// interleaved run by run, and each group of cells carries the cache-line floor measured right
// before it.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "endpoint.hpp"
#include "progress.hpp"
#include "report.hpp"

namespace shmem_bench {

struct SweepConfig {
  std::vector<std::uint32_t> producers;
  std::vector<double> rates;  // Messages per second, all producers together; 0: closed loop.
  std::vector<std::uint64_t> sizes;
  std::uint64_t capacity_bytes = std::uint64_t{1} << 20;
  int runs = 3;
  OpenLoopLimits limits;     // rate_per_s is taken from `rates`.
  PhaseLimits floor_limits;  // Before each group of cells.
};

struct SweepCell {
  std::uint32_t producers = 1;
  double rate = 0;
  std::uint64_t size = 0;
  std::vector<OpenLoopRun> runs;
  std::vector<double> floor_rtt_ns;
};

struct SweepResult {
  SweepConfig config;
  std::vector<SweepCell> cells;                      // Producers, then size, then rate.
  std::vector<std::vector<ProcessSlot>> placements;  // One per producers count.
};

SweepResult run_sweep(const SweepConfig& config, BenchContext& context, Progress& progress);
std::uint64_t sweep_phases(const SweepConfig& config) noexcept;

// Medians over runs of one cell, nanoseconds and messages per second.
struct SweepFigures {
  Spread p50, p95, p99, p999, achieved, floor;
  double max_ns = 0;
  std::uint64_t claims_refused = 0, late = 0, messages = 0;
};
SweepFigures figures_of(const SweepCell& cell, const Timebase& clock);

nlohmann::json to_json(const SweepResult& result, const ReportContext& context);
std::string to_csv(const SweepResult& result, const Timebase& clock);
void print_table(std::FILE* out, const SweepResult& result, const ReportContext& context);

}  // namespace shmem_bench
