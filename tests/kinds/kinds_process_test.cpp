// MPSC and broadcast channels between real processes (fork()ed, each attaching on its own):
//   - MPSC with 2 and 4 producer processes and one consumer: per-producer order, no loss, no
//     duplicate, every payload intact (2 million records in all at scale 1).
//   - Broadcast reliable, 1 producer and 3 consumer processes: every consumer gets every record.
//   - Broadcast lossy, a fast producer, a fast and a slow consumer: for each consumer, records
//     received + records reported lost == records sent, and the gaps in the sequence numbers are
//     exactly the reported losses.
//   - Joining and leaving under load: consumer processes attach and detach over and over while
//     the producer streams; each session sees a contiguous (or, lossy, exactly accounted) run.
// Record counts scale with WEFT_TEST_SCALE; seeds print and replay with WEFT_TEST_SEED.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
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
using kinds_test::Rng;
using kinds_test::Shared;
using kinds_test::TempDir;

constexpr const char* kName = "proc";
constexpr unsigned kWatchdogSeconds = 280;
constexpr std::int64_t kHangNs = 30'000'000'000;
using kinds_test::kDataSource;
using kinds_test::kEndSource;

using kinds_test::SpinThenWait;

// Claims, writes and commits record (source, sequence) of kStampBytes + `payload` bytes, waiting
// as long as the ring is full. Returns false (after setting `message`) on any other outcome.
template <class Producer>
bool send_blocking(Producer& producer, std::uint32_t source, std::uint64_t sequence,
                   std::size_t payload, ChildMessage& message) {
  SpinThenWait idle;
  for (;;) {
    const ClaimResult claim = producer.try_claim(kinds_test::kStampBytes + payload);
    if (claim.status == ClaimStatus::kOk) {
      kinds_test::write_record(claim.bytes, source, sequence);
      producer.commit();
      return true;
    }
    if (claim.status != ClaimStatus::kFull) {
      message.set("claim refused with kTooLarge for " + std::to_string(payload) + " bytes");
      return false;
    }
    idle.idle(producer);
  }
}

// ---- MPSC ------------------------------------------------------------------------------------

constexpr std::uint32_t kMpscProducersMax = 8;

// The payload length an MPSC producer chose for record (source, sequence).
std::size_t mpsc_payload_bytes(std::uint64_t seed, std::uint32_t source, std::uint64_t sequence) {
  return kinds_test::payload_bytes_for(seed, source, sequence, 40, 2000);
}

struct MpscShared {
  ChildMessage message;
  std::atomic<std::uint64_t> sent[kMpscProducersMax] = {};
};

