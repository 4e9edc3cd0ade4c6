// Chooses and calibrates the benchmark clock; see timebase.hpp.
#include "timebase.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

namespace shmem_bench {
namespace {

// True when /proc/cpuinfo lists constant_tsc and nonstop_tsc: the TSC ticks at one rate in every
// P- and C-state, so it can be converted to nanoseconds with one factor.
bool tsc_is_invariant() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    bool constant = false;
    bool nonstop = false;
    std::string word;
    while (words >> word) {
      constant = constant || word == "constant_tsc";
      nonstop = nonstop || word == "nonstop_tsc";
    }
    return constant && nonstop;
  }
  return false;
}

// Nanoseconds per call of `read`, the best of several batches.
template <class Read>
double read_cost_ns(Read read) {
  constexpr int kBatches = 20;
  constexpr int kReadsPerBatch = 2000;
  double best_ns = 1e9;
  for (int batch = 0; batch < kBatches; ++batch) {
    std::uint64_t sink = 0;
    const std::uint64_t begin_ns = monotonic_ns();
    for (int i = 0; i < kReadsPerBatch; ++i) sink += read();
    const std::uint64_t end_ns = monotonic_ns();
    asm volatile("" : : "r"(sink) : "memory");
    best_ns = std::min(best_ns, static_cast<double>(end_ns - begin_ns) / kReadsPerBatch);
  }
  return best_ns;
}

// One (CLOCK_MONOTONIC, TSC) pair, taken with the TSC read on both sides of clock_gettime so the
// pair is as tight as the narrowest bracket seen.
struct Pair {
  std::uint64_t ns;
  std::uint64_t tsc;
};

Pair sample_pair() {
  Pair best{0, 0};
  std::uint64_t best_window = ~std::uint64_t{0};
  for (int i = 0; i < 16; ++i) {
    const std::uint64_t before = read_tsc();
    const std::uint64_t ns = monotonic_ns();
    const std::uint64_t after = read_tsc();
    if (after - before < best_window) {
      best_window = after - before;
      best = {ns, before + (after - before) / 2};
    }
  }
  return best;
}

}  // namespace

std::string Timebase::describe() const {
  if (kind == ClockKind::kTsc) {
    return fmt::format(
        "TSC via rdtsc at {:.4f} GHz (calibrated against CLOCK_MONOTONIC over {:.0f} ms); one "
        "read costs {:.1f} ns (clock_gettime: {:.1f} ns)",
        tsc_hz / 1e9, calibration_ms, tsc_read_ns, monotonic_read_ns);
  }
  return fmt::format("CLOCK_MONOTONIC ({}); one read costs {:.1f} ns", why, monotonic_read_ns);
}

Timebase Timebase::calibrate(bool prefer_tsc) {
  Timebase tb;
  tb.monotonic_read_ns = read_cost_ns(monotonic_ns);
  if (!SHMEM_BENCH_HAVE_TSC) {
    tb.why = "no TSC on this architecture";
    return tb;
  }
  if (!prefer_tsc) {
    tb.why = "--clock monotonic";
    return tb;
  }
  if (!tsc_is_invariant()) {
    tb.why = "the TSC is not invariant (no constant_tsc/nonstop_tsc)";
    return tb;
  }
  tb.tsc_read_ns = read_cost_ns(read_tsc);
  constexpr std::uint64_t kCalibrationNs = 60'000'000;
  const Pair first = sample_pair();
  Pair last = first;
  while (last.ns - first.ns < kCalibrationNs) last = sample_pair();
  tb.kind = ClockKind::kTsc;
  tb.tsc_hz =
      static_cast<double>(last.tsc - first.tsc) * 1e9 / static_cast<double>(last.ns - first.ns);
  tb.ns_per_tick = 1e9 / tb.tsc_hz;
  tb.calibration_ms = static_cast<double>(last.ns - first.ns) / 1e6;
  tb.why = "invariant TSC";
  return tb;
}

}  // namespace shmem_bench
