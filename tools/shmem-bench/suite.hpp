// The default suite (`shmem-bench` with no subcommand): for 64 B, 1 KiB and 64 KiB, ping-pong
// latency and streaming throughput over each weft kind (SPSC, MPSC with one producer, broadcast
// with one consumer) and over the kernel's IPC transports (`compare`), every phase of a size
// interleaved in each run with the cache-line floor and memcpy; then one summary table.
#pragma once

#include <cstdio>
#include <vector>

#include <nlohmann/json.hpp>

#include "compare.hpp"
#include "kinds_bench.hpp"
#include "progress.hpp"
#include "report.hpp"

namespace shmem_bench {

struct SuiteConfig {
  std::vector<std::uint64_t> sizes{64, 1024, 65536};
  std::vector<Transport> kinds{Transport::kSpsc, Transport::kMpsc, Transport::kBroadcast};
  std::vector<Transport> ipc{Transport::kPipe, Transport::kUnix, Transport::kMq, Transport::kTcp};
  int runs = 3;
  std::uint64_t capacity_bytes = 0;  // 0: per size (ping_ring_bytes / stream_ring_bytes).
  PhaseLimits ping_limits;
  PhaseLimits stream_limits;
  PhaseLimits floor_limits;
  PhaseLimits memcpy_limits;
};

struct SuiteResult {
  SuiteConfig config;
  std::vector<LatencyResult> latency;        // Size-major, kinds in config order.
  std::vector<ThroughputResult> throughput;  // Likewise.
  CompareResult compare;                     // weft SPSC (from the runs above) and the others.
  double wall_s = 0;
};

SuiteResult run_suite(const SuiteConfig& config, BenchContext& context, Progress& progress);
std::uint64_t suite_phases(const SuiteConfig& config) noexcept;

void print_suite_table(std::FILE* out, const SuiteResult& result, const ReportContext& context);
nlohmann::json suite_json(const SuiteResult& result, const ReportContext& context);

}  // namespace shmem_bench
