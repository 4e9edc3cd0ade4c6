// The charts --plot DIR writes (SVG, see svg.hpp), one set per subcommand:
//   latency_<size>.svg     RTT (or one-way) percentile distribution, HDR-style: x = percentile on
//                          a log scale of 1/(1-p), y = latency on a log scale; floor and references
//   throughput.svg         msgs/s of the kind beside its same-run references (throughput)
//   throughput_vs_size.svg payload GB/s against message size, memcpy as the ceiling (suite)
//   compare_rtt.svg, compare_throughput.svg   grouped bars per size and transport (compare, suite)
//   sweep_latency.svg, sweep_throughput.svg   p50/p99 and achieved rate against offered rate
//   recovery.svg           unblock time per case against the timeout and the bar
// Each function returns the paths it wrote. Throws RunError when a file cannot be written.
#pragma once

#include <string>
#include <vector>

#include "compare.hpp"
#include "kinds_bench.hpp"
#include "open_loop.hpp"
#include "recovery.hpp"
#include "suite.hpp"
#include "sweep.hpp"

namespace shmem_bench {

struct PlotContext {
  std::string dir;  // Where the charts go (created if missing).
  const Timebase* clock;
  std::string footer;  // Machine, placement, kernel, build (env_summary).
};

std::vector<std::string> plot(const LatencyResult& result, const PlotContext& context);
std::vector<std::string> plot(const ThroughputResult& result, const PlotContext& context);
std::vector<std::string> plot(const OpenLoopResult& result, const PlotContext& context);
std::vector<std::string> plot(const CompareResult& result, const PlotContext& context);
std::vector<std::string> plot(const SweepResult& result, const PlotContext& context);
std::vector<std::string> plot(const RecoveryResult& result, const PlotContext& context);
std::vector<std::string> plot(const SuiteResult& result, const PlotContext& context);

}  // namespace shmem_bench
