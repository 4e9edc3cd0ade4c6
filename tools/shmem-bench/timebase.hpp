// Time stamps for the timed loops: the TSC (read with rdtsc, calibrated against CLOCK_MONOTONIC)
// when the CPU says it is invariant, else CLOCK_MONOTONIC through the vDSO.
//
// Timed loops read the clock through Timebase::now(), a predictable branch and one rdtsc; the
// cost of one read is measured at start-up and printed beside every result, so a reader can see
// how much of a round trip is the clock itself.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define SHMEM_BENCH_HAVE_TSC 1
#else
#define SHMEM_BENCH_HAVE_TSC 0
#endif

namespace shmem_bench {

inline std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

inline std::uint64_t read_tsc() noexcept {
#if SHMEM_BENCH_HAVE_TSC
  // Plain rdtsc, not rdtscp or lfence+rdtsc: in a timed spin loop the time stamp follows the
  // loop's exit branch, which the CPU mispredicts and resolves only once the load that ended the
  // wait has its value, so the stamp cannot be taken before that load. rdtscp would add about 7 ns
  // to every round trip on this VM (measured: rdtsc 11 ns, rdtscp 17 ns per read).
  return __rdtsc();
#else
  return monotonic_ns();
#endif
}

enum class ClockKind { kTsc, kMonotonic };

struct Timebase {
  ClockKind kind = ClockKind::kMonotonic;
  double ns_per_tick = 1.0;
  double tsc_hz = 0.0;             // 0 when the TSC is not used.
  double calibration_ms = 0.0;     // How long the TSC was compared with CLOCK_MONOTONIC.
  double tsc_read_ns = 0.0;        // Cost of one rdtsc.
  double monotonic_read_ns = 0.0;  // Cost of one clock_gettime(CLOCK_MONOTONIC).
  std::string why;                 // Why this clock was chosen.

  [[nodiscard]] std::uint64_t now() const noexcept {
    return kind == ClockKind::kTsc ? read_tsc() : monotonic_ns();
  }
  [[nodiscard]] double to_ns(std::uint64_t ticks) const noexcept {
    return static_cast<double>(ticks) * ns_per_tick;
  }
  [[nodiscard]] std::uint64_t ticks_from_ns(double ns) const noexcept {
    return static_cast<std::uint64_t>(ns / ns_per_tick);
  }
  [[nodiscard]] double read_ns() const noexcept {
    return kind == ClockKind::kTsc ? tsc_read_ns : monotonic_read_ns;
  }
  [[nodiscard]] std::string describe() const;

  // Chooses the clock (`prefer_tsc` and an invariant TSC: the TSC) and calibrates it.
  static Timebase calibrate(bool prefer_tsc);
};

}  // namespace shmem_bench
