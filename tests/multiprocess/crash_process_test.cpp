// Processes die: a producer or a consumer is killed with SIGKILL at a random point (seeded; the
// seed is printed), a new one attaches, and the channel carries on.
//
// What is asserted
//   Producer death: every record the dead producer committed reaches the consumer exactly once,
//   in order, intact; nothing it had only claimed ever appears; the next producer continues
//   right after it. The dead producer reports each commit in shared memory right after making
//   it, so the number of committed records is known to be `reported` or `reported + 1`.
//   Consumer death: a new consumer resumes at the head the dead one last released. So records
//   released are never delivered again; records delivered but not yet released may be delivered
//   again (at-least-once); nothing is skipped. Each consumer sees a contiguous run of sequence
//   numbers, and the run of consumer g + 1 starts at some s with
//     released(g) <= s <= delivered(g)
//   where delivered(g) and released(g) are what consumer g reported before it was killed (the
//   true released position can only be ahead of what it reported, the true head never ahead of
//   what it delivered, because it reports a delivery before the head moves past it).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <optional>
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

constexpr const char* kName = "crash";
constexpr std::uint64_t kRingBytes = 16384;
constexpr std::size_t kPayloadBytesMax = 2000;
constexpr int kKills = 50;
constexpr unsigned kWatchdogSeconds = 280;
constexpr int kGenerationShift = 40;

