// The SPSC benchmarks: ping-pong latency and streaming throughput between two processes over weft
// SPSC channels, each run interleaved with its same-run baseline (floor.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "floor.hpp"
#include "histogram.hpp"
#include "peer.hpp"
#include "timebase.hpp"

namespace shmem_bench {

struct LatencyConfig {
  std::uint64_t size_bytes = 64;
  std::uint64_t capacity_bytes = 0;
  int runs = 5;
  PhaseLimits limits;  // Per phase: the floor and weft each run this long, back to back.
};

struct LatencyRun {
  Histogram floor;  // Cache-line round trips, in clock ticks.
  Histogram weft;   // weft round trips, in clock ticks.
};

struct LatencyResult {
  LatencyConfig config;
  std::vector<LatencyRun> runs;
  std::uint64_t sequence_errors = 0;
};

struct ThroughputConfig {
  std::uint64_t size_bytes = 32;
  std::uint64_t capacity_bytes = 0;
  int runs = 5;
  PhaseLimits limits;         // Per phase: memcpy and weft each run this long, back to back.
  std::uint64_t batch = 256;  // Records per poll() call at most.
  bool copy = false;          // try_send from a buffer instead of try_claim + write in place.
  bool touch_all = true;      // The consumer reads every payload byte, not only the first word.
};

struct ThroughputRun {
  double msgs_per_s = 0;
  double bytes_per_s = 0;  // Payload bytes (record headers and padding not counted).
  double memcpy_bytes_per_s = 0;
  std::uint64_t messages = 0;  // Records in the timed window.
  double seconds = 0;
};

struct ThroughputResult {
  ThroughputConfig config;
  std::vector<ThroughputRun> runs;
  std::uint64_t sequence_errors = 0;
};

// Parent side. `name_tag` makes the channel names unique within the scratch directory.
LatencyResult run_spsc_latency(const LatencyConfig& config, Peer& peer, const ScratchDir& dir,
                               const Timebase& clock, const std::string& name_tag);
ThroughputResult run_spsc_throughput(const ThroughputConfig& config, Peer& peer,
                                     const ScratchDir& dir, const Timebase& clock,
                                     const std::string& name_tag);

// Child side of the kSpsc* commands.
void spsc_child(Command command, Control& control, const Timebase& clock);

}  // namespace shmem_bench