void run_mpsc(std::uint32_t producer_count) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  const std::uint64_t per_producer = kinds_test::scaled(2'000'000, 200'000) / producer_count;
  ChannelOptions options = dir.options(ChannelKind::kMpsc, 1 << 20, 4096);
  options.producers_max = kMpscProducersMax;
  auto channel = Channel::create(kName, options);
  ASSERT_TRUE(channel) << channel.error().message();
  auto consumer = MpscConsumer::attach(std::move(*channel));
  ASSERT_TRUE(consumer) << consumer.error().message();
  Shared<MpscShared> shared;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the MPSC process test");

  std::vector<std::unique_ptr<ChildProcess>> producers;
  for (std::uint32_t source = 0; source < producer_count; ++source) {
    producers.push_back(std::make_unique<ChildProcess>([&, source] {
      auto producer = MpscProducer::open(kName, dir.open_options());
      if (!producer) {
        shared->message.set(producer.error().message());
        return 2;
      }
      for (std::uint64_t sequence = 0; sequence < per_producer; ++sequence) {
        const std::size_t payload = mpsc_payload_bytes(seed, source, sequence);
        if (!send_blocking(*producer, source, sequence, payload, shared->message)) return 3;
        // Relaxed: a progress report read after the child ended.
        shared->sent[source].store(sequence + 1, std::memory_order_relaxed);
      }
      return 0;
    }));
  }

  std::vector<std::uint64_t> next(producer_count, 0);
  std::uint64_t received = 0;
  std::uint64_t problems = 0;
  std::string first_problem;
  const auto handler = [&](std::span<const std::byte> record) {
    ++received;
    const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
    std::string problem = kinds_test::check_record(record);
    if (problem.empty() && stamp.source >= producer_count) {
      problem = "unknown source " + std::to_string(stamp.source);
    }
    if (problem.empty() && stamp.sequence != next[stamp.source]) {
      problem = "source " + std::to_string(stamp.source) + ": sequence " +
                std::to_string(stamp.sequence) + " where " + std::to_string(next[stamp.source]) +
                " was expected (" +
                (stamp.sequence < next[stamp.source] ? "duplicate or reordered" : "lost") + ")";
    }
    if (!problem.empty()) {
      if (problems++ == 0) first_problem = problem;
      return;
    }
    if (mpsc_payload_bytes(seed, stamp.source, stamp.sequence) != stamp.payload_bytes &&
        problems++ == 0) {
      first_problem = "record " + std::to_string(stamp.sequence) + " has the wrong length";
    }
    next[stamp.source] = stamp.sequence + 1;
  };
  const std::uint64_t total = per_producer * producer_count;
  SpinThenWait idle;
  std::int64_t last_progress = kinds_test::monotonic_ns();
  while (received < total) {
    const PollResult result = consumer->poll(handler);
    ASSERT_NE(result.status, PollStatus::kCorrupted) << consumer->last_error().message();
    if (result.count != 0) {
      last_progress = kinds_test::monotonic_ns();
      continue;
    }
    idle.idle(*consumer);
    // A hang, not a slow machine: fail with the channel's state instead of waiting for the
    // watchdog.
    ASSERT_LT(kinds_test::monotonic_ns() - last_progress, kHangNs)
        << "no record for 30 s (" << received << " of " << total << " received, " << problems
        << " problems, the first: " << first_problem
        << "): " << kinds_test::describe_channel(consumer->channel());
    if (idle.spins == 0) {
      for (auto& producer : producers) {
        if (producer->poll_exited() && !producer->status().ok()) {
          FAIL() << "a producer " << producer->status().describe() << ": " << shared->message.get();
        }
      }
    }
  }
  for (auto& producer : producers) {
    EXPECT_TRUE(producer->wait().ok())
        << producer->status().describe() << ": " << shared->message.get();
  }
  EXPECT_EQ(problems, 0U) << first_problem;
  for (std::uint32_t source = 0; source < producer_count; ++source) {
    EXPECT_EQ(next[source], per_producer) << "source " << source;
    EXPECT_EQ(shared->sent[source].load(), per_producer);
  }
  // Nothing more arrives: no record twice.
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_EQ(consumer->poll(handler).status, PollStatus::kEmpty);
  }
  EXPECT_EQ(received, total);
  EXPECT_EQ(consumer->channel().header()->recovery.unblocks.load(), 0U);
}

TEST(KindsProcessTest, MpscTwoProducerProcesses) {
  // Rare with a live consumer, but real: a record lost.
  run_mpsc(2);
}

TEST(KindsProcessTest, MpscFourProducerProcesses) {
  // Rare with a live consumer, but real: a record lost.
  run_mpsc(4);
}

// ---- Broadcast -------------------------------------------------------------------------------

using kinds_test::ConsumerReport;
using kinds_test::ConsumeSpec;

struct BroadcastShared {
  std::atomic<std::uint64_t> sent{0};  // Records the producer committed so far.
  ConsumerReport consumers[4];
};

