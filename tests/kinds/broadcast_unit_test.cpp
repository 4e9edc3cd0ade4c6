// Broadcast channels in one process: attaching, record sizes, every consumer receiving every
// record (reliable), back pressure from the slowest consumer, joining mid-stream and leaving,
// consumer slots, exact loss accounting (lossy), consumer counts and corrupt records.
//
// One process may hold several consumer slots (each BroadcastConsumer takes its own).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kinds_support.hpp"
#include "weft/broadcast.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using kinds_test::Rng;
using kinds_test::TempDir;

constexpr const char* kName = "bcast";

ChannelOptions broadcast_options(const TempDir& dir, std::uint64_t capacity_bytes,
                                 bool lossy = false, std::uint64_t record_bytes_max = 0) {
  ChannelOptions options = dir.options(ChannelKind::kBroadcast, capacity_bytes, record_bytes_max);
  options.lossy = lossy;
  return options;
}

BroadcastProducer make_producer(const ChannelOptions& options) {
  auto producer = BroadcastProducer::create(kName, options);
  if (!producer) {
    ADD_FAILURE() << producer.error().message();
    std::abort();
  }
  return std::move(*producer);
}

BroadcastConsumer open_consumer(const TempDir& dir) {
  auto consumer = BroadcastConsumer::open(kName, dir.open_options());
  if (!consumer) {
    ADD_FAILURE() << consumer.error().message();
    std::abort();
  }
  return std::move(*consumer);
}

SendStatus send_record(BroadcastProducer& producer, std::uint64_t sequence,
                       std::size_t payload_bytes) {
  const ClaimResult claim = producer.try_claim(kinds_test::kStampBytes + payload_bytes);
  if (claim.status != ClaimStatus::kOk) {
    return claim.status == ClaimStatus::kFull ? SendStatus::kFull : SendStatus::kTooLarge;
  }
  kinds_test::write_record(claim.bytes, 0, sequence);
  producer.commit();
  return SendStatus::kOk;
}

// What one consumer has seen: every record checked, sequence gaps summed, losses summed.
struct Tally {
  std::uint64_t received = 0;
  std::uint64_t next = 0;  // Sequence expected next.
  bool started = false;
  std::uint64_t first = 0;
  std::uint64_t gaps = 0;  // Records skipped between consecutive received ones.
  std::uint64_t lost_records = 0;
  std::uint64_t lost_bytes = 0;
  std::vector<std::uint64_t> sequences;
  std::string problem;

  void operator()(std::span<const std::byte> record) {
    const std::string bad = kinds_test::check_record(record);
    if (!bad.empty() && problem.empty()) problem = bad;
    const std::uint64_t sequence = kinds_test::read_stamp(record).sequence;
    if (!started) {
      started = true;
      first = sequence;
    } else if (sequence < next) {
      if (problem.empty()) {
        problem = "sequence " + std::to_string(sequence) + " after " + std::to_string(next - 1);
      }
    } else {
      gaps += sequence - next;
    }
    next = sequence + 1;
    sequences.push_back(sequence);
    ++received;
  }
  // Polls once and adds up what the poll reports.
  BroadcastPollResult poll(BroadcastConsumer& consumer, std::size_t records_max = SIZE_MAX) {
    const BroadcastPollResult result = consumer.poll(*this, records_max);
    lost_records += result.lost_records;
    lost_bytes += result.lost_bytes;
    return result;
  }
};

// Polls until nothing more comes (the consumer is at the producer's tail).
void drain(BroadcastConsumer& consumer, Tally& tally) {
  for (int i = 0; i < 1000; ++i) {
    const BroadcastPollResult result = tally.poll(consumer);
    ASSERT_NE(result.status, PollStatus::kCorrupted) << consumer.last_error().message();
    if (result.status == PollStatus::kEmpty && result.lost_records == 0) return;
  }
  FAIL() << "the consumer never caught up";
}

// ---- Attaching and sizes ---------------------------------------------------------------------

