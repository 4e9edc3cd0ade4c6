// When the journal flushes: the interface between weft::Journal and the policies that decide how
// many bytes to gather, how long at most to wait and how many flushes to keep in flight.
//
// The journal consults its policy before every flush decision: after each flush completes, after
// each append that could start a flush (one with fewer flushes in flight than the policy last
// allowed: with every slot taken the next completion brings the decision), on Journal::poll and
// wait, and at the latest at the time the policy last asked to be consulted again.
// All times are CLOCK_MONOTONIC nanoseconds. A policy is used by one thread (the journal's
// flushing thread); it need not be thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "weft/export.hpp"

namespace weft {

// What waits to be flushed, as the journal sees it when it asks.
struct FlushState {
  std::int64_t now_ns = 0;
  std::uint64_t pending_bytes = 0;     // Appended (framed), not yet submitted.
  std::uint64_t pending_records = 0;   // Records in pending_bytes.
  std::int64_t oldest_pending_ns = 0;  // Append time of the oldest pending record (if any).
  std::uint32_t in_flight = 0;         // Flushes submitted and not yet complete.
};

// The policy's answer. The journal submits the pending bytes now when flush_now is true and
// in_flight < max_in_flight; otherwise it consults the policy again on the next append (while a
// slot is free) or completion, and at recheck_at_ns at the latest (0: no deadline, only on
// events).
struct FlushDecision {
  bool flush_now = false;
  std::int64_t recheck_at_ns = 0;
  std::uint32_t max_in_flight = 1;
  // io-wq workers (the kernel threads that run the journal's blocking writes and fsyncs) allowed
  // at once; 0: the kernel's limit. Workers the kernel starts for a burst of flushes in flight stay
  // for about 5 s after it, and flushes handed round a larger pool were slower where measured
  // (docs/batcher.md): a policy that tries more slots than it keeps caps the pool. Linux keeps
  // one pool per thread for all its rings, so the cap also bounds the appending thread's other
  // io_uring file I/O while the journal is open; closing the journal lifts it.
  std::uint32_t max_io_workers = 0;
};

// One completed flush: submitted at submit_ns, durable at complete_ns.
struct FlushCompletion {
  std::int64_t submit_ns = 0;
  std::int64_t complete_ns = 0;
  std::uint64_t bytes = 0;
  std::uint64_t records = 0;
};

// A policy's estimates and current choices, published in journal statistics (weftctl, metrics).
// Fields a policy does not estimate are 0.
struct FlushPolicyStats {
  double arrival_records_per_s = 0;  // EMA of the arrival rate.
  double arrival_bytes_per_s = 0;
  double flush_fixed_ns = 0;         // Fitted flush cost: fixed part...
  double flush_ns_per_byte = 0;      // ...and per-byte part.
  double flush_cost_spread_ns = 0;   // EMA of the absolute deviation of flush cost from the fit.
  std::uint64_t gather_bytes = 0;    // Current choice: bytes to gather before flushing.
  std::int64_t max_delay_ns = 0;     // Current choice: longest wait of the oldest pending record.
  std::uint32_t max_in_flight = 0;   // Current choice: flushes in flight at once.
  std::uint32_t max_io_workers = 0;  // Current choice: io-wq workers at once (0: the kernel's).
};

class WEFT_EXPORT FlushPolicy {
 public:
  virtual ~FlushPolicy() = default;
  // A record of `bytes` (framed) was appended at now_ns.
  virtual void on_append(std::int64_t now_ns, std::uint64_t bytes) noexcept = 0;
  // A flush became durable.
  virtual void on_flush_complete(const FlushCompletion& completion) noexcept = 0;
  // Flush now, or when to ask again. Must never leave a lone pending record waiting forever:
  // with pending_records > 0 it either flushes or sets a finite recheck_at_ns.
  [[nodiscard]] virtual FlushDecision decide(const FlushState& state) noexcept = 0;
  [[nodiscard]] virtual FlushPolicyStats stats() const noexcept = 0;
  // Short name for reports: "every", "fixed-64KiB-200us", "natural", "adaptive".
  [[nodiscard]] virtual const char* name() const noexcept = 0;
};

// Flush every record as soon as it is appended, one flush in flight. The journal flushes all that
// is pending, so the records appended while a flush runs go together in the next one: the same
// decisions as make_natural_flush.
WEFT_EXPORT std::unique_ptr<FlushPolicy> make_flush_every_record();
// Flush when `bytes` are pending or the oldest pending record has waited `delay`, whichever comes
// first; up to `max_in_flight` flushes in flight.
WEFT_EXPORT std::unique_ptr<FlushPolicy> make_fixed_flush(std::uint64_t bytes,
                                                          std::chrono::nanoseconds delay,
                                                          std::uint32_t max_in_flight = 1);
// Natural batching (group commit): flush whatever waits as soon as no flush is in flight.
WEFT_EXPORT std::unique_ptr<FlushPolicy> make_natural_flush();

}  // namespace weft