// Starts `count` consumer processes and waits until each has attached.
std::vector<std::unique_ptr<ChildProcess>> start_consumers(const TempDir& dir,
                                                           BroadcastShared& shared,
                                                           const std::vector<ConsumeSpec>& specs) {
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    ConsumerReport& report = shared.consumers[i];
    const ConsumeSpec spec = specs[i];
    children.push_back(std::make_unique<ChildProcess>([&dir, &report, &shared, spec] {
      auto consumer = BroadcastConsumer::open(kName, dir.open_options());
      if (!consumer) {
        report.message.set(consumer.error().message());
        return 2;
      }
      report.attached.store(1, std::memory_order_release);
      return kinds_test::consume_until_end(*consumer, report, &shared.sent, spec);
    }));
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    while (shared.consumers[i].attached.load(std::memory_order_acquire) == 0) {
      if (children[i]->poll_exited()) break;
      usleep(200);
    }
  }
  return children;
}

TEST(KindsProcessTest, BroadcastReliableEveryConsumerProcessGetsEveryRecord) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  const std::uint64_t records = kinds_test::scaled(600'000, 60'000);
  auto producer = BroadcastProducer::create(kName, dir.options(ChannelKind::kBroadcast, 1 << 18));
  ASSERT_TRUE(producer) << producer.error().message();
  Shared<BroadcastShared> shared;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the reliable broadcast process test");
  auto consumers = start_consumers(dir, *shared, {{}, {}, {}});
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    ASSERT_EQ(shared->consumers[i].attached.load(), 1U) << shared->consumers[i].message.get();
  }
  ChildMessage message;
  for (std::uint64_t sequence = 0; sequence < records; ++sequence) {
    const std::uint32_t source = sequence + 1 == records ? kEndSource : kDataSource;
    const std::size_t payload = kinds_test::payload_bytes_for(seed, 0, sequence, 60, 3000);
    ASSERT_TRUE(send_blocking(*producer, source, sequence, payload, message)) << message.get();
  }
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    const ConsumerReport& report = shared->consumers[i];
    EXPECT_TRUE(consumers[i]->wait().ok())
        << "consumer " << i << " " << consumers[i]->status().describe() << ": "
        << report.message.get();
    EXPECT_EQ(report.received.load(), records) << "consumer " << i;
    EXPECT_EQ(report.gaps.load(), 0U) << "consumer " << i;
    EXPECT_EQ(report.lost_records.load(), 0U) << "consumer " << i;
    EXPECT_EQ(report.last_sequence.load(), records - 1) << "consumer " << i;
  }
  EXPECT_EQ(producer->channel().header()->recovery.detaches.load(), 0U);
}

TEST(KindsProcessTest, BroadcastLossyAccountingIsExactPerConsumer) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  const std::uint64_t records = kinds_test::scaled(1'000'000, 100'000);
  constexpr std::uint64_t kCapacity = 1 << 16;
  ChannelOptions options = dir.options(ChannelKind::kBroadcast, kCapacity);
  options.lossy = true;
  auto producer = BroadcastProducer::create(kName, options);
  ASSERT_TRUE(producer) << producer.error().message();
  Shared<BroadcastShared> shared;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the lossy broadcast process test");
  // The slow consumer busy-loops per record and, every 2000 records, lets the producer run three
  // rings ahead (at least 16 bytes a record), so it surely loses records.
  ConsumeSpec slow;
  slow.slow_ns = 2000;
  slow.stall_every = 2000;
  slow.stall_records = 3 * kCapacity / 16;
  auto consumers = start_consumers(dir, *shared, {ConsumeSpec{}, slow});
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    ASSERT_EQ(shared->consumers[i].attached.load(), 1U) << shared->consumers[i].message.get();
  }

  // The data, then end markers until both consumers have seen one (they may lose some).
  std::uint64_t sequence = 0;
  std::uint64_t checks = 0;
  for (;; ++sequence) {
    const bool data = sequence < records;
    const std::size_t payload = kinds_test::payload_bytes_for(seed, 0, sequence, 60, 1500);
    const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + payload);
    ASSERT_EQ(claim.status, ClaimStatus::kOk) << "a lossy producer must never be refused";
    kinds_test::write_record(claim.bytes, data ? kDataSource : kEndSource, sequence);
    producer->commit();
    // Relaxed: a progress hint for the slow consumer's stalls.
    shared->sent.store(sequence + 1, std::memory_order_relaxed);
    if (!data && (++checks % 64) == 0) {
      if (consumers[0]->poll_exited() && consumers[1]->poll_exited()) break;
      sched_yield();
    }
  }
  const std::uint64_t sent = sequence + 1;
  std::uint64_t lost_by_slow = 0;
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    SCOPED_TRACE(i == 0 ? "fast consumer" : "slow consumer");
    const ConsumerReport& report = shared->consumers[i];
    ASSERT_TRUE(consumers[i]->wait().ok())
        << consumers[i]->status().describe() << ": " << report.message.get();
    const std::uint64_t last = report.last_sequence.load();
    EXPECT_GE(last, records) << "ended before the end markers";
    EXPECT_LT(last, sent);
    // Every record up to the end marker it stopped at was either received or reported lost.
    EXPECT_EQ(report.received.load() + report.lost_records.load(), last + 1);
    EXPECT_EQ(report.gaps.load(), report.lost_records.load());
    EXPECT_EQ(report.lost_records_total.load(), report.lost_records.load());
    EXPECT_EQ(report.slot_lost_records.load(), report.lost_records.load());
    if (report.lost_records.load() != 0) {
      EXPECT_GT(report.lost_bytes.load(), 0U);
    }
    if (i == 1) lost_by_slow = report.lost_records.load();
  }
  EXPECT_GT(lost_by_slow, 0U) << "the slow consumer never fell a ring behind";
}