TEST(BroadcastUnitTest, CreateOpenAndAttach) {
  TempDir dir;
  auto producer = BroadcastProducer::create(kName, broadcast_options(dir, 1 << 16));
  ASSERT_TRUE(producer) << producer.error().message();
  EXPECT_EQ(producer->channel().kind(), ChannelKind::kBroadcast);
  EXPECT_FALSE(producer->lossy());
  auto second = BroadcastProducer::open(kName, dir.open_options());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kBusy);

  BroadcastConsumer a = open_consumer(dir);
  BroadcastConsumer b = open_consumer(dir);
  EXPECT_NE(a.slot_index(), b.slot_index());
  auto read_only = Channel::open(kName, dir.open_options(true));
  ASSERT_TRUE(read_only);
  auto from_read_only = BroadcastConsumer::attach(std::move(*read_only));
  ASSERT_FALSE(from_read_only);
  EXPECT_EQ(from_read_only.error().code, Errc::kInvalidArgument);
  auto spsc = Channel::create("spsc", dir.options(ChannelKind::kSpsc, 1 << 16));
  ASSERT_TRUE(spsc);
  auto wrong_kind = BroadcastConsumer::attach(std::move(*spsc));
  ASSERT_FALSE(wrong_kind);
  EXPECT_EQ(wrong_kind.error().code, Errc::kInvalidArgument);
  EXPECT_NE(wrong_kind.error().message().find("not a broadcast channel"), std::string::npos);

  ASSERT_EQ(send_record(*producer, 0, 10), SendStatus::kOk);
  Tally ta;
  Tally tb;
  drain(a, ta);
  drain(b, tb);
  EXPECT_EQ(ta.received, 1U);
  EXPECT_EQ(tb.received, 1U);
  EXPECT_EQ(ta.problem, "");
}

TEST(BroadcastUnitTest, RecordsOfEverySizeFromZeroToMax) {
  for (const bool lossy : {false, true}) {
    SCOPED_TRACE(lossy ? "lossy" : "reliable");
    TempDir dir;
    constexpr std::uint64_t kCapacity = 1 << 13;
    const std::uint64_t max = kCapacity / 2 - 16;
    BroadcastProducer producer = make_producer(broadcast_options(dir, kCapacity, lossy, max));
    BroadcastConsumer consumer = open_consumer(dir);
    ASSERT_EQ(producer.record_bytes_max(), max);
    std::vector<std::byte> expected;
    for (std::uint64_t size = 0; size <= max; ++size) {
      const ClaimResult claim = producer.try_claim(size);
      ASSERT_EQ(claim.status, ClaimStatus::kOk) << "size " << size;
      ASSERT_EQ(claim.bytes.size(), size);
      expected.resize(size);
      kinds_test::fill_pattern(expected, size);
      if (size != 0) std::memcpy(claim.bytes.data(), expected.data(), size);
      producer.commit();
      std::vector<std::byte> got;
      std::size_t calls = 0;
      const BroadcastPollResult result = consumer.poll([&](std::span<const std::byte> record) {
        got.assign(record.begin(), record.end());
        ++calls;
      });
      ASSERT_EQ(result.status, PollStatus::kOk) << "size " << size;
      ASSERT_EQ(result.lost_records, 0U);
      ASSERT_EQ(calls, 1U);
      ASSERT_EQ(got, expected) << "size " << size;
    }
    EXPECT_EQ(producer.try_claim(max + 1).status, ClaimStatus::kTooLarge);
    EXPECT_EQ(producer.try_send(std::vector<std::byte>(max + 1)), SendStatus::kTooLarge);
    EXPECT_EQ(producer.try_send(std::span<const std::byte>{}), SendStatus::kOk);
  }
}

TEST(BroadcastUnitTest, AbortLeavesNothingVisible) {
  TempDir dir;
  BroadcastProducer producer = make_producer(broadcast_options(dir, 1 << 14));
  BroadcastConsumer consumer = open_consumer(dir);
  const ClaimResult claim = producer.try_claim(900);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  std::memset(claim.bytes.data(), 0xab, claim.bytes.size());
  producer.abort();
  Tally tally;
  EXPECT_EQ(tally.poll(consumer).status, PollStatus::kEmpty);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(send_record(producer, i, 0), SendStatus::kOk);
  drain(consumer, tally);
  EXPECT_EQ(tally.received, 4U);
  EXPECT_EQ(tally.first, 0U);
  EXPECT_EQ(tally.gaps, 0U);
  EXPECT_EQ(tally.problem, "");
}

