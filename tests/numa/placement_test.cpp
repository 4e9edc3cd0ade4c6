// Channels placed on a NUMA node, backed by huge pages, and locked in memory: created, verified,
// opened by name from another process, used, and every error path.
#include <fcntl.h>
#include <linux/capability.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "numa/numa_support.hpp"
#include "support/test_support.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/numa.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using test::ChildProcess;
using test::HugePages;
using test::ScopedNumaOps;
using test::TempDir;

bool numa_here() { return sys::default_numa_ops().available() >= 0; }

std::string message_of(const Error& e) { return e.message(); }

// kB of locked memory of this process (VmLck in /proc/self/status).
long locked_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmLck:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

int thread_policy_mode() {
  int mode = -1;
  unsigned long mask[sys::kNodeMaskWords] = {};
  if (get_mempolicy(&mode, mask, sys::kNodeMaskMaxnode, nullptr, 0) != 0) return -1;
  return mode;
}

// Sends `count` records of `bytes` each with a pattern, and checks them in a child process that
// opens the channel by name.
void round_trip_through_child(SpscProducer& producer, const std::string& name,
                              const OpenOptions& open, std::uint64_t count, std::size_t bytes) {
  ChildProcess child([&]() -> int {
    auto consumer = SpscConsumer::open(name, open);
    if (!consumer) return 10;
    std::vector<std::byte> buffer(bytes);
    for (std::uint64_t i = 0; i < count; ++i) {
      RecvResult got{};
      for (std::uint64_t spins = 0;; ++spins) {
        got = consumer->try_recv(buffer);
        if (got.status != RecvStatus::kEmpty) break;
        if (spins > (std::uint64_t{1} << 32)) return 11;
      }
      if (got.status != RecvStatus::kOk || got.size != bytes) return 12;
      for (std::size_t b = 0; b < bytes; b += 997) {
        if (buffer[b] != static_cast<std::byte>((i + b) & 0xff)) return 13;
      }
    }
    return 0;
  });
  std::vector<std::byte> payload(bytes);
  for (std::uint64_t i = 0; i < count; ++i) {
    for (std::size_t b = 0; b < bytes; ++b) payload[b] = static_cast<std::byte>((i + b) & 0xff);
    while (producer.try_send(payload) != SendStatus::kOk) {
    }
  }
  const test::ChildStatus status = child.wait();
  EXPECT_TRUE(status.ok()) << status.describe();
}

// ---- Placement -------------------------------------------------------------------------------

TEST(PlacementTest, ChannelOnNodeZeroIsVerifiedAndShownToOpeners) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here (numa_available() < 0)";
  TempDir dir;
  ChannelOptions options = dir.channel_options(std::uint64_t{1} << 20);
  options.numa_node = 0;
  auto producer = SpscProducer::create("placed", options);
  ASSERT_TRUE(producer) << producer.error().message();
  EXPECT_EQ(thread_policy_mode(), MPOL_DEFAULT) << "the thread's policy is restored";
  auto placement = producer->channel().placement();
  ASSERT_TRUE(placement) << placement.error().message();
  EXPECT_EQ(placement->node_requested, 0);
  EXPECT_EQ(placement->cpu_requested, -1);
  EXPECT_EQ(placement->policy, NumaPolicy::kBind);
  EXPECT_FALSE(placement->lock_memory);
  EXPECT_EQ(placement->page_bytes, kBasePageBytes);
  ASSERT_TRUE(placement->pages_known);
  EXPECT_EQ(placement->pages.pages, producer->channel().mapped_bytes() / 4096);
  EXPECT_EQ(placement->pages.pages_absent, 0U);
  ASSERT_FALSE(placement->pages.pages_on_node.empty());
  EXPECT_EQ(placement->pages.pages_on_node[0], placement->pages.pages);

  // Another process sees the request in the header and the pages where they are.
  ChildProcess child([&]() -> int {
    OpenOptions open = dir.open_options();
    open.read_only = true;
    auto channel = Channel::open("placed", open);
    if (!channel) return 10;
    auto seen = channel->placement();
    if (!seen || seen->node_requested != 0 || !seen->pages_known) return 11;
    if (seen->pages.pages_on_node.empty() || seen->pages.pages_on_node[0] != seen->pages.pages) {
      return 12;
    }
    return 0;
  });
  EXPECT_TRUE(child.wait().ok());
  round_trip_through_child(*producer, "placed", dir.open_options(), 2000, 3000);
}