// ---- Joining and leaving under load ----------------------------------------------------------

struct SessionShared {
  ConsumerReport consumers[2];
};

// A consumer process that joins, reads a random number of records, leaves, and starts over.
int run_sessions(const TempDir& dir, ConsumerReport& report, std::uint64_t seed,
                 std::uint64_t sessions) {
  Rng rng(seed);
  std::uint64_t previous_last = 0;
  for (std::uint64_t session = 0; session < sessions; ++session) {
    auto consumer = BroadcastConsumer::open(kName, dir.open_options());
    if (!consumer) {
      report.message.set("session " + std::to_string(session) + ": " + consumer.error().message());
      return 2;
    }
    // Acquire: the producer stores it before its release store of tail_position; read after
    // attach (which read the tail) it bounds the first sequence number from above.
    const std::uint64_t committed_after_attach =
        consumer->channel().header()->producer.records_committed.load(std::memory_order_acquire);
    const std::uint64_t wanted = rng.between(1, 3000);
    std::uint64_t received = 0;
    std::uint64_t next = 0;
    std::uint64_t gaps = 0;
    std::uint64_t first = 0;
    std::uint64_t lost_until_first = 0;  // Losses reported up to the poll with the first record.
    std::string problem;
    const auto handler = [&](std::span<const std::byte> record) {
      const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
      const std::string bad = kinds_test::check_record(record);
      if (!bad.empty() && problem.empty()) problem = bad;
      if (received == 0) {
        first = stamp.sequence;
        if (session != 0 && stamp.sequence < previous_last && problem.empty()) {
          problem = "session starts at " + std::to_string(stamp.sequence) +
                    ", before the previous session's last record " + std::to_string(previous_last);
        }
      } else if (stamp.sequence < next) {
        if (problem.empty()) {
          problem =
              "sequence " + std::to_string(stamp.sequence) + " after " + std::to_string(next - 1);
        }
      } else {
        gaps += stamp.sequence - next;
      }
      next = stamp.sequence + 1;
      ++received;
    };
    SpinThenWait idle;
    while (received < wanted && report.message.empty()) {
      const BroadcastPollResult result = consumer->poll(handler, wanted - received);
      if (result.status == PollStatus::kCorrupted || result.status == PollStatus::kDetached) {
        report.message.set("session " + std::to_string(session) + ": poll status " +
                           std::to_string(static_cast<int>(result.status)) + " " +
                           consumer->last_error().message());
        return 3;
      }
      if (received == result.count) {
        lost_until_first += result.lost_records;
        // It starts at the tail it joined at (plus what it lost before its first record).
        if (received != 0 && first > committed_after_attach + lost_until_first && problem.empty()) {
          problem = "first sequence " + std::to_string(first) + " is past the tail it joined at (" +
                    std::to_string(committed_after_attach) + " records committed, " +
                    std::to_string(lost_until_first) + " lost)";
        }
      }
      if (result.count == 0 && result.lost_records == 0) idle.idle(*consumer);
    }
    if (!problem.empty()) {
      report.message.set("session " + std::to_string(session) + ": " + problem);
      return 4;
    }
    if (!consumer->channel().lossy() && (gaps != 0 || consumer->lost_records_total() != 0)) {
      report.message.set("session " + std::to_string(session) + ": a reliable consumer lost " +
                         std::to_string(gaps) + " records");
      return 5;
    }
    // Lossy: every gap between records this session received was reported lost (losses before
    // its first record are reported too, but show no gap).
    if (gaps > consumer->lost_records_total()) {
      report.message.set("session " + std::to_string(session) + ": " + std::to_string(gaps) +
                         " records missing but only " +
                         std::to_string(consumer->lost_records_total()) + " reported lost");
      return 6;
    }
    previous_last = next - 1;
    report.sessions.fetch_add(1, std::memory_order_relaxed);
    // The consumer leaves here; pause a little before the next session.
    if (rng.one_in(2)) usleep(static_cast<useconds_t>(rng.below(500)));
  }
  return 0;
}