// ---- Reliable --------------------------------------------------------------------------------

TEST(BroadcastUnitTest, ReliableEveryConsumerReceivesEveryRecordInOrder) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  BroadcastProducer producer = make_producer(broadcast_options(dir, 8192));
  std::vector<BroadcastConsumer> consumers;
  for (int i = 0; i < 3; ++i) consumers.push_back(open_consumer(dir));
  std::vector<Tally> tallies(consumers.size());
  const std::uint64_t records = kinds_test::scaled(20'000, 2000);
  const std::size_t payload_max = producer.record_bytes_max() - kinds_test::kStampBytes;
  for (std::uint64_t sequence = 0; sequence < records; ++sequence) {
    const std::size_t payload = rng.one_in(8) ? rng.below(payload_max + 1) : rng.below(64);
    SendStatus status = send_record(producer, sequence, payload);
    for (int attempt = 0; status == SendStatus::kFull && attempt < 1000; ++attempt) {
      for (std::size_t c = 0; c < consumers.size(); ++c) {
        (void)tallies[c].poll(consumers[c], rng.between(1, 100));
      }
      status = send_record(producer, sequence, payload);
    }
    ASSERT_EQ(status, SendStatus::kOk) << "record " << sequence;
    const std::size_t c = rng.below(consumers.size() * 4);
    if (c < consumers.size()) (void)tallies[c].poll(consumers[c], rng.between(1, 100));
  }
  for (std::size_t c = 0; c < consumers.size(); ++c) {
    drain(consumers[c], tallies[c]);
    EXPECT_EQ(tallies[c].received, records) << "consumer " << c;
    EXPECT_EQ(tallies[c].first, 0U);
    EXPECT_EQ(tallies[c].gaps, 0U);
    EXPECT_EQ(tallies[c].lost_records, 0U);
    EXPECT_EQ(tallies[c].problem, "") << "consumer " << c;
  }
  EXPECT_GT(producer.position(), 10 * std::uint64_t{8192}) << "too few laps";
}

TEST(BroadcastUnitTest, ProducerIsHeldBackByTheSlowestConsumer) {
  TempDir dir;
  constexpr std::uint64_t kCapacity = 4096;
  BroadcastProducer producer = make_producer(broadcast_options(dir, kCapacity));
  BroadcastConsumer fast = open_consumer(dir);
  BroadcastConsumer slow = open_consumer(dir);
  constexpr std::size_t kPayload = 48;  // Span 64 with the 16-byte header.
  const std::uint64_t span = detail::broadcast_span_bytes(kPayload);
  std::vector<std::byte> payload(kPayload, std::byte{1});
  Tally fast_tally;
  Tally slow_tally;
  std::uint64_t sent = 0;
  SendStatus status = SendStatus::kOk;
  while ((status = producer.try_send(payload)) == SendStatus::kOk) {
    ++sent;
    ASSERT_LE(sent * span, kCapacity);
    (void)fast.poll([](std::span<const std::byte>) {});
  }
  ASSERT_EQ(status, SendStatus::kFull);
  // Refused exactly when the slow consumer is a ring behind: the next record and the zeroed
  // header after it would overwrite bytes it has not read.
  EXPECT_LE(sent * span + detail::kBroadcastHeaderBytes, kCapacity);
  EXPECT_GT((sent + 1) * span + detail::kBroadcastHeaderBytes, kCapacity);
  EXPECT_EQ(producer.position() - slow.position(), sent * span);
  EXPECT_EQ(fast.position(), producer.position()) << "the fast consumer is not the bottleneck";
  EXPECT_GE(producer.channel().header()->producer.claims_refused.load(), 1U);
  EXPECT_EQ(producer.wait(std::chrono::milliseconds(1)), WaitStatus::kTimedOut);

  // The slow consumer reads one record: exactly one more fits.
  ASSERT_EQ(slow_tally.poll(slow, 1).count, 1U);
  EXPECT_EQ(producer.try_send(payload), SendStatus::kOk);
  EXPECT_EQ(producer.try_send(payload), SendStatus::kFull);
  // It catches up: the producer proceeds, a whole ring again.
  drain(slow, slow_tally);
  EXPECT_EQ(slow_tally.received, sent + 1);
  EXPECT_EQ(producer.wait(std::chrono::milliseconds(1)), WaitStatus::kReady);
  drain(fast, fast_tally);
  std::uint64_t more = 0;
  while (producer.try_send(payload) == SendStatus::kOk) {
    ++more;
    drain(fast, fast_tally);
  }
  EXPECT_EQ(more, sent);
}

