// Corrupt record headers in the ring of a live channel. Shared memory is untrusted input: a bad
// header word must stop the consumer with kCorrupted and a message naming the position and the
// field, for good, without ever handing out bytes outside the ring and without hanging.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using detail::make_record_word;
using detail::RecordType;
using test::TempDir;

constexpr std::string_view kName = "corrupt";
constexpr std::uint64_t kCapacity = 4096;
constexpr std::uint64_t kRecordMax = 1024;  // The default for 4 KiB: capacity / 4.

class SpscCorruptRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto producer = SpscProducer::create(kName, dir_.channel_options(kCapacity));
    ASSERT_TRUE(producer) << producer.error().message();
    producer_.emplace(std::move(*producer));
    ASSERT_EQ(producer_->record_bytes_max(), kRecordMax);
    open_consumer();
  }

  void open_consumer() {
    consumer_.reset();
    auto consumer = SpscConsumer::open(kName, dir_.open_options());
    ASSERT_TRUE(consumer) << consumer.error().message();
    consumer_.emplace(std::move(*consumer));
  }

  SpscProducer& producer() { return *producer_; }
  SpscConsumer& consumer() { return *consumer_; }
  detail::ChannelHeader& header() { return *producer_->channel().header(); }

  // Stores `word` as the record header at absolute `position`, as a rogue writer would.
  void write_word(std::uint64_t position, std::uint64_t word) {
    auto* slot = reinterpret_cast<std::uint64_t*>(producer_->channel().ring() +
                                                  (position & (kCapacity - 1)));
    // Release: the consumer's acquire load of this word sees it like any committed header.
    std::atomic_ref<std::uint64_t>(*slot).store(word, std::memory_order_release);
  }

  // Moves both cursors of the (empty) ring to `position` with ordinary records.
  void advance_to(std::uint64_t position) {
    while (producer().position() < position) {
      const std::uint64_t gap = position - producer().position();
      const std::uint64_t to_end = kCapacity - (producer().position() & (kCapacity - 1));
      const auto span = std::min<std::uint64_t>({gap, to_end, 512});
      std::vector<std::byte> payload(span - detail::kRecordHeaderBytes);
      ASSERT_EQ(producer().try_send(payload), SendStatus::kOk);
      ASSERT_EQ(consumer().poll([](std::span<const std::byte>) {}).status, PollStatus::kOk);
    }
    ASSERT_EQ(consumer().position(), position);
  }

  // Polls once and expects kCorrupted with no record handed out, and a message naming `field`
  // (and the channel's path).
  void expect_corrupted(std::string_view field) {
    int handed_out = 0;
    const PollResult result = consumer().poll([&](std::span<const std::byte>) { ++handed_out; });
    EXPECT_EQ(result.status, PollStatus::kCorrupted);
    EXPECT_EQ(result.count, 0U);
    EXPECT_EQ(handed_out, 0);
    EXPECT_TRUE(consumer().corrupted());
    const Error& error = consumer().last_error();
    EXPECT_EQ(error.code, Errc::kCorrupted);
    const std::string message = error.message();
    EXPECT_NE(message.find(field), std::string::npos) << message;
    EXPECT_NE(message.find(dir_.file(kName)), std::string::npos) << message;
    // Every later call keeps reporting the corruption.
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(consumer().poll([&](std::span<const std::byte>) { ++handed_out; }).status,
                PollStatus::kCorrupted);
    }
    EXPECT_EQ(consumer().peek().status, PollStatus::kCorrupted);
    std::byte buffer[64];
    EXPECT_EQ(consumer().try_recv(buffer).status, RecvStatus::kCorrupted);
    EXPECT_EQ(consumer().wait(std::chrono::seconds(10)), WaitStatus::kReady)
        << "a corrupted consumer must not block";
    EXPECT_EQ(handed_out, 0);
  }

  TempDir dir_;
  std::optional<SpscProducer> producer_;
  std::optional<SpscConsumer> consumer_;
};

TEST_F(SpscCorruptRecordTest, DataLengthAboveRecordBytesMaxIsCorrupted) {
  write_word(0, make_record_word(RecordType::kData, kRecordMax + 1));
  expect_corrupted("position 0");
  const std::string message = consumer().last_error().message();
  EXPECT_NE(message.find("length 1025"), std::string::npos) << message;
  EXPECT_NE(message.find("record_bytes_max"), std::string::npos) << message;
}

