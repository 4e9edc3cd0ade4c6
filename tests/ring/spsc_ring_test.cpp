// Unit tests of the SPSC ring protocol (weft/spsc.hpp): every edge of a single producer and a
// single consumer in one process, a seeded model-checked interleaving of the two, and the rules
// for taking, giving back and inheriting the producer and consumer roles.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using test::TempDir;

constexpr std::string_view kName = "ring";
constexpr std::uint64_t kHeader = detail::kRecordHeaderBytes;

std::vector<std::byte> pattern(std::size_t bytes, std::uint64_t key) {
  std::vector<std::byte> out(bytes);
  test::fill_pattern(out, key);
  return out;
}

// What the producer needs for a record of `payload_bytes` at `tail`: the record's span, plus the
// padding before it when it would straddle the ring's end.
std::uint64_t needed_bytes(std::uint64_t tail, std::uint64_t capacity, std::size_t payload_bytes) {
  const std::uint64_t span = detail::record_span_bytes(payload_bytes);
  const std::uint64_t to_end = capacity - (tail & (capacity - 1));
  return span <= to_end ? span : to_end + span;
}

// The documented refusal rule: a ring of C bytes takes a record while
// tail + needed + 8 - head <= C (8 bytes stay free for the zeroed header after the record).
bool predicts_full(std::uint64_t tail, std::uint64_t head, std::uint64_t capacity,
                   std::size_t payload_bytes) {
  return tail + needed_bytes(tail, capacity, payload_bytes) + kHeader - head > capacity;
}

class SpscRingTest : public ::testing::Test {
 protected:
  void open_ring(std::uint64_t capacity_bytes = 4096, std::uint64_t record_bytes_max = 0) {
    auto producer =
        SpscProducer::create(kName, dir_.channel_options(capacity_bytes, record_bytes_max));
    ASSERT_TRUE(producer) << producer.error().message();
    producer_.emplace(std::move(*producer));
    auto consumer = SpscConsumer::open(kName, dir_.open_options());
    ASSERT_TRUE(consumer) << consumer.error().message();
    consumer_.emplace(std::move(*consumer));
  }

  void reopen_consumer() {
    consumer_.reset();
    auto consumer = SpscConsumer::open(kName, dir_.open_options());
    ASSERT_TRUE(consumer) << consumer.error().message();
    consumer_.emplace(std::move(*consumer));
  }

  void reopen_producer() {
    producer_.reset();
    auto producer = SpscProducer::open(kName, dir_.open_options());
    ASSERT_TRUE(producer) << producer.error().message();
    producer_.emplace(std::move(*producer));
  }

  SpscProducer& producer() { return *producer_; }
  SpscConsumer& consumer() { return *consumer_; }
  [[nodiscard]] std::uint64_t capacity() const { return producer_->capacity_bytes(); }