void run_join_and_leave(bool lossy) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  const std::uint64_t sessions = kinds_test::scaled(300, 40);
  ChannelOptions options = dir.options(ChannelKind::kBroadcast, 1 << 16);
  options.lossy = lossy;
  auto producer = BroadcastProducer::create(kName, options);
  ASSERT_TRUE(producer) << producer.error().message();
  Shared<SessionShared> shared;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the join-and-leave process test");
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (std::size_t i = 0; i < 2; ++i) {
    ConsumerReport& report = shared->consumers[i];
    children.push_back(std::make_unique<ChildProcess>(
        [&, i] { return run_sessions(dir, report, seed + i, sessions); }));
  }
  std::uint64_t sequence = 0;
  bool running = true;
  while (running) {
    for (int i = 0; i < 256; ++i, ++sequence) {
      const std::size_t payload = kinds_test::payload_bytes_for(seed, 0, sequence, 60, 1500);
      const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + payload);
      if (claim.status == ClaimStatus::kFull) {
        ASSERT_FALSE(lossy);
        (void)producer->wait(std::chrono::milliseconds(1));
        --sequence;
        continue;
      }
      ASSERT_EQ(claim.status, ClaimStatus::kOk);
      kinds_test::write_record(claim.bytes, kDataSource, sequence);
      producer->commit();
    }
    if (lossy) sched_yield();
    running = !(children[0]->poll_exited() && children[1]->poll_exited());
  }
  for (std::size_t i = 0; i < children.size(); ++i) {
    const ConsumerReport& report = shared->consumers[i];
    EXPECT_TRUE(children[i]->wait().ok())
        << "consumer process " << i << " " << children[i]->status().describe() << ": "
        << report.message.get();
    EXPECT_EQ(report.sessions.load(), sessions) << "consumer process " << i;
  }
  // Every session left: nothing holds the producer back any more.
  EXPECT_EQ(producer->consumers().alive, 0U);
  EXPECT_EQ(producer->channel().header()->recovery.detaches.load(), 0U);
  std::vector<std::byte> payload(100);
  const std::uint64_t ring_records = (1 << 16) / 64 + 10;
  for (std::uint64_t i = 0; i < 2 * ring_records; ++i) {
    ASSERT_EQ(producer->try_send(payload), SendStatus::kOk) << i;
  }
}

TEST(KindsProcessTest, BroadcastReliableJoinAndLeaveUnderLoad) { run_join_and_leave(false); }

TEST(KindsProcessTest, BroadcastLossyJoinAndLeaveUnderLoad) { run_join_and_leave(true); }

}  // namespace
}  // namespace weft
