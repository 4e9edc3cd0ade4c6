// Producer and consumer threads in one process, for ThreadSanitizer: MPSC with three producer
// threads (one of them now and then idle with an open chunk, one leaving and re-attaching) and a
// consumer thread; broadcast with a producer thread and two reliable consumer threads; lossy
// broadcast with a fast and a slow consumer thread. Every record is checked (sequence number,
// length, checksum). Each test runs for a bounded time (records scale with WEFT_TEST_SCALE) and
// prints its seed. All roles share one mapping (Channel::share), so that TSan sees every access
// to the ring at one address.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
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

#include "kinds_support.hpp"
#include "weft/broadcast.hpp"
#include "weft/channel.hpp"
#include "weft/idle.hpp"
#include "weft/mpsc.hpp"

namespace weft {
namespace {

using kinds_test::Rng;
using kinds_test::TempDir;

constexpr const char* kName = "stress";
constexpr unsigned kWatchdogSeconds = 280;
constexpr std::int64_t kProduceNsMax = 20'000'000'000;  // Producers stop after this, done or not.

std::size_t payload_for(std::uint64_t seed, std::uint32_t source, std::uint64_t sequence) {
  return kinds_test::payload_bytes_for(seed, source, sequence, 100, 2500);
}

// Per-source checks, for one consumer thread.
struct SourceChecker {
  SourceChecker(std::uint64_t run_seed, std::size_t sources) : seed(run_seed), next(sources, 0) {}
  std::uint64_t seed;
  std::vector<std::uint64_t> next;
  std::uint64_t received = 0;
  std::uint64_t received_data = 0;  // Records of source 0.
  std::uint64_t gaps = 0;           // Lossy: sequence numbers skipped.
  bool allow_gaps = false;
  bool single_stream = false;  // One sequence for all sources (broadcast: data, then ends).
  std::string problem;

  void operator()(std::span<const std::byte> record) {
    ++received;
    const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
    if (stamp.source == 0) ++received_data;
    if (!problem.empty()) return;
    problem = kinds_test::check_record(record);
    if (!problem.empty()) return;
    const std::size_t stream = single_stream ? 0 : stamp.source;
    if (stream >= next.size()) {
      problem = "unknown source " + std::to_string(stamp.source);
    } else if (stamp.payload_bytes != payload_for(seed, stamp.source, stamp.sequence)) {
      problem = "record " + std::to_string(stamp.sequence) + " has the wrong length";
    } else if (stamp.sequence < next[stream] || (!allow_gaps && stamp.sequence != next[stream])) {
      problem = "source " + std::to_string(stamp.source) + ": sequence " +
                std::to_string(stamp.sequence) + " where " + std::to_string(next[stream]) +
                " was expected";
    } else {
      gaps += stamp.sequence - next[stream];
      next[stream] = stamp.sequence + 1;
    }
  }
};

template <class Producer>
bool send(Producer& producer, std::uint64_t seed, std::uint32_t source, std::uint64_t sequence,
          const std::atomic<bool>& stop) {
  const std::size_t payload = payload_for(seed, source, sequence);
  std::uint32_t idle = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    const ClaimResult claim = producer.try_claim(kinds_test::kStampBytes + payload);
    if (claim.status == ClaimStatus::kOk) {
      kinds_test::write_record(claim.bytes, source, sequence);
      producer.commit();
      return true;
    }
    if (claim.status != ClaimStatus::kFull) return false;
    if (++idle % 128 == 0) {
      (void)producer.wait(std::chrono::milliseconds(1));
    } else {
      cpu_relax();
    }
  }
  return false;
}

// ---- MPSC ------------------------------------------------------------------------------------

void run_mpsc_threads(std::uint32_t producer_count) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  const std::uint64_t per_producer = kinds_test::scaled(300'000, 30'000);
  ChannelOptions options = dir.options(ChannelKind::kMpsc, 1 << 16, 4096);
  options.producers_max = 8;
  auto channel = Channel::create(kName, options);
  ASSERT_TRUE(channel) << channel.error().message();
  auto consumer = MpscConsumer::attach(channel->share());
  ASSERT_TRUE(consumer) << consumer.error().message();
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the MPSC thread stress test");