  // head_position as the producer sees it in shared memory.
  [[nodiscard]] std::uint64_t published_head() const {
    // Acquire: pairs with the consumer's release store of head_position.
    return producer_->channel().header()->consumer.head_position.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::uint64_t published_tail() const {
    // Acquire: pairs with the producer's release store of tail_position.
    return producer_->channel().header()->producer.tail_position.load(std::memory_order_acquire);
  }

  void send(const std::vector<std::byte>& payload) {
    ASSERT_EQ(producer().try_send(payload), SendStatus::kOk) << "payload of " << payload.size();
  }

  // Polls every committed record and returns copies of them.
  std::vector<std::vector<std::byte>> drain(std::size_t records_max = SIZE_MAX) {
    std::vector<std::vector<std::byte>> out;
    const PollResult result = consumer().poll(
        [&](std::span<const std::byte> record) { out.emplace_back(record.begin(), record.end()); },
        records_max);
    EXPECT_NE(result.status, PollStatus::kCorrupted) << consumer().last_error().message();
    EXPECT_EQ(result.count, out.size());
    EXPECT_EQ(result.status == PollStatus::kOk, !out.empty());
    return out;
  }

  // Moves head and tail to absolute position `target` (ring empty) with zero-length records.
  void advance_empty_ring_to(std::uint64_t target) {
    ASSERT_LE(producer().position(), target);
    while (producer().position() < target) {
      const std::uint64_t gap = target - producer().position();
      const std::uint64_t to_end = capacity() - (producer().position() & (capacity() - 1));
      const auto span = std::min<std::uint64_t>({gap, to_end, 512});
      ASSERT_EQ(span % 8, 0U);
      send(pattern(span - kHeader, gap));
      drain();
    }
    ASSERT_EQ(producer().position(), target);
    ASSERT_EQ(consumer().position(), target);
    ASSERT_EQ(published_head(), target);
  }

  TempDir dir_;
  std::optional<SpscProducer> producer_;
  std::optional<SpscConsumer> consumer_;
};

// ---- Edges -----------------------------------------------------------------------------------

TEST_F(SpscRingTest, PollOnEmptyRingReturnsEmpty) {
  open_ring();
  int calls = 0;
  const PollResult result = consumer().poll([&](std::span<const std::byte>) { ++calls; });
  EXPECT_EQ(result.status, PollStatus::kEmpty);
  EXPECT_EQ(result.count, 0U);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(consumer().peek().status, PollStatus::kEmpty);
  std::byte buffer[16];
  const RecvResult received = consumer().try_recv(buffer);
  EXPECT_EQ(received.status, RecvStatus::kEmpty);
  EXPECT_EQ(received.size, 0U);
  EXPECT_FALSE(consumer().has_data());
  EXPECT_EQ(consumer().position(), 0U);
  EXPECT_FALSE(consumer().corrupted());
}

TEST_F(SpscRingTest, RingOfCapacityHoldsCapacityMinusEightBytes) {
  open_ring(4096);
  ASSERT_EQ(producer().record_bytes_max(), 1024U);  // Default: capacity / 4.
  // 63 records of 64 bytes (56 of payload) fill 4032 bytes; one of 56 bytes brings the ring to
  // exactly C - 8 = 4088 bytes; not even an empty record fits after that.
  for (int i = 0; i < 63; ++i) send(pattern(56, static_cast<std::uint64_t>(i)));
  EXPECT_EQ(producer().position(), 4032U);
  send(pattern(48, 63));
  EXPECT_EQ(producer().position(), 4088U);
  EXPECT_EQ(producer().try_claim(0).status, ClaimStatus::kFull);
  EXPECT_EQ(producer().try_send({}), SendStatus::kFull);
  EXPECT_EQ(producer().position(), 4088U);

  // Consuming one 64-byte record frees exactly enough for 8 bytes of padding and a 56-byte
  // record at the start of the ring, but not a byte more.
  ASSERT_EQ(drain(1).size(), 1U);
  EXPECT_EQ(published_head(), 64U);
  EXPECT_EQ(producer().try_claim(49).status, ClaimStatus::kFull);
  send(pattern(48, 64));
  EXPECT_EQ(producer().position(), 4096U + 56U);
  EXPECT_EQ(producer().try_claim(0).status, ClaimStatus::kFull);

  const auto records = drain();
  ASSERT_EQ(records.size(), 64U);
  for (std::size_t i = 0; i < 62; ++i) EXPECT_EQ(records[i], pattern(56, i + 1)) << i;
  EXPECT_EQ(records[62], pattern(48, 63));
  EXPECT_EQ(records[63], pattern(48, 64));
}

TEST_F(SpscRingTest, PushFailsExactlyWhenFull) {
  open_ring(4096, 2032);
  const std::size_t sizes[] = {0, 1, 7, 8, 55, 56, 57, 100, 333, 1000, 2032};
  const std::uint64_t head_offsets[] = {0, 8, 1000, 2048, 4000, 4088};
  std::uint64_t key = 0;
  for (const std::uint64_t offset : head_offsets) {
    for (const std::size_t bytes : sizes) {
      SCOPED_TRACE("payload " + std::to_string(bytes) + ", head offset " + std::to_string(offset));
      // Start with an empty ring whose head sits at `offset` of the next lap.
      const std::uint64_t start = producer().position();
      ASSERT_NO_FATAL_FAILURE(
          advance_empty_ring_to((start / capacity() + 1) * capacity() + offset));
      const std::uint64_t head = published_head();
      std::uint64_t accepted = 0;
      for (;;) {
        const std::uint64_t tail = producer().position();
        const bool expect_full = predicts_full(tail, head, capacity(), bytes);
        const ClaimResult claim = producer().try_claim(bytes);
        ASSERT_EQ(claim.status == ClaimStatus::kFull, expect_full)
            << "tail " << tail << " head " << head << " after " << accepted << " records";
        if (expect_full) break;
        ASSERT_EQ(claim.status, ClaimStatus::kOk);
        test::fill_pattern(claim.bytes, key + accepted);
        producer().commit();
        ++accepted;
        ASSERT_LE(producer().position() - head, capacity() - kHeader)
            << "records may use at most C - 8 bytes";
      }
      ASSERT_GE(accepted, 1U) << "an empty ring must take any record up to record_bytes_max";
      // A refused claim changes nothing: the ring still delivers exactly what was accepted.
      const auto records = drain();
      ASSERT_EQ(records.size(), accepted);
      for (std::size_t i = 0; i < records.size(); ++i) {
        ASSERT_EQ(records[i], pattern(bytes, key + i)) << "record " << i;
      }
      key += accepted;
    }
  }
}

TEST_F(SpscRingTest, WrapAroundInsertsPaddingThatConsumersNeverSee) {
  open_ring(4096);
  // Four 1008-byte records (1000 of payload) take the tail to offset 4032, 64 bytes from the end.
  for (std::uint64_t i = 0; i < 4; ++i) {
    send(pattern(1000, i));
    ASSERT_EQ(drain().size(), 1U);
  }
  ASSERT_EQ(producer().position(), 4032U);
  const ClaimResult claim = producer().try_claim(1000);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  // The record does not fit in the 64 bytes left: it starts at ring offset 0 after padding.
  EXPECT_EQ(claim.bytes.data(), producer().channel().ring() + kHeader);
  EXPECT_EQ(claim.bytes.size(), 1000U);
  test::fill_pattern(claim.bytes, 99);
  producer().commit();
  EXPECT_EQ(producer().position(), 4096U + 1008U);
  EXPECT_EQ(published_tail(), 4096U + 1008U);

  std::vector<std::span<const std::byte>> spans;
  const PollResult result =
      consumer().poll([&](std::span<const std::byte> record) { spans.push_back(record); });
  EXPECT_EQ(result.status, PollStatus::kOk);
  ASSERT_EQ(result.count, 1U) << "the padding record must be invisible";
  ASSERT_EQ(spans.size(), 1U);
  // One contiguous span inside the ring, at its start.
  EXPECT_EQ(spans[0].data(), consumer().channel().ring() + kHeader);
  EXPECT_EQ(std::vector<std::byte>(spans[0].begin(), spans[0].end()), pattern(1000, 99));
  EXPECT_EQ(consumer().position(), 4096U + 1008U);
  EXPECT_EQ(published_head(), 4096U + 1008U);
}

TEST_F(SpscRingTest, PeekSkipsPaddingAndGivesItsSpaceBackOnDestruction) {
  open_ring(4096);
  for (std::uint64_t i = 0; i < 4; ++i) {
    send(pattern(1000, i));
    ASSERT_EQ(drain().size(), 1U);
  }
  // A claim that wraps publishes padding; aborting it leaves the padding alone in the ring.
  ASSERT_EQ(producer().try_claim(1000).status, ClaimStatus::kOk);
  producer().abort();
  EXPECT_EQ(producer().position(), 4096U);
  EXPECT_TRUE(consumer().has_data()) << "the padding record is committed";
  EXPECT_EQ(consumer().peek().status, PollStatus::kEmpty);
  EXPECT_EQ(consumer().position(), 4096U) << "peek() consumed the padding";
  EXPECT_EQ(published_head(), 4032U) << "but publishes it only with the next release";
  reopen_consumer();
  EXPECT_EQ(published_head(), 4096U) << "the destructor gives the padding's space back";
  EXPECT_EQ(consumer().position(), 4096U);
  send(pattern(10, 5));
  const PeekResult next = consumer().peek();
  ASSERT_EQ(next.status, PollStatus::kOk);
  EXPECT_EQ(std::vector<std::byte>(next.bytes.begin(), next.bytes.end()), pattern(10, 5));
}

TEST_F(SpscRingTest, LargestRecordFitsAndOneMoreByteIsTooLarge) {
  open_ring(4096, 2032);  // 2032 = capacity / 2 - 16, the largest a 4 KiB ring allows.
  ASSERT_EQ(producer().record_bytes_max(), 2032U);
  ASSERT_EQ(consumer().record_bytes_max(), 2032U);
  const ClaimResult too_large = producer().try_claim(2033);
  EXPECT_EQ(too_large.status, ClaimStatus::kTooLarge);
  EXPECT_TRUE(too_large.bytes.empty());
  EXPECT_EQ(producer().try_send(pattern(2033, 0)), SendStatus::kTooLarge);
  EXPECT_EQ(producer().try_claim(SIZE_MAX).status, ClaimStatus::kTooLarge);
  EXPECT_EQ(producer().position(), 0U);
  send(pattern(2032, 1));
  const auto records = drain();
  ASSERT_EQ(records.size(), 1U);
  EXPECT_EQ(records[0], pattern(2032, 1));
}

TEST_F(SpscRingTest, LargestRecordFitsAtEveryOffsetOfAnEmptyRing) {
  open_ring(4096, 2032);
  for (std::uint64_t offset = 0; offset < 4096; offset += 8) {
    ASSERT_NO_FATAL_FAILURE(
        advance_empty_ring_to((producer().position() / 4096 + 1) * 4096 + offset));
    const ClaimResult claim = producer().try_claim(2032);
    ASSERT_EQ(claim.status, ClaimStatus::kOk) << "ring offset " << offset;
    // The span lies inside the ring whether or not it needed padding.
    const std::byte* ring = producer().channel().ring();
    ASSERT_GE(claim.bytes.data(), ring + kHeader);
    ASSERT_LE(claim.bytes.data() + claim.bytes.size(), ring + 4096);
    test::fill_pattern(claim.bytes, offset);
    producer().commit();
    const auto records = drain();
    ASSERT_EQ(records.size(), 1U) << "ring offset " << offset;
    ASSERT_EQ(records[0], pattern(2032, offset)) << "ring offset " << offset;
  }
}

TEST_F(SpscRingTest, ZeroLengthRecordRoundTrips) {
  open_ring();
  const ClaimResult claim = producer().try_claim(0);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  EXPECT_TRUE(claim.bytes.empty());
  producer().commit();
  EXPECT_EQ(producer().position(), 8U) << "a zero-length record is its 8-byte header";
  EXPECT_EQ(producer().try_send({}), SendStatus::kOk);
  EXPECT_EQ(producer().try_send({}), SendStatus::kOk);

  const PeekResult peeked = consumer().peek();
  ASSERT_EQ(peeked.status, PollStatus::kOk);
  EXPECT_TRUE(peeked.bytes.empty());
  consumer().release();
  std::byte buffer[1];
  const RecvResult received = consumer().try_recv(std::span<std::byte>(buffer, 0));
  EXPECT_EQ(received.status, RecvStatus::kOk);
  EXPECT_EQ(received.size, 0U);
  const auto records = drain();
  ASSERT_EQ(records.size(), 1U);
  EXPECT_TRUE(records[0].empty());
  EXPECT_EQ(consumer().position(), 24U);
}

TEST_F(SpscRingTest, AbortLeavesNothingVisibleAndTheSpaceIsReused) {
  open_ring();
  const ClaimResult first = producer().try_claim(100);
  ASSERT_EQ(first.status, ClaimStatus::kOk);
  test::fill_pattern(first.bytes, 1);
  producer().abort();
  EXPECT_EQ(producer().position(), 0U);
  EXPECT_EQ(published_tail(), 0U);
  EXPECT_FALSE(consumer().has_data());
  EXPECT_TRUE(drain().empty());

  const ClaimResult second = producer().try_claim(40);
  ASSERT_EQ(second.status, ClaimStatus::kOk);
  EXPECT_EQ(second.bytes.data(), first.bytes.data()) << "the aborted space is claimed again";
  test::fill_pattern(second.bytes, 2);
  producer().commit();
  const auto records = drain();
  ASSERT_EQ(records.size(), 1U);
  EXPECT_EQ(records[0], pattern(40, 2));
}

TEST_F(SpscRingTest, CommitShorterPublishesOnlyThatManyBytes) {
  open_ring();
  const ClaimResult claim = producer().try_claim(100);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  test::fill_pattern(claim.bytes, 3);
  producer().commit(41);
  EXPECT_EQ(producer().position(), detail::record_span_bytes(41));
  send(pattern(7, 4));  // The next record follows the shortened one directly.
  const auto records = drain();
  ASSERT_EQ(records.size(), 2U);
  const std::vector<std::byte> whole = pattern(100, 3);
  EXPECT_EQ(records[0], std::vector<std::byte>(whole.begin(), whole.begin() + 41));
  EXPECT_EQ(records[1], pattern(7, 4));

  const ClaimResult empty = producer().try_claim(64);
  ASSERT_EQ(empty.status, ClaimStatus::kOk);
  producer().commit(0);
  const auto zero = drain();
  ASSERT_EQ(zero.size(), 1U);
  EXPECT_TRUE(zero[0].empty());
}

TEST_F(SpscRingTest, PeekReturnsTheSameRecordUntilRelease) {
  open_ring();
  send(pattern(30, 1));
  send(pattern(31, 2));
  const PeekResult first = consumer().peek();
  ASSERT_EQ(first.status, PollStatus::kOk);
  const PeekResult again = consumer().peek();
  ASSERT_EQ(again.status, PollStatus::kOk);
  EXPECT_EQ(first.bytes.data(), again.bytes.data());
  EXPECT_EQ(std::vector<std::byte>(again.bytes.begin(), again.bytes.end()), pattern(30, 1));
  EXPECT_EQ(published_head(), 0U) << "peek() consumes nothing";
  consumer().release();
  EXPECT_EQ(published_head(), detail::record_span_bytes(30));
  const PeekResult second = consumer().peek();
  ASSERT_EQ(second.status, PollStatus::kOk);
  EXPECT_EQ(std::vector<std::byte>(second.bytes.begin(), second.bytes.end()), pattern(31, 2));
  consumer().release();
  EXPECT_EQ(consumer().peek().status, PollStatus::kEmpty);
}

TEST_F(SpscRingTest, TryRecvWithTooSmallBufferReportsTheSizeAndKeepsTheRecord) {
  open_ring();
  send(pattern(100, 1));
  std::vector<std::byte> small(99);
  const RecvResult refused = consumer().try_recv(small);
  EXPECT_EQ(refused.status, RecvStatus::kTooSmall);
  EXPECT_EQ(refused.size, 100U);
  EXPECT_EQ(published_head(), 0U);
  std::vector<std::byte> exact(100);
  const RecvResult received = consumer().try_recv(exact);
  EXPECT_EQ(received.status, RecvStatus::kOk);
  EXPECT_EQ(received.size, 100U);
  EXPECT_EQ(exact, pattern(100, 1));
  EXPECT_EQ(consumer().try_recv(exact).status, RecvStatus::kEmpty);
}

TEST_F(SpscRingTest, HalfWrittenRecordIsInvisible) {
  open_ring();
  send(pattern(10, 1));
  const ClaimResult claim = producer().try_claim(200);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  test::fill_pattern(claim.bytes.first(100), 2);  // Half written, not committed.
  const auto before = drain();
  ASSERT_EQ(before.size(), 1U) << "only the committed record";
  EXPECT_FALSE(consumer().has_data());
  EXPECT_EQ(consumer().peek().status, PollStatus::kEmpty);
  EXPECT_EQ(consumer().wait(std::chrono::milliseconds(1)), WaitStatus::kTimedOut);
  test::fill_pattern(claim.bytes.subspan(100), 3);
  producer().commit();
  EXPECT_TRUE(consumer().has_data());
  const auto after = drain();
  ASSERT_EQ(after.size(), 1U);
  std::vector<std::byte> expected = pattern(100, 2);
  const auto tail = pattern(100, 3);
  expected.insert(expected.end(), tail.begin(), tail.end());
  EXPECT_EQ(after[0], expected);
}

TEST_F(SpscRingTest, PollHonoursRecordsMax) {
  open_ring();
  for (std::uint64_t i = 0; i < 10; ++i) send(pattern(i, i));
  const auto first = drain(3);
  ASSERT_EQ(first.size(), 3U);
  EXPECT_EQ(published_head(), consumer().position()) << "poll publishes what it consumed";
  const auto one = drain(1);
  ASSERT_EQ(one.size(), 1U);
  const auto rest = drain();
  ASSERT_EQ(rest.size(), 6U);
  for (std::uint64_t i = 0; i < 3; ++i) EXPECT_EQ(first[i], pattern(i, i));
  EXPECT_EQ(one[0], pattern(3, 3));
  for (std::uint64_t i = 0; i < 6; ++i) EXPECT_EQ(rest[i], pattern(i + 4, i + 4));
  EXPECT_TRUE(drain(0).empty());
}

TEST_F(SpscRingTest, PollHandsOutSpansInsideTheRing) {
  open_ring(8192);
  const std::byte* ring = consumer().channel().ring();
  for (std::uint64_t round = 0; round < 200; ++round) {
    send(pattern(round * 13 % 500, round));
    const PollResult result = consumer().poll([&](std::span<const std::byte> record) {
      ASSERT_GE(record.data(), ring + kHeader);
      ASSERT_LE(record.data() + record.size(), ring + 8192);
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(record.data()) % 8, 0U);
      EXPECT_EQ(std::vector<std::byte>(record.begin(), record.end()),
                pattern(round * 13 % 500, round));
    });
    ASSERT_EQ(result.count, 1U);
  }
}

