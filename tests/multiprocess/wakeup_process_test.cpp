// Wake-ups across processes: a side blocked in wait() in one process must be woken by the other
// process's commit (or release) every single time. Each side blocks with a timeout of an hour, so
// one lost wake-up hangs the test until the watchdog fails it with the round it stopped at.
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/idle.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using test::TempDir;

constexpr auto kLongWait = std::chrono::hours(1);
constexpr unsigned kWatchdogSeconds = 240;

struct Shared {
  std::atomic<std::uint64_t> progress{0};
  test::ChildMessage message;
};

// Receives one 8-byte value, sleeping in wait() while there is none.
bool receive_value(SpscConsumer& consumer, std::uint64_t& value) {
  for (;;) {
    const RecvResult received =
        consumer.try_recv(std::span<std::byte>(reinterpret_cast<std::byte*>(&value), 8));
    if (received.status == RecvStatus::kOk) return received.size == 8;
    if (received.status != RecvStatus::kEmpty) return false;
    static_cast<void>(consumer.wait(kLongWait));
  }
}

bool send_value(SpscProducer& producer, std::uint64_t value) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(&value), 8);
  for (;;) {
    const SendStatus status = producer.try_send(bytes);
    if (status == SendStatus::kOk) return true;
    if (status != SendStatus::kFull) return false;
    static_cast<void>(producer.wait(kLongWait));
  }
}

TEST(WakeupProcessTest, PingPongAcrossProcessesNeverLosesAWakeup) {
  TempDir dir;
  ASSERT_TRUE(Channel::create("ping", dir.channel_options(4096)));
  ASSERT_TRUE(Channel::create("pong", dir.channel_options(4096)));
  const std::uint64_t rounds = test::scaled(20'000, 1'000);
  test::SharedBlock<Shared> shared;
  test::Watchdog watchdog(kWatchdogSeconds, "the cross-process ping-pong", &shared->progress);
  test::ChildProcess echo([&] {
    auto ping = SpscConsumer::open("ping", dir.open_options());
    auto pong = SpscProducer::open("pong", dir.open_options());
    if (!ping || !pong) return 2;
    for (std::uint64_t i = 0; i < rounds; ++i) {
      std::uint64_t value = 0;
      if (!receive_value(*ping, value) || value != i) {
        shared->message.set("echo received " + std::to_string(value) + ", expected " +
                            std::to_string(i));
        return 1;
      }
      if (!send_value(*pong, value)) return 3;
    }
    return 0;
  });
  auto ping = SpscProducer::open("ping", dir.open_options());
  ASSERT_TRUE(ping) << ping.error().message();
  auto pong = SpscConsumer::open("pong", dir.open_options());
  ASSERT_TRUE(pong) << pong.error().message();
  for (std::uint64_t i = 0; i < rounds; ++i) {
    ASSERT_TRUE(send_value(*ping, i));
    std::uint64_t value = 0;
    ASSERT_TRUE(receive_value(*pong, value));
    ASSERT_EQ(value, i);
    // Relaxed: read by the watchdog only.
    shared->progress.store(i + 1, std::memory_order_relaxed);
  }
  const test::ChildStatus status = echo.wait();
  EXPECT_TRUE(status.ok()) << status.describe() << ": " << shared->message.get();
}

// Spins (yielding) until `sleepers` shows the other process inside wait(): it has announced
// itself as a sleeper and is about to re-check for progress or is already in FUTEX_WAIT. Then
// waits a random while more, so that the message lands anywhere in that window: before the
// sleeper's re-check, between the re-check and FUTEX_WAIT, or during the sleep.
void await_sleeper(const detail::BellSleepers& sleepers, test::Rng& rng) {
  // Relaxed: only a signal to go ahead; the protocol under test does not rely on it.
  while (sleepers.sleepers.load(std::memory_order_relaxed) == 0) sched_yield();
  const std::uint64_t spins = rng.below(2'000);
  for (std::uint64_t i = 0; i < spins; ++i) cpu_relax();
}

// As above, but every message is sent only once its receiver is inside wait(): each of the
// round trips exercises the window where a wake-up can be lost (the sleeper has announced
// itself and not yet slept, or has just gone to sleep).
TEST(WakeupProcessTest, EveryMessageSentWhileItsReceiverSleepsWakesIt) {
  TempDir dir;
  ASSERT_TRUE(Channel::create("ping", dir.channel_options(4096)));
  ASSERT_TRUE(Channel::create("pong", dir.channel_options(4096)));
  const std::uint64_t seed = test::test_seed();
  const std::uint64_t rounds = test::scaled(20'000, 1'000);
  test::SharedBlock<Shared> shared;
  test::Watchdog watchdog(kWatchdogSeconds, "the sleeper-only ping-pong", &shared->progress);
  test::ChildProcess echo([&] {
    test::Rng rng(seed ^ 1);
    auto ping = SpscConsumer::open("ping", dir.open_options());
    auto pong = SpscProducer::open("pong", dir.open_options());
    if (!ping || !pong) return 2;
    for (std::uint64_t i = 0; i < rounds; ++i) {
      std::uint64_t value = 0;
      if (!receive_value(*ping, value) || value != i) return 1;
      await_sleeper(pong->channel().header()->data_sleepers, rng);
      if (!send_value(*pong, value)) return 3;
    }
    return 0;
  });
  auto ping = SpscProducer::open("ping", dir.open_options());
  ASSERT_TRUE(ping) << ping.error().message();
  auto pong = SpscConsumer::open("pong", dir.open_options());
  ASSERT_TRUE(pong) << pong.error().message();
  test::Rng rng(seed);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    await_sleeper(ping->channel().header()->data_sleepers, rng);
    ASSERT_TRUE(send_value(*ping, i));
    std::uint64_t value = 0;
    ASSERT_TRUE(receive_value(*pong, value));
    ASSERT_EQ(value, i);
    // Relaxed: read by the watchdog only.
    shared->progress.store(i + 1, std::memory_order_relaxed);
  }
  const test::ChildStatus status = echo.wait();
  EXPECT_TRUE(status.ok()) << status.describe();
}