TEST(BroadcastUnitTest, ConsumersJoinMidStreamAndLeave) {
  TempDir dir;
  constexpr std::uint64_t kCapacity = 4096;
  BroadcastProducer producer = make_producer(broadcast_options(dir, kCapacity));
  // No consumer: nothing holds the producer back.
  std::uint64_t sequence = 0;
  for (; sequence < 300; ++sequence) {
    ASSERT_EQ(send_record(producer, sequence, 40), SendStatus::kOk) << sequence;
  }
  BroadcastConsumer first = open_consumer(dir);
  Tally first_tally;
  EXPECT_EQ(first_tally.poll(first).status, PollStatus::kEmpty);
  // It starts with the next record committed after it joined.
  for (int i = 0; i < 5; ++i, ++sequence) {
    ASSERT_EQ(send_record(producer, sequence, 40), SendStatus::kOk);
  }
  drain(first, first_tally);
  EXPECT_EQ(first_tally.first, 300U);
  EXPECT_EQ(first_tally.received, 5U);
  EXPECT_EQ(first_tally.gaps, 0U);

  // A second consumer joins and then lags a ring behind.
  std::optional<BroadcastConsumer> second(open_consumer(dir));
  Tally second_tally;
  std::uint64_t second_first = sequence;
  SendStatus status = SendStatus::kOk;
  for (int i = 0; i < 1000 && (status = send_record(producer, sequence, 40)) == SendStatus::kOk;
       ++i) {
    ++sequence;
    drain(first, first_tally);
  }
  ASSERT_EQ(status, SendStatus::kFull);
  drain(*second, second_tally);
  EXPECT_EQ(second_tally.first, second_first);
  EXPECT_EQ(second_tally.received, sequence - second_first);
  // It lags again, then leaves: the producer is no longer held back by it.
  while (send_record(producer, sequence, 40) == SendStatus::kOk) {
    ++sequence;
    drain(first, first_tally);
  }
  second.reset();
  for (int i = 0; i < 500; ++i, ++sequence) {
    ASSERT_EQ(send_record(producer, sequence, 40), SendStatus::kOk) << i;
    drain(first, first_tally);
  }
  EXPECT_EQ(first_tally.received, sequence - 300);
  EXPECT_EQ(first_tally.gaps, 0U);
  EXPECT_EQ(first_tally.problem, "");
  EXPECT_EQ(producer.consumers().alive, 1U);
}

TEST(BroadcastUnitTest, ConsumerSlotsAreLimited) {
  TempDir dir;
  ChannelOptions options = broadcast_options(dir, 1 << 14);
  options.consumers_max = 2;
  BroadcastProducer producer = make_producer(options);
  std::optional<BroadcastConsumer> a(open_consumer(dir));
  BroadcastConsumer b = open_consumer(dir);
  auto refused = BroadcastConsumer::open(kName, dir.open_options());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kBusy);
  const std::string message = refused.error().message();
  EXPECT_NE(message.find("2 consumer slots"), std::string::npos) << message;
  EXPECT_NE(message.find(dir.path()), std::string::npos) << message;
  const std::uint32_t freed = a->slot_index();
  a.reset();
  auto replacement = BroadcastConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(replacement) << replacement.error().message();
  EXPECT_EQ(replacement->slot_index(), freed);
}