// The statistics in the header (records_committed, claims_refused, records_consumed) count data
// records only, never padding, and survive a change of role holder.
TEST_F(SpscRingTest, HeaderCountersCountDataRecordsRefusalsAndReleases) {
  open_ring(4096);
  const detail::ChannelHeader& header = *producer().channel().header();
  const auto committed = [&] { return header.producer.records_committed.load(); };
  const auto refused = [&] { return header.producer.claims_refused.load(); };
  const auto consumed = [&] { return header.consumer.records_consumed.load(); };
  EXPECT_EQ(committed(), 0U);
  EXPECT_EQ(refused(), 0U);
  EXPECT_EQ(consumed(), 0U);

  for (std::uint64_t i = 0; i < 4; ++i) send(pattern(1000, i));
  EXPECT_EQ(committed(), 4U);
  // A refusal for space counts; one for size does not; an abort commits nothing.
  EXPECT_EQ(producer().try_claim(1000).status, ClaimStatus::kFull);
  EXPECT_EQ(producer().try_send(pattern(1000, 9)), SendStatus::kFull);
  EXPECT_EQ(producer().try_claim(5000).status, ClaimStatus::kTooLarge);
  EXPECT_EQ(refused(), 2U);
  ASSERT_EQ(drain(2).size(), 2U);
  EXPECT_EQ(consumed(), 2U);
  ASSERT_EQ(producer().try_claim(10).status, ClaimStatus::kOk);
  producer().abort();
  EXPECT_EQ(committed(), 4U);

  // A record after padding counts once; the padding not at all.
  send(pattern(1000, 5));
  EXPECT_EQ(committed(), 5U);
  const PeekResult peeked = consumer().peek();
  ASSERT_EQ(peeked.status, PollStatus::kOk);
  EXPECT_EQ(consumed(), 2U) << "a peek consumes nothing";
  consumer().release();
  std::vector<std::byte> buffer(1000);
  ASSERT_EQ(consumer().try_recv(buffer).status, RecvStatus::kOk);
  ASSERT_EQ(drain().size(), 1U);
  EXPECT_EQ(consumed(), 5U);
  EXPECT_EQ(consumed(), committed());

  // New holders continue the counts.
  reopen_producer();
  reopen_consumer();
  send(pattern(1, 1));
  ASSERT_EQ(drain().size(), 1U);
  EXPECT_EQ(committed(), 6U);
  EXPECT_EQ(consumed(), 6U);
  EXPECT_EQ(refused(), 2U);
}

