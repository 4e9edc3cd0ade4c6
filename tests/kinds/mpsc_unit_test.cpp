// MPSC channels in one process: attaching, kinds, record sizes, abort, per-producer order with
// several producers, wrap-around, back pressure, zeroing of consumed space, producer slots,
// destruction with an open chunk, taking back an idle producer's chunk, consumer re-attach,
// producer counts and corrupt record headers.
//
// One process may hold several producer slots (each MpscProducer takes its own), which lets these
// tests interleave producers deterministically.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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
#include "ring/role.hpp"
#include "weft/broadcast.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using kinds_test::Rng;
using kinds_test::TempDir;

constexpr const char* kName = "mpsc";

ChannelOptions mpsc_options(const TempDir& dir, std::uint64_t capacity_bytes,
                            std::uint64_t record_bytes_max = 0) {
  return dir.options(ChannelKind::kMpsc, capacity_bytes, record_bytes_max);
}

MpscProducer make_producer(const ChannelOptions& options) {
  auto producer = MpscProducer::create(kName, options);
  if (!producer) {
    ADD_FAILURE() << producer.error().message();
    std::abort();
  }
  return std::move(*producer);
}

MpscProducer open_producer(const TempDir& dir) {
  auto producer = MpscProducer::open(kName, dir.open_options());
  if (!producer) {
    ADD_FAILURE() << producer.error().message();
    std::abort();
  }
  return std::move(*producer);
}

MpscConsumer open_consumer(const TempDir& dir) {
  auto consumer = MpscConsumer::open(kName, dir.open_options());
  if (!consumer) {
    ADD_FAILURE() << consumer.error().message();
    std::abort();
  }
  return std::move(*consumer);
}

// Sends self-checking record (source, sequence) with `payload_bytes` of payload.
SendStatus send_record(MpscProducer& producer, std::uint32_t source, std::uint64_t sequence,
                       std::size_t payload_bytes) {
  const ClaimResult claim = producer.try_claim(kinds_test::kStampBytes + payload_bytes);
  if (claim.status != ClaimStatus::kOk) {
    return claim.status == ClaimStatus::kFull ? SendStatus::kFull : SendStatus::kTooLarge;
  }
  kinds_test::write_record(claim.bytes, source, sequence);
  producer.commit();
  return SendStatus::kOk;
}

// Collects copies of the records a consumer hands out.
struct Collector {
  std::vector<std::vector<std::byte>> records;
  void operator()(std::span<const std::byte> record) {
    records.emplace_back(record.begin(), record.end());
  }
};

// Checks that `records` hold, for every source, sequence numbers 0, 1, 2, ... in order, every
// record intact; returns the count per source (index = source).
std::vector<std::uint64_t> check_per_source_order(
    const std::vector<std::vector<std::byte>>& records, std::size_t sources) {
  std::vector<std::uint64_t> next(sources, 0);
  for (const auto& record : records) {
    const std::string problem = kinds_test::check_record(record);
    EXPECT_EQ(problem, "");
    const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
    EXPECT_LT(stamp.source, sources);
    if (stamp.source >= sources) continue;
    EXPECT_EQ(stamp.sequence, next[stamp.source]) << "source " << stamp.source;
    next[stamp.source] = stamp.sequence + 1;
  }
  return next;
}

// Polls until `count` records arrived or `polls_max` polls were made.
void poll_until(MpscConsumer& consumer, Collector& out, std::size_t count,
                std::uint64_t polls_max = 20'000'000) {
  for (std::uint64_t i = 0; i < polls_max && out.records.size() < count; ++i) {
    const PollResult result = consumer.poll(out);
    ASSERT_NE(result.status, PollStatus::kCorrupted) << consumer.last_error().message();
  }
}

// Polls until `count` records arrived or 5 s passed (a consumer may wait out unblock_timeout).
void poll_for(MpscConsumer& consumer, Collector& out, std::size_t count) {
  const std::int64_t deadline = kinds_test::monotonic_ns() + 5'000'000'000;
  while (out.records.size() < count && kinds_test::monotonic_ns() < deadline) {
    const PollResult result = consumer.poll(out);
    ASSERT_NE(result.status, PollStatus::kCorrupted) << consumer.last_error().message();
  }
}

std::uint64_t span_of(std::size_t payload_bytes) {
  return detail::record_span_bytes(payload_bytes);
}

// ---- Attaching -------------------------------------------------------------------------------

TEST(MpscUnitTest, CreateOpenAndAttach) {
  TempDir dir;
  auto first = MpscProducer::create(kName, mpsc_options(dir, 1 << 16));
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->channel().kind(), ChannelKind::kMpsc);
  EXPECT_EQ(first->capacity_bytes(), std::uint64_t{1} << 16);
  EXPECT_EQ(first->slot_index(), 0U);
  EXPECT_TRUE(dir.exists(kName));

  auto again = MpscProducer::create(kName, mpsc_options(dir, 1 << 16));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kAlreadyExists);

  auto channel = Channel::open(kName, dir.open_options());
  ASSERT_TRUE(channel) << channel.error().message();
  auto second = MpscProducer::attach(std::move(*channel));
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->slot_index(), 1U);

  auto consumer = MpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  // The consumer role is single: a second one, even in this process, is refused.
  auto second_consumer = MpscConsumer::open(kName, dir.open_options());
  ASSERT_FALSE(second_consumer);
  EXPECT_EQ(second_consumer.error().code, Errc::kBusy);
  EXPECT_NE(second_consumer.error().message().find(dir.path()), std::string::npos)
      << second_consumer.error().message();

  auto missing = MpscConsumer::open("nothing-here", dir.open_options());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);

  auto read_only = Channel::open(kName, dir.open_options(true));
  ASSERT_TRUE(read_only) << read_only.error().message();
  auto from_read_only = MpscProducer::attach(std::move(*read_only));
  ASSERT_FALSE(from_read_only);
  EXPECT_EQ(from_read_only.error().code, Errc::kInvalidArgument);

  // Both producers' records reach the consumer.
  ASSERT_EQ(send_record(*first, 0, 0, 10), SendStatus::kOk);
  ASSERT_EQ(send_record(*second, 1, 0, 10), SendStatus::kOk);
  Collector out;
  poll_until(*consumer, out, 2);
  ASSERT_EQ(out.records.size(), 2U);
  const auto counts = check_per_source_order(out.records, 2);
  EXPECT_EQ(counts, (std::vector<std::uint64_t>{1, 1}));
}

