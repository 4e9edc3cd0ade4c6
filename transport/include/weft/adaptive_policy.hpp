// The adaptive flush policy (the batcher): flush thresholds from EMA estimates of the arrival rate
// and of the flush cost, under a commit-to-durable latency target.
//
// The policy measures what it decides with: the arrival rate (records/s and bytes/s, time-decayed
// averages over `rate_window`), the cost of a flush (fixed part plus per-byte part, an
// exponentially weighted least-squares fit of observed flushes) and the spread of that cost
// around the fit. From them it chooses how many bytes to gather and how long the oldest pending
// record may wait; how many flushes to keep in flight it chooses by trying both ways, end to end.
// docs/batcher.md explains the rule and why; transport/src/batch/adaptive_policy.cpp implements
// it.
//
// Like every FlushPolicy it is used by one thread (the journal's flushing thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "weft/export.hpp"
#include "weft/flush_policy.hpp"
#include "weft/result.hpp"

namespace weft {

struct AdaptiveFlushOptions {
  // The user's latency target: commit-to-durable p99. The policy never delays a record by more
  // than this target leaves after the expected flush cost, and never delays at all when the
  // target cannot be met anyway. Must be > 0.
  std::chrono::nanoseconds latency_target_p99{std::chrono::milliseconds(2)};
  // Time constant of the arrival-rate estimate. After a load step the estimate keeps e^(-t/window)
  // of the step: within 5% of the step after 3 windows, within 1% after 5; the choices follow at
  // once. Must be > 0.
  std::chrono::nanoseconds rate_window{std::chrono::milliseconds(20)};
  // Weight of each new flush in the cost fit and spread (1/16: the fit follows a change in the
  // disk within a few dozen flushes and averages out noise). In (0, 1].
  double cost_weight = 1.0 / 16.0;
  // Flush cost assumed before the first flush completes.
  std::chrono::nanoseconds initial_flush_fixed{std::chrono::microseconds(100)};
  double initial_flush_ns_per_byte = 1.0;
  // Flushes in flight when several pay. The policy keeps one in flight unless its trials (blocks
  // of flushes with this many slots against blocks with one) show the records made durable at
  // least 10% sooner with them, or overloaded, 5% more records made durable per second. 1: no
  // trials. In [1, 64].
  std::uint32_t max_in_flight_limit = 4;
  // io-wq workers (kernel threads that run the journal's blocking writes and fsyncs) allowed while
  // one flush in flight is the verdict, the trials' wide blocks included; a wide verdict lifts the
  // cap. Workers that a burst of flushes starts outlive it by about 5 s, and a larger pool made
  // flushes slower where measured (docs/batcher.md). Linux keeps one pool per thread: journals
  // appended from one thread share it and its cap (weft-recorder gives each shard a thread of its
  // own). 0: never cap (the kernel's limit). In [0, 64].
  std::uint32_t io_workers = 2;
  // Upper bound on the disk utilisation the policy plans for when it sizes a batch (the rest is
  // headroom for noise). In (0, 1).
  double utilisation_max = 0.9;
};

// Checks `options`: Errc::kInvalidArgument naming the field and its allowed range.
[[nodiscard]] WEFT_EXPORT Result<void> check_adaptive_flush_options(
    const AdaptiveFlushOptions& options) noexcept;

// Creates the adaptive policy. Requires: check_adaptive_flush_options(options) succeeds (a field
// out of range is clamped into its range).
WEFT_EXPORT std::unique_ptr<FlushPolicy> make_adaptive_flush(const AdaptiveFlushOptions& options);

}  // namespace weft