// A seeded scheduler interleaves every producer and consumer step in one thread and checks every
// byte and every refusal against a model of the ring. Replay with WEFT_TEST_SEED.
TEST_F(SpscRingTest, RandomInterleavingMatchesModel) {
  const std::uint64_t seed = test::test_seed();
  struct Config {
    std::uint64_t capacity;
    std::uint64_t record_bytes_max;
  };
  const Config configs[] = {{4096, 0}, {4096, 2032}, {8192, 100}, {65536, 0}};
  for (const Config& config : configs) {
    SCOPED_TRACE("capacity " + std::to_string(config.capacity) + ", record_bytes_max " +
                 std::to_string(config.record_bytes_max));
    producer_.reset();
    consumer_.reset();
    static_cast<void>(Channel::unlink(kName, dir_.path()));
    open_ring(config.capacity, config.record_bytes_max);
    const std::uint64_t capacity_bytes = producer().capacity_bytes();
    const std::size_t record_max = producer().record_bytes_max();
    test::Rng rng(test::mix64(seed, config.capacity + config.record_bytes_max));

    std::deque<std::vector<std::byte>> committed;
    struct Claim {
      std::span<std::byte> bytes;
      std::uint64_t record_start;
    };
    std::optional<Claim> claim;
    std::uint64_t key = 0;

    const auto random_size = [&]() -> std::size_t {
      const std::uint64_t r = rng.below(100);
      if (r < 10) return 0;
      if (r < 50) return rng.between(1, 64);
      if (r < 80) return rng.between(65, record_max);
      if (r < 88) return record_max;
      if (r < 94)
        return rng.between(record_max - std::min<std::size_t>(record_max, 16), record_max);
      return record_max + rng.between(1, 100);
    };
    // Tries a claim of `bytes` and checks the outcome against the model's prediction.
    const auto checked_claim = [&](std::size_t bytes) -> ClaimResult {
      const std::uint64_t tail = producer().position();
      const std::uint64_t head = published_head();
      const ClaimResult result = producer().try_claim(bytes);
      if (bytes > record_max) {
        EXPECT_EQ(result.status, ClaimStatus::kTooLarge);
        return result;
      }
      const bool full = predicts_full(tail, head, capacity_bytes, bytes);
      EXPECT_EQ(result.status, full ? ClaimStatus::kFull : ClaimStatus::kOk)
          << "claim of " << bytes << " at tail " << tail << " head " << head;
      if (result.status == ClaimStatus::kOk) {
        const std::uint64_t to_end = capacity_bytes - (tail & (capacity_bytes - 1));
        const std::uint64_t start =
            detail::record_span_bytes(bytes) <= to_end ? tail : tail + to_end;
        EXPECT_EQ(result.bytes.data(),
                  producer().channel().ring() + (start & (capacity_bytes - 1)) + kHeader);
        EXPECT_EQ(result.bytes.size(), bytes);
      }
      return result;
    };
    // Checks `record` against the model's next record; returns false (after reporting) when
    // the model has none.
    const auto check_front = [&](std::span<const std::byte> record) {
      if (committed.empty()) {
        ADD_FAILURE() << "the ring delivered a record the model does not have";
        return false;
      }
      EXPECT_EQ(std::vector<std::byte>(record.begin(), record.end()), committed.front());
      return true;
    };

    const std::size_t steps = 100'000;
    for (std::size_t step = 0; step < steps && !HasFatalFailure(); ++step) {
      const std::uint64_t op = rng.below(100);
      if (claim) {
        if (op < 50) {
          // Finish the outstanding claim: commit it whole, commit fewer bytes, or drop it.
          const std::uint64_t how = rng.below(10);
          if (how < 4) {
            producer().commit();
            committed.emplace_back(claim->bytes.begin(), claim->bytes.end());
            EXPECT_EQ(producer().position(),
                      claim->record_start + detail::record_span_bytes(claim->bytes.size()));
          } else if (how < 8) {
            const std::size_t shorter = rng.below(claim->bytes.size() + 1);
            producer().commit(shorter);
            committed.emplace_back(claim->bytes.begin(),
                                   claim->bytes.begin() + static_cast<std::ptrdiff_t>(shorter));
            EXPECT_EQ(producer().position(),
                      claim->record_start + detail::record_span_bytes(shorter));
          } else {
            producer().abort();
            EXPECT_EQ(producer().position(), claim->record_start);
          }
          claim.reset();
          continue;
        }
      } else if (op < 30) {
        const std::uint64_t tail = producer().position();
        const std::size_t bytes = random_size();
        const ClaimResult result = checked_claim(bytes);
        if (result.status == ClaimStatus::kOk) {
          test::fill_pattern(result.bytes, ++key);
          const std::uint64_t to_end = capacity_bytes - (tail & (capacity_bytes - 1));
          const std::uint64_t start =
              detail::record_span_bytes(bytes) <= to_end ? tail : tail + to_end;
          claim = Claim{result.bytes, start};
        }
        continue;
      } else if (op < 45) {
        const std::size_t bytes = random_size();
        const std::uint64_t tail = producer().position();
        const std::uint64_t head = published_head();
        std::vector<std::byte> payload = pattern(bytes, ++key);
        const SendStatus status = producer().try_send(payload);
        if (bytes > record_max) {
          EXPECT_EQ(status, SendStatus::kTooLarge);
        } else if (predicts_full(tail, head, capacity_bytes, bytes)) {
          EXPECT_EQ(status, SendStatus::kFull);
        } else {
          EXPECT_EQ(status, SendStatus::kOk);
          committed.push_back(std::move(payload));
        }
        continue;
      }
      // Consumer steps; they may run while a claim is outstanding, which must stay invisible.
      if (op < 65) {
        const std::size_t records_max = rng.one_in(4) ? SIZE_MAX : rng.between(0, 8);
        const std::size_t expected = std::min(records_max, committed.size());
        std::size_t seen = 0;
        const PollResult result = consumer().poll(
            [&](std::span<const std::byte> record) {
              if (check_front(record)) committed.pop_front();
              ++seen;
            },
            records_max);
        ASSERT_EQ(result.count, expected);
        ASSERT_EQ(seen, expected);
        ASSERT_EQ(result.status, expected != 0 ? PollStatus::kOk : PollStatus::kEmpty);
        ASSERT_EQ(published_head(), consumer().position());
      } else if (op < 80) {
        const PeekResult peeked = consumer().peek();
        if (committed.empty()) {
          ASSERT_EQ(peeked.status, PollStatus::kEmpty);
        } else {
          ASSERT_EQ(peeked.status, PollStatus::kOk);
          ASSERT_TRUE(check_front(peeked.bytes));
          if (rng.one_in(2)) {
            consumer().release();
            committed.pop_front();
          }
        }
      } else if (op < 92) {
        const std::size_t front = committed.empty() ? 0 : committed.front().size();
        const std::size_t buffer_bytes =
            rng.one_in(3) ? rng.below(front + 1) : front + rng.below(16);
        std::vector<std::byte> buffer(buffer_bytes);
        const RecvResult received = consumer().try_recv(buffer);
        if (committed.empty()) {
          ASSERT_EQ(received.status, RecvStatus::kEmpty);
        } else if (front > buffer_bytes) {
          ASSERT_EQ(received.status, RecvStatus::kTooSmall);
          ASSERT_EQ(received.size, front);
        } else {
          ASSERT_EQ(received.status, RecvStatus::kOk);
          ASSERT_EQ(received.size, front);
          buffer.resize(front);
          ASSERT_EQ(buffer, committed.front());
          committed.pop_front();
        }
      } else if (op < 96) {
        if (!committed.empty()) {
          ASSERT_TRUE(consumer().has_data());
        }
        ASSERT_LE(consumer().position(), producer().position());
        ASSERT_LE(published_head(), consumer().position());
      } else if (op < 98) {
        // A new consumer resumes at the published head; an unreleased peek is delivered again.
        const std::uint64_t position = consumer().position();
        reopen_consumer();
        ASSERT_EQ(consumer().position(), position);
      } else if (!claim) {
        // A new producer resumes after the last committed record.
        const std::uint64_t position = producer().position();
        reopen_producer();
        ASSERT_EQ(producer().position(), position);
      }
    }
    ASSERT_FALSE(HasFatalFailure());
    if (claim) producer().abort();
    const PollResult result = consumer().poll([&](std::span<const std::byte> record) {
      if (check_front(record)) committed.pop_front();
    });
    EXPECT_NE(result.status, PollStatus::kCorrupted);
    EXPECT_TRUE(committed.empty()) << committed.size() << " records never arrived";
    EXPECT_FALSE(consumer().corrupted());
  }
}

