// Waiting (weft/detail/bell.hpp, SpscConsumer::wait, SpscProducer::wait) and the idle strategies
// (weft/idle.hpp) within one process. A lost wake-up shows as a hang: the waits below use long
// timeouts, and a watchdog turns a hang into a failure that says where it happened. The only
// timing assertion is that a timed-out wait lasted at least its timeout.
#include "weft/detail/bell.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
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

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::steady_clock;
using test::TempDir;

constexpr auto kLongWait = std::chrono::hours(1);
constexpr unsigned kWatchdogSeconds = 50;  // Below the unit label's ctest TIMEOUT of 60 s.

std::vector<std::byte> bytes_of(std::uint64_t value, std::size_t size = 8) {
  std::vector<std::byte> out(size);
  std::memcpy(out.data(), &value, std::min<std::size_t>(size, 8));
  return out;
}

class WaitTest : public ::testing::Test {
 protected:
  void open_ring(std::uint64_t capacity_bytes = 4096, const char* name = "bell") {
    auto producer = SpscProducer::create(name, dir_.channel_options(capacity_bytes));
    ASSERT_TRUE(producer) << producer.error().message();
    producer_.emplace(std::move(*producer));
    auto consumer = SpscConsumer::open(name, dir_.open_options());
    ASSERT_TRUE(consumer) << consumer.error().message();
    consumer_.emplace(std::move(*consumer));
  }
  SpscProducer& producer() { return *producer_; }
  SpscConsumer& consumer() { return *consumer_; }
  detail::ChannelHeader& header() { return *producer_->channel().header(); }

  // Fills the ring with 1000-byte records until one is refused.
  void fill() {
    std::vector<std::byte> payload(1000);
    while (producer().try_send(payload) == SendStatus::kOk) {
    }
    ASSERT_EQ(producer().try_send(payload), SendStatus::kFull);
  }

  // Spins until `sleepers` shows a sleeper (the other thread is inside its futex wait, or about
  // to enter it), then a random while more, so that the wake-up lands anywhere in that window.
  static void await_sleeper(const detail::BellSleepers& sleepers, test::Rng& rng) {
    // Relaxed: only a hint to stop spinning; the protocol under test does not rely on it.
    while (sleepers.sleepers.load(std::memory_order_relaxed) == 0) std::this_thread::yield();
    const std::uint64_t spins = rng.below(2'000);
    for (std::uint64_t i = 0; i < spins; ++i) cpu_relax();
  }

  TempDir dir_;
  std::optional<SpscProducer> producer_;
  std::optional<SpscConsumer> consumer_;
};

TEST_F(WaitTest, ConsumerWaitTimesOutOnAnEmptyChannelAfterAtLeastTheTimeout) {
  open_ring();
  for (const nanoseconds timeout : {nanoseconds(milliseconds(1)), nanoseconds(milliseconds(30))}) {
    const auto start = steady_clock::now();
    EXPECT_EQ(consumer().wait(timeout), WaitStatus::kTimedOut);
    EXPECT_GE(steady_clock::now() - start, timeout);
  }
  EXPECT_EQ(consumer().wait(nanoseconds(0)), WaitStatus::kTimedOut);
  EXPECT_EQ(consumer().wait(nanoseconds(-5)), WaitStatus::kTimedOut);
  EXPECT_EQ(header().data_sleepers.sleepers.load(), 0U) << "a returned waiter is not a sleeper";
}

TEST_F(WaitTest, ConsumerWaitIsReadyAtOnceWhenDataExists) {
  open_ring();
  ASSERT_EQ(producer().try_send(bytes_of(1)), SendStatus::kOk);
  test::Watchdog watchdog(kWatchdogSeconds, "wait() with data present");
  EXPECT_EQ(consumer().wait(kLongWait), WaitStatus::kReady);
  EXPECT_EQ(consumer().wait(nanoseconds(0)), WaitStatus::kReady);
}

TEST_F(WaitTest, ConsumerBlockedInWaitIsWokenByACommit) {
  open_ring();
  test::Watchdog watchdog(kWatchdogSeconds, "a consumer blocked in wait()");
  test::Rng rng(test::test_seed());
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> status{-1};
    std::thread waiter([&] {
      status.store(static_cast<int>(consumer().wait(kLongWait)), std::memory_order_release);
    });
    await_sleeper(header().data_sleepers, rng);
    ASSERT_EQ(producer().try_send(bytes_of(static_cast<std::uint64_t>(round))), SendStatus::kOk);
    waiter.join();
    EXPECT_EQ(status.load(std::memory_order_acquire), static_cast<int>(WaitStatus::kReady));
    std::byte out[8];
    ASSERT_EQ(consumer().try_recv(out).status, RecvStatus::kOk);
  }
}