TEST(MpscUnitTest, KindMismatchIsRefused) {
  TempDir dir;
  const auto open = [&](const char* name) {
    auto channel = Channel::open(name, dir.open_options());
    if (!channel) {
      ADD_FAILURE() << channel.error().message();
      std::abort();
    }
    return std::move(*channel);
  };
  ASSERT_TRUE(Channel::create("spsc", dir.options(ChannelKind::kSpsc, 1 << 16)));
  ASSERT_TRUE(Channel::create("mpsc", dir.options(ChannelKind::kMpsc, 1 << 16)));
  ASSERT_TRUE(Channel::create("broadcast", dir.options(ChannelKind::kBroadcast, 1 << 16)));

  // MPSC classes on the other kinds.
  for (const char* name : {"spsc", "broadcast"}) {
    auto producer = MpscProducer::attach(open(name));
    ASSERT_FALSE(producer) << name;
    EXPECT_EQ(producer.error().code, Errc::kInvalidArgument) << name;
    EXPECT_NE(producer.error().message().find("not an MPSC channel"), std::string::npos)
        << producer.error().message();
    auto consumer = MpscConsumer::attach(open(name));
    ASSERT_FALSE(consumer) << name;
    EXPECT_EQ(consumer.error().code, Errc::kInvalidArgument) << name;
  }
  // The other classes on an MPSC channel.
  auto spsc_producer = SpscProducer::attach(open("mpsc"));
  ASSERT_FALSE(spsc_producer);
  EXPECT_EQ(spsc_producer.error().code, Errc::kInvalidArgument);
  auto spsc_consumer = SpscConsumer::attach(open("mpsc"));
  ASSERT_FALSE(spsc_consumer);
  EXPECT_EQ(spsc_consumer.error().code, Errc::kInvalidArgument);
  auto broadcast_producer = BroadcastProducer::attach(open("mpsc"));
  ASSERT_FALSE(broadcast_producer);
  EXPECT_EQ(broadcast_producer.error().code, Errc::kInvalidArgument);
  auto broadcast_consumer = BroadcastConsumer::attach(open("mpsc"));
  ASSERT_FALSE(broadcast_consumer);
  EXPECT_EQ(broadcast_consumer.error().code, Errc::kInvalidArgument);
  // Through open() as well.
  auto by_name = MpscConsumer::open("spsc", dir.open_options());
  ASSERT_FALSE(by_name);
  EXPECT_EQ(by_name.error().code, Errc::kInvalidArgument);

  // A refused attach leaves the channel usable by the right class.
  auto producer = MpscProducer::attach(open("mpsc"));
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = MpscConsumer::attach(open("mpsc"));
  ASSERT_TRUE(consumer) << consumer.error().message();
}

// ---- Records ---------------------------------------------------------------------------------

TEST(MpscUnitTest, RecordsOfEverySizeFromZeroToMax) {
  TempDir dir;
  constexpr std::uint64_t kCapacity = 1 << 14;
  const std::uint64_t max = kCapacity / 2 - 16;  // The largest record_bytes_max allowed.
  MpscProducer producer = make_producer(mpsc_options(dir, kCapacity, max));
  MpscConsumer consumer = open_consumer(dir);
  ASSERT_EQ(producer.record_bytes_max(), max);

  std::vector<std::byte> expected;
  for (std::uint64_t size = 0; size <= max; ++size) {
    ClaimResult claim = producer.try_claim(size);
    if (claim.status == ClaimStatus::kFull) {
      consumer.release();
      claim = producer.try_claim(size);
    }
    ASSERT_EQ(claim.status, ClaimStatus::kOk) << "size " << size;
    ASSERT_EQ(claim.bytes.size(), size);
    expected.resize(size);
    kinds_test::fill_pattern(expected, size);
    if (size != 0) std::memcpy(claim.bytes.data(), expected.data(), size);
    producer.commit();

    Collector out;
    const PollResult result = consumer.poll(out);
    ASSERT_EQ(result.status, PollStatus::kOk) << "size " << size;
    ASSERT_EQ(result.count, 1U);
    ASSERT_EQ(out.records.size(), 1U);
    ASSERT_EQ(out.records[0], expected) << "size " << size;
  }
  EXPECT_EQ(producer.try_claim(max + 1).status, ClaimStatus::kTooLarge);
  std::vector<std::byte> too_large(max + 1);
  EXPECT_EQ(producer.try_send(too_large), SendStatus::kTooLarge);
  // A refused claim leaves no claim outstanding: the next one works.
  EXPECT_EQ(producer.try_send(std::span<const std::byte>{}), SendStatus::kOk);
  Collector out;
  ASSERT_EQ(consumer.poll(out).count, 1U);
  EXPECT_TRUE(out.records[0].empty());
}