// ---- Roles -----------------------------------------------------------------------------------

class SpscRoleTest : public SpscRingTest {};

TEST_F(SpscRoleTest, SecondProducerIsRefusedWhileTheFirstLives) {
  open_ring();
  auto second = SpscProducer::open(kName, dir_.open_options());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kBusy);
  EXPECT_NE(second.error().message().find("producer"), std::string::npos)
      << second.error().message();

  // Another process is refused too, naming the live holder.
  test::SharedBlock<test::ChildMessage> message;
  test::ChildProcess child([&] {
    auto other = SpscProducer::open(kName, dir_.open_options());
    if (other) return 1;
    message->set(other.error().message());
    return other.error().code == Errc::kBusy ? 0 : 2;
  });
  const test::ChildStatus status = child.wait();
  EXPECT_TRUE(status.ok()) << status.describe() << ": " << message->get();
  EXPECT_NE(message->get().find(std::to_string(getpid())), std::string::npos) << message->get();
}

TEST_F(SpscRoleTest, SecondConsumerIsRefusedWhileTheFirstLives) {
  open_ring();
  auto second = SpscConsumer::open(kName, dir_.open_options());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kBusy);
  test::ChildProcess child([&] {
    auto other = SpscConsumer::open(kName, dir_.open_options());
    return !other && other.error().code == Errc::kBusy ? 0 : 1;
  });
  EXPECT_TRUE(child.wait().ok());
}