TEST(BroadcastUnitTest, ConsumerCountsAliveAndDead) {
  TempDir dir;
  BroadcastProducer producer = make_producer(broadcast_options(dir, 1 << 14));
  EXPECT_EQ(producer.consumers().alive, 0U);
  std::optional<BroadcastConsumer> a(open_consumer(dir));
  BroadcastConsumer b = open_consumer(dir);
  PeerCounts counts = producer.consumers();
  EXPECT_EQ(counts.alive, 2U);
  EXPECT_EQ(counts.dead, 0U);
  kinds_test::ChildProcess child([&] {
    auto consumer = BroadcastConsumer::open(kName, dir.open_options());
    if (!consumer) return 2;
    _exit(0);  // No destructor: the slot stays registered to a dead pid.
  });
  ASSERT_TRUE(child.wait().ok()) << child.status().describe();
  counts = producer.consumers();
  EXPECT_EQ(counts.alive, 2U);
  EXPECT_EQ(counts.dead, 1U);
  a.reset();
  counts = producer.consumers();
  EXPECT_EQ(counts.alive, 1U);
  EXPECT_EQ(counts.dead, 1U);
}

TEST(BroadcastUnitTest, ProducerReattachContinuesTheSequence) {
  TempDir dir;
  std::optional<BroadcastProducer> producer(make_producer(broadcast_options(dir, 4096)));
  BroadcastConsumer consumer = open_consumer(dir);
  Tally tally;
  for (std::uint64_t i = 0; i < 30; ++i) ASSERT_EQ(send_record(*producer, i, 50), SendStatus::kOk);
  (void)tally.poll(consumer, 10);
  producer.reset();
  auto next = BroadcastProducer::open(kName, dir.open_options());
  ASSERT_TRUE(next) << next.error().message();
  for (std::uint64_t i = 30; i < 60; ++i) {
    SendStatus status = send_record(*next, i, 50);
    while (status == SendStatus::kFull) {
      (void)tally.poll(consumer);
      status = send_record(*next, i, 50);
    }
    ASSERT_EQ(status, SendStatus::kOk);
  }
  drain(consumer, tally);
  EXPECT_EQ(tally.received, 60U);
  EXPECT_EQ(tally.gaps, 0U);
  EXPECT_EQ(tally.problem, "");
}

TEST(BroadcastUnitTest, ConsumerWaitsForData) {
  TempDir dir;
  BroadcastProducer producer = make_producer(broadcast_options(dir, 4096));
  BroadcastConsumer consumer = open_consumer(dir);
  EXPECT_EQ(consumer.wait(std::chrono::milliseconds(1)), WaitStatus::kTimedOut);
  ASSERT_EQ(send_record(producer, 0, 8), SendStatus::kOk);
  EXPECT_EQ(consumer.wait(std::chrono::milliseconds(1)), WaitStatus::kReady);
}

// ---- Lossy -----------------------------------------------------------------------------------