TEST(MpscUnitTest, AbortLeavesNothingVisibleAndTheSpaceIsReused) {
  TempDir dir;
  MpscProducer producer = make_producer(mpsc_options(dir, 1 << 16));
  MpscConsumer consumer = open_consumer(dir);

  const ClaimResult aborted = producer.try_claim(1000);
  ASSERT_EQ(aborted.status, ClaimStatus::kOk);
  producer.abort();
  Collector out;
  for (int i = 0; i < 5000; ++i) {
    ASSERT_EQ(consumer.poll(out).status, PollStatus::kEmpty) << "poll " << i;
  }
  EXPECT_TRUE(out.records.empty());

  // The next claim starts where the aborted one did.
  const ClaimResult reused = producer.try_claim(kinds_test::kStampBytes);
  ASSERT_EQ(reused.status, ClaimStatus::kOk);
  EXPECT_EQ(reused.bytes.data(), aborted.bytes.data()) << "the aborted space was not reused";
  kinds_test::write_record(reused.bytes, 0, 0);
  producer.commit();
  for (std::uint64_t sequence = 1; sequence < 4; ++sequence) {
    ASSERT_EQ(send_record(producer, 0, sequence, 0), SendStatus::kOk);
  }
  poll_until(consumer, out, 4, 10'000);
  EXPECT_FALSE(consumer.corrupted()) << consumer.last_error().message();
  ASSERT_EQ(out.records.size(), 4U);
  check_per_source_order(out.records, 1);
  for (int i = 0; i < 5000; ++i) {
    ASSERT_EQ(consumer.poll(out).status, PollStatus::kEmpty) << "poll " << i;
  }
}

// Regression test for the first bug found with issue 3 (see the report in the test): a claim
// whose bytes were written and then aborted leaves them in the ring; a later, smaller record's
// successor header lands on them and the consumer takes them for a record header.
TEST(MpscUnitTest, Issue3AbortedClaimThatWasWrittenLeavesNoTrace) {
  TempDir dir;
  MpscProducer producer = make_producer(mpsc_options(dir, 1 << 16));
  MpscConsumer consumer = open_consumer(dir);

  // A claim written with non-zero bytes, as a caller does before it decides to abort.
  const ClaimResult aborted = producer.try_claim(1000);
  ASSERT_EQ(aborted.status, ClaimStatus::kOk);
  std::memset(aborted.bytes.data(), 0xab, aborted.bytes.size());
  producer.abort();
  Collector out;
  for (int i = 0; i < 5000; ++i) {
    ASSERT_EQ(consumer.poll(out).status, PollStatus::kEmpty) << "poll " << i;
  }
  // Smaller records now land inside the aborted bytes; none of them may be taken for a record.
  for (std::uint64_t sequence = 0; sequence < 4; ++sequence) {
    ASSERT_EQ(send_record(producer, 0, sequence, 0), SendStatus::kOk);
  }
  poll_until(consumer, out, 4, 10'000);
  EXPECT_FALSE(consumer.corrupted()) << consumer.last_error().message();
  ASSERT_EQ(out.records.size(), 4U);
  check_per_source_order(out.records, 1);
  for (int i = 0; i < 5000; ++i) {
    ASSERT_EQ(consumer.poll(out).status, PollStatus::kEmpty)
        << "poll " << i << ": " << consumer.last_error().message();
  }

  // Random claims, a third of them written and aborted.
  Rng rng(7);
  std::uint64_t sequence = 4;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t payload = rng.below(300);
    ClaimResult claim = producer.try_claim(kinds_test::kStampBytes + payload);
    if (claim.status == ClaimStatus::kFull) {
      poll_until(consumer, out, out.records.size(), 200);
      consumer.release();
      claim = producer.try_claim(kinds_test::kStampBytes + payload);
    }
    ASSERT_EQ(claim.status, ClaimStatus::kOk);
    if (rng.one_in(3)) {
      std::memset(claim.bytes.data(), 0xcd, claim.bytes.size());
      producer.abort();
    } else {
      kinds_test::write_record(claim.bytes, 0, sequence++);
      producer.commit();
    }
    (void)consumer.poll(out);
    ASSERT_FALSE(consumer.corrupted()) << consumer.last_error().message();
  }
  poll_until(consumer, out, sequence, 100'000);
  EXPECT_FALSE(consumer.corrupted()) << consumer.last_error().message();
  ASSERT_EQ(out.records.size(), sequence);
  check_per_source_order(out.records, 1);
}

// ---- Several producers -----------------------------------------------------------------------

TEST(MpscUnitTest, PerProducerOrderWithSeveralProducersInOneProcess) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  constexpr std::size_t kProducers = 3;
  std::vector<MpscProducer> producers;
  producers.push_back(make_producer(mpsc_options(dir, 1 << 15)));
  for (std::size_t i = 1; i < kProducers; ++i) producers.push_back(open_producer(dir));
  for (std::size_t i = 0; i < kProducers; ++i) EXPECT_EQ(producers[i].slot_index(), i);
  MpscConsumer consumer = open_consumer(dir);

  const std::uint64_t steps = kinds_test::scaled(30'000, 2000);
  std::vector<std::uint64_t> sent(kProducers, 0);
  Collector out;
  for (std::uint64_t step = 0; step < steps; ++step) {
    const auto source = static_cast<std::uint32_t>(rng.below(kProducers));
    const std::size_t payload = rng.one_in(50) ? rng.below(3000) : rng.below(100);
    SendStatus status = send_record(producers[source], source, sent[source], payload);
    // Back pressure: the consumer makes room (taking back idle producers' chunks as needed).
    for (int attempt = 0; status == SendStatus::kFull && attempt < 1'000'000; ++attempt) {
      (void)consumer.poll(out);
      ASSERT_FALSE(consumer.corrupted()) << consumer.last_error().message();
      status = send_record(producers[source], source, sent[source], payload);
    }
    ASSERT_EQ(status, SendStatus::kOk) << "step " << step;
    ++sent[source];
    if (rng.one_in(4)) (void)consumer.poll(out, rng.between(1, 64));
  }
  const std::uint64_t total = sent[0] + sent[1] + sent[2];
  poll_until(consumer, out, total);
  ASSERT_EQ(out.records.size(), total);
  EXPECT_EQ(check_per_source_order(out.records, kProducers), sent);
  // Idle producers' chunks were taken back, not unblocked as dead.
  EXPECT_EQ(consumer.channel().header()->recovery.unblocks.load(), 0U);
}

// ---- Wrap-around, back pressure, zeroing -----------------------------------------------------

TEST(MpscUnitTest, WrapAroundWithPadding) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  constexpr std::uint64_t kCapacity = 4096;  // The smallest ring: many laps, many paddings.
  MpscProducer producer = make_producer(mpsc_options(dir, kCapacity));
  MpscConsumer consumer = open_consumer(dir);
  const std::uint64_t payload_max = producer.record_bytes_max() - kinds_test::kStampBytes;

  const std::uint64_t records = kinds_test::scaled(20'000, 2000);
  std::uint64_t span_sum = 0;
  Collector out;
  for (std::uint64_t sequence = 0; sequence < records; ++sequence) {
    const std::size_t payload = rng.one_in(4) ? rng.below(payload_max + 1) : rng.below(64);
    SendStatus status = send_record(producer, 0, sequence, payload);
    for (int attempt = 0; status == SendStatus::kFull && attempt < 1000; ++attempt) {
      (void)consumer.poll(out);
      consumer.release();
      status = send_record(producer, 0, sequence, payload);
    }
    ASSERT_EQ(status, SendStatus::kOk) << "record " << sequence;
    span_sum += span_of(kinds_test::kStampBytes + payload);
  }
  poll_until(consumer, out, records);
  ASSERT_EQ(out.records.size(), records);
  check_per_source_order(out.records, 1);
  // The consumer went round the ring many times, over padding records (the bytes beyond the
  // records' own spans).
  EXPECT_GT(consumer.position(), 20 * kCapacity);
  EXPECT_GT(consumer.position(), span_sum) << "no padding was ever needed";
}

TEST(MpscUnitTest, ExactlyFullGivesBackPressureThenProgressAfterPoll) {
  TempDir dir;
  constexpr std::uint64_t kCapacity = 4096;
  MpscProducer producer = make_producer(mpsc_options(dir, kCapacity));
  MpscConsumer consumer = open_consumer(dir);
  constexpr std::size_t kPayload = 56;  // Span 64: the ring holds a whole number of them.
  const std::uint64_t span = span_of(kPayload);
  std::vector<std::byte> payload(kPayload, std::byte{0x5a});

  std::uint64_t sent = 0;
  while (producer.try_send(payload) == SendStatus::kOk) {
    ++sent;
    ASSERT_LE(sent * span, kCapacity) << "more was committed than the ring holds";
  }
  // Refused only when the next record really does not fit.
  EXPECT_GT((sent + 1) * span + detail::kRecordHeaderBytes, kCapacity) << sent << " records";
  EXPECT_EQ(producer.try_claim(kPayload).status, ClaimStatus::kFull);
  const detail::ProducerSlot& slot = producer.channel().producer_slots()[producer.slot_index()];
  EXPECT_EQ(slot.claims_refused.load(), 2U);
  EXPECT_EQ(producer.wait(std::chrono::milliseconds(1)), WaitStatus::kTimedOut);

  // With the ring exactly full, not even an empty record fits.
  const ClaimResult tiny = producer.try_claim(0);
  if (tiny.status == ClaimStatus::kOk) producer.abort();
  EXPECT_EQ(tiny.status, sent * span == kCapacity ? ClaimStatus::kFull : ClaimStatus::kOk);

  Collector out;
  const PollResult result = consumer.poll(out);
  ASSERT_EQ(result.status, PollStatus::kOk);
  EXPECT_EQ(result.count, sent);
  consumer.release();
  EXPECT_EQ(producer.wait(std::chrono::milliseconds(1)), WaitStatus::kReady);
  // Progress: another ring's worth fits again.
  std::uint64_t more = 0;
  while (producer.try_send(payload) == SendStatus::kOk) ++more;
  EXPECT_EQ(more, sent);
  poll_until(consumer, out, 2 * sent);
  EXPECT_EQ(out.records.size(), 2 * sent);
  for (const auto& record : out.records) EXPECT_EQ(record, payload);
}

TEST(MpscUnitTest, BackPressureWithMixedSizesOverManyLaps) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  MpscProducer producer = make_producer(mpsc_options(dir, 8192));
  MpscConsumer consumer = open_consumer(dir);
  Collector out;
  std::uint64_t sequence = 0;
  const std::uint64_t rounds = kinds_test::scaled(200, 20);
  for (std::uint64_t round = 0; round < rounds; ++round) {
    // Fill to refusal, then drain all of it.
    std::uint64_t refused = 0;
    while (refused < 3) {
      const std::size_t payload = rng.below(1500);
      if (send_record(producer, 0, sequence, payload) == SendStatus::kOk) {
        ++sequence;
      } else {
        ++refused;
      }
    }
    poll_until(consumer, out, sequence);
    consumer.release();
    ASSERT_EQ(out.records.size(), sequence);
  }
  check_per_source_order(out.records, 1);
}

TEST(MpscUnitTest, ConsumerZeroesConsumedSpace) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  constexpr std::uint64_t kCapacity = 1 << 14;
  std::optional<MpscProducer> first(make_producer(mpsc_options(dir, kCapacity)));
  std::optional<MpscProducer> second(open_producer(dir));
  MpscConsumer consumer = open_consumer(dir);
  const std::span<const std::byte> ring(consumer.channel().ring(), kCapacity);
  const auto ring_is_zero = [&] {
    return std::all_of(ring.begin(), ring.end(), [](std::byte b) { return b == std::byte{0}; });
  };
  ASSERT_TRUE(ring_is_zero());

  Collector out;
  std::uint64_t sent[2] = {0, 0};
  for (int i = 0; i < 3000; ++i) {
    const auto source = static_cast<std::uint32_t>(rng.below(2));
    MpscProducer& producer = source == 0 ? *first : *second;
    SendStatus status = send_record(producer, source, sent[source], rng.below(700));
    for (int attempt = 0; status == SendStatus::kFull && attempt < 1'000'000; ++attempt) {
      (void)consumer.poll(out);
      status = send_record(producer, source, sent[source], rng.below(700));
    }
    ASSERT_EQ(status, SendStatus::kOk);
    ++sent[source];
  }
  poll_until(consumer, out, sent[0] + sent[1]);
  ASSERT_EQ(out.records.size(), sent[0] + sent[1]);
  consumer.release();
  // Every byte consumed was zeroed; the producers' open chunks hold nothing yet.
  EXPECT_TRUE(ring_is_zero());

  // Producers leaving pad their chunks; once consumed, that padding is zeroed too.
  first.reset();
  second.reset();
  for (int i = 0; i < 200; ++i) (void)consumer.poll(out);
  consumer.release();
  EXPECT_EQ(out.records.size(), sent[0] + sent[1]);
  EXPECT_TRUE(ring_is_zero());
}