TEST_F(SpscRoleTest, RoleIsFreedAfterDestruction) {
  open_ring();
  const detail::ChannelHeader* header = producer().channel().header();
  EXPECT_EQ(header->producer.role.pid.load(), static_cast<std::uint32_t>(getpid()));
  EXPECT_EQ(header->consumer.role.pid.load(), static_cast<std::uint32_t>(getpid()));
  reopen_producer();
  reopen_consumer();
  header = producer().channel().header();
  EXPECT_EQ(header->producer.role.attach_count.load(), 2U);
  EXPECT_EQ(header->consumer.role.attach_count.load(), 2U);
  // Another process may take the roles once this one gives them back.
  producer_.reset();
  consumer_.reset();
  test::ChildProcess child([&] {
    auto producer = SpscProducer::open(kName, dir_.open_options());
    auto consumer = SpscConsumer::open(kName, dir_.open_options());
    return producer && consumer ? 0 : 1;
  });
  EXPECT_TRUE(child.wait().ok());
}

TEST_F(SpscRoleTest, MoveKeepsTheRoleAndMoveAssignmentGivesBackTheOldOne) {
  open_ring();
  SpscProducer moved(std::move(*producer_));
  producer_.reset();  // The moved-from object must not give the role back.
  EXPECT_FALSE(SpscProducer::open(kName, dir_.open_options()));
  ASSERT_EQ(moved.try_send(pattern(5, 1)), SendStatus::kOk);

  auto other = SpscProducer::create("other", dir_.channel_options());
  ASSERT_TRUE(other) << other.error().message();
  moved = std::move(*other);  // Gives back the role on "ring".
  auto again = SpscProducer::open(kName, dir_.open_options());
  EXPECT_TRUE(again) << again.error().message();
  EXPECT_FALSE(SpscProducer::open("other", dir_.open_options()));

  const auto records = drain();
  ASSERT_EQ(records.size(), 1U);
  EXPECT_EQ(records[0], pattern(5, 1));
}