// "Wait until data arrives, however long it takes" is naturally written with the largest
// timeout. It must block until the commit, not overflow its deadline (undefined behaviour, which
// UBSan reports) and return at once. The wait runs in a child process, so that a sanitizer abort
// fails this test alone.
TEST_F(WaitTest, ConsumerWaitWithTheLargestTimeoutBlocksUntilACommit) {
  open_ring();
  test::Watchdog watchdog(kWatchdogSeconds, "wait(nanoseconds::max())");
  struct Shared {
    std::atomic<bool> committed{false};
  };
  test::SharedBlock<Shared> shared;
  test::ChildProcess waiter([&] {
    const WaitStatus status = consumer().wait(nanoseconds::max());
    // Acquire: pairs with the parent's release store before its commit.
    return status == WaitStatus::kReady && shared->committed.load(std::memory_order_acquire) ? 0
                                                                                             : 1;
  });
  // Give the waiter time to fall asleep (or, with the bug, to return early).
  std::this_thread::sleep_for(milliseconds(50));
  // Release: the waiter must return only after this.
  shared->committed.store(true, std::memory_order_release);
  ASSERT_EQ(producer().try_send(bytes_of(1)), SendStatus::kOk);
  const test::ChildStatus status = waiter.wait();
  EXPECT_TRUE(status.ok()) << "wait(nanoseconds::max()) " << status.describe()
                           << ": it returned before the commit, or a sanitizer stopped it (see "
                              "any report above)";
}

TEST_F(WaitTest, ProducerWaitTimesOutOnAFullRingAfterAtLeastTheTimeout) {
  open_ring();
  ASSERT_NO_FATAL_FAILURE(fill());
  const auto start = steady_clock::now();
  EXPECT_EQ(producer().wait(milliseconds(30)), WaitStatus::kTimedOut);
  EXPECT_GE(steady_clock::now() - start, milliseconds(30));
  EXPECT_EQ(header().space_sleepers.sleepers.load(), 0U);
}

TEST_F(WaitTest, ProducerWaitIsReadyAtOnceWhenTheRefusedRecordFits) {
  open_ring();
  test::Watchdog watchdog(kWatchdogSeconds, "producer wait() with space present");
  EXPECT_EQ(producer().wait(kLongWait), WaitStatus::kReady) << "nothing was refused yet";
  ASSERT_NO_FATAL_FAILURE(fill());
  ASSERT_EQ(consumer().poll([](std::span<const std::byte>) {}, 2).count, 2U);
  EXPECT_EQ(producer().wait(kLongWait), WaitStatus::kReady);
  EXPECT_EQ(producer().try_send(std::vector<std::byte>(1000)), SendStatus::kOk);
}

TEST_F(WaitTest, ProducerWaitIsReadyOnlyWhenTheRefusedRecordFits) {
  open_ring();
  // Four 1008-byte records (1000 of payload) take the tail to 4032. A fifth needs 64 bytes of
  // padding, its 1008 bytes and 8 free bytes after it: tail + 1080 - head <= 4096.
  const std::vector<std::byte> large(1000);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(producer().try_send(large), SendStatus::kOk);
  ASSERT_EQ(producer().try_send(large), SendStatus::kFull);
  ASSERT_EQ(consumer().poll([](std::span<const std::byte>) {}, 1).count, 1U);
  // Head 1008: 4032 + 1080 - 1008 = 4104 > 4096. Space was freed, but not enough.
  EXPECT_EQ(producer().wait(milliseconds(1)), WaitStatus::kTimedOut);
  ASSERT_EQ(producer().try_send(large), SendStatus::kFull);
  ASSERT_EQ(consumer().poll([](std::span<const std::byte>) {}, 1).count, 1U);
  // Head 2016: 4032 + 1080 - 2016 = 3096 <= 4096.
  EXPECT_EQ(producer().wait(milliseconds(1)), WaitStatus::kReady);
  EXPECT_EQ(producer().try_send(large), SendStatus::kOk);
}

