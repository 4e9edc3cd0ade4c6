// Channel files (weft/channel.hpp): creating, opening and removing them, names, sizes and modes,
// the directory they live in, atomic creation (no temporary file left behind) and permissions.
#include "weft/channel.hpp"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/detail/layout.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using test::TempDir;

constexpr std::uint64_t kCapacity = std::uint64_t{1} << 16;

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

class ChannelTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(ChannelTest, CreateFillsTheHeaderAndMapsTheWholeFile) {
  const auto before_ns =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  auto channel = Channel::create("alpha", dir_.channel_options(kCapacity));
  ASSERT_TRUE(channel) << channel.error().message();
  EXPECT_EQ(channel->name(), "alpha");
  EXPECT_EQ(channel->path(), dir_.file("alpha"));
  EXPECT_FALSE(channel->read_only());
  EXPECT_EQ(channel->capacity_bytes(), kCapacity);
  EXPECT_EQ(channel->record_bytes_max(), kCapacity / 4);
  EXPECT_EQ(channel->kind(), detail::ChannelKind::kSpsc);
  EXPECT_EQ(channel->mapped_bytes(), detail::kHeaderBytes + kCapacity);
  EXPECT_EQ(channel->ring(),
            reinterpret_cast<std::byte*>(channel->header()) + detail::kHeaderBytes);
  EXPECT_EQ(test::file_size(dir_.file("alpha")), detail::kHeaderBytes + kCapacity);

  const detail::ChannelMeta& meta = channel->header()->meta;
  EXPECT_EQ(meta.magic, detail::kChannelMagic);
  EXPECT_EQ(meta.layout_version, detail::kLayoutVersion);
  EXPECT_EQ(meta.kind, static_cast<std::uint32_t>(detail::ChannelKind::kSpsc));
  EXPECT_EQ(meta.size_bytes, detail::kHeaderBytes + kCapacity);
  EXPECT_EQ(meta.header_bytes, detail::kHeaderBytes);
  EXPECT_EQ(meta.capacity_bytes, kCapacity);
  EXPECT_EQ(meta.record_bytes_max, kCapacity / 4);
  EXPECT_EQ(meta.creator_pid, static_cast<std::uint32_t>(getpid()));
  EXPECT_GE(meta.created_unix_ns, before_ns);
  EXPECT_STREQ(meta.name, "alpha");
  // A new channel starts empty: cursors at zero, nobody asleep, every header word zero.
  EXPECT_EQ(channel->header()->producer.tail_position.load(), 0U);
  EXPECT_EQ(channel->header()->consumer.head_position.load(), 0U);
  EXPECT_EQ(channel->header()->data_sleepers.sleepers.load(), 0U);
  EXPECT_EQ(channel->header()->space_sleepers.sleepers.load(), 0U);
  for (std::uint64_t offset = 0; offset < kCapacity; offset += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, channel->ring() + offset, 8);
    ASSERT_EQ(word, 0U) << "ring offset " << offset;
  }
  EXPECT_EQ(dir_.list(), std::vector<std::string>{"alpha"}) << "no temporary file is left";
}

TEST_F(ChannelTest, OpenSeesWhatCreateWrote) {
  auto created = Channel::create("beta", dir_.channel_options(kCapacity, 1000));
  ASSERT_TRUE(created) << created.error().message();
  std::memcpy(created->ring(), "hello", 5);
  auto opened = Channel::open("beta", dir_.open_options());
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_EQ(opened->path(), created->path());
  EXPECT_EQ(opened->capacity_bytes(), kCapacity);
  EXPECT_EQ(opened->record_bytes_max(), 1000U);
  EXPECT_EQ(opened->mapped_bytes(), created->mapped_bytes());
  EXPECT_NE(opened->header(), created->header()) << "a second, shared mapping";
  EXPECT_EQ(std::memcmp(opened->ring(), "hello", 5), 0);
}

TEST_F(ChannelTest, ReadOnlyOpenIsMarkedReadOnly) {
  ASSERT_TRUE(Channel::create("ro", dir_.channel_options()));
  OpenOptions options = dir_.open_options();
  options.read_only = true;
  auto channel = Channel::open("ro", options);
  ASSERT_TRUE(channel) << channel.error().message();
  EXPECT_TRUE(channel->read_only());
  EXPECT_EQ(channel->header()->meta.magic, detail::kChannelMagic);
}