// ---- Producer slots --------------------------------------------------------------------------

TEST(MpscUnitTest, ProducerSlotsAreLimitedAndFreedOnDestruction) {
  TempDir dir;
  ChannelOptions options = mpsc_options(dir, 1 << 16);
  options.producers_max = 3;
  std::vector<std::optional<MpscProducer>> producers;
  producers.emplace_back(make_producer(options));
  producers.emplace_back(open_producer(dir));
  producers.emplace_back(open_producer(dir));
  auto refused = MpscProducer::open(kName, dir.open_options());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kBusy);
  const std::string message = refused.error().message();
  EXPECT_NE(message.find("3 producer slots"), std::string::npos) << message;
  EXPECT_NE(message.find(dir.path()), std::string::npos) << message;

  // A producer that sent something and left frees its slot for the next one.
  ASSERT_EQ(send_record(*producers[1], 1, 0, 100), SendStatus::kOk);
  producers[1].reset();
  auto replacement = MpscProducer::open(kName, dir.open_options());
  ASSERT_TRUE(replacement) << replacement.error().message();
  EXPECT_EQ(replacement->slot_index(), 1U);
  auto refused_again = MpscProducer::open(kName, dir.open_options());
  ASSERT_FALSE(refused_again);
  EXPECT_EQ(refused_again.error().code, Errc::kBusy);
}