TEST(PlacementTest, NodeOfACpuAndPreferredPolicyAreRecorded) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  TempDir dir;
  ChannelOptions options = dir.channel_options();
  options.numa_cpu = allowed_cpus()->back();
  options.numa_policy = NumaPolicy::kPreferred;
  auto channel = Channel::create("by-cpu", options);
  ASSERT_TRUE(channel) << channel.error().message();
  auto placement = channel->placement();
  ASSERT_TRUE(placement);
  EXPECT_EQ(placement->node_requested, *numa_node_of_cpu(options.numa_cpu));
  EXPECT_EQ(placement->cpu_requested, options.numa_cpu);
  EXPECT_EQ(placement->policy, NumaPolicy::kPreferred);
  auto reopened = Channel::open("by-cpu", dir.open_options());
  ASSERT_TRUE(reopened);
  EXPECT_EQ(reopened->placement()->cpu_requested, options.numa_cpu);
}

TEST(PlacementTest, MissingNodeIsRefusedNamingTheAvailableNodesAndLeavesNoFile) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  TempDir dir;
  ChannelOptions options = dir.channel_options();
  options.numa_node = 7;
  auto channel = Channel::create("far", options);
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, Errc::kInvalidArgument);
  const std::string text = message_of(channel.error());
  EXPECT_NE(text.find("NUMA node 7 does not exist"), std::string::npos) << text;
  EXPECT_NE(text.find("use one of nodes 0"), std::string::npos) << text;
  EXPECT_NE(text.find("channel create"), std::string::npos) << text;
  EXPECT_TRUE(dir.list().empty());
}

TEST(PlacementTest, ContradictoryOrInvalidRequestsAreRefused) {
  TempDir dir;
  ChannelOptions both = dir.channel_options();
  both.numa_node = 0;
  both.numa_cpu = 0;
  EXPECT_NE(message_of(Channel::create("x", both).error()).find("not both"), std::string::npos);
  ChannelOptions negative = dir.channel_options();
  negative.numa_node = -3;
  EXPECT_EQ(Channel::create("x", negative).error().code, Errc::kInvalidArgument);
  ChannelOptions no_cpu = dir.channel_options();
  no_cpu.numa_cpu = 100000;
  EXPECT_EQ(Channel::create("x", no_cpu).error().code,
            numa_here() ? Errc::kInvalidArgument : Errc::kUnsupported);
  ChannelOptions policy = dir.channel_options();
  policy.numa_policy = static_cast<NumaPolicy>(9);
  EXPECT_NE(message_of(Channel::create("x", policy).error()).find("numa_policy"),
            std::string::npos);
  ChannelOptions page = dir.channel_options();
  page.page_bytes = 3000;
  EXPECT_NE(message_of(Channel::create("x", page).error()).find("page_bytes 3000"),
            std::string::npos);
  ChannelOptions huge_on_tmpfs = dir.channel_options();
  huge_on_tmpfs.page_bytes = kHugePageBytes;
  auto refused = Channel::create("x", huge_on_tmpfs);
  ASSERT_FALSE(refused);
  EXPECT_NE(message_of(refused.error()).find("hugetlbfs"), std::string::npos)
      << message_of(refused.error());
  EXPECT_TRUE(dir.list().empty());
}

TEST(PlacementTest, WithoutNumaSupportANodeIsRefusedAndPlainChannelsWork) {
  ScopedNumaOps seam;
  seam.ops().available = [] { return -1; };
  TempDir dir;
  ChannelOptions options = dir.channel_options();
  options.numa_node = 0;
  auto refused = Channel::create("n", options);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kUnsupported);
  EXPECT_NE(message_of(refused.error()).find("numa_available() < 0"), std::string::npos);
  auto plain = Channel::create("n", dir.channel_options());
  ASSERT_TRUE(plain) << plain.error().message();
  auto placement = plain->placement();
  ASSERT_TRUE(placement) << placement.error().message();
  EXPECT_FALSE(placement->pages_known);
  EXPECT_EQ(placement->node_requested, -1);
}

