// Header validation (shm/validate.hpp): a channel file is created, closed, and one header field is
// overwritten with pwrite at its offset from weft/detail/layout.hpp. Opening it must fail with
// kCorrupted (kVersionMismatch for layout_version) and a message that names the file and the
// field, and must leave no descriptor or mapping behind.
#include "shm/validate.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using detail::ChannelHeader;
using detail::ChannelMeta;
using test::TempDir;

constexpr std::uint64_t kCapacity = std::uint64_t{1} << 16;
constexpr const char* kName = "victim";

constexpr std::uint64_t meta_offset(std::size_t member_offset) {
  return offsetof(ChannelHeader, meta) + member_offset;
}
constexpr std::uint64_t kMagicOffset = meta_offset(offsetof(ChannelMeta, magic));
constexpr std::uint64_t kLayoutVersionOffset = meta_offset(offsetof(ChannelMeta, layout_version));
constexpr std::uint64_t kKindOffset = meta_offset(offsetof(ChannelMeta, kind));
constexpr std::uint64_t kSizeBytesOffset = meta_offset(offsetof(ChannelMeta, size_bytes));
constexpr std::uint64_t kHeaderBytesOffset = meta_offset(offsetof(ChannelMeta, header_bytes));
constexpr std::uint64_t kCapacityOffset = meta_offset(offsetof(ChannelMeta, capacity_bytes));
constexpr std::uint64_t kRecordMaxOffset = meta_offset(offsetof(ChannelMeta, record_bytes_max));
constexpr std::uint64_t kTailOffset =
    offsetof(ChannelHeader, producer) + offsetof(detail::ProducerBlock, tail_position);
constexpr std::uint64_t kHeadOffset =
    offsetof(ChannelHeader, consumer) + offsetof(detail::ConsumerBlock, head_position);

struct Corruption {
  const char* label;  // Test parameter name.
  std::function<void(const std::string& path)> apply;
  Errc code;
  std::vector<std::string> message_parts;  // Each must appear in the message.
};

// Names the parameter in test names and failure messages (instead of dumping its bytes).
void PrintTo(const Corruption& corruption, std::ostream* out) { *out << corruption.label; }

void truncate_to(const std::string& path, std::uint64_t bytes) {
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(bytes)), 0) << std::strerror(errno);
}

template <class T>
std::function<void(const std::string&)> write_at(std::uint64_t offset, T value) {
  return [offset, value](const std::string& path) { test::pwrite_value(path, offset, value); };
}