// Regression test for a hang of MpscCrashTest.KilledProducersNeverBlockTheConsumer (2 or 3 runs
// in 50): the head waited for good at a killed producer's claim that no slot described.
// attach() judged whether a slot's ranges were resolved (chunk_end and intent_end at or below the
// head) before try_take_slot() read the slot's holder and found it dead; in between, another
// producer could take the slot, claim a chunk and be killed in it. The new producer then took the
// slot with a verdict about the earlier state and reset its chunk fields, and the consumer found
// no owner for the head, so it never padded. Here the seam runs that other producer's whole life
// at that moment: it takes the free slot 0, commits a record, claims the next one and dies.
TEST(MpscUnitTest, AttachNeverWipesAChunkClaimedByAHolderThatDiedDuringTheAttach) {
  TempDir dir;
  ChannelOptions options = mpsc_options(dir, 1 << 16);
  options.producers_max = 2;
  options.unblock_timeout = std::chrono::milliseconds(100);
  auto created = Channel::create(kName, options);
  ASSERT_TRUE(created) << created.error().message();
  auto consumer_result = MpscConsumer::attach(std::move(*created));
  ASSERT_TRUE(consumer_result) << consumer_result.error().message();
  MpscConsumer& consumer = *consumer_result;

  struct Interloper {
    const TempDir* dir;
    pid_t parent;
    bool done = false;
    int status = -1;
  } interloper{&dir, getpid()};
  detail::SlotTakeSeam& seam = detail::slot_take_seam();
  seam.context = &interloper;
  seam.before_take = [](std::uint32_t index, void* raw) {
    auto* in = static_cast<Interloper*>(raw);
    if (index != 0 || in->done || getpid() != in->parent) return;  // Not in the interloper.
    in->done = true;
    kinds_test::ChildProcess child([in] {
      auto producer = MpscProducer::open(kName, in->dir->open_options());
      if (!producer || producer->slot_index() != 0) return 2;
      if (send_record(*producer, 7, 0, 10) != SendStatus::kOk) return 3;
      const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + 10);
      if (claim.status != ClaimStatus::kOk) return 4;
      _exit(0);  // Killed mid-claim: no destructor, the slot stays registered to a dead pid.
    });
    in->status = child.wait().ok() ? 0 : 1;
  };
  auto attached = MpscProducer::open(kName, dir.open_options());
  seam = {};
  ASSERT_TRUE(interloper.done);
  ASSERT_EQ(interloper.status, 0) << "the interloper failed";
  ASSERT_TRUE(attached) << attached.error().message();
  MpscProducer& producer = *attached;
  const Channel& ch = consumer.channel();
  EXPECT_EQ(producer.slot_index(), 1U)
      << "took the dead interloper's slot, whose chunk still blocks the head: "
      << kinds_test::describe_channel(ch);

  // Our records lie behind the dead interloper's chunk: the consumer must pad that chunk (after
  // unblock_timeout) and deliver them.
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(producer, 1, i, 30), SendStatus::kOk);
  Collector out;
  poll_for(consumer, out, 4);
  ASSERT_EQ(out.records.size(), 4U)
      << "the head stays at " << consumer.position() << ": " << kinds_test::describe_channel(ch);
  EXPECT_EQ(check_per_source_order(out.records, 8),
            (std::vector<std::uint64_t>{0, 3, 0, 0, 0, 0, 0, 1}));
  EXPECT_EQ(ch.header()->recovery.unblocks.load(), 1U);
}

TEST(MpscUnitTest, ProducerDestroyedWithAnOpenChunkPadsIt) {
  TempDir dir;
  std::optional<MpscProducer> a(make_producer(mpsc_options(dir, 1 << 16)));
  MpscProducer b = open_producer(dir);
  MpscConsumer consumer = open_consumer(dir);
  ASSERT_EQ(send_record(*a, 0, 0, 10), SendStatus::kOk);
  ASSERT_EQ(send_record(b, 1, 0, 10), SendStatus::kOk);  // Its chunk lies after a's.
  Collector out;
  PollResult result = consumer.poll(out);
  ASSERT_EQ(result.status, PollStatus::kOk);
  ASSERT_EQ(result.count, 1U);  // a's record; b's waits behind the rest of a's chunk.

  a.reset();
  // At once: the destructor padded the rest of a's chunk, so one poll reaches b's record.
  result = consumer.poll(out);
  ASSERT_EQ(result.status, PollStatus::kOk);
  EXPECT_EQ(result.count, 1U);
  ASSERT_EQ(out.records.size(), 2U);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{1, 1}));
  EXPECT_EQ(consumer.channel().header()->recovery.unblocks.load(), 0U);
}

TEST(MpscUnitTest, ConsumerTakesBackAnIdleProducersChunk) {
  TempDir dir;
  MpscProducer a = make_producer(mpsc_options(dir, 1 << 16));
  MpscProducer b = open_producer(dir);
  MpscConsumer consumer = open_consumer(dir);
  // a commits one record and then stays idle, alive, holding the rest of its chunk.
  ASSERT_EQ(send_record(a, 0, 0, 10), SendStatus::kOk);
  constexpr std::uint64_t kBRecords = 20;
  for (std::uint64_t i = 0; i < kBRecords; ++i) {
    ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  }
  // b's records arrive without a doing anything, and without a counting as dead.
  Collector out;
  poll_for(consumer, out, 1 + kBRecords);
  ASSERT_EQ(out.records.size(), 1 + kBRecords) << "b's records stayed behind idle a's chunk";
  EXPECT_EQ(consumer.channel().header()->recovery.unblocks.load(), 0U);

  // a carries on (in a new chunk), its order intact.
  ASSERT_EQ(send_record(a, 0, 1, 10), SendStatus::kOk);
  ASSERT_EQ(send_record(b, 1, kBRecords, 10), SendStatus::kOk);
  poll_until(consumer, out, 3 + kBRecords);
  ASSERT_EQ(out.records.size(), 3 + kBRecords);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{2, kBRecords + 1}));
}

