// Latency and throughput of one weft channel kind between processes, each run interleaved with
// its same-run baselines: the cache-line floor (latency) or memcpy (throughput), and the SPSC
// figure measured on the same CPUs in the same run, so every kind is reported as a ratio to SPSC
// as well (and MPSC with K > 1 producers as a ratio to MPSC with one producer).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "endpoint.hpp"
#include "floor.hpp"
#include "histogram.hpp"
#include "progress.hpp"

namespace shmem_bench {

struct LatencyConfig {
  EndpointSpec spec;  // One producer and one consumer per direction.
  int runs = 5;
  PhaseLimits limits;  // Per phase: the floor and each endpoint run this long, back to back.
};

struct LatencyRun {
  Histogram floor;  // Cache-line round trips, in clock ticks.
  Histogram weft;   // The kind's round trips, in clock ticks.
  Histogram spsc;   // SPSC round trips in the same run (kinds other than SPSC).
};

struct LatencyResult {
  LatencyConfig config;
  std::vector<LatencyRun> runs;
  std::vector<ProcessSlot> processes;
};

struct ThroughputConfig {
  EndpointSpec spec;
  int runs = 5;
  PhaseLimits limits;  // Per phase: memcpy and each endpoint run this long, back to back.
};

struct ThroughputRun {
  double msgs_per_s = 0;
  double bytes_per_s = 0;  // Payload bytes (record headers and padding not counted).
  double memcpy_bytes_per_s = 0;
  std::uint64_t messages = 0;  // Records in the timed window.
  double seconds = 0;
  double spsc_msgs_per_s = 0;          // Same run, kinds other than SPSC.
  double one_producer_msgs_per_s = 0;  // Same run, MPSC with K > 1.
  std::uint64_t claims_refused = 0;
  std::vector<ConsumerCount> consumers;
};

struct ThroughputResult {
  ThroughputConfig config;
  std::vector<ThroughputRun> runs;
  std::vector<ProcessSlot> processes;
};

// The kind measured with its references: kinds other than SPSC also open an SPSC endpoint of the
// same size and ring, MPSC with K > 1 also an MPSC endpoint with one producer.
LatencyResult run_latency(const LatencyConfig& config, BenchContext& context, Progress& progress);
ThroughputResult run_throughput(const ThroughputConfig& config, BenchContext& context,
                                Progress& progress);

// Phases run_latency / run_throughput take, for the progress counter.
std::uint64_t latency_phases(const LatencyConfig& config) noexcept;
std::uint64_t throughput_phases(const ThroughputConfig& config) noexcept;

}  // namespace shmem_bench
