// Stress: a producer thread and a consumer thread in one process pass millions of self-checking
// records (sequence number, seeded size, XXH64 checksum) through rings of several sizes, with
// every API of both sides. Built for ThreadSanitizer runs; WEFT_TEST_SCALE scales the counts, and
// a watchdog bounds the run time. The seed is printed; WEFT_TEST_SEED replays it.
//
// Note for TSan: the producer and the consumer each map the channel file themselves, so the two
// threads touch the ring through different virtual addresses; TSan sees the accesses of each
// side but cannot pair them across the two mappings.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/channel.hpp"
#include "weft/idle.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using test::TempDir;

constexpr unsigned kWatchdogSeconds = 280;
// Blocking waits use a timeout far beyond any run: a lost wake-up hangs until the watchdog.
constexpr auto kLongWait = std::chrono::hours(1);

enum class SendMode { kClaimCommit, kClaimShorter, kTrySend, kMixed };
enum class ReceiveMode { kPoll, kPeekRelease, kTryRecv, kMixed };
enum class WaitMode { kSpin, kBlock };

struct StressConfig {
  const char* label;
  std::uint64_t capacity_bytes;
  std::uint64_t record_bytes_max;  // 0: capacity / 4.
  std::size_t payload_bytes_max;
  std::uint64_t count;  // Before scaling.
  SendMode send;
  ReceiveMode receive;
  WaitMode wait;
};

void PrintTo(const StressConfig& config, std::ostream* out) { *out << config.label; }

class SpscThreadStressTest : public ::testing::TestWithParam<StressConfig> {};