// Regression test for a bug found with issue 3 (records lost under ThreadSanitizer timing): the
// consumer read a slot's chunk_limit, then its chunk_start/chunk_end, while the producer was
// publishing a new chunk; the old chunk's limit (at or below the head) with the new chunk's range
// (covering the head) read as "taken back", and the consumer padded the new chunk over the
// records about to be written there. The slot's seqlock (chunk_version) now makes the consumer
// wait. One thread stages the producer's half-published state exactly.
TEST(MpscUnitTest, Issue3HalfPublishedChunkIsNeverPadded) {
  TempDir dir;
  MpscProducer a = make_producer(mpsc_options(dir, 1 << 16));
  MpscProducer b = open_producer(dir);
  MpscConsumer consumer = open_consumer(dir);
  ASSERT_EQ(send_record(a, 0, 0, 10), SendStatus::kOk);
  for (std::uint64_t i = 0; i < 5; ++i) ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  Collector out;
  ASSERT_EQ(consumer.poll(out, 1).count, 1U);  // a's record; the head now waits in a's chunk.
  const std::uint64_t head = consumer.position();
  detail::ProducerSlot& slot = consumer.channel().producer_slots()[0];
  const std::uint64_t version = slot.chunk_version.load();
  const std::uint64_t limit = slot.chunk_limit.load();
  ASSERT_EQ(version % 2, 0U);
  ASSERT_LT(slot.chunk_start.load(), head);
  ASSERT_GT(limit, head);
  // a is half-way through publishing: version odd, the limit not yet stored (it reads as one at
  // the head, like an earlier chunk's), the range already its chunk's.
  slot.chunk_version.store(version + 1);
  slot.chunk_limit.store(head);
  for (int i = 0; i < 20'000; ++i) {
    ASSERT_NE(consumer.poll(out).status, PollStatus::kCorrupted) << consumer.last_error().message();
    (void)consumer.check_stalled();
  }
  ASSERT_EQ(out.records.size(), 1U) << "the consumer went past a's chunk while a published it";
  // a finishes publishing and writes its record at the head: it arrives, then b's.
  slot.chunk_limit.store(limit);
  slot.chunk_version.store(version + 2);
  ASSERT_EQ(send_record(a, 0, 1, 10), SendStatus::kOk);
  poll_until(consumer, out, 7);
  ASSERT_EQ(out.records.size(), 7U);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{2, 5}));
  EXPECT_EQ(consumer.channel().header()->recovery.unblocks.load(), 0U);
}

TEST(MpscUnitTest, LiveProducersOutstandingClaimIsNeverTakenBack) {
  TempDir dir;
  MpscProducer a = make_producer(mpsc_options(dir, 1 << 16));
  MpscProducer b = open_producer(dir);
  MpscConsumer consumer = open_consumer(dir);
  ASSERT_EQ(send_record(a, 0, 0, 10), SendStatus::kOk);
  // a claims its next record and is still writing it when b's records arrive.
  const ClaimResult claim = a.try_claim(kinds_test::kStampBytes + 40);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  kinds_test::write_record(claim.bytes, 0, 1);
  for (std::uint64_t i = 0; i < 5; ++i) ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  Collector out;
  for (int i = 0; i < 50'000; ++i) {
    ASSERT_NE(consumer.poll(out).status, PollStatus::kCorrupted) << consumer.last_error().message();
    (void)consumer.check_stalled();
  }
  // Only a's first record: the head waits for the claim a is writing.
  ASSERT_EQ(out.records.size(), 1U);
  a.commit();
  poll_until(consumer, out, 7);
  ASSERT_EQ(out.records.size(), 7U);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{2, 5}));
  // And a goes on afterwards.
  ASSERT_EQ(send_record(a, 0, 2, 10), SendStatus::kOk);
  poll_until(consumer, out, 8);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{3, 5}));
}

// Regression test for a bug found with issue 3 (it stalled the multi-process tests for good;
// fixed by 2cf4e86: the consumer now remembers a range it took back). The consumer takes back
// the rest of a's chunk at the very moment a is claiming its next record there: a has stored
// write_position (== the head) and not yet re-read chunk_limit. The consumer sees write_position ==
// head and waits for that record; a then sees the lowered limit, gives the chunk up without padding
// it (the consumer took it back) and opens a new chunk, which overwrites the slot's
// chunk_start/chunk_end. Before the fix, no slot described the taken-back range from then on, so
// nobody ever padded it: the head stayed and every producer ended up blocked. One thread reproduces
// the interleaving exactly by storing a's write_position the way a's try_claim does before the
// consumer looks.
TEST(MpscUnitTest, Issue3TakeBackRacingTheProducersNextClaimIsStillPadded) {
  TempDir dir;
  MpscProducer a = make_producer(mpsc_options(dir, 1 << 16));
  MpscProducer b = open_producer(dir);
  MpscConsumer consumer = open_consumer(dir);
  ASSERT_EQ(send_record(a, 0, 0, 10), SendStatus::kOk);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  Collector out;
  ASSERT_EQ(consumer.poll(out).count, 1U);  // a's record; the head now waits in a's chunk.
  const std::uint64_t head = consumer.position();

  // a's next try_claim has just stored write_position = head (it has not re-read the limit).
  detail::ProducerSlot& slot = consumer.channel().producer_slots()[a.slot_index()];
  slot.write_position.store(head, std::memory_order_release);
  // The consumer takes the rest back and, seeing a about to write at the head, waits.
  (void)consumer.check_stalled();
  EXPECT_EQ(slot.chunk_limit.load(), head) << "the chunk was not taken back";
  // a re-reads the limit, finds it lowered, and claims a new chunk for its record.
  ASSERT_EQ(send_record(a, 0, 1, 10), SendStatus::kOk);

  // Everything must still arrive: b's three records and a's second.
  poll_for(consumer, out, 5);
  ASSERT_EQ(out.records.size(), 5U) << "the head stays at " << consumer.position()
                                    << ", in a taken-back range no slot describes any more";
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{2, 3}));
}