TEST_F(SpscCorruptRecordTest, HugeDataLengthIsCorrupted) {
  advance_to(512);
  write_word(512, make_record_word(RecordType::kData, 0xffff'ffffU));
  expect_corrupted("position 512");
}

TEST_F(SpscCorruptRecordTest, DataRecordRunningPastTheRingEndIsCorrupted) {
  ASSERT_NO_FATAL_FAILURE(advance_to(kCapacity + 4032));
  // 100 bytes is within record_bytes_max, but only 64 bytes remain before the ring's end.
  write_word(kCapacity + 4032, make_record_word(RecordType::kData, 100));
  expect_corrupted("position 8128");
  const std::string message = consumer().last_error().message();
  EXPECT_NE(message.find("ring offset 4032"), std::string::npos) << message;
  EXPECT_NE(message.find("past the ring end"), std::string::npos) << message;
}

TEST_F(SpscCorruptRecordTest, DataRecordEndingExactlyAtTheRingEndIsValid) {
  ASSERT_NO_FATAL_FAILURE(advance_to(4032));
  std::vector<std::byte> payload(56, std::byte{7});
  ASSERT_EQ(producer().try_send(payload), SendStatus::kOk);
  std::size_t seen = 0;
  const PollResult result =
      consumer().poll([&](std::span<const std::byte> record) { seen = record.size(); });
  EXPECT_EQ(result.status, PollStatus::kOk);
  EXPECT_EQ(seen, 56U);
}

TEST_F(SpscCorruptRecordTest, PaddingWithWrongLengthIsCorrupted) {
  ASSERT_NO_FATAL_FAILURE(advance_to(4032));
  // Padding at offset 4032 must fill the 64 bytes to the end: a length of 56.
  write_word(4032, make_record_word(RecordType::kPadding, 100));
  expect_corrupted("padding at position 4032");
  const std::string message = consumer().last_error().message();
  EXPECT_NE(message.find("length 100"), std::string::npos) << message;
  EXPECT_NE(message.find("expected 56"), std::string::npos) << message;
}

TEST_F(SpscCorruptRecordTest, ShortPaddingIsCorrupted) {
  ASSERT_NO_FATAL_FAILURE(advance_to(4032));
  write_word(4032, make_record_word(RecordType::kPadding, 48));
  expect_corrupted("padding at position 4032");
}

TEST_F(SpscCorruptRecordTest, UnknownRecordTypeIsCorrupted) {
  advance_to(64);
  write_word(64, (std::uint64_t{0x12345678} << 32) | 16);
  expect_corrupted("position 64");
  const std::string message = consumer().last_error().message();
  EXPECT_NE(message.find("type 0x12345678"), std::string::npos) << message;
}

TEST_F(SpscCorruptRecordTest, CorruptHeaderAfterValidRecordsStopsThere) {
  for (int i = 0; i < 3; ++i) {
    std::vector<std::byte> payload(10, std::byte{1});
    ASSERT_EQ(producer().try_send(payload), SendStatus::kOk);
  }
  const std::uint64_t bad = producer().position();
  write_word(bad, make_record_word(RecordType::kData, 5000));
  std::size_t delivered = 0;
  const PollResult first = consumer().poll([&](std::span<const std::byte>) { ++delivered; });
  EXPECT_EQ(first.status, PollStatus::kOk) << "the valid records come first";
  EXPECT_EQ(first.count, 3U);
  EXPECT_EQ(delivered, 3U);
  EXPECT_EQ(consumer().position(), bad);
  // Acquire: pairs with the consumer's release store of head_position.
  EXPECT_EQ(header().consumer.head_position.load(std::memory_order_acquire), bad)
      << "the valid records' space is given back";
  expect_corrupted("position " + std::to_string(bad));
}

TEST_F(SpscCorruptRecordTest, PeekAndTryRecvReportCorruptionToo) {
  write_word(0, make_record_word(RecordType::kData, 4000));
  EXPECT_EQ(consumer().peek().status, PollStatus::kCorrupted);
  EXPECT_TRUE(consumer().corrupted());
  EXPECT_NE(consumer().last_error().message().find("position 0"), std::string::npos);
  open_consumer();  // A fresh consumer meets the same bad word.
  std::byte buffer[16];
  EXPECT_EQ(consumer().try_recv(buffer).status, RecvStatus::kCorrupted);
}

TEST_F(SpscCorruptRecordTest, CorruptionIsStickyEvenIfTheWordIsRepaired) {
  write_word(0, make_record_word(RecordType::kData, 4000));
  ASSERT_EQ(consumer().poll([](std::span<const std::byte>) {}).status, PollStatus::kCorrupted);
  write_word(0, make_record_word(RecordType::kData, 8));
  EXPECT_EQ(consumer().poll([](std::span<const std::byte>) {}).status, PollStatus::kCorrupted);
  EXPECT_EQ(consumer().peek().status, PollStatus::kCorrupted);
}

TEST_F(SpscCorruptRecordTest, ProducerAttachRejectsAnInvalidRecordPastTailPosition) {
  producer_.reset();
  // The producer's mapping is gone; write through the consumer's.
  auto* slot = reinterpret_cast<std::uint64_t*>(consumer().channel().ring());
  // Release: as a dying producer's header store would be.
  std::atomic_ref<std::uint64_t>(*slot).store(make_record_word(RecordType::kData, 3000),
                                              std::memory_order_release);
  auto producer = SpscProducer::open(kName, dir_.open_options());
  ASSERT_FALSE(producer);
  EXPECT_EQ(producer.error().code, Errc::kCorrupted);
  EXPECT_NE(producer.error().message().find("position 0"), std::string::npos)
      << producer.error().message();
}

// Boundary words of every type at several ring offsets: the consumer either rejects the word or
// hands out a span that lies inside the ring and within record_bytes_max.
TEST_F(SpscCorruptRecordTest, BoundaryWordsNeverYieldSpansOutsideTheRing) {
  const std::uint64_t offsets[] = {0, 8, 2048, kCapacity - 64, kCapacity - 16, kCapacity - 8};
  const std::uint32_t types[] = {static_cast<std::uint32_t>(RecordType::kData),
                                 static_cast<std::uint32_t>(RecordType::kPadding), 0, 1,
                                 0xffff'ffffU};
  const std::byte* ring = consumer().channel().ring();
  for (const std::uint64_t offset : offsets) {
    const std::uint64_t to_end = kCapacity - offset;
    const std::uint64_t lengths[] = {
        0,           1,          7,          kRecordMax, kRecordMax + 1,
        to_end - 16, to_end - 8, to_end - 1, to_end,     0xffff'ffffU};
    for (const std::uint32_t type : types) {
      for (const std::uint64_t length : lengths) {
        // A padding record at offset 0 that spans the whole ring is tested on its own below.
        if (offset == 0 && type == static_cast<std::uint32_t>(RecordType::kPadding)) continue;
        SCOPED_TRACE("offset " + std::to_string(offset) + " type " + std::to_string(type) +
                     " length " + std::to_string(length));
        // Point a fresh consumer at `offset` of an otherwise empty ring.
        consumer_.reset();
        std::memset(producer_->channel().ring(), 0, kCapacity);
        // Release: read by the next consumer's acquire load in attach.
        header().consumer.head_position.store(offset, std::memory_order_release);
        ASSERT_NO_FATAL_FAILURE(open_consumer());
        ring = consumer().channel().ring();
        write_word(offset, (std::uint64_t{type} << 32) | (length & 0xffff'ffffU));
        const auto check = [&](std::span<const std::byte> record) {
          EXPECT_GE(record.data(), ring);
          EXPECT_LE(record.data() + record.size(), ring + kCapacity);
          EXPECT_LE(record.size(), kRecordMax);
        };
        const PeekResult peeked = consumer().peek();
        if (peeked.status == PollStatus::kOk) check(peeked.bytes);
        const PollResult polled = consumer().poll(check, 4);
        if (polled.status == PollStatus::kCorrupted) {
          EXPECT_EQ(consumer().last_error().code, Errc::kCorrupted);
        }
      }
    }
  }
  consumer_.reset();
}

// A padding record can never start at ring offset 0: a producer pads only a record that would
// straddle the end of the ring, and at offset 0 every record fits. A rogue padding word there
// that "fills the rest of the ring" (all of it) sends the consumer a whole lap forward onto the
// same word, again and again. It must be reported as corrupt, not loop forever.
TEST_F(SpscCorruptRecordTest, PaddingSpanningTheWholeRingIsCorruptedNotAnEndlessLoop) {
  write_word(0, make_record_word(RecordType::kPadding, kCapacity - 8));
  const test::ChildStatus poll_status = test::run_with_deadline(5, [&] {
    const PollResult result = consumer().poll([](std::span<const std::byte>) {}, 1);
    return result.status == PollStatus::kCorrupted ? 0 : 1;
  });
  EXPECT_TRUE(poll_status.ok()) << "poll(records_max = 1) " << poll_status.describe()
                                << " (SIGALRM: it never returned)";
  const test::ChildStatus peek_status = test::run_with_deadline(
      5, [&] { return consumer().peek().status == PollStatus::kCorrupted ? 0 : 1; });
  EXPECT_TRUE(peek_status.ok()) << "peek() " << peek_status.describe()
                                << " (SIGALRM: it never returned)";
}

// A ring whose every word is a valid-looking empty data record has no end: a consumer that
// trusted it would deliver records forever from one poll() call, running laps ahead of anything
// the producer ever published. poll() must return, and the consumer must end up kCorrupted (it
// can notice that it is more than a ring past tail_position).
TEST_F(SpscCorruptRecordTest, RingWithoutAnEndDoesNotTrapPollForever) {
  for (std::uint64_t offset = 0; offset < kCapacity; offset += 8) {
    write_word(offset, make_record_word(RecordType::kData, 0));
  }
  const test::ChildStatus status = test::run_with_deadline(5, [&] {
    const PollResult first = consumer().poll([](std::span<const std::byte>) {});
    if (first.status == PollStatus::kCorrupted) return 0;
    const PollResult second = consumer().poll([](std::span<const std::byte>) {});
    return second.status == PollStatus::kCorrupted ? 0 : 1;
  });
  EXPECT_TRUE(status.ok()) << "poll() " << status.describe() << " (SIGALRM: it never returned)";
}

}  // namespace
}  // namespace weft