TEST_F(ChannelTest, UnlinkRemovesTheNameButNotLiveMappings) {
  auto producer = SpscProducer::create("gamma", dir_.channel_options());
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = SpscConsumer::open("gamma", dir_.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  ASSERT_TRUE(Channel::unlink("gamma", dir_.path()));
  EXPECT_TRUE(dir_.list().empty());
  auto reopened = Channel::open("gamma", dir_.open_options());
  ASSERT_FALSE(reopened);
  EXPECT_EQ(reopened.error().code, Errc::kNotFound);
  // The attached pair keeps working on the unlinked file.
  const std::byte payload[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  ASSERT_EQ(producer->try_send(payload), SendStatus::kOk);
  std::byte out[3] = {};
  EXPECT_EQ(consumer->try_recv(out).status, RecvStatus::kOk);
  EXPECT_EQ(std::memcmp(out, payload, 3), 0);
  // The name is free again.
  EXPECT_TRUE(Channel::create("gamma", dir_.channel_options()));
}

TEST_F(ChannelTest, UnlinkOfAMissingChannelIsNotFound) {
  const Result<void> result = Channel::unlink("nothing", dir_.path());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::kNotFound);
  EXPECT_TRUE(contains(result.error().message(), dir_.file("nothing"))) << result.error().message();
}

TEST_F(ChannelTest, CreateOverAnExistingChannelIsAlreadyExists) {
  auto first = Channel::create("delta", dir_.channel_options(kCapacity));
  ASSERT_TRUE(first) << first.error().message();
  std::memcpy(first->ring(), "keep", 4);
  auto second = Channel::create("delta", dir_.channel_options(kCapacity * 2));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kAlreadyExists);
  EXPECT_TRUE(contains(second.error().message(), dir_.file("delta"))) << second.error().message();
  // The existing channel is untouched and no temporary file is left.
  EXPECT_EQ(test::file_size(dir_.file("delta")), detail::kHeaderBytes + kCapacity);
  EXPECT_EQ(std::memcmp(first->ring(), "keep", 4), 0);
  EXPECT_EQ(dir_.list(), std::vector<std::string>{"delta"});
}

TEST_F(ChannelTest, OpenOfAMissingChannelIsNotFoundNamingThePath) {
  auto channel = Channel::open("missing", dir_.open_options());
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, Errc::kNotFound);
  EXPECT_EQ(channel.error().sys_errno, ENOENT);
  const std::string message = channel.error().message();
  EXPECT_TRUE(contains(message, dir_.file("missing"))) << message;
  EXPECT_TRUE(contains(message, "WEFT_SHM_DIR")) << "the message says what to check: " << message;
}

TEST_F(ChannelTest, ShmDirEnvironmentVariableIsHonoured) {
  test::ScopedEnv env("WEFT_SHM_DIR", dir_.path().c_str());
  EXPECT_EQ(Channel::resolve_dir(""), dir_.path());
  ChannelOptions options;  // No dir: the environment decides.
  options.capacity_bytes = 4096;
  auto created = Channel::create("env", options);
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ(created->path(), dir_.file("env"));
  EXPECT_EQ(dir_.list(), std::vector<std::string>{"env"});
  auto opened = Channel::open("env");
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_EQ(opened->path(), dir_.file("env"));
  EXPECT_TRUE(Channel::unlink("env"));
  EXPECT_TRUE(dir_.list().empty());
}

TEST_F(ChannelTest, ExplicitDirBeatsTheEnvironmentAndTheDefaultIsDevShmWeft) {
  TempDir other;
  {
    test::ScopedEnv env("WEFT_SHM_DIR", other.path().c_str());
    EXPECT_EQ(Channel::resolve_dir(dir_.path()), dir_.path());
    ASSERT_TRUE(Channel::create("explicit", dir_.channel_options()));
    EXPECT_EQ(dir_.list(), std::vector<std::string>{"explicit"});
    EXPECT_TRUE(other.list().empty());
  }
  {
    test::ScopedEnv env("WEFT_SHM_DIR", nullptr);
    EXPECT_EQ(Channel::resolve_dir(""), "/dev/shm/weft");
  }
  {
    test::ScopedEnv env("WEFT_SHM_DIR", "");
    EXPECT_EQ(Channel::resolve_dir(""), "/dev/shm/weft") << "an empty variable means unset";
  }
}

TEST_F(ChannelTest, MissingDirectoryIsCreatedButNotItsParents) {
  ChannelOptions options = dir_.channel_options();
  options.dir = dir_.file("sub");
  auto channel = Channel::create("inner", options);
  ASSERT_TRUE(channel) << channel.error().message();
  EXPECT_EQ(channel->path(), dir_.file("sub") + "/inner");

  options.dir = dir_.file("a/b");
  auto nested = Channel::create("inner", options);
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().code, Errc::kNotFound);
  EXPECT_TRUE(contains(nested.error().message(), dir_.file("a/b"))) << nested.error().message();
}