// Regression test for a hole the take-back fix (2cf4e86) leaves, found by
// MpscCrashTest.KilledConsumerIsReplacedWithTwoProducers (it hung with the two bugs below fixed).
// The consumer lowers chunk_limit by compare-and-swap first and records the range (or pads it)
// only afterwards; killed in between, it leaves a lowered limit and no record of the range. a sees
// the lowered limit, gives the rest of its chunk up without padding it and opens a new chunk, and
// no slot describes the range any more: the replacement consumer stalls there for good. (Having
// the producer record the rest it gives up, in its own slot, closes this window.)
TEST(MpscUnitTest, Issue3ConsumerKilledRightAfterATakeBackIsReplacedWithoutAStall) {
  TempDir dir;
  MpscProducer a = make_producer(mpsc_options(dir, 1 << 16));
  MpscProducer b = open_producer(dir);
  ASSERT_EQ(send_record(a, 0, 0, 10), SendStatus::kOk);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  // The killed consumer's compare-and-swap: a's limit lowered to the head, nothing else.
  const Channel& ch = a.channel();
  ch.producer_slots()[a.slot_index()].chunk_limit.store(span_of(kinds_test::kStampBytes + 10));
  ASSERT_EQ(send_record(a, 0, 1, 10), SendStatus::kOk);  // In a new chunk.
  MpscConsumer consumer = open_consumer(dir);
  Collector out;
  poll_for(consumer, out, 5);
  ASSERT_EQ(out.records.size(), 5U)
      << "the head stays at " << consumer.position() << ": " << kinds_test::describe_channel(ch);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{2, 3}));
}

// The same window as above, with the producer gone as well: after giving the rest up (recorded in
// its slot's given_up range) a detaches, and a new producer attaches to the slot it freed. The
// given-up range is then the only description of [head, end) left, and attach() must not reset
// it: the replacement consumer needs it to pad the range.
TEST(MpscUnitTest, GivenUpRangeOutlivesItsProducerAndTheSlotsNextHolder) {
  TempDir dir;
  std::optional<MpscProducer> a(make_producer(mpsc_options(dir, 1 << 16)));
  MpscProducer b = open_producer(dir);
  ASSERT_EQ(send_record(*a, 0, 0, 10), SendStatus::kOk);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  // The killed consumer's compare-and-swap: a's limit lowered to the head, nothing else.
  const Channel& ch = b.channel();
  const std::uint32_t a_slot = a->slot_index();
  ch.producer_slots()[a_slot].chunk_limit.store(span_of(kinds_test::kStampBytes + 10));
  ASSERT_EQ(send_record(*a, 0, 1, 10), SendStatus::kOk);  // In a new chunk.
  a.reset();                                              // Detaches; its slot is free.
  MpscProducer c = open_producer(dir);
  ASSERT_EQ(c.slot_index(), a_slot);
  MpscConsumer consumer = open_consumer(dir);
  Collector out;
  poll_for(consumer, out, 5);
  ASSERT_EQ(out.records.size(), 5U)
      << "the head stays at " << consumer.position() << ": " << kinds_test::describe_channel(ch);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{2, 3}));
}

// Regression test for a bug in the take-back fix (2cf4e86), found by
// MpscCrashTest.KilledConsumerIsReplacedWithTwoProducers (it hung). A consumer killed after it
// took back the rest of a's chunk (and saw a mid-claim there) leaves the range in the header;
// its successor loads it in attach() - and loses it, because MpscConsumer's move constructor does
// not copy taken_start_/taken_end_/taken_slot_ (attach returns the consumer by moving it). a has
// meanwhile moved to a new chunk, so no slot describes the range and the head stays there for
// good. The header here holds what the killed consumer left; a then moves on, as it would.
TEST(MpscUnitTest, Issue3ReplacementConsumerPadsTheRangeItsPredecessorTookBack) {
  TempDir dir;
  MpscProducer a = make_producer(mpsc_options(dir, 1 << 16));
  MpscProducer b = open_producer(dir);
  ASSERT_EQ(send_record(a, 0, 0, 10), SendStatus::kOk);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  const std::uint64_t taken_start = span_of(kinds_test::kStampBytes + 10);
  // The killed consumer lowered a's limit to taken_start, saw a about to write there, and
  // remembered the range in the header.
  const Channel& ch = a.channel();
  detail::ProducerSlot& slot = ch.producer_slots()[a.slot_index()];
  const std::uint64_t end = slot.chunk_end.load();
  slot.chunk_limit.store(taken_start);
  detail::ConsumerBlock& block = ch.header()->consumer;
  block.taken_start.store(taken_start);
  block.taken_slot.store(a.slot_index());
  block.taken_end.store(end);
  // a re-reads its limit, finds it lowered, and writes its next record in a new chunk.
  ASSERT_EQ(send_record(a, 0, 1, 10), SendStatus::kOk);
  // The replacement consumer must get everything.
  MpscConsumer consumer = open_consumer(dir);
  Collector out;
  poll_for(consumer, out, 5);
  ASSERT_EQ(out.records.size(), 5U)
      << "the head stays at " << consumer.position() << ": " << kinds_test::describe_channel(ch);
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{2, 3}));
}