  std::atomic<bool> stop{false};
  std::vector<std::uint64_t> sent(producer_count, 0);
  std::vector<std::string> errors(producer_count);
  std::vector<std::thread> producers;
  const std::int64_t deadline = kinds_test::monotonic_ns() + kProduceNsMax;
  for (std::uint32_t source = 0; source < producer_count; ++source) {
    producers.emplace_back([&, source] {
      Rng rng(seed + source);
      std::optional<MpscProducer> producer;
      for (std::uint64_t sequence = 0; sequence < per_producer; ++sequence) {
        if (!producer) {
          auto attached = MpscProducer::attach(channel->share());
          if (!attached) {
            errors[source] = attached.error().message();
            return;
          }
          producer.emplace(std::move(*attached));
        }
        if (!send(*producer, seed, source, sequence, stop)) {
          if (!stop.load()) errors[source] = "claim refused as too large";
          return;
        }
        sent[source] = sequence + 1;
        if (source == 1 && rng.one_in(5000)) {
          // Idle for a while with an open chunk: the consumer takes the rest back.
          std::this_thread::sleep_for(std::chrono::microseconds(rng.below(2000)));
        }
        if (source == 2 && rng.one_in(3000)) producer.reset();  // Leave; attach again next.
        if (kinds_test::monotonic_ns() > deadline) return;
      }
    });
  }

  SourceChecker checker(seed, producer_count);
  std::atomic<bool> producers_done{false};
  std::string consumer_error;
  std::thread consumer_thread([&] {
    std::uint32_t idle = 0;
    for (;;) {
      const PollResult result = consumer->poll(checker);
      if (result.status == PollStatus::kCorrupted) {
        consumer_error = consumer->last_error().message();
        return;
      }
      if (result.count != 0) {
        idle = 0;
        continue;
      }
      if (producers_done.load(std::memory_order_acquire)) {
        // Everything claimed has been read once the head reaches the tail.
        if (consumer->position() ==
            consumer->channel().header()->producer.tail_position.load(std::memory_order_acquire)) {
          return;
        }
      }
      if (++idle % 64 == 0) (void)consumer->wait(std::chrono::milliseconds(1));
    }
  });
  for (auto& producer : producers) producer.join();
  producers_done.store(true, std::memory_order_release);
  consumer_thread.join();

  EXPECT_EQ(consumer_error, "");
  EXPECT_EQ(checker.problem, "");
  for (std::uint32_t source = 0; source < producer_count; ++source) {
    EXPECT_EQ(errors[source], "") << "producer " << source;
    EXPECT_EQ(checker.next[source], sent[source]) << "producer " << source;
    EXPECT_GT(sent[source], 0U);
  }
  std::uint64_t total = 0;
  for (const std::uint64_t count : sent) total += count;
  std::printf("[   INFO   ] %llu records from %u producer threads\n",
              static_cast<unsigned long long>(total), producer_count);
}

TEST(KindsStressTest, MpscThreeProducerThreadsAndAConsumerThread) {
  // Rare with a live consumer, but real: a record lost.
  run_mpsc_threads(3);
}

// One producer thread: the consumer never takes a chunk back; the plain data path (claims,
// commits, zeroing, releases) under TSan.
TEST(KindsStressTest, MpscOneProducerThreadAndAConsumerThread) { run_mpsc_threads(1); }

// ---- Broadcast -------------------------------------------------------------------------------