TEST(PlacementTest, PagesFoundOnAnotherNodeFailABindButNotAPreference) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  ScopedNumaOps seam;
  // The kernel reports every page on node 1.
  seam.ops().move_pages = [](int, unsigned long count, void**, const int*, int* status,
                             int) -> long {
    for (unsigned long i = 0; i < count; ++i) status[i] = 1;
    return 0;
  };
  TempDir dir;
  ChannelOptions options = dir.channel_options();
  options.numa_node = 0;
  auto bound = Channel::create("moved", options);
  ASSERT_FALSE(bound);
  EXPECT_EQ(bound.error().code, Errc::kIoError);
  EXPECT_NE(message_of(bound.error()).find("on other nodes"), std::string::npos)
      << message_of(bound.error());
  EXPECT_TRUE(dir.list().empty());
  EXPECT_EQ(thread_policy_mode(), MPOL_DEFAULT);

  options.numa_policy = NumaPolicy::kPreferred;
  auto preferred = Channel::create("moved", options);
  ASSERT_TRUE(preferred) << preferred.error().message();
  auto placement = preferred->placement();
  ASSERT_TRUE(placement);
  ASSERT_EQ(placement->pages.pages_on_node.size(), 2U);
  EXPECT_EQ(placement->pages.pages_on_node[1], placement->pages.pages);
  EXPECT_EQ(placement->pages.pages_off_node(0), placement->pages.pages);
}

TEST(PlacementTest, EveryFailingPolicyCallIsAnErrorAndLeavesNoFile) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  TempDir dir;
  ChannelOptions options = dir.channel_options();
  options.numa_node = 0;
  {
    ScopedNumaOps seam;
    seam.ops().get_mempolicy = [](int*, unsigned long*, unsigned long, void*,
                                  unsigned long) -> long {
      errno = EFAULT;
      return -1;
    };
    auto e = Channel::create("p", options);
    ASSERT_FALSE(e);
    EXPECT_NE(message_of(e.error()).find("read this thread's memory policy"), std::string::npos);
  }
  {
    ScopedNumaOps seam;
    seam.ops().set_mempolicy = [](int, const unsigned long*, unsigned long) -> long {
      errno = EINVAL;
      return -1;
    };
    auto e = Channel::create("p", options);
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error().sys_errno, EINVAL);
    EXPECT_NE(message_of(e.error()).find("memory policy to node 0"), std::string::npos);
  }
  {
    ScopedNumaOps seam;
    seam.ops().mbind = [](void*, unsigned long, int, const unsigned long*, unsigned long,
                          unsigned) -> long {
      errno = EIO;
      return -1;
    };
    auto e = Channel::create("p", options);
    ASSERT_FALSE(e);
    EXPECT_NE(message_of(e.error()).find("bind its memory to node 0"), std::string::npos);
    EXPECT_EQ(thread_policy_mode(), MPOL_DEFAULT) << "restored on the error path too";
  }
  {
    ScopedNumaOps seam;
    seam.ops().move_pages = [](int, unsigned long, void**, const int*, int*, int) -> long {
      errno = ENOSYS;
      return -1;
    };
    auto e = Channel::create("p", options);
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error().sys_errno, ENOSYS);
  }
  EXPECT_TRUE(dir.list().empty());
  EXPECT_TRUE(Channel::create("p", options)) << "the real calls work";
}

// ---- mlock -----------------------------------------------------------------------------------

TEST(LockMemoryTest, CreatorAndReadWriteOpenersLockThePages) {
  TempDir dir;
  ChannelOptions options = dir.channel_options(std::uint64_t{1} << 20);
  options.lock_memory = true;
  const long before = locked_kib();
  auto channel = Channel::create("locked", options);
  if (!channel && channel.error().code == Errc::kPermissionDenied) {
    GTEST_SKIP() << channel.error().message();
  }
  ASSERT_TRUE(channel) << channel.error().message();
  EXPECT_GE(locked_kib() - before, static_cast<long>(channel->mapped_bytes() / 1024));
  EXPECT_TRUE(channel->placement()->lock_memory);
  const long after_create = locked_kib();
  auto opened = Channel::open("locked", dir.open_options());
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_GE(locked_kib() - after_create, static_cast<long>(opened->mapped_bytes() / 1024));
  OpenOptions read_only = dir.open_options();
  read_only.read_only = true;
  const long before_read_only = locked_kib();
  ASSERT_TRUE(Channel::open("locked", read_only));
  EXPECT_EQ(locked_kib(), before_read_only) << "observers never lock";
}