// Regression test for a bug in the take-back fix (2cf4e86), found by
// MpscCrashTest.KilledConsumerIsReplacedWithTwoProducers (a record lost). The consumer remembers
// a taken-back rest [taken_start, end) when it sees write_position == taken_start *or a record
// already committed at taken_start*. In the second case the producer may already be writing its
// next record, at taken_start + span, having passed its chunk_limit check before the consumer
// lowered the limit. Once the consumer has read the record at taken_start it pads [taken_start +
// span, end) at once ("nothing else can be written there"): the producer then commits its record
// over the padding the consumer has already skipped, and the record is lost (and its bytes stay in
// released space). The consumer here starts from the remembered range in the header, the state the
// race leaves behind, with a's record in flight right after taken_start.
TEST(MpscUnitTest, Issue3TakenBackRangeIsNotPaddedOverARecordInFlight) {
  TempDir dir;
  MpscProducer a = make_producer(mpsc_options(dir, 1 << 16));
  MpscProducer b = open_producer(dir);
  ASSERT_EQ(send_record(a, 0, 0, 10), SendStatus::kOk);
  ASSERT_EQ(send_record(a, 0, 1, 10), SendStatus::kOk);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(b, 1, i, 30), SendStatus::kOk);
  const std::uint64_t span = span_of(kinds_test::kStampBytes + 10);
  const std::uint64_t taken_start = span;  // a's second record, committed.
  // a claims its third record (it passes its chunk_limit check now) and is writing it...
  const ClaimResult claim = a.try_claim(kinds_test::kStampBytes + 10);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  kinds_test::write_record(claim.bytes, 0, 2);
  // ...when the consumer takes the rest back at taken_start, sees the record committed there,
  // and remembers the range: what a consumer leaves in the header at that point.
  const Channel& ch = a.channel();
  detail::ProducerSlot& slot = ch.producer_slots()[a.slot_index()];
  const std::uint64_t end = slot.chunk_end.load();
  slot.chunk_limit.store(taken_start);
  detail::ConsumerBlock& block = ch.header()->consumer;
  block.taken_start.store(taken_start);
  block.taken_slot.store(a.slot_index());
  block.taken_end.store(end);
  MpscConsumer consumer = open_consumer(dir);
  Collector out;
  for (int i = 0; i < 5000; ++i) {
    ASSERT_NE(consumer.poll(out).status, PollStatus::kCorrupted) << consumer.last_error().message();
  }
  a.commit();  // The record in flight lands.
  ASSERT_EQ(send_record(a, 0, 3, 10), SendStatus::kOk);
  poll_for(consumer, out, 7);
  // All of a's records, in order (record 2 must not have been padded over), and b's.
  EXPECT_EQ(check_per_source_order(out.records, 2), (std::vector<std::uint64_t>{4, 3}));
  EXPECT_EQ(out.records.size(), 7U);
}

// ---- The consumer ----------------------------------------------------------------------------

TEST(MpscUnitTest, ConsumerReattachContinuesAtTheHead) {
  TempDir dir;
  MpscProducer producer = make_producer(mpsc_options(dir, 1 << 16));
  for (std::uint64_t i = 0; i < 10; ++i)
    ASSERT_EQ(send_record(producer, 0, i, 20), SendStatus::kOk);
  Collector first_out;
  {
    MpscConsumer consumer = open_consumer(dir);
    const PollResult result = consumer.poll(first_out, 4);
    ASSERT_EQ(result.count, 4U);
  }
  for (std::uint64_t i = 10; i < 15; ++i)
    ASSERT_EQ(send_record(producer, 0, i, 20), SendStatus::kOk);
  MpscConsumer consumer = open_consumer(dir);
  Collector out;
  poll_until(consumer, out, 11, 100'000);
  ASSERT_EQ(out.records.size(), 11U);
  for (std::size_t i = 0; i < out.records.size(); ++i) {
    EXPECT_EQ(kinds_test::read_stamp(out.records[i]).sequence, 4 + i);
    EXPECT_EQ(kinds_test::check_record(out.records[i]), "");
  }
  // Nothing more: no record delivered twice.
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(consumer.poll(out).status, PollStatus::kEmpty);
}

TEST(MpscUnitTest, ProducerCountsAliveAndDead) {
  TempDir dir;
  std::optional<MpscProducer> a(make_producer(mpsc_options(dir, 1 << 16)));
  MpscConsumer consumer = open_consumer(dir);
  PeerCounts counts = consumer.producers();
  EXPECT_EQ(counts.alive, 1U);
  EXPECT_EQ(counts.dead, 0U);
  MpscProducer b = open_producer(dir);
  counts = consumer.producers();
  EXPECT_EQ(counts.alive, 2U);
  EXPECT_EQ(counts.dead, 0U);

  // A producer process that ends without giving its slot back counts as dead.
  kinds_test::ChildProcess child([&] {
    auto producer = MpscProducer::open(kName, dir.open_options());
    if (!producer) return 2;
    _exit(0);  // No destructor: the slot stays registered to a dead pid.
  });
  ASSERT_TRUE(child.wait().ok()) << child.status().describe();
  counts = consumer.producers();
  EXPECT_EQ(counts.alive, 2U);
  EXPECT_EQ(counts.dead, 1U);

  a.reset();
  counts = consumer.producers();
  EXPECT_EQ(counts.alive, 1U);
  EXPECT_EQ(counts.dead, 1U);
}

TEST(MpscUnitTest, CorruptRecordHeaderIsReported) {
  TempDir dir;
  MpscProducer producer = make_producer(mpsc_options(dir, 1 << 16));
  MpscConsumer consumer = open_consumer(dir);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(send_record(producer, 0, i, 16), SendStatus::kOk);
  // The second record's header gets an unknown type.
  const std::uint64_t second = span_of(kinds_test::kStampBytes + 16);
  std::atomic_ref<std::uint64_t> word(
      *reinterpret_cast<std::uint64_t*>(consumer.channel().ring() + second));
  word.store(0x1234567800000010ULL);
  Collector out;
  PollResult result = consumer.poll(out);
  EXPECT_EQ(result.count, 1U);
  result = consumer.poll(out);
  EXPECT_EQ(result.status, PollStatus::kCorrupted);
  EXPECT_TRUE(consumer.corrupted());
  EXPECT_EQ(consumer.last_error().code, Errc::kCorrupted);
  const std::string message = consumer.last_error().message();
  EXPECT_NE(message.find(consumer.channel().path()), std::string::npos) << message;
  EXPECT_NE(message.find("position " + std::to_string(second)), std::string::npos) << message;
  // It stays stopped.
  EXPECT_EQ(consumer.poll(out).status, PollStatus::kCorrupted);
  EXPECT_EQ(out.records.size(), 1U);
}

TEST(MpscUnitTest, RecordLongerThanTheMaximumIsCorruption) {
  TempDir dir;
  MpscProducer producer = make_producer(mpsc_options(dir, 1 << 16, 1000));
  MpscConsumer consumer = open_consumer(dir);
  ASSERT_EQ(send_record(producer, 0, 0, 16), SendStatus::kOk);
  std::atomic_ref<std::uint64_t> word(*reinterpret_cast<std::uint64_t*>(consumer.channel().ring()));
  word.store(detail::make_record_word(detail::RecordType::kData, 1001));
  Collector out;
  EXPECT_EQ(consumer.poll(out).status, PollStatus::kCorrupted);
  EXPECT_EQ(consumer.last_error().code, Errc::kCorrupted);
  EXPECT_TRUE(out.records.empty());
}

}  // namespace
}  // namespace weft