TEST_F(SpscRoleTest, ReadOnlyChannelCannotTakeARole) {
  open_ring();
  producer_.reset();
  consumer_.reset();
  OpenOptions options = dir_.open_options();
  options.read_only = true;
  auto channel = Channel::open(kName, options);
  ASSERT_TRUE(channel) << channel.error().message();
  auto producer = SpscProducer::attach(std::move(*channel));
  ASSERT_FALSE(producer);
  EXPECT_EQ(producer.error().code, Errc::kInvalidArgument);
  auto consumer = SpscConsumer::open(kName, options);
  ASSERT_FALSE(consumer);
  EXPECT_EQ(consumer.error().code, Errc::kInvalidArgument);
}

// A producer killed between storing a record's header and storing tail_position leaves committed
// records past tail_position. Here the "death" is simulated by rewinding tail_position.
TEST_F(SpscRoleTest, ProducerReattachSkipsRecordsCommittedPastTailPosition) {
  open_ring(4096);
  std::vector<std::uint64_t> ends;
  for (std::uint64_t i = 0; i < 6; ++i) {
    send(pattern(100 + i, i));
    ends.push_back(producer().position());
  }
  // The consumer already read three records, one of them past the rewound tail.
  ASSERT_EQ(drain(3).size(), 3U);
  const std::uint64_t true_tail = producer().position();
  producer_.reset();
  auto channel = Channel::open(kName, dir_.open_options());
  ASSERT_TRUE(channel);
  // Relaxed, then release: as a producer that died before its last four stores of the count and
  // the tail would leave them.
  channel->header()->producer.records_committed.store(2, std::memory_order_relaxed);
  channel->header()->producer.tail_position.store(ends[1], std::memory_order_release);

  auto reattached = SpscProducer::attach(std::move(*channel));
  ASSERT_TRUE(reattached) << reattached.error().message();
  producer_.emplace(std::move(*reattached));
  EXPECT_EQ(producer().position(), true_tail);
  EXPECT_EQ(published_tail(), true_tail) << "attach publishes the recovered tail";
  // The records walked over past tail_position count as committed.
  EXPECT_EQ(producer().channel().header()->producer.records_committed.load(), 6U);
  send(pattern(200, 6));
  const auto records = drain();
  ASSERT_EQ(records.size(), 4U);
  for (std::uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(records[i], i < 3 ? pattern(103 + i, 3 + i) : pattern(200, 6)) << i;
  }
}

