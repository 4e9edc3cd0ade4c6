// Google Benchmark micro-benchmarks of the SPSC data path, in one process: the costs of the
// calls themselves (claim/commit/poll, try_send/try_recv, peek/release) with the ring in this
// core's cache, and a two-thread producer/consumer stream. The cross-process figures, with
// same-run baselines, come from tools/shmem-bench.
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "weft/channel.hpp"
#include "weft/idle.hpp"
#include "weft/options.hpp"
#include "weft/spsc.hpp"

namespace {

// A channel in a private directory under /dev/shm, with both ends open in this process. The
// channel's name is unlinked at once and the directory removed by the destructor.
class Pair {
 public:
  explicit Pair(std::uint64_t capacity_bytes) {
    std::string templ = "/dev/shm/weft-bench.XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) std::abort();
    dir_ = templ;
    weft::ChannelOptions options;
    options.capacity_bytes = capacity_bytes;
    options.dir = dir_;
    auto producer = weft::SpscProducer::create("bench", options);
    if (!producer) fail(producer.error());
    weft::OpenOptions open_options;
    open_options.dir = dir_;
    auto consumer = weft::SpscConsumer::open("bench", open_options);
    if (!consumer) fail(consumer.error());
    (void)weft::Channel::unlink("bench", dir_);
    producer_.emplace(std::move(*producer));
    consumer_.emplace(std::move(*consumer));
  }
  ~Pair() {
    producer_.reset();
    consumer_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;

  weft::SpscProducer& producer() { return *producer_; }
  weft::SpscConsumer& consumer() { return *consumer_; }

 private:
  [[noreturn]] static void fail(const weft::Error& error) {
    std::fprintf(stderr, "weft-bench: %s\n", error.message().c_str());
    std::abort();
  }
  std::string dir_;
  std::optional<weft::SpscProducer> producer_;
  std::optional<weft::SpscConsumer> consumer_;
};

constexpr std::uint64_t kCapacityBytes = std::uint64_t{1} << 20;

void fill(std::span<std::byte> out, std::uint64_t seq) {
  const std::size_t words = out.size() / 8;
  for (std::size_t i = 0; i < words; ++i) std::memcpy(out.data() + 8 * i, &seq, 8);
}

std::uint64_t first_word(std::span<const std::byte> in) {
  std::uint64_t word = 0;
  std::memcpy(&word, in.data(), in.size() < 8 ? in.size() : 8);
  return word;
}

void set_counters(benchmark::State& state, std::size_t size) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(size));
}

// One record through the zero-copy path: claim, write in place, commit, poll it back.
void BM_ClaimCommitPoll(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Pair pair(kCapacityBytes);
  weft::SpscProducer& producer = pair.producer();
  weft::SpscConsumer& consumer = pair.consumer();
  std::uint64_t seq = 0;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    const weft::ClaimResult claim = producer.try_claim(size);
    if (!claim) {
      state.SkipWithError("claim refused");
      break;
    }
    fill(claim.bytes, seq++);
    producer.commit();
    const weft::PollResult r =
        consumer.poll([&](std::span<const std::byte> record) { sum += first_word(record); }, 1);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(sum);
  }
  set_counters(state, size);
}

// 64 records committed, then all polled in one call: the amortised cost of batching.
void BM_ClaimCommitPollBatch64(benchmark::State& state) {
  constexpr std::size_t kBatch = 64;
  const auto size = static_cast<std::size_t>(state.range(0));
  Pair pair(kCapacityBytes);
  weft::SpscProducer& producer = pair.producer();
  weft::SpscConsumer& consumer = pair.consumer();
  std::uint64_t seq = 0;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    for (std::size_t i = 0; i < kBatch; ++i) {
      const weft::ClaimResult claim = producer.try_claim(size);
      if (!claim) {
        state.SkipWithError("claim refused");
        return;
      }
      fill(claim.bytes, seq++);
      producer.commit();
    }
    const weft::PollResult r =
        consumer.poll([&](std::span<const std::byte> record) { sum += first_word(record); });
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(sum);
  }
  const auto records = state.iterations() * static_cast<std::int64_t>(kBatch);
  state.SetItemsProcessed(records);
  state.SetBytesProcessed(records * static_cast<std::int64_t>(size));
}