// The producer fills the ring and sleeps in wait() for space; the consumer in another process
// frees exactly one record, at a random moment while the producer sleeps, and then waits for
// the producer to refill the ring before it frees the next. A lost wake-up leaves both waiting.
TEST(WakeupProcessTest, EveryReleaseWhileTheProducerSleepsWakesIt) {
  TempDir dir;
  ASSERT_TRUE(Channel::create("space", dir.channel_options(4096)));
  // 1016-byte records span 1024 bytes: three fill the ring, and one freed makes room for one.
  constexpr std::size_t kRecordBytes = 1016;
  constexpr std::uint64_t kRecordSpan = 1024;
  constexpr std::uint64_t kRingRecords = 3;
  const std::uint64_t seed = test::test_seed();
  const std::uint64_t count = test::scaled(20'000, 1'000);
  test::SharedBlock<Shared> shared;
  test::Watchdog watchdog(kWatchdogSeconds, "the sleeping-producer test", &shared->progress);
  test::ChildProcess releaser([&] {
    auto consumer = SpscConsumer::open("space", dir.open_options());
    if (!consumer) return 2;
    const detail::ChannelHeader& header = *consumer->channel().header();
    test::Rng rng(seed);
    for (std::uint64_t sequence = 0; sequence < count;) {
      const bool producer_blocks = sequence + kRingRecords < count;
      // While records remain to be sent, the producer has filled the ring and sleeps (or is
      // about to): free a record only then.
      if (producer_blocks) await_sleeper(header.space_sleepers, rng);
      std::string failure;
      const PollResult result = consumer->poll(
          [&](std::span<const std::byte> record) {
            failure = test::check_record(record, sequence, kRecordBytes);
          },
          1);
      if (result.status == PollStatus::kCorrupted || !failure.empty()) {
        shared->message.set(failure);
        return 1;
      }
      if (result.count == 0) continue;  // The last records are still on their way.
      ++sequence;
      shared->progress.store(sequence, std::memory_order_relaxed);
      if (producer_blocks) {
        // The freed slot must be refilled: only the woken producer can do that.
        // Acquire: pairs with the producer's release store of tail_position.
        while (header.producer.tail_position.load(std::memory_order_acquire) <
               (sequence + kRingRecords) * kRecordSpan) {
          sched_yield();
        }
      }
    }
    return 0;
  });
  auto producer = SpscProducer::open("space", dir.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
    for (;;) {
      const ClaimResult claim = producer->try_claim(kRecordBytes);
      if (claim.status == ClaimStatus::kOk) {
        test::write_record(claim.bytes, sequence);
        producer->commit();
        break;
      }
      ASSERT_EQ(claim.status, ClaimStatus::kFull);
      static_cast<void>(producer->wait(kLongWait));
    }
  }
  const test::ChildStatus status = releaser.wait();
  EXPECT_TRUE(status.ok()) << status.describe() << ": " << shared->message.get();
  EXPECT_EQ(shared->progress.load(), count);
}

// A producer in one process keeps a tiny ring full and sleeps in wait() for space; the consumer in
// another process sleeps in wait() for data. Both sides block over and over.
TEST(WakeupProcessTest, BothSidesBlockingOnATinyRingMoveEveryRecordInOrder) {
  TempDir dir;
  ASSERT_TRUE(Channel::create("tiny", dir.channel_options(4096)));
  const std::uint64_t seed = test::test_seed();
  const std::uint64_t count = test::scaled(100'000, 2'000);
  test::SharedBlock<Shared> shared;
  test::Watchdog watchdog(kWatchdogSeconds, "the blocking tiny-ring transfer", &shared->progress);
  test::ChildProcess receiver([&] {
    auto consumer = SpscConsumer::open("tiny", dir.open_options());
    if (!consumer) return 2;
    for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
      std::vector<std::byte> buffer(1024);
      for (;;) {
        const RecvResult received = consumer->try_recv(buffer);
        if (received.status == RecvStatus::kOk) {
          buffer.resize(received.size);
          break;
        }
        if (received.status != RecvStatus::kEmpty) return 3;
        static_cast<void>(consumer->wait(kLongWait));
      }
      const std::string failure = test::check_record(
          buffer, sequence, test::record_bytes_for(seed, sequence, 1000 - test::kStampBytes));
      if (!failure.empty()) {
        shared->message.set(failure);
        return 1;
      }
      shared->progress.store(sequence + 1, std::memory_order_relaxed);
    }
    return 0;
  });
  auto producer = SpscProducer::open("tiny", dir.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
    const std::size_t bytes = test::record_bytes_for(seed, sequence, 1000 - test::kStampBytes);
    for (;;) {
      const ClaimResult claim = producer->try_claim(bytes);
      if (claim.status == ClaimStatus::kOk) {
        test::write_record(claim.bytes, sequence);
        producer->commit();
        break;
      }
      ASSERT_EQ(claim.status, ClaimStatus::kFull);
      static_cast<void>(producer->wait(kLongWait));
    }
  }
  const test::ChildStatus status = receiver.wait();
  EXPECT_TRUE(status.ok()) << status.describe() << ": " << shared->message.get();
  EXPECT_EQ(shared->progress.load(), count);
}

}  // namespace
}  // namespace weft
