// The cache-line ping-pong floor and the memcpy baseline; see floor.hpp.
#include "floor.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include "errors.hpp"

namespace shmem_bench {

Histogram measure_floor(Peer& peer, const Timebase& clock, const PhaseLimits& limits) {
  Control& control = peer.control();
  // Relaxed: the child is idle; the release store of the command publishes both zeros.
  control.floor_ping.value.store(0, std::memory_order_relaxed);
  control.floor_pong.value.store(0, std::memory_order_relaxed);
  peer.post(Command::kFloorEcho);

  Histogram histogram;
  StallGuard guard(peer, limits.timeout_s);
  std::atomic<std::uint64_t>& ping = control.floor_ping.value;
  std::atomic<std::uint64_t>& pong = control.floor_pong.value;
  const std::uint64_t total =
      limits.messages == 0 ? ~std::uint64_t{0} : limits.warmup + limits.messages;
  std::uint64_t previous = clock.now();
  std::uint64_t end_ticks =
      limits.warmup == 0 ? previous + limits.duration_ticks : ~std::uint64_t{0};
  std::uint64_t pending = 0;  // The last round trip, recorded while the next one is in flight.
  bool have_pending = false;
  for (std::uint64_t seq = 1; seq <= total; ++seq) {
    // Release: the child's acquire load of floor_ping sees it (no payload to publish; release
    // mirrors a real publication).
    ping.store(seq, std::memory_order_release);
    if (have_pending) histogram.record(pending);
    // Acquire: pairs with the child's release store of floor_pong.
    while (pong.load(std::memory_order_acquire) != seq) guard.tick();
    guard.progress();
    const std::uint64_t now = clock.now();
    pending = now - previous;
    previous = now;
    have_pending = seq > limits.warmup;
    if (seq == limits.warmup) end_ticks = now + limits.duration_ticks;
    if (limits.messages == 0 && now >= end_ticks) break;
  }
  if (have_pending) histogram.record(pending);
  // Relaxed: the child polls it in its wait loop; nothing else is published with it.
  control.stop.value.store(1, std::memory_order_relaxed);
  peer.wait_done(limits.timeout_s);
  return histogram;
}

void floor_echo(Control& control) {
  std::atomic<std::uint64_t>& ping = control.floor_ping.value;
  std::atomic<std::uint64_t>& pong = control.floor_pong.value;
  std::atomic<std::uint64_t>& stop = control.stop.value;
  std::uint64_t last = 0;
  for (;;) {
    std::uint64_t seq = 0;
    // Acquire: pairs with the parent's release store of floor_ping.
    while ((seq = ping.load(std::memory_order_acquire)) == last) {
      // Relaxed: the parent sets stop only after its last pong arrived.
      if (stop.load(std::memory_order_relaxed) != 0) return;
    }
    // Release: pairs with the parent's acquire load of floor_pong.
    pong.store(seq, std::memory_order_release);
    last = seq;
  }
}

void MemcpyBaseline::FreeDeleter::operator()(std::byte* p) const noexcept { std::free(p); }

MemcpyBaseline::MemcpyBaseline(std::size_t block_bytes, std::size_t ring_bytes,
                               std::size_t stride_bytes)
    : block_bytes_(block_bytes), ring_bytes_(ring_bytes), stride_bytes_(stride_bytes) {
  constexpr std::size_t kAlign = 4096;
  const auto round_up = [](std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  source_.reset(static_cast<std::byte*>(std::aligned_alloc(kAlign, round_up(block_bytes_ + 8))));
  ring_.reset(static_cast<std::byte*>(std::aligned_alloc(kAlign, round_up(ring_bytes_))));
  if (!source_ || !ring_) throw RunError("out of memory for the memcpy baseline buffers");
  // Touch every page now: first touches must stay off the measured path.
  std::memset(source_.get(), 0x5a, round_up(block_bytes_ + 8));
  std::memset(ring_.get(), 0, round_up(ring_bytes_));
}

MemcpyResult MemcpyBaseline::measure(const Timebase& clock, const PhaseLimits& limits) {
  std::byte* const ring = ring_.get();
  const std::byte* const source = source_.get();
  const std::size_t block = block_bytes_;
  const std::size_t stride = stride_bytes_;
  const std::size_t last_offset = ring_bytes_ - block;
  // Blocks between clock reads: about 256 KiB of copying, so the clock costs nothing visible.
  const std::uint64_t chunk = std::max<std::uint64_t>(16, (256 * 1024) / stride);
  std::size_t offset = offset_;
  const auto copy_chunk = [&](std::uint64_t blocks) {
    for (std::uint64_t i = 0; i < blocks; ++i) {
      std::memcpy(ring + offset, source, block);
      offset += stride;
      if (offset > last_offset) offset = 0;
    }
    // The copies must happen: the ring escapes to code the compiler cannot see.
    asm volatile("" : : "r"(ring) : "memory");
  };
  // Warm-up: one lap of the ring, at least the phase's warm-up count.
  copy_chunk(std::max<std::uint64_t>(limits.warmup, ring_bytes_ / stride + 1));
  MemcpyResult result;
  const std::uint64_t begin = clock.now();
  std::uint64_t now = begin;
  if (limits.messages != 0) {
    copy_chunk(limits.messages);
    result.blocks = limits.messages;
    now = clock.now();
  } else {
    while (now - begin < limits.duration_ticks) {
      copy_chunk(chunk);
      result.blocks += chunk;
      now = clock.now();
    }
  }
  offset_ = offset;
  result.seconds = clock.to_ns(now - begin) / 1e9;
  result.bytes_per_s =
      static_cast<double>(result.blocks) * static_cast<double>(block) / result.seconds;
  return result;
}

}  // namespace shmem_bench