TEST_F(ChannelTest, InvalidNamesAreRejected) {
  const std::string too_long(64, 'n');
  const std::string_view names[] = {
      "",      ".hidden", ".",          "..",    "a/b", "/abs",
      "a b",   "tab\t",   "semi;colon", "star*", "ünï", std::string_view("nul\0byte", 8),
      too_long};
  for (const std::string_view name : names) {
    SCOPED_TRACE("name '" + std::string(name) + "'");
    auto created = Channel::create(name, dir_.channel_options());
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().code, Errc::kInvalidArgument);
    EXPECT_TRUE(contains(created.error().message(), "name")) << created.error().message();
    auto opened = Channel::open(name, dir_.open_options());
    ASSERT_FALSE(opened);
    EXPECT_EQ(opened.error().code, Errc::kInvalidArgument);
    const Result<void> unlinked = Channel::unlink(name, dir_.path());
    ASSERT_FALSE(unlinked);
    EXPECT_EQ(unlinked.error().code, Errc::kInvalidArgument);
  }
  EXPECT_TRUE(dir_.list().empty());
  // The edges of what is allowed.
  const std::string longest(63, 'x');
  for (const std::string_view name : {std::string_view(longest), std::string_view("a"),
                                      std::string_view("A.b_c-9"), std::string_view("9lives")}) {
    SCOPED_TRACE("name '" + std::string(name) + "'");
    auto created = Channel::create(name, dir_.channel_options(4096));
    ASSERT_TRUE(created) << created.error().message();
    EXPECT_EQ(std::string_view(created->header()->meta.name), name);
  }
}

TEST_F(ChannelTest, InvalidCapacitiesAreRejected) {
  const std::uint64_t capacities[] = {0,
                                      1,
                                      8,
                                      2048,
                                      4095,
                                      4097,
                                      6144,
                                      12288,
                                      (std::uint64_t{1} << 20) + 4096,
                                      std::uint64_t{1} << 41,
                                      UINT64_MAX};
  for (const std::uint64_t capacity : capacities) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    auto created = Channel::create("cap", dir_.channel_options(capacity));
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().code, Errc::kInvalidArgument);
    EXPECT_TRUE(contains(created.error().message(), "capacity_bytes")) << created.error().message();
  }
  EXPECT_TRUE(dir_.list().empty());
  auto smallest = Channel::create("cap", dir_.channel_options(4096));
  EXPECT_TRUE(smallest) << smallest.error().message();
}

TEST_F(ChannelTest, RecordBytesMaxIsLimitedToHalfTheRingMinusSixteen) {
  struct Case {
    std::uint64_t capacity;
    std::uint64_t record_bytes_max;
    bool ok;
  };
  const Case cases[] = {
      {4096, 2032, true},   {4096, 2033, false},
      {4096, 4096, false},  {4096, UINT64_MAX, false},
      {65536, 32752, true}, {65536, 32753, false},
      {4096, 1, true},      {1 << 20, (1 << 19) - 16, true},
  };
  int index = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE("capacity " + std::to_string(c.capacity) + " record_bytes_max " +
                 std::to_string(c.record_bytes_max));
    const std::string name = "rec" + std::to_string(index++);
    auto created = Channel::create(name, dir_.channel_options(c.capacity, c.record_bytes_max));
    ASSERT_EQ(static_cast<bool>(created), c.ok);
    if (c.ok) {
      EXPECT_EQ(created->record_bytes_max(), c.record_bytes_max);
    } else {
      EXPECT_EQ(created.error().code, Errc::kInvalidArgument);
      EXPECT_TRUE(contains(created.error().message(), "record_bytes_max"))
          << created.error().message();
    }
  }
  auto by_default = Channel::create("default", dir_.channel_options(4096, 0));
  ASSERT_TRUE(by_default);
  EXPECT_EQ(by_default->record_bytes_max(), 1024U) << "0 means capacity / 4";
}