void run_broadcast_threads(bool lossy) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  const std::uint64_t records = kinds_test::scaled(600'000, 60'000);
  ChannelOptions options = dir.options(ChannelKind::kBroadcast, 1 << 16, 4096);
  options.lossy = lossy;
  auto producer = BroadcastProducer::create(kName, options);
  ASSERT_TRUE(producer) << producer.error().message();
  constexpr std::size_t kConsumers = 2;
  std::vector<BroadcastConsumer> consumers;
  for (std::size_t i = 0; i < kConsumers; ++i) {
    auto consumer = BroadcastConsumer::attach(producer->channel().share());
    ASSERT_TRUE(consumer) << consumer.error().message();
    consumers.push_back(std::move(*consumer));
  }
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the broadcast thread stress test");

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> data_sent{0};
  std::vector<SourceChecker> checkers(kConsumers, SourceChecker(seed, 1));
  std::vector<std::uint64_t> lost(kConsumers, 0);
  std::vector<std::string> errors(kConsumers);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < kConsumers; ++i) {
    checkers[i].allow_gaps = lossy;
    checkers[i].single_stream = true;
    threads.emplace_back([&, i] {
      BroadcastConsumer& consumer = consumers[i];
      SourceChecker& checker = checkers[i];
      bool end = false;
      const auto handler = [&](std::span<const std::byte> record) {
        if (end) return;
        checker(record);
        if (kinds_test::read_stamp(record).source == 1) end = true;
        // The second consumer is slow: a busy wait per record.
        if (i == 1) kinds_test::spin_for_ns(lossy ? 3000 : 200);
      };
      std::uint32_t idle = 0;
      while (!end) {
        // Lossy: one record per poll, so that the losses a poll reports all precede the record
        // it hands out (losses after the end marker must not count).
        const BroadcastPollResult result = consumer.poll(handler, lossy ? 1 : 256);
        if (result.status == PollStatus::kCorrupted || result.status == PollStatus::kDetached) {
          errors[i] = "poll status " + std::to_string(static_cast<int>(result.status)) + ": " +
                      consumer.last_error().message();
          return;
        }
        lost[i] += result.lost_records;
        if (result.count == 0 && result.lost_records == 0 && ++idle % 64 == 0) {
          (void)consumer.wait(std::chrono::milliseconds(1));
        }
      }
    });
  }
  // Data records (source 0), then end markers (source 1) until both consumers have one.
  std::atomic<std::uint32_t> finished{0};
  std::thread producer_thread([&] {
    const std::int64_t deadline = kinds_test::monotonic_ns() + kProduceNsMax;
    std::uint64_t sequence = 0;
    for (; sequence < records && kinds_test::monotonic_ns() < deadline; ++sequence) {
      if (!send(*producer, seed, 0, sequence, stop)) return;
      sent.store(sequence + 1, std::memory_order_relaxed);
    }
    data_sent.store(sequence, std::memory_order_relaxed);
    while (finished.load(std::memory_order_acquire) < kConsumers) {
      if (!send(*producer, seed, 1, sequence, stop)) return;
      sent.store(++sequence, std::memory_order_relaxed);
      if (sequence % 64 == 0) std::this_thread::yield();
    }
  });
  for (auto& thread : threads) {
    thread.join();
    finished.fetch_add(1, std::memory_order_acq_rel);
  }
  // The consumers stopped polling but stay attached: a reliable producer may be waiting for room
  // for one more end marker that nobody will read.
  stop.store(true, std::memory_order_relaxed);
  producer_thread.join();

  for (std::size_t i = 0; i < kConsumers; ++i) {
    SCOPED_TRACE("consumer " + std::to_string(i));
    const SourceChecker& checker = checkers[i];
    EXPECT_EQ(errors[i], "");
    EXPECT_EQ(checker.problem, "");
    // Everything up to the end marker it stopped at: received, or reported lost, and every gap
    // in the sequence numbers a reported loss.
    EXPECT_EQ(checker.received + lost[i], checker.next[0]);
    EXPECT_EQ(checker.gaps, lost[i]);
    EXPECT_EQ(consumers[i].lost_records_total(), lost[i]);
    EXPECT_LE(checker.next[0], sent.load());
    if (!lossy) {
      EXPECT_EQ(lost[i], 0U);
      EXPECT_EQ(checker.received_data, data_sent.load());
    }
  }
  std::printf("[   INFO   ] %llu records, lost by the slow consumer: %llu\n",
              static_cast<unsigned long long>(sent.load()),
              static_cast<unsigned long long>(lost[1]));
}

TEST(KindsStressTest, BroadcastProducerAndTwoReliableConsumerThreads) {
  run_broadcast_threads(false);
}

// Under ThreadSanitizer this checks that the lossy consumer reads a lap-overwritten ring only
// through its validated, uninstrumented loads (it once loaded record words atomically there).
TEST(KindsStressTest, BroadcastLossyProducerAndFastAndSlowConsumerThreads) {
  run_broadcast_threads(true);
}

}  // namespace
}  // namespace weft