// The copying conveniences: try_send from a buffer, try_recv into another.
void BM_TrySendTryRecv(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Pair pair(kCapacityBytes);
  weft::SpscProducer& producer = pair.producer();
  weft::SpscConsumer& consumer = pair.consumer();
  std::vector<std::byte> in(size, std::byte{0x5a});
  std::vector<std::byte> out(size);
  for (auto _ : state) {
    if (producer.try_send(in) != weft::SendStatus::kOk) {
      state.SkipWithError("send refused");
      break;
    }
    const weft::RecvResult r = consumer.try_recv(out);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, size);
}

// Reading in place one record at a time: peek, read, release.
void BM_PeekRelease(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Pair pair(kCapacityBytes);
  weft::SpscProducer& producer = pair.producer();
  weft::SpscConsumer& consumer = pair.consumer();
  std::uint64_t seq = 0;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    const weft::ClaimResult claim = producer.try_claim(size);
    if (!claim) {
      state.SkipWithError("claim refused");
      break;
    }
    fill(claim.bytes, seq++);
    producer.commit();
    const weft::PeekResult peeked = consumer.peek();
    sum += first_word(peeked.bytes);
    consumer.release();
    benchmark::DoNotOptimize(sum);
  }
  set_counters(state, size);
}

void pin_this_thread(int cpu) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  (void)sched_setaffinity(0, sizeof(set), &set);
}

// A producer thread (the benchmark's) streaming into a consumer thread that reads every payload
// byte; both busy-spin and are pinned to CPUs 0 and 1 when there are two. Items are records the
// producer committed; the consumer drains them all before the benchmark ends.
void BM_TwoThreadThroughput(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Pair pair(std::uint64_t{4} << 20);
  weft::SpscProducer& producer = pair.producer();
  weft::SpscConsumer& consumer = pair.consumer();
  std::atomic<std::uint64_t> sent_total{~std::uint64_t{0}};
  std::atomic<std::uint64_t> consumer_sum{0};
  std::thread consumer_thread([&] {
    pin_this_thread(1);
    std::uint64_t received = 0;
    std::uint64_t sum = 0;
    const auto handler = [&](std::span<const std::byte> record) noexcept {
      for (std::size_t i = 0; i + 8 <= record.size(); i += 8) {
        std::uint64_t word = 0;
        std::memcpy(&word, record.data() + i, 8);
        sum += word;
      }
    };
    for (;;) {
      const weft::PollResult r = consumer.poll(handler, 256);
      received += r.count;
      if (r.count == 0) {
        // Acquire: pairs with the release store after the producer's last commit.
        if (received == sent_total.load(std::memory_order_acquire)) break;
        weft::cpu_relax();
      }
    }
    // Relaxed: read after join(), which orders it.
    consumer_sum.store(sum, std::memory_order_relaxed);
  });
  pin_this_thread(0);
  std::uint64_t seq = 0;
  for (auto _ : state) {
    weft::ClaimResult claim = producer.try_claim(size);
    while (!claim) {
      weft::cpu_relax();
      claim = producer.try_claim(size);
    }
    fill(claim.bytes, seq++);
    producer.commit();
  }
  // Release: the consumer's acquire load sees every record committed before it.
  sent_total.store(seq, std::memory_order_release);
  consumer_thread.join();
  benchmark::DoNotOptimize(consumer_sum.load(std::memory_order_relaxed));
  set_counters(state, size);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (const std::int64_t size : {8, 32, 64, 256, 1024, 4096}) b->Arg(size);
}

BENCHMARK(BM_ClaimCommitPoll)->Apply(sizes);
BENCHMARK(BM_ClaimCommitPollBatch64)->Apply(sizes);
BENCHMARK(BM_TrySendTryRecv)->Apply(sizes);
BENCHMARK(BM_PeekRelease)->Apply(sizes);
BENCHMARK(BM_TwoThreadThroughput)->Apply(sizes)->UseRealTime()->MinTime(0.5);

}  // namespace
