// Idle strategies: what a producer or consumer does when it has nothing to do. Each is a small
// value type with `idle(work_count)` (call after every poll or send attempt with the amount of work
// it did) and `reset()`. Blocking on the channel's futex is not an idle strategy of its own: it is
// SpscConsumer::wait_for_data and SpscProducer::wait_for_space, which BlockingIdle calls.
#pragma once

#include <sched.h>

#include <chrono>
#include <cstdint>
#include <ctime>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace weft {

// Tells the core that this is a spin loop (PAUSE on x86): it saves power and yields the pipeline
// to a sibling hyperthread.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Spins forever: the lowest latency, one core burnt.
struct BusySpinIdle {
  void idle(std::size_t work_count) noexcept {
    if (work_count == 0) cpu_relax();
  }
  void reset() noexcept {}
};

// For throughput-oriented consumers: after an empty poll, pauses `pause_count` times (about
// 10-40 ns each) before polling again, so that the producer gets a few cache lines ahead instead
// of having the line it is filling pulled away after every record. Costs up to that much latency
// per empty poll; BusySpinIdle is the choice for latency.
struct StreamingIdle {
  std::uint32_t pause_count = 64;

  void idle(std::size_t work_count) noexcept {
    if (work_count != 0) return;
    for (std::uint32_t i = 0; i < pause_count; ++i) cpu_relax();
  }
  void reset() noexcept {}
};

// Spins `spin_count` times, then calls sched_yield between attempts.
struct SpinYieldIdle {
  std::uint32_t spin_count = 1000;
  std::uint32_t spins_ = 0;

  void idle(std::size_t work_count) noexcept {
    if (work_count != 0) {
      spins_ = 0;
      return;
    }
    if (spins_ < spin_count) {
      ++spins_;
      cpu_relax();
    } else {
      sched_yield();
    }
  }
  void reset() noexcept { spins_ = 0; }
};

// Spins, then yields, then sleeps with an exponentially growing delay up to `sleep_ns_max`.
struct BackoffIdle {
  std::uint32_t spin_count = 100;
  std::uint32_t yield_count = 10;
  std::int64_t sleep_ns_min = 1'000;
  std::int64_t sleep_ns_max = 1'000'000;
  std::uint32_t spins_ = 0;
  std::uint32_t yields_ = 0;
  std::int64_t sleep_ns_ = 0;

  void idle(std::size_t work_count) noexcept {
    if (work_count != 0) {
      reset();
      return;
    }
    if (spins_ < spin_count) {
      ++spins_;
      cpu_relax();
    } else if (yields_ < yield_count) {
      ++yields_;
      sched_yield();
    } else {
      sleep_ns_ = sleep_ns_ == 0 ? sleep_ns_min
                                 : (sleep_ns_ * 2 > sleep_ns_max ? sleep_ns_max : sleep_ns_ * 2);
      timespec ts{sleep_ns_ / 1'000'000'000, sleep_ns_ % 1'000'000'000};
      nanosleep(&ts, nullptr);
    }
  }
  void reset() noexcept {
    spins_ = 0;
    yields_ = 0;
    sleep_ns_ = 0;
  }
};

// Spins `spin_count` times, then blocks on the channel's futex until the other side rings it or
// `timeout` passes. `Waitable` is SpscConsumer (waits for data) or SpscProducer (waits for space).
template <class Waitable>
struct BlockingIdle {
  Waitable* waitable = nullptr;
  std::uint32_t spin_count = 1000;
  std::chrono::nanoseconds timeout = std::chrono::milliseconds(100);
  std::uint32_t spins_ = 0;

  void idle(std::size_t work_count) noexcept {
    if (work_count != 0) {
      spins_ = 0;
      return;
    }
    if (spins_ < spin_count) {
      ++spins_;
      cpu_relax();
      return;
    }
    spins_ = 0;
    (void)waitable->wait(timeout);
  }
  void reset() noexcept { spins_ = 0; }
};

}  // namespace weft