// Spins for a random while so that a kill lands at a random instruction of the other process.
void spin_randomly(test::Rng& rng) {
  const std::uint64_t spins = rng.below(20'000);
  for (std::uint64_t i = 0; i < spins; ++i) cpu_relax();
}

// ---- Producer death --------------------------------------------------------------------------

struct ProducerShared {
  std::atomic<std::uint64_t> committed[kKills + 1] = {};  // Per generation, after each commit.
  std::atomic<std::uint64_t> progress{0};
  test::ChildMessage message;
};

// A producer generation sends records stamped (generation << 40 | n) for n = 0, 1, ... until
// `count` or forever, and reports every commit right after making it.
int run_producer(const TempDir& dir, ProducerShared& shared, std::uint64_t seed, int generation,
                 std::uint64_t count) {
  auto producer = SpscProducer::open(kName, dir.open_options());
  if (!producer) {
    shared.message.set(producer.error().message());
    return 2;
  }
  SpinYieldIdle idle;
  for (std::uint64_t n = 0; n < count;) {
    const std::uint64_t stamp = (static_cast<std::uint64_t>(generation) << kGenerationShift) | n;
    const std::size_t bytes = test::record_bytes_for(seed, stamp, kPayloadBytesMax);
    const ClaimResult claim = producer->try_claim(bytes);
    if (claim.status != ClaimStatus::kOk) {
      idle.idle(0);
      continue;
    }
    test::write_record(claim.bytes, stamp);
    producer->commit();
    ++n;
    // Release: the parent reads it after this process died; any order would do.
    shared.committed[generation].store(n, std::memory_order_release);
    idle.idle(1);
  }
  return 0;
}

TEST(CrashProcessTest, ProducerKilledAtRandomPointsLosesNoCommittedRecord) {
  const std::uint64_t seed = test::test_seed();
  test::Rng rng(seed);
  TempDir dir;
  ASSERT_TRUE(Channel::create(kName, dir.channel_options(kRingBytes)));
  auto consumer = SpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  test::SharedBlock<ProducerShared> shared;
  test::Watchdog watchdog(kWatchdogSeconds, "the producer-crash test", &shared->progress);

  const std::uint64_t per_generation = test::scaled(20'000, 200);
  std::vector<std::uint64_t> seen(kKills + 1, 0);
  int generation_seen = 0;
  std::string failure;
  const auto handle = [&](std::span<const std::byte> record) {
    if (!failure.empty()) return;
    const std::uint64_t stamp = test::record_sequence(record);
    const auto generation = static_cast<int>(stamp >> kGenerationShift);
    if (generation < generation_seen || generation > kKills) {
      failure = "record of generation " + std::to_string(generation) + " after generation " +
                std::to_string(generation_seen);
      return;
    }
    generation_seen = generation;
    const std::uint64_t expected = (static_cast<std::uint64_t>(generation) << kGenerationShift) |
                                   seen[static_cast<std::size_t>(generation)];
    failure = test::check_record(record, expected,
                                 test::record_bytes_for(seed, expected, kPayloadBytesMax));
    if (!failure.empty()) {
      failure = "generation " + std::to_string(generation) + ": " + failure;
      return;
    }
    ++seen[static_cast<std::size_t>(generation)];
    shared->progress.fetch_add(1, std::memory_order_relaxed);
  };
  // Spins, then yields: a busy machine must not starve the child this loop waits for.
  SpinYieldIdle idle;
  const auto poll_once = [&] {
    const PollResult result = consumer->poll(handle, 1 + rng.below(64));
    if (result.status == PollStatus::kCorrupted) failure = consumer->last_error().message();
    idle.idle(result.count);
  };

  for (int generation = 0; generation < kKills; ++generation) {
    // Kill once this generation has committed `target` records, at whatever it is doing then.
    const std::uint64_t target = rng.between(1, per_generation);
    test::ChildProcess child(
        [&] { return run_producer(dir, *shared, seed, generation, UINT64_MAX); });
    while (failure.empty() &&
           shared->committed[generation].load(std::memory_order_acquire) < target) {
      poll_once();
      ASSERT_FALSE(child.poll_exited())
          << "producer " << child.status().describe() << ": " << shared->message.get();
    }
    spin_randomly(rng);
    const test::ChildStatus status = child.kill_and_wait();
    ASSERT_EQ(status.signal, SIGKILL) << status.describe() << ": " << shared->message.get();
    ASSERT_EQ(failure, "");
  }
  // The last producer finishes normally; the consumer drains everything.
  const std::uint64_t last_count = per_generation;
  test::ChildProcess last([&] { return run_producer(dir, *shared, seed, kKills, last_count); });
  while (failure.empty() && seen[kKills] < last_count) poll_once();
  ASSERT_EQ(failure, "");
  const test::ChildStatus status = last.wait();
  EXPECT_TRUE(status.ok()) << status.describe() << ": " << shared->message.get();
  EXPECT_EQ(consumer->poll(handle).status, PollStatus::kEmpty);

  std::uint64_t total = 0;
  int unreported = 0;  // Kills that landed between a commit and its report.
  for (int generation = 0; generation < kKills; ++generation) {
    const std::uint64_t reported = shared->committed[generation].load(std::memory_order_acquire);
    const std::uint64_t got = seen[static_cast<std::size_t>(generation)];
    EXPECT_GE(got, reported) << "generation " << generation << " lost committed records";
    EXPECT_LE(got, reported + 1) << "generation " << generation
                                 << " delivered records it never committed";
    total += got;
    if (got == reported + 1) ++unreported;
  }
  EXPECT_EQ(seen[kKills], last_count);
  std::printf("[   INFO   ] %d producers killed (%d right after a commit); %" PRIu64
              " records from them, %" PRIu64 " from the last\n",
              kKills, unreported, total, seen[kKills]);
}

// ---- Consumer death --------------------------------------------------------------------------

struct ConsumerReport {
  std::atomic<std::int64_t> first_seen{-1};      // Sequence of the first record it saw.
  std::atomic<std::int64_t> delivered_next{-1};  // One past the last record handed to it.
  std::atomic<std::int64_t> released_next{-1};   // One past the last record it released.
};

struct ConsumerShared {
  ConsumerReport report[kKills + 1];
  std::atomic<std::uint64_t> progress{0};
  test::ChildMessage message;
};

// A consumer generation reads until it has seen record `count - 1`, with poll(), peek/release
// or try_recv depending on `mode`, checking that its sequence numbers are contiguous.
int run_consumer(const TempDir& dir, ConsumerShared& shared, std::uint64_t seed, int generation,
                 std::uint64_t count, std::uint64_t mode) {
  auto consumer = SpscConsumer::open(kName, dir.open_options());
  if (!consumer) {
    shared.message.set(consumer.error().message());
    return 2;
  }
  ConsumerReport& report = shared.report[generation];
  test::Rng rng(seed + static_cast<std::uint64_t>(generation));
  std::int64_t expected = -1;
  std::string failure;
  SpinYieldIdle idle;
  const auto deliver = [&](std::span<const std::byte> record) {
    if (!failure.empty()) return;
    const auto sequence = static_cast<std::int64_t>(test::record_sequence(record));
    if (expected < 0) {
      expected = sequence;
      // Release: read by the parent after this process ends.
      report.first_seen.store(sequence, std::memory_order_release);
    }
    const auto want = static_cast<std::uint64_t>(expected);
    failure = test::check_record(record, want, test::record_bytes_for(seed, want));
    if (!failure.empty()) return;
    ++expected;
    // Release: stored before the consumer can release this record's space.
    report.delivered_next.store(expected, std::memory_order_release);
  };
  while (failure.empty() && expected != static_cast<std::int64_t>(count)) {
    std::size_t work = 0;
    if (mode == 0) {
      const PollResult result = consumer->poll(deliver, 1 + rng.below(32));
      if (result.status == PollStatus::kCorrupted) failure = consumer->last_error().message();
      work = result.count;
    } else if (mode == 1) {
      const PeekResult next = consumer->peek();
      if (next.status == PollStatus::kCorrupted) failure = consumer->last_error().message();
      if (next.status == PollStatus::kOk) {
        deliver(next.bytes);
        consumer->release();
        work = 1;
      }
    } else {
      std::byte buffer[kPayloadBytesMax + test::kStampBytes];
      const RecvResult received = consumer->try_recv(buffer);
      if (received.status == RecvStatus::kCorrupted || received.status == RecvStatus::kTooSmall) {
        failure = "try_recv failed";
      }
      if (received.status == RecvStatus::kOk) {
        deliver(std::span<const std::byte>(buffer, received.size));
        work = 1;
      }
    }
    if (work != 0) {
      // Release: after the head moved past these records.
      report.released_next.store(expected, std::memory_order_release);
      shared.progress.store(static_cast<std::uint64_t>(expected), std::memory_order_relaxed);
    }
    idle.idle(work);
  }
  if (!failure.empty()) {
    shared.message.set("consumer " + std::to_string(generation) + ": " + failure);
    return 1;
  }
  return 0;
}

TEST(CrashProcessTest, ConsumerKilledAtRandomPointsResumesAtTheReleasedHead) {
  const std::uint64_t seed = test::test_seed();
  test::Rng rng(seed);
  TempDir dir;
  ASSERT_TRUE(Channel::create(kName, dir.channel_options(kRingBytes)));
  auto producer = SpscProducer::open(kName, dir.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  test::SharedBlock<ConsumerShared> shared;
  test::Watchdog watchdog(kWatchdogSeconds, "the consumer-crash test", &shared->progress);

  // At least 60000: every kill target stays more than a full ring of records short of the end.
  const std::uint64_t count = test::scaled(300'000, 60'000);
  const std::uint64_t stride = count / (kKills + 2);
  std::uint64_t next = 0;  // Next sequence to send.
  const auto produce_some = [&] {
    std::size_t sent = 0;
    while (next < count && sent < 256) {
      const ClaimResult claim = producer->try_claim(test::record_bytes_for(seed, next));
      if (claim.status != ClaimStatus::kOk) break;
      test::write_record(claim.bytes, next);
      producer->commit();
      ++next;
      ++sent;
    }
    return sent;
  };

  // Bounds on where the next consumer may start: [low, high].
  std::int64_t low = 0;
  std::int64_t high = 0;
  std::uint64_t redelivered = 0;
  SpinYieldIdle idle;
  for (int generation = 0; generation <= kKills; ++generation) {
    const bool last = generation == kKills;
    const std::uint64_t mode = rng.below(3);
    const std::uint64_t target_cap =
        count * static_cast<std::uint64_t>(generation + 1) / (kKills + 2);
    const auto target = static_cast<std::int64_t>(
        std::min(static_cast<std::uint64_t>(high) + rng.between(1, stride), target_cap));
    test::ChildProcess child(
        [&] { return run_consumer(dir, *shared, seed, generation, count, mode); });
    ConsumerReport& report = shared->report[generation];
    for (;;) {
      idle.idle(produce_some());
      if (!last && report.delivered_next.load(std::memory_order_acquire) >= target) break;
      if (child.poll_exited()) break;
    }
    if (!last) {
      spin_randomly(rng);
      child.kill_and_wait();
    }
    const test::ChildStatus status = child.wait();
    if (last) {
      EXPECT_TRUE(status.ok()) << status.describe() << ": " << shared->message.get();
    } else {
      ASSERT_EQ(status.signal, SIGKILL)
          << "consumer " << generation << " " << status.describe() << ": " << shared->message.get();
    }
    const std::int64_t first = report.first_seen.load(std::memory_order_acquire);
    const std::int64_t delivered = report.delivered_next.load(std::memory_order_acquire);
    const std::int64_t released = report.released_next.load(std::memory_order_acquire);
    if (first < 0) {
      // Killed before it saw anything: it released nothing, except that try_recv may have
      // released one record it never got to hand over.
      if (mode == 2) ++high;
      continue;
    }
    EXPECT_GE(first, low) << "consumer " << generation
                          << " was handed a record an earlier consumer had released";
    EXPECT_LE(first, high) << "consumer " << generation << " skipped records";
    if (first < high) redelivered += static_cast<std::uint64_t>(high - first);
    if (released >= 0) low = std::max(low, released);
    // try_recv (mode 2) copies a record and releases it before handing it over: a consumer
    // killed in between loses that one record, so the next may start one further.
    high = delivered + (mode == 2 ? 1 : 0);
    if (HasFailure()) break;
  }
  EXPECT_EQ(next, count);
  std::printf("[   INFO   ] %d consumers killed; %" PRIu64 " records redelivered in all\n", kKills,
              redelivered);
}

// ---- Deterministic deaths --------------------------------------------------------------------

class CrashPointTest : public ::testing::TestWithParam<int> {};

// Where the dying producer stops: after claiming, half-way through writing, or after a claim
// that had to publish padding first.
enum CrashPoint { kAfterClaim, kHalfWritten, kAfterPaddingClaim };

TEST_P(CrashPointTest, ProducerKilledInsideARecordLeavesNothingVisible) {
  const int point = GetParam();
  TempDir dir;
  ASSERT_TRUE(Channel::create(kName, dir.channel_options(4096, 2032)));
  auto consumer = SpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  test::ChildProcess dying([&] {
    auto producer = SpscProducer::open(kName, dir.open_options());
    if (!producer) return 2;
    // Three 1000-byte records: the tail ends at 3024, so a 1100-byte claim needs padding.
    for (std::uint64_t i = 0; i < 3; ++i) {
      std::vector<std::byte> payload(1000);
      test::write_record(payload, i);
      if (producer->try_send(payload) != SendStatus::kOk) return 3;
    }
    std::uint64_t taken = 0;
    const auto drained = [&] {
      // Acquire: pairs with the consumer's release store of head_position.
      return producer->channel().header()->consumer.head_position.load(std::memory_order_acquire) >=
             3024;
    };
    if (point == kAfterPaddingClaim) {
      // Wait until the consumer has made room, so that the claim succeeds with padding.
      while (!drained()) sched_yield();
      taken = 1100;
    } else {
      taken = 40;
    }
    const ClaimResult claim = producer->try_claim(taken);
    if (!claim) return 4;
    if (point == kHalfWritten) std::memset(claim.bytes.data(), 0x5a, taken / 2);
    if (point == kAfterPaddingClaim) std::memset(claim.bytes.data(), 0x5a, taken);
    raise(SIGKILL);
    return 5;
  });
  std::vector<std::uint64_t> received;
  const auto handle = [&](std::span<const std::byte> record) {
    received.push_back(test::record_sequence(record));
  };
  test::Watchdog watchdog(60, "the crash-point test");
  while (received.size() < 3) {
    if (consumer->poll(handle).count == 0) sched_yield();
  }
  const test::ChildStatus status = dying.wait();
  ASSERT_EQ(status.signal, SIGKILL) << status.describe();
  EXPECT_EQ(consumer->poll(handle).status, PollStatus::kEmpty) << "the claimed record showed up";

  // The next producer continues; its records follow directly.
  test::ChildProcess next([&] {
    auto producer = SpscProducer::open(kName, dir.open_options());
    if (!producer) return 2;
    for (std::uint64_t i = 3; i < 6; ++i) {
      std::vector<std::byte> payload(300);
      test::write_record(payload, i);
      if (producer->try_send(payload) != SendStatus::kOk) return 3;
    }
    return 0;
  });
  ASSERT_TRUE(next.wait().ok());
  while (received.size() < 6 && consumer->poll(handle).status == PollStatus::kOk) {
  }
  EXPECT_EQ(received, (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_FALSE(consumer->corrupted()) << consumer->last_error().message();
}

INSTANTIATE_TEST_SUITE_P(EveryPoint, CrashPointTest,
                         ::testing::Values(kAfterClaim, kHalfWritten, kAfterPaddingClaim),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           switch (param_info.param) {
                             case kAfterClaim:
                               return std::string("AfterClaim");
                             case kHalfWritten:
                               return std::string("HalfWritten");
                             default:
                               return std::string("AfterPaddingClaim");
                           }
                         });

// A consumer killed while asleep in wait() cannot take back its sleeper count. A new consumer
// replaces it as the only possible sleeper, so attaching must clear the count; left behind, it
// makes the producer call futex_wake on every commit forever.
TEST(CrashProcessTest, ConsumerKilledWhileAsleepLeavesNoSleeperBehind) {
  TempDir dir;
  ASSERT_TRUE(Channel::create(kName, dir.channel_options(4096)));
  auto producer = SpscProducer::open(kName, dir.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  detail::ChannelHeader& header = *producer->channel().header();
  test::Watchdog watchdog(60, "the sleeping-consumer crash test");
  test::ChildProcess sleeper([&] {
    auto consumer = SpscConsumer::open(kName, dir.open_options());
    if (!consumer) return 2;
    static_cast<void>(consumer->wait(std::chrono::hours(1)));
    return 0;
  });
  // Relaxed: a hint to stop spinning; the child is asleep or about to be.
  while (header.data_sleepers.sleepers.load(std::memory_order_relaxed) == 0) sched_yield();
  ASSERT_EQ(sleeper.kill_and_wait().signal, SIGKILL);
  auto consumer = SpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  EXPECT_EQ(header.data_sleepers.sleepers.load(), 0U)
      << "the dead consumer still counts as asleep: every commit will make a system call";
  // The channel works either way.
  const std::byte payload[8] = {};
  ASSERT_EQ(producer->try_send(payload), SendStatus::kOk);
  EXPECT_EQ(consumer->wait(std::chrono::hours(1)), WaitStatus::kReady);
}

TEST(CrashProcessTest, ProducerKilledWhileAsleepLeavesNoSleeperBehind) {
  TempDir dir;
  ASSERT_TRUE(Channel::create(kName, dir.channel_options(4096)));
  auto consumer = SpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  detail::ChannelHeader& header = *consumer->channel().header();
  test::Watchdog watchdog(60, "the sleeping-producer crash test");
  test::ChildProcess sleeper([&] {
    auto producer = SpscProducer::open(kName, dir.open_options());
    if (!producer) return 2;
    const std::vector<std::byte> payload(1000);
    while (producer->try_send(payload) == SendStatus::kOk) {
    }
    static_cast<void>(producer->wait(std::chrono::hours(1)));
    return 0;
  });
  // Relaxed: a hint to stop spinning.
  while (header.space_sleepers.sleepers.load(std::memory_order_relaxed) == 0) sched_yield();
  ASSERT_EQ(sleeper.kill_and_wait().signal, SIGKILL);
  auto producer = SpscProducer::open(kName, dir.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  EXPECT_EQ(header.space_sleepers.sleepers.load(), 0U)
      << "the dead producer still counts as asleep: every release will make a system call";
  EXPECT_EQ(consumer->poll([](std::span<const std::byte>) {}).count, 4U);
}

}  // namespace
}  // namespace weft
