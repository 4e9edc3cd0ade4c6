// Broadcast processes die, and channels outlive everyone (seeded; the seed is printed,
// WEFT_TEST_SEED replays it).
//
// What is asserted
//   Consumers killed (reliable): the producer is never held back for good by a dead consumer: it
//   keeps producing, and recovery.detaches counts every killed consumer that had joined. Surviving
//   consumers are unaffected: every record, in order, intact, never detached.
//   Consumers killed (lossy): nothing to detach; survivors' loss accounting stays exact.
//   Producer killed and replaced: consumers continue in order; a new producer continues the
//   sequence numbers exactly (no duplicate, no gap on a reliable channel, no corruption).
//   Stale channels: after every process that had a channel open is killed, is_stale() is true and
//   remove_if_stale() removes it; while any of them lives (even one that only opened the channel)
//   is_stale() is false and remove_if_stale() leaves it alone.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kinds_support.hpp"
#include "weft/broadcast.hpp"
#include "weft/channel.hpp"
#include "weft/idle.hpp"
#include "weft/mpsc.hpp"

namespace weft {
namespace {

using kinds_test::ChildMessage;
using kinds_test::ChildProcess;
using kinds_test::ConsumerReport;
using kinds_test::kDataSource;
using kinds_test::kEndSource;
using kinds_test::Rng;
using kinds_test::Shared;
using kinds_test::TempDir;

constexpr const char* kName = "bcrash";
constexpr unsigned kWatchdogSeconds = 280;
constexpr std::uint64_t kRingBytes = 1 << 16;

ChannelOptions broadcast_options(const TempDir& dir, bool lossy) {
  ChannelOptions options = dir.options(ChannelKind::kBroadcast, kRingBytes, 4096);
  options.lossy = lossy;
  options.consumers_max = 8;
  return options;
}

std::size_t payload_for(std::uint64_t seed, std::uint64_t sequence) {
  return kinds_test::payload_bytes_for(seed, 0, sequence, 120, 3000);
}

struct CrashShared {
  std::atomic<std::uint64_t> sent{0};
  ConsumerReport survivors[2];
  std::atomic<std::uint32_t> victim_attached{0};
  ChildMessage message;
};

// Starts the long-lived consumers and waits until they have joined.
std::vector<std::unique_ptr<ChildProcess>> start_survivors(const TempDir& dir,
                                                           CrashShared& shared) {
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (ConsumerReport& report : shared.survivors) {
    children.push_back(std::make_unique<ChildProcess>([&dir, &report, &shared] {
      auto consumer = BroadcastConsumer::open(kName, dir.open_options());
      if (!consumer) {
        report.message.set(consumer.error().message());
        return 2;
      }
      report.attached.store(1, std::memory_order_release);
      return kinds_test::consume_until_end(*consumer, report, &shared.sent, {});
    }));
  }
  for (std::size_t i = 0; i < children.size(); ++i) {
    while (shared.survivors[i].attached.load(std::memory_order_acquire) == 0 &&
           !children[i]->poll_exited()) {
      usleep(200);
    }
  }
  return children;
}

// Checks what a survivor saw: everything up to the end marker it stopped at, received or (lossy)
// reported lost, each gap a reported loss.
void check_survivor(ChildProcess& child, const ConsumerReport& report, bool lossy,
                    std::uint64_t sent) {
  ASSERT_TRUE(child.wait().ok()) << "survivor " << child.status().describe() << ": "
                                 << report.message.get();
  const std::uint64_t last = report.last_sequence.load();
  EXPECT_LT(last, sent);
  EXPECT_EQ(report.received.load() + report.lost_records.load(), last + 1);
  EXPECT_EQ(report.gaps.load(), report.lost_records.load());
  EXPECT_EQ(report.lost_records_total.load(), report.lost_records.load());
  if (!lossy) {
    EXPECT_EQ(report.lost_records.load(), 0U);
    EXPECT_EQ(report.received.load(), last + 1);
  }
}

// ---- Consumers killed ------------------------------------------------------------------------

void run_killed_consumers(bool lossy) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  const std::uint64_t iterations = kinds_test::scaled(200, 40);
  auto producer_result = BroadcastProducer::create(kName, broadcast_options(dir, lossy));
  ASSERT_TRUE(producer_result) << producer_result.error().message();
  BroadcastProducer& producer = *producer_result;
  const detail::ChannelHeader& header = *producer.channel().header();
  Shared<CrashShared> shared;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the killed-consumers broadcast test");
  auto survivors = start_survivors(dir, *shared);

