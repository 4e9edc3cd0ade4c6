// Futex doorbells; the protocol is described in weft/detail/bell.hpp.
#include "weft/detail/bell.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>
#include <limits>

namespace weft::detail {
namespace {

long membarrier(int command) noexcept { return syscall(SYS_membarrier, command, 0, 0); }

// True when this kernel offers MEMBARRIER_CMD_GLOBAL_EXPEDITED, queried once per process.
bool global_expedited_supported() noexcept {
  static const bool supported = [] {
    const long mask = membarrier(MEMBARRIER_CMD_QUERY);
    return mask > 0 && (mask & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0 &&
           (mask & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0;
  }();
  return supported;
}

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

// now + timeout, saturating: nanoseconds::max() means "wait forever", not an overflow.
std::int64_t deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const std::int64_t now = monotonic_ns();
  const std::int64_t limit = std::numeric_limits<std::int64_t>::max();
  if (timeout.count() <= 0) return now;
  return timeout.count() > limit - now ? limit : now + timeout.count();
}

bool register_ringer() noexcept {
  // Registration belongs to the process (its mm); calling it again is harmless, and calling it
  // at every attach also covers a child created by fork after an earlier registration.
  return global_expedited_supported() && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
}

void heavy_barrier() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (global_expedited_supported()) membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
}

void forget_dead_sleeper(BellSleepers& sleepers, std::atomic<std::uint32_t>& sleeping) noexcept {
  // Relaxed: the sleeper is dead; its stores are all visible to us (we saw it dead).
  if (sleeping.exchange(0, std::memory_order_relaxed) == 0) return;
  // Relaxed: a count only; saturate at zero rather than wrap to "always someone asleep".
  std::uint32_t count = sleepers.sleepers.load(std::memory_order_relaxed);
  while (count != 0 &&
         !sleepers.sleepers.compare_exchange_weak(count, count - 1, std::memory_order_relaxed)) {
  }
}

void wake_bell(BellSeq& seq) noexcept {
  // Release: a sleeper that reads the new value (futex_wait's comparison, or its acquire load of
  // seq) also sees the progress published before ring_bell.
  seq.seq.fetch_add(1, std::memory_order_release);
  // Shared (not FUTEX_PRIVATE_FLAG) futex: the sleeper is usually in another process.
  syscall(SYS_futex, &seq.seq, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

bool sleep_on_bell(BellSleepers& sleepers, BellSeq& seq, bool (*ready)(const void*),
                   const void* context, std::chrono::nanoseconds timeout,
                   std::atomic<std::uint32_t>* sleeping) noexcept {
  const std::int64_t deadline = deadline_after(timeout);
  // Acquire: pairs with wake_bell's release increment; read before the ready() check so that a
  // ring after that check changes the value and futex_wait returns at once.
  std::uint32_t seen = seq.seq.load(std::memory_order_acquire);
  // Relaxed: the fence and membarrier below order it before the ready() check.
  sleepers.sleepers.fetch_add(1, std::memory_order_relaxed);
  // Relaxed: read only after this process is known dead, when all its stores are visible.
  if (sleeping != nullptr) sleeping->store(1, std::memory_order_relaxed);
  // Full fence: orders the sleepers increment before the ready() loads (StoreLoad); pairs with
  // the ringer's fence, or, for a registered ringer, with the barrier membarrier forces on it.
  heavy_barrier();

  bool is_ready = ready(context);
  while (!is_ready) {
    const std::int64_t remaining = deadline - monotonic_ns();
    if (remaining <= 0) break;
    timespec ts{static_cast<time_t>(remaining / 1'000'000'000),
                static_cast<long>(remaining % 1'000'000'000)};
    syscall(SYS_futex, &seq.seq, FUTEX_WAIT, seen, &ts, nullptr, 0);
    // Acquire: as above; re-read before the next ready() check.
    seen = seq.seq.load(std::memory_order_acquire);
    is_ready = ready(context);
  }
  // Relaxed (both): a stale non-zero seen by a ringer costs one spare wake, nothing more.
  if (sleeping != nullptr) sleeping->store(0, std::memory_order_relaxed);
  sleepers.sleepers.fetch_sub(1, std::memory_order_relaxed);
  return is_ready;
}

}  // namespace weft::detail