TEST_F(SpscRoleTest, ProducerReattachAfterDeadProcessResumesAfterItsLastRecord) {
  open_ring(4096);
  producer_.reset();
  struct Report {
    std::atomic<std::uint64_t> tail{0};
  };
  test::SharedBlock<Report> report;
  test::ChildProcess child([&] {
    auto producer = SpscProducer::open(kName, dir_.open_options());
    if (!producer) return 1;
    std::uint64_t rewind = 0;
    for (std::uint64_t i = 0; i < 5; ++i) {
      if (producer->try_send(pattern(300, i)) != SendStatus::kOk) return 2;
      if (i == 2) rewind = producer->position();
    }
    // Half-write a sixth record, then die holding the role, with tail_position behind.
    const ClaimResult claim = producer->try_claim(300);
    if (!claim) return 3;
    std::memset(claim.bytes.data(), 0xee, 150);
    report->tail.store(producer->position(), std::memory_order_release);
    producer->channel().header()->producer.tail_position.store(rewind, std::memory_order_release);
    _exit(0);  // No destructor: the role stays recorded under this (soon dead) pid.
  });
  ASSERT_TRUE(child.wait().ok());
  reopen_producer();
  // Acquire: pairs with the child's release store.
  EXPECT_EQ(producer().position(), report->tail.load(std::memory_order_acquire));
  send(pattern(10, 99));
  const auto records = drain();
  ASSERT_EQ(records.size(), 6U);
  for (std::uint64_t i = 0; i < 5; ++i) EXPECT_EQ(records[i], pattern(300, i)) << i;
  EXPECT_EQ(records[5], pattern(10, 99)) << "the half-written record must never appear";
}

TEST_F(SpscRoleTest, ConsumerReattachResumesAtTheReleasedHead) {
  open_ring();
  for (std::uint64_t i = 0; i < 10; ++i) send(pattern(20, i));
  ASSERT_EQ(drain(4).size(), 4U);
  const std::uint64_t head = consumer().position();
  reopen_consumer();
  EXPECT_EQ(consumer().position(), head);
  const auto rest = drain();
  ASSERT_EQ(rest.size(), 6U);
  for (std::uint64_t i = 0; i < 6; ++i) EXPECT_EQ(rest[i], pattern(20, i + 4));
}

TEST_F(SpscRoleTest, ConsumerReattachRedeliversAPeekedButUnreleasedRecord) {
  open_ring();
  send(pattern(20, 1));
  send(pattern(20, 2));
  ASSERT_EQ(consumer().peek().status, PollStatus::kOk);
  consumer().release();
  ASSERT_EQ(consumer().peek().status, PollStatus::kOk);  // Record 2 delivered, not released.
  reopen_consumer();
  const auto records = drain();
  ASSERT_EQ(records.size(), 1U);
  EXPECT_EQ(records[0], pattern(20, 2));
}

TEST_F(SpscRoleTest, AbandonedClaimIsOverwrittenByTheNextProducer) {
  open_ring();
  send(pattern(16, 1));
  const ClaimResult claim = producer().try_claim(64);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  std::memset(claim.bytes.data(), 0xab, 32);
  reopen_producer();  // The old producer never committed.
  EXPECT_EQ(producer().position(), detail::record_span_bytes(16));
  send(pattern(8, 2));
  const auto records = drain();
  ASSERT_EQ(records.size(), 2U);
  EXPECT_EQ(records[0], pattern(16, 1));
  EXPECT_EQ(records[1], pattern(8, 2));
}

// A holder that exited but was not yet reaped by its parent (a zombie) is dead: it can never
// write again, and its role must be taken over. /proc/PID/stat exists for a zombie and kill(pid,
// 0) succeeds on one, so a liveness check must look at the process state too.
TEST_F(SpscRoleTest, RoleOfAnExitedButUnreapedHolderIsTakenOver) {
  open_ring();
  producer_.reset();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto producer = SpscProducer::open(kName, dir_.open_options());
    _exit(producer ? 0 : 1);  // Exits holding the role.
  }
  // Wait until the child is a zombie without reaping it.
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(info.si_status, 0);
  auto producer = SpscProducer::open(kName, dir_.open_options());
  EXPECT_TRUE(producer) << producer.error().message();
  int raw = 0;
  waitpid(child, &raw, 0);
}

}  // namespace
}  // namespace weft
