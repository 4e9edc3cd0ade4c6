// Same-run baselines that weft's figures are divided by:
//   - the latency floor: one cache line bounced between the same two pinned processes (each
//     direction's word on its own 128-byte block); one round trip is the least any shared-memory
//     transport can take on this placement at this moment;
//   - the bandwidth floor: single-thread memcpy of N-byte blocks into a destination buffer the
//     size of the channel ring, cycling through it at the ring's record stride.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "histogram.hpp"
#include "peer.hpp"
#include "timebase.hpp"

namespace shmem_bench {

// How long one measured phase runs: `messages` after `warmup`, or, when messages is 0, for
// `duration_ticks` after the warm-up.
struct PhaseLimits {
  std::uint64_t warmup = 0;
  std::uint64_t messages = 0;
  std::uint64_t duration_ticks = 0;
  double duration_s = 0;  // duration_ticks in seconds, for reports.
  // Ping-pong with messages == 0: the warm-up ends after this many ticks even if fewer than
  // `warmup` round trips were made (large messages over slow transports); 0: no cap.
  std::uint64_t warmup_ticks_max = 0;
  double timeout_s = 60.0;  // For waits on the child.
};

// Parent side: runs one floor phase against the child (which must be idle) and returns the
// round-trip times in clock ticks.
Histogram measure_floor(Peer& peer, const Timebase& clock, const PhaseLimits& limits);

// Child side of Command::kFloorEcho.
void floor_echo(Control& control);

struct MemcpyResult {
  double bytes_per_s = 0;
  std::uint64_t blocks = 0;
  double seconds = 0;
};

class MemcpyBaseline {
 public:
  // Requires: block_bytes <= ring_bytes; stride_bytes >= block_bytes.
  MemcpyBaseline(std::size_t block_bytes, std::size_t ring_bytes, std::size_t stride_bytes);
  MemcpyResult measure(const Timebase& clock, const PhaseLimits& limits);

 private:
  struct FreeDeleter {
    void operator()(std::byte* p) const noexcept;
  };
  std::size_t block_bytes_;
  std::size_t ring_bytes_;
  std::size_t stride_bytes_;
  std::unique_ptr<std::byte, FreeDeleter> source_;
  std::unique_ptr<std::byte, FreeDeleter> ring_;
  std::size_t offset_ = 0;
};

}  // namespace shmem_bench