  std::uint64_t sequence = 0;
  // Sends one record, waiting (and detaching dead consumers, in wait()) while the ring is full,
  // until `until` at the latest. False when it gave up.
  enum class Sent { kOk, kGaveUp, kRefused };
  const auto send_one = [&](std::uint32_t source, std::int64_t until) {
    const std::size_t payload = payload_for(seed, sequence);
    for (;;) {
      const ClaimResult claim = producer.try_claim(kinds_test::kStampBytes + payload);
      if (claim.status == ClaimStatus::kOk) {
        kinds_test::write_record(claim.bytes, source, sequence);
        producer.commit();
        ++sequence;
        // Relaxed: a progress hint for consumers.
        shared->sent.store(sequence, std::memory_order_relaxed);
        return Sent::kOk;
      }
      if (claim.status != ClaimStatus::kFull || lossy) return Sent::kRefused;
      if (kinds_test::monotonic_ns() >= until) return Sent::kGaveUp;
      (void)producer.wait(std::chrono::milliseconds(5));
    }
  };
  constexpr std::int64_t kForever = INT64_MAX;

  std::uint64_t killed = 0;
  std::uint64_t joined = 0;  // Victims that reported having joined before they were killed.
  for (std::uint64_t iteration = 0; iteration < iterations; ++iteration) {
    SCOPED_TRACE("iteration " + std::to_string(iteration));
    shared->victim_attached.store(0);
    const std::uint64_t reads = rng.below(3000);
    const bool stop_reading = rng.one_in(2);
    ChildProcess victim([&, reads, stop_reading] {
      auto consumer = BroadcastConsumer::open(kName, dir.open_options());
      if (!consumer) {
        shared->message.set("victim: " + consumer.error().message());
        return 2;
      }
      shared->victim_attached.store(1, std::memory_order_release);
      std::uint64_t read = 0;
      kinds_test::SpinThenWait idle;
      while (!stop_reading || read < reads) {
        const BroadcastPollResult result = consumer->poll([](std::span<const std::byte>) {}, 64);
        read += result.count;
        if (result.count == 0) idle.idle(*consumer);
      }
      for (;;) pause();  // Joined, and holding the producer back from here on.
    });
    // Produce while the victim runs for a random while, then kill it.
    const std::int64_t kill_at =
        kinds_test::monotonic_ns() + static_cast<std::int64_t>(rng.below(6'000'000));
    // (A live victim that stopped reading holds the producer back: that is right, so give up
    // waiting for space at the kill.)
    while (kinds_test::monotonic_ns() < kill_at) {
      const Sent sent = send_one(kDataSource, kill_at);
      ASSERT_NE(sent, Sent::kRefused);
      if (sent == Sent::kGaveUp) break;
    }
    victim.kill_and_wait();
    ++killed;
    if (shared->victim_attached.load(std::memory_order_acquire) != 0) ++joined;
    ASSERT_TRUE(shared->message.empty()) << shared->message.get();
    // The producer gets past the dead consumer: two more rings' worth of records go out.
    const std::uint64_t position = producer.position();
    while (producer.position() - position < 2 * kRingBytes) {
      ASSERT_EQ(send_one(kDataSource, kForever), Sent::kOk)
          << kinds_test::describe_channel(producer.channel());
    }
    if (!lossy) {
      // Every victim that joined held the producer back once it was a ring ahead, and was
      // detached; one killed before it reported may have been too.
      EXPECT_GE(header.recovery.detaches.load(), joined);
      EXPECT_LE(header.recovery.detaches.load(), killed);
    }
    for (std::size_t i = 0; i < survivors.size(); ++i) {
      ASSERT_FALSE(survivors[i]->poll_exited())
          << "survivor " << i << " " << survivors[i]->status().describe() << ": "
          << shared->survivors[i].message.get();
    }
    if (::testing::Test::HasFailure()) break;
  }
  // Done: end markers until the survivors have seen one.
  for (std::uint64_t i = 0; !(survivors[0]->poll_exited() && survivors[1]->poll_exited()); ++i) {
    ASSERT_EQ(send_one(kEndSource, kForever), Sent::kOk);
    if (i % 64 == 63) sched_yield();
  }
  for (std::size_t i = 0; i < survivors.size(); ++i) {
    SCOPED_TRACE("survivor " + std::to_string(i));
    check_survivor(*survivors[i], shared->survivors[i], lossy, sequence);
  }
  if (lossy) {
    EXPECT_EQ(header.recovery.detaches.load(), 0U);
  }
  std::printf("[   INFO   ] %llu consumers killed (%llu had joined), %llu detached, %llu records\n",
              static_cast<unsigned long long>(killed), static_cast<unsigned long long>(joined),
              static_cast<unsigned long long>(header.recovery.detaches.load()),
              static_cast<unsigned long long>(sequence));
}

TEST(BroadcastCrashTest, ReliableProducerGetsPastKilledConsumers) { run_killed_consumers(false); }

TEST(BroadcastCrashTest, LossySurvivorsAreUnaffectedByKilledConsumers) {
  run_killed_consumers(true);
}

// ---- The producer killed and replaced --------------------------------------------------------

void run_killed_producers(bool lossy) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  const std::uint64_t generations = kinds_test::scaled(200, 40);
  {
    auto channel = Channel::create(kName, broadcast_options(dir, lossy));
    ASSERT_TRUE(channel) << channel.error().message();
  }
  Shared<CrashShared> shared;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the killed-producer broadcast test");
  auto survivors = start_survivors(dir, *shared);

