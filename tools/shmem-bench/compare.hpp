// `compare`: the same ping-pong and stream phases over weft SPSC and the kernel's IPC transports
// (a pipe, a Unix domain socket, POSIX message queues, TCP on 127.0.0.1), interleaved in one run
// on the same two CPUs, so the figures stand side by side (DESIGN.md, decision 10).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "endpoint.hpp"
#include "histogram.hpp"
#include "progress.hpp"
#include "report.hpp"

namespace shmem_bench {

struct CompareConfig {
  std::vector<Transport> transports;  // weft SPSC first: the ratios divide by it.
  std::vector<std::uint64_t> sizes;
  int runs = 3;
  PhaseLimits ping_limits;
  PhaseLimits stream_limits;
  PhaseLimits floor_limits;
};

struct CompareEntry {
  Transport transport = Transport::kSpsc;
  std::uint64_t size = 0;
  std::vector<double> rtt_p50_ns, rtt_p99_ns, msgs_per_s;  // Per run.
  Histogram rtt;                                           // Every run, ticks.
  std::string skipped;  // Why this transport could not run at this size, if it could not.
  std::string note;     // Its configuration (message-queue depth and limits).
};

struct CompareResult {
  CompareConfig config;
  std::vector<CompareEntry> entries;  // Size-major, in config order.
  std::vector<double> floor_rtt_ns;   // Per run and size.
};

CompareResult run_compare(const CompareConfig& config, BenchContext& context, Progress& progress);
std::uint64_t compare_phases(const CompareConfig& config) noexcept;

// Ring bytes weft uses for `size` in ping-pong and stream phases.
std::uint64_t ping_ring_bytes(std::uint64_t size) noexcept;
std::uint64_t stream_ring_bytes(std::uint64_t size) noexcept;

// The summary of one entry: medians and spreads; ratios to weft SPSC at the same size.
struct CompareFigures {
  Spread rtt_p50, rtt_p99, msgs;
  double rtt_ratio_to_weft = 0;   // This transport's RTT p50 over weft's: above 1 is slower.
  double msgs_ratio_to_weft = 0;  // This transport's rate over weft's: below 1 is slower.
};
CompareFigures figures_of(const CompareResult& result, const CompareEntry& entry,
                          const Timebase& clock);

nlohmann::json compare_json(const CompareResult& result, const Timebase& clock);
nlohmann::json to_json(const CompareResult& result, const ReportContext& context);
void print_table(std::FILE* out, const CompareResult& result, const ReportContext& context,
                 bool with_environment);

}  // namespace shmem_bench