TEST(BroadcastUnitTest, LossyConsumerIsToldExactlyWhatItLost) {
  TempDir dir;
  constexpr std::uint64_t kCapacity = 4096;
  BroadcastProducer producer = make_producer(broadcast_options(dir, kCapacity, true));
  ASSERT_TRUE(producer.lossy());
  BroadcastConsumer lagging = open_consumer(dir);
  BroadcastConsumer keeping_up = open_consumer(dir);
  Tally lagging_tally;
  Tally keeping_up_tally;
  std::uint64_t sequence = 0;
  for (; sequence < 10; ++sequence) ASSERT_EQ(send_record(producer, sequence, 30), SendStatus::kOk);
  drain(lagging, lagging_tally);
  ASSERT_EQ(lagging_tally.received, 10U);
  const std::uint64_t lagging_position = lagging.position();
  ASSERT_EQ(lagging_position, producer.position());

  // Several rings' worth while the lagging consumer does not poll; the producer never waits.
  Rng rng(11);
  while (producer.position() - lagging_position < 5 * kCapacity) {
    ASSERT_EQ(send_record(producer, sequence, rng.below(300)), SendStatus::kOk) << sequence;
    ++sequence;
    drain(keeping_up, keeping_up_tally);
  }
  const std::uint64_t sent_while_away = sequence - 10;
  const std::uint64_t tail = producer.position();
  const BroadcastPollResult result = lagging_tally.poll(lagging);
  EXPECT_NE(result.status, PollStatus::kCorrupted) << lagging.last_error().message();
  EXPECT_EQ(result.lost_records, sent_while_away);
  EXPECT_EQ(result.lost_bytes, tail - lagging_position);
  EXPECT_EQ(result.count, 0U);
  EXPECT_EQ(lagging.position(), tail);

  // It resumes at a record boundary: the next records arrive intact and in order.
  for (int i = 0; i < 5; ++i, ++sequence) {
    ASSERT_EQ(send_record(producer, sequence, 100), SendStatus::kOk);
  }
  drain(lagging, lagging_tally);
  drain(keeping_up, keeping_up_tally);
  EXPECT_EQ(lagging_tally.problem, "");
  EXPECT_EQ(lagging_tally.received, 15U);
  EXPECT_EQ(lagging_tally.received + lagging_tally.lost_records, sequence);
  EXPECT_EQ(lagging_tally.gaps, lagging_tally.lost_records);
  EXPECT_EQ(lagging_tally.sequences[10], 10 + sent_while_away);
  EXPECT_EQ(lagging.lost_records_total(), sent_while_away);
  EXPECT_EQ(lagging.lost_bytes_total(), tail - lagging_position);
  const detail::ConsumerSlot& slot = lagging.channel().consumer_slots()[lagging.slot_index()];
  EXPECT_EQ(slot.lost_records.load(), sent_while_away);
  EXPECT_EQ(slot.lost_bytes.load(), tail - lagging_position);
  // The consumer that kept up lost nothing.
  EXPECT_EQ(keeping_up_tally.received, sequence);
  EXPECT_EQ(keeping_up_tally.lost_records, 0U);
  EXPECT_EQ(keeping_up_tally.problem, "");
}

TEST(BroadcastUnitTest, LossyAccountingIsExactUnderARandomSchedule) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  constexpr std::uint64_t kCapacity = 4096;
  BroadcastProducer producer = make_producer(broadcast_options(dir, kCapacity, true));
  std::vector<BroadcastConsumer> consumers;
  for (int i = 0; i < 3; ++i) consumers.push_back(open_consumer(dir));
  std::vector<Tally> tallies(consumers.size());
  const std::uint64_t steps = kinds_test::scaled(20'000, 1000);
  std::uint64_t sequence = 0;
  for (std::uint64_t step = 0; step < steps; ++step) {
    const std::uint64_t burst = rng.one_in(20) ? rng.below(200) : rng.below(4);
    for (std::uint64_t i = 0; i < burst; ++i, ++sequence) {
      const std::size_t payload = rng.one_in(10) ? rng.below(900) : rng.below(60);
      ASSERT_EQ(send_record(producer, sequence, payload), SendStatus::kOk);
    }
    // Consumer c polls with probability 1/(2^c): the later ones fall behind more often.
    for (std::size_t c = 0; c < consumers.size(); ++c) {
      if (rng.below(std::uint64_t{1} << (2 * c)) == 0) {
        const BroadcastPollResult result = tallies[c].poll(consumers[c], rng.between(1, 50));
        ASSERT_NE(result.status, PollStatus::kCorrupted) << consumers[c].last_error().message();
      }
    }
  }
  for (std::size_t c = 0; c < consumers.size(); ++c) {
    SCOPED_TRACE("consumer " + std::to_string(c));
    drain(consumers[c], tallies[c]);
    const Tally& t = tallies[c];
    EXPECT_EQ(t.problem, "");
    EXPECT_EQ(t.received + t.lost_records, sequence);
    // Every gap in the sequence numbers is a reported loss, and nothing else is.
    const std::uint64_t gap_at_end = t.started ? sequence - t.next : sequence;
    EXPECT_EQ(t.gaps + gap_at_end + (t.started ? t.first : 0), t.lost_records);
    EXPECT_EQ(consumers[c].lost_records_total(), t.lost_records);
    EXPECT_EQ(consumers[c].lost_bytes_total(), t.lost_bytes);
    EXPECT_GE(t.lost_bytes, t.lost_records * detail::broadcast_span_bytes(kinds_test::kStampBytes));
    EXPECT_LE(t.lost_bytes, producer.position());
  }
  EXPECT_GT(tallies.back().lost_records, 0U) << "the slowest consumer never fell a ring behind";
}