TEST(LockMemoryTest, RefusedLockNamesTheLimitOnCreateAndOpen) {
  TempDir dir;
  ChannelOptions options = dir.channel_options();
  options.lock_memory = true;
  ASSERT_TRUE(Channel::create("locked", options));
  ScopedNumaOps seam;
  seam.ops().mlock = [](const void*, std::size_t) {
    errno = ENOMEM;
    return -1;
  };
  for (const Error& e : {Channel::create("other", options).error(),
                         Channel::open("locked", dir.open_options()).error()}) {
    EXPECT_EQ(e.code, Errc::kPermissionDenied);
    EXPECT_NE(e.message().find("RLIMIT_MEMLOCK"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("ulimit -l"), std::string::npos) << e.message();
  }
  EXPECT_EQ(dir.list(), std::vector<std::string>{"locked"});
}

// The real limit: a child without CAP_IPC_LOCK and a 64 KiB RLIMIT_MEMLOCK.
TEST(LockMemoryTest, RealRlimitMemlockTooLowIsAClearError) {
  TempDir dir;
  ChildProcess child([&]() -> int {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capget, &header, data) != 0) return 77;
    data[0].effective &= ~(1U << CAP_IPC_LOCK);
    data[0].permitted &= ~(1U << CAP_IPC_LOCK);
    if (syscall(SYS_capset, &header, data) != 0) return 77;
    const rlimit limit{65536, 65536};
    if (setrlimit(RLIMIT_MEMLOCK, &limit) != 0) return 77;
    ChannelOptions options = dir.channel_options(std::uint64_t{1} << 20);
    options.lock_memory = true;
    auto channel = Channel::create("too-big", options);
    if (channel) return 10;
    if (channel.error().code != Errc::kPermissionDenied) return 11;
    if (channel.error().message().find("RLIMIT_MEMLOCK is 65536 bytes") == std::string::npos) {
      return 12;
    }
    return 0;
  });
  const test::ChildStatus status = child.wait();
  if (status.exited && status.exit_code == 77) GTEST_SKIP() << "cannot drop CAP_IPC_LOCK here";
  EXPECT_TRUE(status.ok()) << status.describe();
  EXPECT_TRUE(dir.list().empty());
}

// ---- Huge pages ------------------------------------------------------------------------------

// 4 MiB ring + one header page: three 2 MiB pages.
constexpr std::uint64_t kHugeRingBytes = std::uint64_t{4} << 20;

TEST(HugePageChannelTest, CreatedOpenedByNameFromAnotherProcessAndUsed) {
  HugePages huge(4);
  if (!huge.ready()) GTEST_SKIP() << huge.why();
  ChannelOptions options;
  options.dir = huge.mount() + "/weft";
  options.capacity_bytes = kHugeRingBytes;
  options.page_bytes = kHugePageBytes;
  if (numa_here()) options.numa_node = 0;
  auto producer = SpscProducer::create("huge", options);
  ASSERT_TRUE(producer) << producer.error().message();
  const Channel& channel = producer->channel();
  EXPECT_EQ(channel.page_bytes(), kHugePageBytes);
  EXPECT_EQ(channel.mapped_bytes(), 3 * kHugePageBytes);
  EXPECT_EQ(test::file_size(options.dir + "/huge"), 3 * kHugePageBytes);
  auto info = huge_page_info();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->mount.empty(), false);
  auto placement = channel.placement();
  ASSERT_TRUE(placement) << placement.error().message();
  EXPECT_EQ(placement->page_bytes, kHugePageBytes);
  if (numa_here()) {
    ASSERT_TRUE(placement->pages_known);
    EXPECT_EQ(placement->pages.pages, 3U);
    ASSERT_FALSE(placement->pages.pages_on_node.empty());
    EXPECT_EQ(placement->pages.pages_on_node[0], 3U);
  }
  OpenOptions open;
  open.dir = options.dir;
  round_trip_through_child(*producer, "huge", open, 3000, 65536);

  // The opener finds the page size from the file: a read-only open maps it in huge pages too.
  open.read_only = true;
  auto observer = Channel::open("huge", open);
  ASSERT_TRUE(observer) << observer.error().message();
  EXPECT_EQ(observer->page_bytes(), kHugePageBytes);
  EXPECT_EQ(observer->mapped_bytes(), 3 * kHugePageBytes);
}

TEST(HugePageChannelTest, DirectoryDecidesThePageSizeAndHugeDirEnvIsUsed) {
  HugePages huge(3);
  if (!huge.ready()) GTEST_SKIP() << huge.why();
  test::ScopedEnv env(kHugeDirEnv, (huge.mount() + "/by-env").c_str());
  ChannelOptions options;
  options.capacity_bytes = kHugeRingBytes;
  options.page_bytes = kHugePageBytes;  // and no dir: weft::huge_page_dir()
  auto channel = Channel::create("env", options);
  ASSERT_TRUE(channel) << channel.error().message();
  EXPECT_EQ(channel->path(), huge.mount() + "/by-env/env");
  EXPECT_EQ(channel->page_bytes(), kHugePageBytes);
  channel = Channel::create("zero", [&] {
    ChannelOptions o;
    o.dir = huge.mount();
    o.capacity_bytes = 1 << 16;  // One 2 MiB page holds header and ring.
    return o;
  }());
  // Only 3 pages were reserved and "env" holds 3: "zero" cannot get one.
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, Errc::kNoMemory);
}