TEST_F(ChannelTest, ModeBitsAreAppliedExactlyDespiteTheUmask) {
  test::ScopedUmask umask_guard(077);
  ASSERT_TRUE(Channel::create("default", dir_.channel_options()));
  EXPECT_EQ(test::file_mode(dir_.file("default")), 0600U);
  const mode_t modes[] = {0640, 0660, 0644, 0666, 0400};
  for (const mode_t mode : modes) {
    ChannelOptions options = dir_.channel_options(4096);
    options.mode = mode;
    const std::string name = "mode" + std::to_string(mode);
    auto created = Channel::create(name, options);
    ASSERT_TRUE(created) << created.error().message();
    EXPECT_EQ(test::file_mode(dir_.file(name)), static_cast<unsigned>(mode)) << std::oct << mode;
  }
}

TEST_F(ChannelTest, ModeWithNonPermissionBitsIsRejected) {
  ChannelOptions options = dir_.channel_options();
  options.mode = S_IFREG | 0600;
  auto created = Channel::create("bad-mode", options);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, Errc::kInvalidArgument);
  EXPECT_TRUE(dir_.list().empty());
}

TEST_F(ChannelTest, FailuresLeaveNoFileDescriptorMappingOrTemporaryFile) {
  ASSERT_TRUE(Channel::create("exists", dir_.channel_options()));
  const std::size_t fds_before = test::open_fd_count();
  for (int round = 0; round < 3; ++round) {
    EXPECT_FALSE(Channel::create("exists", dir_.channel_options()));
    EXPECT_FALSE(Channel::create("bad/name", dir_.channel_options()));
    EXPECT_FALSE(Channel::create("odd", dir_.channel_options(5000)));
    EXPECT_FALSE(Channel::open("absent", dir_.open_options()));
  }
  EXPECT_EQ(test::open_fd_count(), fds_before);
  EXPECT_FALSE(test::maps_mention(dir_.path())) << "a failed create left a mapping behind";
  EXPECT_EQ(dir_.list(), std::vector<std::string>{"exists"});
}

TEST_F(ChannelTest, MoveTransfersTheMapping) {
  auto created = Channel::create("move", dir_.channel_options());
  ASSERT_TRUE(created);
  Channel first = std::move(*created);
  detail::ChannelHeader* header = first.header();
  ASSERT_NE(header, nullptr);
  EXPECT_TRUE(test::is_mapped(header));
  Channel second = std::move(first);
  EXPECT_EQ(second.header(), header);
  EXPECT_EQ(first.header(), nullptr);   // NOLINT(bugprone-use-after-move): checking the move.
  EXPECT_EQ(first.mapped_bytes(), 0U);  // NOLINT(bugprone-use-after-move)
  auto other = Channel::create("other", dir_.channel_options());
  ASSERT_TRUE(other);
  second = std::move(*other);
  EXPECT_NE(second.header(), header);
  EXPECT_EQ(second.name(), "other");
  EXPECT_TRUE(test::is_mapped(second.header()));
  EXPECT_FALSE(test::is_mapped(header)) << "the replaced mapping must be unmapped";
}

// File modes do not bind root, so the check runs in a child that becomes "nobody".
TEST_F(ChannelTest, OtherUsersAreRefusedByTheFileMode) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to the user nobody";
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);  // Let nobody reach the files.
  const auto create = [&](const char* name, mode_t mode) {
    ChannelOptions options = dir_.channel_options(4096);
    options.mode = mode;
    auto channel = Channel::create(name, options);
    ASSERT_TRUE(channel) << channel.error().message();
  };
  create("private", 0600);
  create("readable", 0644);
  create("shared", 0666);

  test::SharedBlock<test::ChildMessage> message;
  test::ChildProcess child([&] {
    constexpr uid_t kNobody = 65534;
    if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0) return 10;
    auto denied = Channel::open("private", dir_.open_options());
    if (denied) return 11;
    message->set(denied.error().message());
    if (denied.error().code != Errc::kPermissionDenied) return 12;
    if (denied.error().sys_errno != EACCES) return 13;
    if (!contains(denied.error().message(), dir_.file("private"))) return 14;
    // Read-write needs write permission; read-only needs read permission only.
    auto read_write = Channel::open("readable", dir_.open_options());
    if (read_write || read_write.error().code != Errc::kPermissionDenied) return 15;
    OpenOptions read_only = dir_.open_options();
    read_only.read_only = true;
    if (!Channel::open("readable", read_only)) return 16;
    // A mode that admits everyone admits nobody too: the refusals above come from the mode.
    if (!SpscConsumer::open("shared", dir_.open_options())) return 17;
    return 0;
  });
  const test::ChildStatus status = child.wait();
  EXPECT_TRUE(status.ok()) << status.describe() << "; message: " << message->get();
  EXPECT_TRUE(contains(message->get(), "permission")) << message->get();
}

}  // namespace
}  // namespace weft