TEST_F(WaitTest, ProducerBlockedInWaitIsWokenByARelease) {
  open_ring();
  test::Watchdog watchdog(kWatchdogSeconds, "a producer blocked in wait()");
  test::Rng rng(test::test_seed());
  for (int round = 0; round < 200; ++round) {
    ASSERT_NO_FATAL_FAILURE(fill());
    std::atomic<int> status{-1};
    std::thread waiter([&] {
      status.store(static_cast<int>(producer().wait(kLongWait)), std::memory_order_release);
    });
    await_sleeper(header().space_sleepers, rng);
    ASSERT_EQ(consumer().poll([](std::span<const std::byte>) {}, 2).count, 2U);
    waiter.join();
    EXPECT_EQ(status.load(std::memory_order_acquire), static_cast<int>(WaitStatus::kReady));
    ASSERT_EQ(consumer().poll([](std::span<const std::byte>) {}).status, PollStatus::kOk);
  }
}

// Two threads bounce one message back and forth, each blocking in wait() whenever it has nothing:
// every round trip needs two wake-ups, and a single lost one hangs the test.
TEST_F(WaitTest, PingPongBetweenThreadsNeverLosesAWakeup) {
  open_ring(4096, "ping");
  auto pong_producer = SpscProducer::create("pong", dir_.channel_options(4096));
  ASSERT_TRUE(pong_producer);
  auto pong_consumer = SpscConsumer::open("pong", dir_.open_options());
  ASSERT_TRUE(pong_consumer);
  const std::uint64_t rounds = test::scaled(20'000, 500);
  std::atomic<std::uint64_t> progress{0};
  test::Watchdog watchdog(kWatchdogSeconds, "the thread ping-pong", &progress);
  std::atomic<bool> failed{false};
  std::thread echo([&] {
    for (std::uint64_t i = 0; i < rounds && !failed.load(); ++i) {
      std::uint64_t value = 0;
      for (;;) {
        const RecvResult received =
            consumer().try_recv(std::span<std::byte>(reinterpret_cast<std::byte*>(&value), 8));
        if (received.status == RecvStatus::kOk) break;
        if (received.status != RecvStatus::kEmpty || failed.load()) {
          failed.store(true);
          return;
        }
        static_cast<void>(consumer().wait(kLongWait));
      }
      if (value != i || pong_producer->try_send(bytes_of(value)) != SendStatus::kOk) {
        failed.store(true);
        return;
      }
    }
  });
  std::uint64_t round = 0;
  for (; round < rounds && !failed.load(); ++round) {
    if (producer().try_send(bytes_of(round)) != SendStatus::kOk) break;
    std::uint64_t value = ~std::uint64_t{0};
    for (;;) {
      const RecvResult received =
          pong_consumer->try_recv(std::span<std::byte>(reinterpret_cast<std::byte*>(&value), 8));
      if (received.status != RecvStatus::kEmpty || failed.load()) break;
      static_cast<void>(pong_consumer->wait(kLongWait));
    }
    if (value != round) break;
    progress.store(round, std::memory_order_relaxed);
  }
  const bool complete = round == rounds;
  failed.store(true);  // Lets the echo thread stop if the main loop gave up.
  // The echo thread may sleep in wait(): wake it with one more message when the loop gave up.
  if (!complete) static_cast<void>(producer().try_send(bytes_of(~std::uint64_t{0})));
  echo.join();
  EXPECT_TRUE(complete) << "the ping-pong stopped at round " << round;
}

// ---- The bell itself -------------------------------------------------------------------------

TEST(BellTest, SleepOnBellReturnsAtOnceWhenReady) {
  detail::BellSleepers sleepers{};
  detail::BellSeq seq{};
  const auto always = [](const void*) { return true; };
  EXPECT_TRUE(detail::sleep_on_bell(sleepers, seq, always, nullptr, kLongWait));
  EXPECT_EQ(sleepers.sleepers.load(), 0U);
}

TEST(BellTest, SleepOnBellTimesOutAndLeavesNoSleeper) {
  detail::BellSleepers sleepers{};
  detail::BellSeq seq{};
  const auto never = [](const void*) { return false; };
  const auto start = steady_clock::now();
  EXPECT_FALSE(detail::sleep_on_bell(sleepers, seq, never, nullptr, milliseconds(20)));
  EXPECT_GE(steady_clock::now() - start, milliseconds(20));
  EXPECT_EQ(sleepers.sleepers.load(), 0U);
}

TEST(BellTest, RingingWakesASleeperAndBumpsTheSequence) {
  detail::BellSleepers sleepers{};
  detail::BellSeq seq{};
  std::atomic<bool> progress{false};
  const auto ready = [](const void* context) {
    // Acquire: pairs with the release store of progress below.
    return static_cast<const std::atomic<bool>*>(context)->load(std::memory_order_acquire);
  };
  test::Watchdog watchdog(kWatchdogSeconds, "a sleeper on a bell");
  bool woke = false;
  std::thread sleeper(
      [&] { woke = detail::sleep_on_bell(sleepers, seq, ready, &progress, kLongWait); });
  while (sleepers.sleepers.load(std::memory_order_relaxed) == 0) std::this_thread::yield();
  const std::uint32_t before = seq.seq.load();
  // Release: publishes the progress the sleeper's ready() acquires.
  progress.store(true, std::memory_order_release);
  detail::ring_bell(sleepers, seq, true);
  sleeper.join();
  EXPECT_TRUE(woke);
  EXPECT_EQ(seq.seq.load(), before + 1);
  EXPECT_EQ(sleepers.sleepers.load(), 0U);
  // With nobody asleep, ringing costs no wake-up: the sequence stays put.
  detail::ring_bell(sleepers, seq, false);
  EXPECT_EQ(seq.seq.load(), before + 1);
}

TEST(BellTest, RegisteringARingerIsStable) {
  const bool first = detail::register_ringer();
  EXPECT_EQ(detail::register_ringer(), first) << "registration is per process and idempotent";
}

// ---- Idle strategies -------------------------------------------------------------------------

TEST(IdleTest, SpinYieldIdleSpinsThenYieldsAndResetsOnWork) {
  SpinYieldIdle idle;
  idle.spin_count = 3;
  for (int i = 0; i < 10; ++i) idle.idle(0);
  EXPECT_EQ(idle.spins_, 3U);
  idle.idle(1);
  EXPECT_EQ(idle.spins_, 0U);
  idle.idle(0);
  idle.reset();
  EXPECT_EQ(idle.spins_, 0U);
}

TEST(IdleTest, BackoffIdleGrowsItsSleepToTheMaximumAndResetsOnWork) {
  BackoffIdle idle;
  idle.spin_count = 2;
  idle.yield_count = 2;
  idle.sleep_ns_min = 1'000;
  idle.sleep_ns_max = 16'000;
  for (int i = 0; i < 4; ++i) idle.idle(0);
  EXPECT_EQ(idle.sleep_ns_, 0) << "spins and yields come before any sleep";
  idle.idle(0);
  EXPECT_EQ(idle.sleep_ns_, 1'000);
  idle.idle(0);
  EXPECT_EQ(idle.sleep_ns_, 2'000);
  for (int i = 0; i < 10; ++i) idle.idle(0);
  EXPECT_EQ(idle.sleep_ns_, 16'000);
  idle.idle(3);
  EXPECT_EQ(idle.spins_, 0U);
  EXPECT_EQ(idle.yields_, 0U);
  EXPECT_EQ(idle.sleep_ns_, 0);
}

TEST(IdleTest, BusySpinIdleDoesNothingButRelax) {
  BusySpinIdle idle;
  idle.idle(0);
  idle.idle(5);
  idle.reset();
  SUCCEED();
}

TEST_F(WaitTest, BlockingIdleSpinsThenWaitsOnTheChannel) {
  open_ring();
  BlockingIdle<SpscConsumer> idle;
  idle.waitable = &consumer();
  idle.spin_count = 3;
  idle.timeout = milliseconds(20);
  for (int i = 0; i < 3; ++i) idle.idle(0);  // Spins only.
  EXPECT_EQ(idle.spins_, 3U);
  const auto start = steady_clock::now();
  idle.idle(0);  // Waits: the channel is empty, so for the whole timeout.
  EXPECT_GE(steady_clock::now() - start, milliseconds(20));
  EXPECT_EQ(idle.spins_, 0U);
  idle.idle(0);
  idle.idle(1);
  EXPECT_EQ(idle.spins_, 0U);
}

// Every idle strategy drives a producer thread and a consumer thread through a small ring. The
// test checks only that each compiles against both sides and that all records arrive in order.
template <class Strategy>
class IdleStrategyTest : public ::testing::Test {};

struct BusySpinPair {
  static BusySpinIdle consumer_idle(SpscConsumer&) { return {}; }
  static BusySpinIdle producer_idle(SpscProducer&) { return {}; }
};
struct SpinYieldPair {
  static SpinYieldIdle make() {
    SpinYieldIdle idle;
    idle.spin_count = 50;
    return idle;
  }
  static SpinYieldIdle consumer_idle(SpscConsumer&) { return make(); }
  static SpinYieldIdle producer_idle(SpscProducer&) { return make(); }
};
struct BackoffPair {
  static BackoffIdle make() {
    BackoffIdle idle;
    idle.spin_count = 10;
    idle.yield_count = 10;
    idle.sleep_ns_max = 100'000;
    return idle;
  }
  static BackoffIdle consumer_idle(SpscConsumer&) { return make(); }
  static BackoffIdle producer_idle(SpscProducer&) { return make(); }
};
template <class Side>
BlockingIdle<Side> blocking_idle(Side& side) {
  BlockingIdle<Side> idle;
  idle.waitable = &side;
  idle.spin_count = 20;
  return idle;
}
struct BlockingPair {
  static BlockingIdle<SpscConsumer> consumer_idle(SpscConsumer& c) { return blocking_idle(c); }
  static BlockingIdle<SpscProducer> producer_idle(SpscProducer& p) { return blocking_idle(p); }
};
using Strategies = ::testing::Types<BusySpinPair, SpinYieldPair, BackoffPair, BlockingPair>;
TYPED_TEST_SUITE(IdleStrategyTest, Strategies);

TYPED_TEST(IdleStrategyTest, MovesEveryRecordInOrder) {
  TempDir dir;
  auto producer = SpscProducer::create("idle", dir.channel_options(8192));
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = SpscConsumer::open("idle", dir.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  const std::uint64_t count = test::scaled(100'000, 1'000);
  std::atomic<std::uint64_t> progress{0};
  test::Watchdog watchdog(kWatchdogSeconds, "an idle-strategy transfer", &progress);
  std::thread sender([&] {
    auto idle = TypeParam::producer_idle(*producer);
    for (std::uint64_t i = 0; i < count;) {
      const std::size_t bytes = 8 + static_cast<std::size_t>(i % 300);
      const SendStatus status = producer->try_send(bytes_of(i, bytes));
      if (status == SendStatus::kOk) ++i;
      idle.idle(status == SendStatus::kOk ? 1 : 0);
    }
  });
  auto idle = TypeParam::consumer_idle(*consumer);
  std::uint64_t expected = 0;
  bool in_order = true;
  while (expected < count) {
    const PollResult result = consumer->poll([&](std::span<const std::byte> record) {
      std::uint64_t value = 0;
      std::memcpy(&value, record.data(), 8);
      in_order = in_order && value == expected && record.size() == 8 + expected % 300;
      ++expected;
    });
    EXPECT_NE(result.status, PollStatus::kCorrupted) << consumer->last_error().message();
    if (result.status == PollStatus::kCorrupted) break;  // The watchdog ends a stuck sender.
    progress.store(expected, std::memory_order_relaxed);
    idle.idle(result.count);
  }
  sender.join();
  EXPECT_TRUE(in_order) << "a record arrived out of order near " << expected;
  EXPECT_EQ(expected, count);
}

}  // namespace
}  // namespace weft