std::vector<Corruption> corruptions() {
  const std::uint64_t file_bytes = detail::kHeaderBytes + kCapacity;
  const std::uint64_t record_limit = detail::record_bytes_max_limit(kCapacity);
  return {
      {"Magic",
       write_at(kMagicOffset, std::uint64_t{0x0123456789abcdef}),
       Errc::kCorrupted,
       {"'magic'", "0x0123456789abcdef"}},
      {"MagicOfZeroes", write_at(kMagicOffset, std::uint64_t{0}), Errc::kCorrupted, {"'magic'"}},
      {"LayoutVersionNewer",
       write_at(kLayoutVersionOffset, std::uint32_t{2}),
       Errc::kVersionMismatch,
       {"'layout_version'", "is 2"}},
      {"LayoutVersionZero",
       write_at(kLayoutVersionOffset, std::uint32_t{0}),
       Errc::kVersionMismatch,
       {"'layout_version'"}},
      {"KindUnknown", write_at(kKindOffset, std::uint32_t{7}), Errc::kCorrupted, {"'kind'"}},
      {"KindZero", write_at(kKindOffset, std::uint32_t{0}), Errc::kCorrupted, {"'kind'"}},
      {"HeaderBytes",
       write_at(kHeaderBytesOffset, std::uint64_t{8192}),
       Errc::kCorrupted,
       {"'header_bytes'", "8192"}},
      {"CapacityNotAPowerOfTwo",
       write_at(kCapacityOffset, kCapacity + 8),
       Errc::kCorrupted,
       {"'capacity_bytes'", std::to_string(kCapacity + 8)}},
      {"CapacityBelowMinimum",
       write_at(kCapacityOffset, std::uint64_t{2048}),
       Errc::kCorrupted,
       {"'capacity_bytes'"}},
      {"CapacityAboveMaximum",
       write_at(kCapacityOffset, std::uint64_t{1} << 41),
       Errc::kCorrupted,
       {"'capacity_bytes'"}},
      {"CapacityZero",
       write_at(kCapacityOffset, std::uint64_t{0}),
       Errc::kCorrupted,
       {"'capacity_bytes'"}},
      {"CapacityDisagreesWithSize",
       write_at(kCapacityOffset, kCapacity * 2),
       Errc::kCorrupted,
       {"'size_bytes'"}},
      {"SizeBytesDisagreesWithCapacity",
       write_at(kSizeBytesOffset, file_bytes + 4096),
       Errc::kCorrupted,
       {"'size_bytes'"}},
      {"FileTruncated",
       [&](const std::string& path) { truncate_to(path, file_bytes / 2); },
       Errc::kCorrupted,
       {"'size_bytes'", std::to_string(file_bytes / 2)}},
      {"FileExtended",
       [&](const std::string& path) { truncate_to(path, file_bytes + 4096); },
       Errc::kCorrupted,
       {"'size_bytes'", std::to_string(file_bytes + 4096)}},
      {"FileShorterThanTheHeader",
       [](const std::string& path) { truncate_to(path, 100); },
       Errc::kCorrupted,
       {"100 bytes", "smaller than the 4096-byte channel header"}},
      {"FileOneByteShortOfTheHeader",
       [](const std::string& path) { truncate_to(path, 4095); },
       Errc::kCorrupted,
       {"4095 bytes", "smaller than"}},
      {"FileEmpty",
       [](const std::string& path) { truncate_to(path, 0); },
       Errc::kCorrupted,
       {"0 bytes", "smaller than"}},
      {"RecordBytesMaxZero",
       write_at(kRecordMaxOffset, std::uint64_t{0}),
       Errc::kCorrupted,
       {"'record_bytes_max'"}},
      {"RecordBytesMaxAboveLimit",
       write_at(kRecordMaxOffset, record_limit + 1),
       Errc::kCorrupted,
       {"'record_bytes_max'", std::to_string(record_limit + 1)}},
      {"RecordBytesMaxHuge",
       write_at(kRecordMaxOffset, UINT64_MAX),
       Errc::kCorrupted,
       {"'record_bytes_max'"}},
      {"HeadUnaligned",
       write_at(kHeadOffset, std::uint64_t{4}),
       Errc::kCorrupted,
       {"'head_position'", "aligned"}},
      {"TailUnaligned",
       write_at(kTailOffset, std::uint64_t{13}),
       Errc::kCorrupted,
       {"'tail_position'", "aligned"}},
      {"TailMoreThanARingAhead",
       write_at(kTailOffset, kCapacity + 8),
       Errc::kCorrupted,
       {"'tail_position'", "more than a ring"}},
      {"HeadMoreThanARingAhead",
       write_at(kHeadOffset, kCapacity + 16),
       Errc::kCorrupted,
       {"'head_position'", "more than a ring"}},
      {"CursorsFarApartNearTheTop",
       write_at(kTailOffset, UINT64_MAX - 7),
       Errc::kCorrupted,
       {"more than a ring"}},
  };
}

class ValidateHeaderFileTest : public ::testing::TestWithParam<Corruption> {
 protected:
  void SetUp() override {
    auto channel = Channel::create(kName, dir_.channel_options(kCapacity));
    ASSERT_TRUE(channel) << channel.error().message();
  }  // Closed here: the file stays.

  TempDir dir_;
};

TEST_P(ValidateHeaderFileTest, OpenRejectsTheCorruptField) {
  const Corruption& corruption = GetParam();
  const std::string path = dir_.file(kName);
  ASSERT_NO_FATAL_FAILURE(corruption.apply(path));
  const std::size_t fds_before = test::open_fd_count();
  auto channel = Channel::open(kName, dir_.open_options());
  ASSERT_FALSE(channel) << "a corrupt header was accepted";
  EXPECT_EQ(channel.error().code, corruption.code) << channel.error().message();
  const std::string message = channel.error().message();
  EXPECT_NE(message.find(path), std::string::npos) << "must name the file: " << message;
  for (const std::string& part : corruption.message_parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "must mention " << part << ": " << message;
  }
  EXPECT_EQ(test::open_fd_count(), fds_before) << "the descriptor leaked";
  EXPECT_FALSE(test::maps_mention(path)) << "a mapping leaked";
  // The roles refuse the file the same way.
  auto consumer = SpscConsumer::open(kName, dir_.open_options());
  ASSERT_FALSE(consumer);
  EXPECT_EQ(consumer.error().code, corruption.code);
  auto producer = SpscProducer::open(kName, dir_.open_options());
  ASSERT_FALSE(producer);
  EXPECT_EQ(producer.error().code, corruption.code);
}

INSTANTIATE_TEST_SUITE_P(EveryField, ValidateHeaderFileTest, ::testing::ValuesIn(corruptions()),
                         [](const ::testing::TestParamInfo<Corruption>& param_info) {
                           return std::string(param_info.param.label);
                         });

class ValidateHeaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto channel = Channel::create(kName, dir_.channel_options(kCapacity));
    ASSERT_TRUE(channel) << channel.error().message();
  }
  TempDir dir_;
};