TEST(HugePageChannelTest, NoHugePagesReservedNamesTheSysctl) {
  HugePages huge(1);
  if (!huge.ready()) GTEST_SKIP() << huge.why();
  huge.take_all_free();
  ChannelOptions options;
  options.dir = huge.mount();
  options.capacity_bytes = kHugeRingBytes;
  auto channel = Channel::create("starved", options);
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, Errc::kNoMemory);
  const std::string text = channel.error().message();
  EXPECT_NE(text.find("needs 3 huge pages of 2048 KiB"), std::string::npos) << text;
  EXPECT_NE(text.find("vm.nr_hugepages"), std::string::npos) << text;
  std::vector<std::string> left;
  EXPECT_EQ(::access((huge.mount() + "/starved").c_str(), F_OK), -1);
}

TEST(HugePageChannelTest, HeaderPageSizeThatDisagreesWithTheFileIsCorrupt) {
  HugePages huge(2);
  if (!huge.ready()) GTEST_SKIP() << huge.why();
  ChannelOptions options;
  options.dir = huge.mount();
  options.capacity_bytes = 1 << 16;
  ASSERT_TRUE(Channel::create("lies", options));
  // hugetlbfs has no write(): edit the header through a mapping.
  const std::string path = huge.mount() + "/lies";
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* map = mmap(nullptr, kHugePageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* header = static_cast<detail::ChannelHeader*>(map);
  EXPECT_EQ(header->config.page_bytes, kHugePageBytes);
  header->config.page_bytes = std::uint64_t{1} << 30;
  header->meta.size_bytes = std::uint64_t{1} << 30;
  munmap(map, kHugePageBytes);
  ::close(fd);
  OpenOptions open;
  open.dir = huge.mount();
  auto opened = Channel::open("lies", open);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, Errc::kCorrupted);
  EXPECT_NE(opened.error().message().find("size_bytes"), std::string::npos)
      << opened.error().message();
}

// ---- Header fields ---------------------------------------------------------------------------

TEST(PlacementHeaderTest, CorruptPlacementFieldsAreNamed) {
  TempDir dir;
  struct Case {
    std::uint64_t offset;
    std::uint64_t value;
    std::size_t bytes;
    const char* field;
  };
  constexpr std::uint64_t kConfig = offsetof(detail::ChannelHeader, config);
  const Case cases[] = {
      {kConfig + offsetof(detail::ChannelConfig, page_bytes), 12345, 8, "page_bytes"},
      {kConfig + offsetof(detail::ChannelConfig, placement_flags), 0x100, 4, "placement_flags"},
      {kConfig + offsetof(detail::ChannelConfig, placement_flags), detail::kPlacementViaCpu, 4,
       "numa_cpu"},
      {kConfig + offsetof(detail::ChannelConfig, page_bytes), kHugePageBytes, 8, "size_bytes"},
  };
  int index = 0;
  for (const Case& c : cases) {
    std::string name(1, 'c');
    name += std::to_string(index++);
    ASSERT_TRUE(Channel::create(name, dir.channel_options()));
    test::pwrite_file(dir.file(name), c.offset, &c.value, c.bytes);
    auto opened = Channel::open(name, dir.open_options());
    ASSERT_FALSE(opened) << c.field;
    EXPECT_EQ(opened.error().code, Errc::kCorrupted);
    EXPECT_NE(opened.error().message().find(c.field), std::string::npos)
        << opened.error().message();
  }
  // A node flag with a node number out of range.
  ASSERT_TRUE(Channel::create("node", dir.channel_options()));
  const std::uint32_t flag = detail::kPlacementNode;
  const std::int32_t node = 5000;
  test::pwrite_value(dir.file("node"), kConfig + offsetof(detail::ChannelConfig, placement_flags),
                     flag);
  test::pwrite_value(dir.file("node"), kConfig + offsetof(detail::ChannelConfig, numa_node), node);
  auto opened = Channel::open("node", dir.open_options());
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message().find("numa_node"), std::string::npos);
}

}  // namespace
}  // namespace weft