TEST(BroadcastUnitTest, LossyProducerNeverReturnsFull) {
  TempDir dir;
  BroadcastProducer producer = make_producer(broadcast_options(dir, 4096, true));
  BroadcastConsumer idle = open_consumer(dir);  // Never polls.
  std::vector<std::byte> payload(200, std::byte{3});
  while (producer.position() < 50 * std::uint64_t{4096}) {
    ASSERT_EQ(producer.try_send(payload), SendStatus::kOk);
  }
  EXPECT_EQ(producer.wait(std::chrono::milliseconds(1)), WaitStatus::kReady);
  EXPECT_EQ(producer.channel().header()->producer.claims_refused.load(), 0U);
  BroadcastPollResult result = idle.poll([](std::span<const std::byte>) {});
  EXPECT_GT(result.lost_records, 0U);
}

// ---- Corruption ------------------------------------------------------------------------------

std::atomic_ref<std::uint64_t> ring_word(const Channel& channel, std::uint64_t offset) {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(channel.ring() + offset));
}

TEST(BroadcastUnitTest, CorruptRecordHeaderIsReported) {
  struct Case {
    const char* what;
    std::uint64_t word;
  };
  const Case cases[] = {
      {"unknown type", 0x1234567800000010ULL},
      {"length above record_bytes_max", detail::make_record_word(detail::RecordType::kData, 5000)},
      {"padding of the wrong length", detail::make_record_word(detail::RecordType::kPadding, 64)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir dir;
    BroadcastProducer producer = make_producer(broadcast_options(dir, 1 << 14, false, 1000));
    BroadcastConsumer consumer = open_consumer(dir);
    for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(producer, i, 16), SendStatus::kOk);
    const std::uint64_t second = detail::broadcast_span_bytes(kinds_test::kStampBytes + 16);
    ring_word(consumer.channel(), second).store(c.word);
    Tally tally;
    BroadcastPollResult result = tally.poll(consumer);
    EXPECT_EQ(result.count, 1U);
    result = tally.poll(consumer);
    EXPECT_EQ(result.status, PollStatus::kCorrupted);
    EXPECT_EQ(consumer.last_error().code, Errc::kCorrupted);
    const std::string message = consumer.last_error().message();
    EXPECT_NE(message.find(consumer.channel().path()), std::string::npos) << message;
    EXPECT_NE(message.find("position " + std::to_string(second)), std::string::npos) << message;
    EXPECT_EQ(tally.poll(consumer).status, PollStatus::kCorrupted);
    EXPECT_EQ(tally.received, 1U);
  }
}

// Regression test for the second bug found with issue 3: a lossy consumer that finds a record
// with the wrong sequence number (not lapped: corruption) records the error but does not stop, so
// poll() reports kEmpty for ever and the consumer never moves past the record.
TEST(BroadcastUnitTest, Issue3LossyWrongSequenceNumberIsReported) {
  TempDir dir;
  BroadcastProducer producer = make_producer(broadcast_options(dir, 1 << 14, true));
  BroadcastConsumer consumer = open_consumer(dir);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(producer, i, 16), SendStatus::kOk);
  const std::uint64_t second = detail::broadcast_span_bytes(kinds_test::kStampBytes + 16);
  ring_word(consumer.channel(), second + 8).store(77);  // The record's sequence number.
  Tally tally;
  (void)tally.poll(consumer);
  EXPECT_EQ(tally.received, 1U);
  EXPECT_EQ(tally.poll(consumer).status, PollStatus::kCorrupted);
  EXPECT_EQ(tally.poll(consumer).status, PollStatus::kCorrupted);
  EXPECT_EQ(consumer.last_error().code, Errc::kCorrupted);
  EXPECT_NE(consumer.last_error().message().find("sequence 77"), std::string::npos)
      << consumer.last_error().message();
}

}  // namespace
}  // namespace weft
