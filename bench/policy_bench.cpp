// Google Benchmark micro-benchmarks of the flush policies' own cost: what a policy adds to every
// append on the journal's thread (on_append, then decide), with a flush completing every 256
// records. At 1M records/s the appending thread has 1 us per record in all; the policy's share of
// it is measured here, with natural batching (which only counts) as the baseline.
#include <cstdint>
#include <functional>
#include <memory>

#include <benchmark/benchmark.h>

#include "weft/adaptive_policy.hpp"
#include "weft/flush_policy.hpp"

namespace {

void run_policy(benchmark::State& state, weft::FlushPolicy& policy) {
  constexpr std::uint64_t kRecordBytes = 320;
  constexpr std::int64_t kGapNs = 1'000;           // 1M records/s.
  constexpr std::uint64_t kRecordsPerFlush = 256;  // A flush of ~250 us at that rate.
  std::int64_t now = 1'000'000'000;
  weft::FlushState flush_state;
  flush_state.in_flight = 1;
  std::int64_t submitted_ns = now;
  std::uint64_t records = 0;
  for (auto _ : state) {
    now += kGapNs;
    policy.on_append(now, kRecordBytes);
    ++records;
    flush_state.now_ns = now;
    flush_state.pending_records = records;
    flush_state.pending_bytes = records * kRecordBytes;
    if (records == 1) flush_state.oldest_pending_ns = now;
    const weft::FlushDecision decision = policy.decide(flush_state);
    benchmark::DoNotOptimize(decision);
    if (records == kRecordsPerFlush) {
      policy.on_flush_complete({submitted_ns, now, records * kRecordBytes, records});
      submitted_ns = now;
      records = 0;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_NaturalAppendDecide(benchmark::State& state) {
  auto policy = weft::make_natural_flush();
  run_policy(state, *policy);
}
BENCHMARK(BM_NaturalAppendDecide);

void BM_AdaptiveAppendDecide(benchmark::State& state) {
  auto policy = weft::make_adaptive_flush(weft::AdaptiveFlushOptions{});
  run_policy(state, *policy);
}
BENCHMARK(BM_AdaptiveAppendDecide);

}  // namespace
