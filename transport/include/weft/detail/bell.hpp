// Doorbells: how a side that found nothing to do sleeps on a futex in the shared header, and how
// the other side wakes it without a system call unless someone sleeps.
//
// Concurrency
//   Roles: the sleeper (a consumer waiting for data, or a producer waiting for space) and the
//   ringer (the side that just made progress). The sleeper writes BellSleepers; the ringer writes
//   BellSeq, the futex word.
//   Protocol (Dekker): the ringer publishes its progress, then reads `sleepers`; the sleeper
//   raises `sleepers`, then re-checks for progress. A full barrier must separate each side's
//   store from its load, or both can miss each other. The sleeper issues it (an mfence plus
//   membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which forces a barrier on every CPU running a
//   registered ringer), so a registered ringer needs only a compiler barrier on the data path.
//   A ringer whose process could not register falls back to a full fence per ring.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "weft/detail/layout.hpp"
#include "weft/export.hpp"

namespace weft::detail {

// Registers this process for membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED). Returns true when a
// ringer in this process may use a compiler barrier instead of a fence (see above).
WEFT_EXPORT bool register_ringer() noexcept;

// A full memory barrier on every CPU that runs a thread of a process that called
// register_ringer() (membarrier GLOBAL_EXPEDITED), plus one here; a full fence alone where the
// kernel lacks it. The slow side of an asymmetric Dekker handshake.
WEFT_EXPORT void heavy_barrier() noexcept;

// CLOCK_MONOTONIC now + timeout in nanoseconds, saturating at INT64_MAX (nanoseconds::max()
// means "wait forever").
WEFT_EXPORT std::int64_t deadline_after(std::chrono::nanoseconds timeout) noexcept;

// Bumps the futex word and wakes every sleeper. Out of line: it is the rare path.
WEFT_EXPORT void wake_bell(BellSeq& seq) noexcept;

// Sleeps until `ready(context)` is true, the bell rings, or `timeout` passes. Returns
// ready(context) as last seen. Never sleeps when progress was published before it was called.
// `sleeping`, if given, is set to 1 only while this sleeper is counted in `sleepers` (set after
// the increment, cleared before the decrement), so that a process killed asleep can be
// subtracted by whoever finds it dead, and never subtracted twice.
WEFT_EXPORT bool sleep_on_bell(BellSleepers& sleepers, BellSeq& seq, bool (*ready)(const void*),
                               const void* context, std::chrono::nanoseconds timeout,
                               std::atomic<std::uint32_t>* sleeping = nullptr) noexcept;

// Takes back the count of a dead sleeper whose `sleeping` flag is set. Never below zero.
WEFT_EXPORT void forget_dead_sleeper(BellSleepers& sleepers,
                                     std::atomic<std::uint32_t>& sleeping) noexcept;

// Called by the ringer right after it published progress with a release store.
inline void ring_bell(const BellSleepers& sleepers, BellSeq& seq, bool full_fence) noexcept {
  if (full_fence) {
    // Full fence: orders the progress store before the sleepers load (StoreLoad) when this
    // process is not registered for membarrier; pairs with the sleeper's fence in sleep_on_bell.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  } else {
    // Compiler barrier only: the sleeper's membarrier(GLOBAL_EXPEDITED) supplies the hardware
    // barrier on this CPU whenever it matters (see the Concurrency block).
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  // Relaxed: ordering comes from the fence above; a stale zero is impossible once the sleeper's
  // barrier has run, and a stale non-zero costs one spare futex_wake.
  if (sleepers.sleepers.load(std::memory_order_relaxed) != 0) wake_bell(seq);
}

}  // namespace weft::detail
