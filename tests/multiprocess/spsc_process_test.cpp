// Two real processes move at least ten million self-checking records through one channel: each
// record carries its sequence number, a seeded variable size (mostly 0..200 bytes of payload,
// some up to 2000) and an XXH64 checksum of its payload. The receiver proves that nothing was
// lost, duplicated, reordered or corrupted. One run uses a busy-spinning consumer, the other a
// consumer that blocks on the channel's futex. WEFT_TEST_SCALE scales the count down for
// sanitizer builds.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/channel.hpp"
#include "weft/idle.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using test::TempDir;

constexpr const char* kName = "mp";
constexpr std::uint64_t kRingBytes = std::uint64_t{1} << 20;
constexpr unsigned kWatchdogSeconds = 280;

struct Shared {
  std::atomic<std::uint64_t> progress{0};  // Records the receiver has verified.
  test::ChildMessage message;
};

// Sends records [0, count) with claim / write in place / commit. With `extra_claim`, each claim
// asks for up to 64 more bytes than the record needs and commit(n) shortens it.
template <class Idle>
bool produce(SpscProducer& producer, std::uint64_t seed, std::uint64_t count, Idle idle,
             bool extra_claim) {
  test::Rng rng(seed ^ 0x9e37);
  for (std::uint64_t sequence = 0; sequence < count;) {
    const std::size_t bytes = test::record_bytes_for(seed, sequence);
    const std::size_t claim_bytes = extra_claim ? bytes + rng.below(65) : bytes;
    const ClaimResult claim = producer.try_claim(claim_bytes);
    if (claim.status == ClaimStatus::kOk) {
      test::write_record(claim.bytes.first(bytes), sequence);
      producer.commit(bytes);
      ++sequence;
      idle.idle(1);
    } else if (claim.status == ClaimStatus::kFull) {
      idle.idle(0);
    } else {
      return false;
    }
  }
  return true;
}

// Receives records [0, count) with poll(); returns "" or what went wrong.
template <class Idle>
std::string consume(SpscConsumer& consumer, std::uint64_t seed, std::uint64_t count, Idle idle,
                    std::atomic<std::uint64_t>& progress) {
  std::uint64_t expected = 0;
  std::string failure;
  while (expected < count && failure.empty()) {
    const PollResult result = consumer.poll([&](std::span<const std::byte> record) {
      if (!failure.empty()) return;
      failure = test::check_record(record, expected, test::record_bytes_for(seed, expected));
      ++expected;
    });
    if (result.status == PollStatus::kCorrupted) return consumer.last_error().message();
    // Relaxed: a progress report for the watchdog and the parent only.
    progress.store(expected, std::memory_order_relaxed);
    idle.idle(result.count);
  }
  if (!failure.empty()) return failure;
  // Nothing may follow the last record.
  if (consumer.poll([](std::span<const std::byte>) {}).status != PollStatus::kEmpty) {
    return "records arrived after the last one";
  }
  return {};
}

class SpscProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = test::test_seed();
    count_ = test::scaled(10'000'000, 10'000);
    auto channel = Channel::create(kName, dir_.channel_options(kRingBytes));
    ASSERT_TRUE(channel) << channel.error().message();
  }

  void report(const char* what, std::chrono::steady_clock::duration elapsed) const {
    const double seconds = std::chrono::duration<double>(elapsed).count();
    std::printf("[   INFO   ] %s: %" PRIu64 " records in %.2f s (%.1f M records/s)\n", what, count_,
                seconds, static_cast<double>(count_) / seconds / 1e6);
  }

  TempDir dir_;
  std::uint64_t seed_ = 0;
  std::uint64_t count_ = 0;
  test::SharedBlock<Shared> shared_;
};

TEST_F(SpscProcessTest, TenMillionRecordsReachABusySpinningConsumerInAChild) {
  test::Watchdog watchdog(kWatchdogSeconds, "the busy-spin transfer", &shared_->progress);
  const auto start = std::chrono::steady_clock::now();
  test::ChildProcess child([&] {
    auto consumer = SpscConsumer::open(kName, dir_.open_options());
    if (!consumer) {
      shared_->message.set(consumer.error().message());
      return 2;
    }
    const std::string failure =
        consume(*consumer, seed_, count_, BusySpinIdle{}, shared_->progress);
    if (!failure.empty()) {
      shared_->message.set(failure);
      return 1;
    }
    return 0;
  });
  auto producer = SpscProducer::open(kName, dir_.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  // The producer yields when the ring is full, so that a busy machine cannot starve the
  // consumer of its core; the consumer itself never stops spinning.
  ASSERT_TRUE(produce(*producer, seed_, count_, SpinYieldIdle{}, false));
  const test::ChildStatus status = child.wait();
  report("busy-spin consumer", std::chrono::steady_clock::now() - start);
  EXPECT_TRUE(status.ok()) << "consumer " << status.describe() << ": " << shared_->message.get();
  EXPECT_EQ(shared_->progress.load(), count_);
}

TEST_F(SpscProcessTest, TenMillionRecordsReachABlockingConsumerFromAChildProducer) {
  test::Watchdog watchdog(kWatchdogSeconds, "the blocking transfer", &shared_->progress);
  const auto start = std::chrono::steady_clock::now();
  test::ChildProcess child([&] {
    auto producer = SpscProducer::open(kName, dir_.open_options());
    if (!producer) {
      shared_->message.set(producer.error().message());
      return 2;
    }
    BlockingIdle<SpscProducer> idle;
    idle.waitable = &*producer;
    idle.spin_count = 50;
    idle.timeout = std::chrono::seconds(10);
    return produce(*producer, seed_, count_, idle, true) ? 0 : 1;
  });
  auto consumer = SpscConsumer::open(kName, dir_.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  BlockingIdle<SpscConsumer> idle;
  idle.waitable = &*consumer;
  idle.spin_count = 50;
  idle.timeout = std::chrono::seconds(10);
  const std::string failure = consume(*consumer, seed_, count_, idle, shared_->progress);
  EXPECT_EQ(failure, "");
  const test::ChildStatus status = child.wait();
  report("blocking consumer", std::chrono::steady_clock::now() - start);
  EXPECT_TRUE(status.ok()) << "producer " << status.describe() << ": " << shared_->message.get();
}

// The consumer never spins: whenever a poll finds nothing it sleeps in wait(), so every batch
// needs a futex wake-up from the other process. A lost wake-up would hang until the watchdog.
TEST_F(SpscProcessTest, RecordsReachAConsumerThatAlwaysSleepsInWait) {
  count_ = test::scaled(1'000'000, 10'000);
  test::Watchdog watchdog(kWatchdogSeconds, "the always-sleeping consumer", &shared_->progress);
  struct SleepIdle {
    SpscConsumer* consumer;
    void idle(std::size_t work_count) {
      if (work_count == 0) static_cast<void>(consumer->wait(std::chrono::hours(1)));
    }
  };
  test::ChildProcess child([&] {
    auto consumer = SpscConsumer::open(kName, dir_.open_options());
    if (!consumer) return 2;
    const std::string failure =
        consume(*consumer, seed_, count_, SleepIdle{&*consumer}, shared_->progress);
    if (!failure.empty()) {
      shared_->message.set(failure);
      return 1;
    }
    return 0;
  });
  auto producer = SpscProducer::open(kName, dir_.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  SpinYieldIdle idle;
  ASSERT_TRUE(produce(*producer, seed_, count_, idle, false));
  const test::ChildStatus status = child.wait();
  EXPECT_TRUE(status.ok()) << "consumer " << status.describe() << ": " << shared_->message.get();
}

}  // namespace
}  // namespace weft