TEST_F(ValidateHeaderTest, InformationalFieldsAreNotValidated) {
  const std::string path = dir_.file(kName);
  char garbage[detail::kNameBytesMax];
  std::memset(garbage, 'x', sizeof garbage);  // Not the file's name, and no terminating NUL.
  test::pwrite_file(path, meta_offset(offsetof(ChannelMeta, name)), garbage, sizeof garbage);
  test::pwrite_value(path, meta_offset(offsetof(ChannelMeta, creator_pid)), std::uint32_t{0});
  test::pwrite_value(path, meta_offset(offsetof(ChannelMeta, created_unix_ns)), UINT64_MAX);
  auto channel = Channel::open(kName, dir_.open_options());
  EXPECT_TRUE(channel) << channel.error().message();
}

TEST_F(ValidateHeaderTest, CursorsLessThanARingApartAreAccepted) {
  const std::string path = dir_.file(kName);
  const std::uint64_t head = 1000 * kCapacity + 64;
  // The producer keeps 8 bytes free: a full ring has tail - head = C - 8. A consumer may also
  // run ahead of tail_position by records a killed producer committed but never published.
  const std::uint64_t tails[] = {head, head + kCapacity - 8, head - 8, head - 4096};
  for (const std::uint64_t tail : tails) {
    test::pwrite_value(path, kHeadOffset, head);
    test::pwrite_value(path, kTailOffset, tail);
    auto channel = Channel::open(kName, dir_.open_options());
    EXPECT_TRUE(channel) << "tail " << tail << ": " << channel.error().message();
  }
}

TEST_F(ValidateHeaderTest, NonRegularFileIsRejected) {
  ASSERT_EQ(::mkdir(dir_.file("dir").c_str(), 0700), 0);
  auto channel = Channel::open("dir", dir_.open_options());  // open(2) itself fails: EISDIR.
  ASSERT_FALSE(channel);
  EXPECT_NE(channel.error().message().find(dir_.file("dir")), std::string::npos)
      << channel.error().message();
  OpenOptions read_only = dir_.open_options();
  read_only.read_only = true;
  auto inspected = Channel::open("dir", read_only);  // open(2) succeeds; fstat tells.
  ASSERT_FALSE(inspected);
  EXPECT_EQ(inspected.error().code, Errc::kCorrupted);
  EXPECT_NE(inspected.error().message().find("not a regular file"), std::string::npos)
      << inspected.error().message();
}

// validate_header itself, on a header in ordinary memory.
TEST_F(ValidateHeaderTest, ValidHeaderYieldsTheTrustedValues) {
  auto channel = Channel::open(kName, dir_.open_options());
  ASSERT_TRUE(channel);
  auto meta =
      detail::validate_header(*channel->header(), detail::kHeaderBytes + kCapacity, "somewhere");
  ASSERT_TRUE(meta) << meta.error().message();
  EXPECT_EQ(meta->kind, detail::ChannelKind::kSpsc);
  EXPECT_EQ(meta->capacity_bytes, kCapacity);
  EXPECT_EQ(meta->record_bytes_max, kCapacity / 4);
  auto wrong_size = detail::validate_header(*channel->header(), detail::kHeaderBytes, "somewhere");
  ASSERT_FALSE(wrong_size);
  EXPECT_EQ(wrong_size.error().code, Errc::kCorrupted);
  EXPECT_NE(wrong_size.error().message().find("somewhere"), std::string::npos);
  EXPECT_NE(wrong_size.error().message().find("'size_bytes'"), std::string::npos);
}

TEST_F(ValidateHeaderTest, EveryCorruptionIsRejectedInMemoryToo) {
  // The same corruptions as the file tests, applied to a copy of the header in ordinary memory,
  // with the true file size; file-size corruptions are left to the file tests.
  auto channel = Channel::open(kName, dir_.open_options());
  ASSERT_TRUE(channel);
  alignas(ChannelHeader) static std::byte buffer[detail::kHeaderBytes];
  struct Field {
    std::uint64_t offset;
    std::uint64_t value;
    std::size_t bytes;
    Errc code;
  };
  const Field fields[] = {
      {kMagicOffset, 1, 8, Errc::kCorrupted},
      {kLayoutVersionOffset, 3, 4, Errc::kVersionMismatch},
      {kKindOffset, 9, 4, Errc::kCorrupted},
      {kHeaderBytesOffset, 0, 8, Errc::kCorrupted},
      {kCapacityOffset, std::uint64_t{3} * 4096, 8, Errc::kCorrupted},
      {kSizeBytesOffset, 4096, 8, Errc::kCorrupted},
      {kRecordMaxOffset, kCapacity, 8, Errc::kCorrupted},
      {kHeadOffset, 2 * kCapacity, 8, Errc::kCorrupted},
  };
  for (const Field& field : fields) {
    std::memcpy(buffer, channel->header(), sizeof buffer);
    std::memcpy(buffer + field.offset, &field.value, field.bytes);
    auto meta = detail::validate_header(*reinterpret_cast<const ChannelHeader*>(buffer),
                                        detail::kHeaderBytes + kCapacity, "memory");
    ASSERT_FALSE(meta) << "offset " << field.offset;
    EXPECT_EQ(meta.error().code, field.code) << meta.error().message();
  }
}

}  // namespace
}  // namespace weft