TEST_P(SpscThreadStressTest, EveryRecordArrivesOnceInOrderIntact) {
  const StressConfig& config = GetParam();
  const std::uint64_t seed = test::test_seed();
  const std::uint64_t count = test::scaled(config.count, 2'000);
  TempDir dir;
  // Both roles on one mapping (Channel::share): with two mappings the threads would touch the
  // ring at different addresses and ThreadSanitizer could not see a missing release/acquire.
  auto channel = Channel::create(
      "stress", dir.channel_options(config.capacity_bytes, config.record_bytes_max));
  ASSERT_TRUE(channel) << channel.error().message();
  auto producer = SpscProducer::attach(channel->share());
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = SpscConsumer::attach(std::move(*channel));
  ASSERT_TRUE(consumer) << consumer.error().message();
  ASSERT_LE(config.payload_bytes_max + test::kStampBytes, producer->record_bytes_max());

  std::atomic<std::uint64_t> progress{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> sender_done{false};
  test::Watchdog watchdog(kWatchdogSeconds, config.label, &progress);
  const auto start = std::chrono::steady_clock::now();

  std::thread sender([&] {
    test::Rng rng(seed ^ 0x51);
    SpinYieldIdle spin;
    for (std::uint64_t sequence = 0; sequence < count && !stop.load(std::memory_order_relaxed);) {
      const std::size_t bytes = test::record_bytes_for(seed, sequence, config.payload_bytes_max);
      SendMode mode = config.send;
      if (mode == SendMode::kMixed) mode = static_cast<SendMode>(rng.below(3));
      bool sent = false;
      if (mode == SendMode::kTrySend) {
        std::vector<std::byte> record(bytes);
        test::write_record(record, sequence);
        sent = producer->try_send(record) == SendStatus::kOk;
      } else {
        const std::size_t extra = mode == SendMode::kClaimShorter
                                      ? static_cast<std::size_t>(rng.below(std::min<std::uint64_t>(
                                            65, producer->record_bytes_max() - bytes + 1)))
                                      : 0;
        const ClaimResult claim = producer->try_claim(bytes + extra);
        if (claim.status == ClaimStatus::kOk) {
          if (rng.one_in(50)) {
            producer->abort();  // Drop it and try again: nothing of it may show.
            continue;
          }
          test::write_record(claim.bytes.first(bytes), sequence);
          producer->commit(bytes);
          sent = true;
        }
      }
      if (sent) {
        ++sequence;
      } else if (config.wait == WaitMode::kBlock) {
        static_cast<void>(producer->wait(kLongWait));
      } else {
        spin.idle(0);
      }
    }
    sender_done.store(true, std::memory_order_release);
  });

  std::string failure;
  std::uint64_t expected = 0;
  test::Rng rng(seed ^ 0xc0);
  SpinYieldIdle spin;
  std::vector<std::byte> buffer(config.payload_bytes_max + test::kStampBytes);
  const auto check = [&](std::span<const std::byte> record) {
    if (!failure.empty()) return;
    failure = test::check_record(record, expected,
                                 test::record_bytes_for(seed, expected, config.payload_bytes_max));
    ++expected;
  };
  while (expected < count && failure.empty()) {
    ReceiveMode mode = config.receive;
    if (mode == ReceiveMode::kMixed) mode = static_cast<ReceiveMode>(rng.below(3));
    std::size_t work = 0;
    if (mode == ReceiveMode::kPoll) {
      const PollResult result = consumer->poll(check, 1 + rng.below(100));
      if (result.status == PollStatus::kCorrupted) failure = consumer->last_error().message();
      work = result.count;
    } else if (mode == ReceiveMode::kPeekRelease) {
      const PeekResult next = consumer->peek();
      if (next.status == PollStatus::kCorrupted) failure = consumer->last_error().message();
      if (next.status == PollStatus::kOk) {
        check(next.bytes);
        consumer->release();
        work = 1;
      }
    } else {
      const RecvResult received = consumer->try_recv(buffer);
      if (received.status == RecvStatus::kCorrupted || received.status == RecvStatus::kTooSmall) {
        failure = "try_recv: unexpected status";
      } else if (received.status == RecvStatus::kOk) {
        check(std::span<const std::byte>(buffer.data(), received.size));
        work = 1;
      }
    }
    // Relaxed: read by the watchdog only.
    progress.store(expected, std::memory_order_relaxed);
    if (work == 0) {
      if (config.wait == WaitMode::kBlock) {
        static_cast<void>(consumer->wait(kLongWait));
      } else {
        spin.idle(0);
      }
    }
  }
  stop.store(true, std::memory_order_relaxed);
  // After a failure the sender may be asleep waiting for space: keep freeing space until it
  // notices `stop`. Acquire: pairs with the sender's release store.
  while (!sender_done.load(std::memory_order_acquire)) {
    static_cast<void>(consumer->poll([](std::span<const std::byte>) {}));
    std::this_thread::yield();
  }
  sender.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[   INFO   ] %s: %" PRIu64 " records in %.2f s\n", config.label, expected, seconds);
  EXPECT_EQ(failure, "");
  EXPECT_EQ(expected, count);
  EXPECT_EQ(consumer->poll([](std::span<const std::byte>) {}).status, PollStatus::kEmpty);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, SpscThreadStressTest,
    ::testing::Values(StressConfig{"ClaimCommitAgainstPoll", 1 << 16, 0, 2000, 3'000'000,
                                   SendMode::kClaimCommit, ReceiveMode::kPoll, WaitMode::kSpin},
                      StressConfig{"ShortenedClaimsAgainstPeekRelease", 1 << 14, 0, 2000, 1'000'000,
                                   SendMode::kClaimShorter, ReceiveMode::kPeekRelease,
                                   WaitMode::kSpin},
                      StressConfig{"TrySendAgainstTryRecvOnTheSmallestRing", 4096, 0, 1000,
                                   1'000'000, SendMode::kTrySend, ReceiveMode::kTryRecv,
                                   WaitMode::kSpin},
                      StressConfig{"LargestRecordsOnTheSmallestRing", 4096, 2032, 2016, 300'000,
                                   SendMode::kMixed, ReceiveMode::kMixed, WaitMode::kSpin},
                      StressConfig{"BothSidesBlockingInWait", 8192, 0, 1000, 500'000,
                                   SendMode::kMixed, ReceiveMode::kMixed, WaitMode::kBlock}),
    [](const ::testing::TestParamInfo<StressConfig>& param_info) {
      return std::string(param_info.param.label);
    });

}  // namespace
}  // namespace weft