  // A producer generation continues the sequence numbers where the channel says the last one
  // stopped, sometimes spinning between a claim and its commit.
  const auto producer_body = [&](std::uint64_t generation_seed) {
    auto producer = BroadcastProducer::open(kName, dir.open_options());
    if (!producer) {
      shared->message.set("producer: " + producer.error().message());
      return 2;
    }
    Rng local(generation_seed);
    std::uint64_t sequence =
        producer->channel().header()->producer.records_committed.load(std::memory_order_acquire);
    for (;;) {
      const std::size_t payload = payload_for(seed, sequence);
      const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + payload);
      if (claim.status == ClaimStatus::kFull) {
        (void)producer->wait(std::chrono::milliseconds(5));
        continue;
      }
      if (claim.status != ClaimStatus::kOk) return 3;
      kinds_test::write_record(claim.bytes, kDataSource, sequence);
      if (local.one_in(32))
        kinds_test::spin_for_ns(static_cast<std::int64_t>(local.below(100'000)));
      producer->commit();
      ++sequence;
      shared->sent.store(sequence, std::memory_order_relaxed);
    }
  };
  for (std::uint64_t generation = 0; generation < generations; ++generation) {
    SCOPED_TRACE("generation " + std::to_string(generation));
    ChildProcess producer([&, generation] { return producer_body(seed + generation); });
    std::int64_t delay_us = 0;
    switch (rng.below(3)) {
      case 0:
        delay_us = static_cast<std::int64_t>(rng.below(300));
        break;
      case 1:
        delay_us = static_cast<std::int64_t>(rng.below(3000));
        break;
      default:
        delay_us = static_cast<std::int64_t>(rng.below(10000));
        break;
    }
    usleep(static_cast<useconds_t>(delay_us));
    const kinds_test::ChildStatus status = producer.kill_and_wait();
    ASSERT_TRUE(shared->message.empty()) << shared->message.get();
    ASSERT_EQ(status.signal, SIGKILL) << "producer " << status.describe();
    for (std::size_t i = 0; i < survivors.size(); ++i) {
      ASSERT_FALSE(survivors[i]->poll_exited())
          << "consumer " << i << " " << survivors[i]->status().describe() << ": "
          << shared->survivors[i].message.get();
    }
  }
  // The last producer is this process: it continues the sequence and ends the stream.
  auto producer = BroadcastProducer::open(kName, dir.open_options());
  ASSERT_TRUE(producer) << producer.error().message();
  std::uint64_t sequence =
      producer->channel().header()->producer.records_committed.load(std::memory_order_acquire);
  const std::uint64_t first_of_last = sequence;
  for (std::uint64_t i = 0; !(survivors[0]->poll_exited() && survivors[1]->poll_exited()); ++i) {
    const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes);
    if (claim.status == ClaimStatus::kFull) {
      (void)producer->wait(std::chrono::milliseconds(5));
      continue;
    }
    ASSERT_EQ(claim.status, ClaimStatus::kOk);
    kinds_test::write_record(claim.bytes, kEndSource, sequence++);
    producer->commit();
    if (i % 64 == 63) sched_yield();
  }
  for (std::size_t i = 0; i < survivors.size(); ++i) {
    SCOPED_TRACE("consumer " + std::to_string(i));
    check_survivor(*survivors[i], shared->survivors[i], lossy, sequence);
    EXPECT_GE(shared->survivors[i].last_sequence.load(), first_of_last);
  }
  std::printf("[   INFO   ] %llu producers killed, %llu records before the last producer\n",
              static_cast<unsigned long long>(generations),
              static_cast<unsigned long long>(first_of_last));
}

TEST(BroadcastCrashTest, ReliableKilledProducerIsReplaced) { run_killed_producers(false); }

TEST(BroadcastCrashTest, LossyKilledProducerIsReplaced) { run_killed_producers(true); }

// ---- The producer role taken over ------------------------------------------------------------

// The role version of MpscCrashTest.DeadSlotsAreTakenOverByOneProducerEach: processes race for the
// producer role of a dead producer; at most one may win.
TEST(BroadcastCrashTest, DeadProducersRoleIsTakenOverByOneProcess) {
  TempDir dir;
  const std::uint64_t rounds = kinds_test::scaled(100, 20);
  constexpr std::uint32_t kContenders = 4;
  {
    auto channel = Channel::create(kName, broadcast_options(dir, false));
    ASSERT_TRUE(channel) << channel.error().message();
  }
  struct Race {
    std::atomic<std::uint32_t> go{0};
    std::atomic<std::uint32_t> reported{0};
    std::atomic<std::uint32_t> winners{0};
  };
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the role takeover test");
  ChildProcess first([&] {
    auto producer = BroadcastProducer::open(kName, dir.open_options());
    if (!producer) return 2;
    _exit(0);  // Dies holding the role.
  });
  ASSERT_TRUE(first.wait().ok());
  for (std::uint64_t round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Shared<Race> race;
    std::vector<std::unique_ptr<ChildProcess>> contenders;
    for (std::uint32_t k = 0; k < kContenders; ++k) {
      contenders.push_back(std::make_unique<ChildProcess>([&]() -> int {
        while (race->go.load(std::memory_order_acquire) == 0) cpu_relax();
        auto producer = BroadcastProducer::open(kName, dir.open_options());
        if (producer) race->winners.fetch_add(1, std::memory_order_acq_rel);
        race->reported.fetch_add(1, std::memory_order_acq_rel);
        for (;;) pause();
      }));
    }
    race->go.store(1, std::memory_order_release);
    while (race->reported.load(std::memory_order_acquire) < kContenders) usleep(100);
    EXPECT_EQ(race->winners.load(), 1U) << "processes holding the producer role at once";
    for (auto& contender : contenders) contender->kill_and_wait();
    if (::testing::Test::HasFailure()) return;
  }
}

// ---- Stale channels --------------------------------------------------------------------------

struct StaleShared {
  std::atomic<std::uint32_t> ready[3] = {};
  ChildMessage message;
};

// A process that holds the channel open in one of three ways until it is killed.
int hold_channel(const TempDir& dir, ChannelKind kind, int how, StaleShared& shared) {
  const auto fail = [&](const Error& error) {
    shared.message.set(error.message());
    return 2;
  };
  std::optional<MpscProducer> mpsc_producer;
  std::optional<MpscConsumer> mpsc_consumer;
  std::optional<BroadcastProducer> broadcast_producer;
  std::optional<BroadcastConsumer> broadcast_consumer;
  std::optional<Channel> opened;
  if (how == 0) {  // Creates the channel and takes the producer role.
    ChannelOptions options = dir.options(kind, 1 << 14);
    auto channel = Channel::create(kName, options);
    if (!channel) return fail(channel.error());
    if (kind == ChannelKind::kMpsc) {
      auto producer = MpscProducer::attach(std::move(*channel));
      if (!producer) return fail(producer.error());
      mpsc_producer.emplace(std::move(*producer));
    } else {
      auto producer = BroadcastProducer::attach(std::move(*channel));
      if (!producer) return fail(producer.error());
      broadcast_producer.emplace(std::move(*producer));
    }
  } else if (how == 1) {  // Only opens it.
    auto channel = Channel::open(kName, dir.open_options());
    if (!channel) return fail(channel.error());
    opened.emplace(std::move(*channel));
  } else {  // Takes a consumer role.
    if (kind == ChannelKind::kMpsc) {
      auto consumer = MpscConsumer::open(kName, dir.open_options());
      if (!consumer) return fail(consumer.error());
      mpsc_consumer.emplace(std::move(*consumer));
    } else {
      auto consumer = BroadcastConsumer::open(kName, dir.open_options());
      if (!consumer) return fail(consumer.error());
      broadcast_consumer.emplace(std::move(*consumer));
    }
  }
  shared.ready[how].store(1, std::memory_order_release);
  for (;;) pause();
}

void run_stale(ChannelKind kind) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  const std::uint64_t iterations = kinds_test::scaled(40, 10);
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the stale-channel test");
  for (std::uint64_t iteration = 0; iteration < iterations; ++iteration) {
    SCOPED_TRACE("iteration " + std::to_string(iteration));
    Shared<StaleShared> shared;
    std::vector<std::unique_ptr<ChildProcess>> children;
    for (int how = 0; how < 3; ++how) {
      children.push_back(std::make_unique<ChildProcess>(
          [&, how] { return hold_channel(dir, kind, how, *shared); }));
      while (shared->ready[how].load(std::memory_order_acquire) == 0) {
        ASSERT_FALSE(children.back()->poll_exited())
            << children.back()->status().describe() << ": " << shared->message.get();
        usleep(100);
      }
    }
    // A read-only view here takes no lock: it never keeps a channel alive.
    auto view = Channel::open(kName, dir.open_options(true));
    ASSERT_TRUE(view) << view.error().message();
    // Kill them in a random order; the channel is in use until the last one is gone.
    std::vector<std::size_t> order = {0, 1, 2};
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    for (std::size_t k = 0; k < order.size(); ++k) {
      auto stale = Channel::is_stale(kName, dir.path());
      ASSERT_TRUE(stale) << stale.error().message();
      EXPECT_FALSE(*stale) << k << " of 3 killed";
      auto removed = Channel::remove_if_stale(kName, dir.path());
      ASSERT_TRUE(removed) << removed.error().message();
      EXPECT_FALSE(*removed) << k << " of 3 killed";
      ASSERT_TRUE(dir.exists(kName));
      const kinds_test::ChildStatus status = children[order[k]]->kill_and_wait();
      ASSERT_EQ(status.signal, SIGKILL) << status.describe() << ": " << shared->message.get();
    }
    auto stale = Channel::is_stale(kName, dir.path());
    ASSERT_TRUE(stale) << stale.error().message();
    EXPECT_TRUE(*stale);
    auto removed = Channel::remove_if_stale(kName, dir.path());
    ASSERT_TRUE(removed) << removed.error().message();
    EXPECT_TRUE(*removed);
    EXPECT_FALSE(dir.exists(kName));
    auto gone = Channel::is_stale(kName, dir.path());
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().code, Errc::kNotFound);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(StaleChannelTest, MpscIsStaleOnlyOnceEveryUserIsDead) { run_stale(ChannelKind::kMpsc); }

TEST(StaleChannelTest, BroadcastIsStaleOnlyOnceEveryUserIsDead) {
  run_stale(ChannelKind::kBroadcast);
}

}  // namespace
}  // namespace weft
