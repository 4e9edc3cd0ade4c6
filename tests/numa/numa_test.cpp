// Topology, pinning and page-node queries, with and without NUMA support (through the seam).
#include "weft/numa.hpp"

#include <sched.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "numa/numa_support.hpp"
#include "support/test_support.hpp"

namespace weft {
namespace {

using test::ScopedNumaOps;

bool numa_here() { return sys::default_numa_ops().available() >= 0; }

// Restores the thread's CPU affinity on destruction.
class ScopedAffinity {
 public:
  ScopedAffinity() { sched_getaffinity(0, sizeof set_, &set_); }
  ~ScopedAffinity() { sched_setaffinity(0, sizeof set_, &set_); }
  ScopedAffinity(const ScopedAffinity&) = delete;
  ScopedAffinity& operator=(const ScopedAffinity&) = delete;

 private:
  cpu_set_t set_{};
};

TEST(NumaTopologyTest, ReportsNodeZeroWithCpusAndMemory) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here (numa_available() < 0)";
  auto topology = numa_topology();
  ASSERT_TRUE(topology) << topology.error().message();
  EXPECT_TRUE(topology->numa_available);
  ASSERT_FALSE(topology->nodes.empty());
  EXPECT_EQ(topology->nodes.front().node, 0);
  EXPECT_GT(topology->nodes.front().memory_bytes, 0);
  EXPECT_GE(topology->nodes.front().free_bytes, 0);
  EXPECT_LE(topology->nodes.front().free_bytes, topology->nodes.front().memory_bytes);
  std::size_t cpus = 0;
  for (const NumaNode& node : topology->nodes) cpus += node.cpus.size();
  EXPECT_EQ(cpus, static_cast<std::size_t>(topology->cpus_configured));
  auto allowed = allowed_cpus();
  ASSERT_TRUE(allowed);
  for (const int cpu : *allowed) {
    auto node = numa_node_of_cpu(cpu);
    ASSERT_TRUE(node) << node.error().message();
    bool listed = false;
    for (const NumaNode& entry : topology->nodes) {
      if (entry.node != *node) continue;
      for (const int c : entry.cpus) listed = listed || c == cpu;
    }
    EXPECT_TRUE(listed) << "CPU " << cpu << " missing from node " << *node;
  }
}

TEST(NumaTopologyTest, MissingCpuAndNodeAreRefusedNamingWhatExists) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here (numa_available() < 0)";
  auto node = numa_node_of_cpu(100000);
  ASSERT_FALSE(node);
  EXPECT_EQ(node.error().code, Errc::kInvalidArgument);
  EXPECT_NE(node.error().message().find("CPU 100000 does not exist"), std::string::npos)
      << node.error().message();
  auto check = check_numa_node(999);
  ASSERT_FALSE(check);
  EXPECT_EQ(check.error().code, Errc::kInvalidArgument);
  EXPECT_NE(check.error().message().find("use one of nodes 0"), std::string::npos)
      << check.error().message();
  EXPECT_TRUE(check_numa_node(0)) << "node 0 holds this machine's memory";
  EXPECT_FALSE(check_numa_node(-5));
}

TEST(NumaTopologyTest, WithoutNumaSupportOnePseudoNodeAndPlacementRefused) {
  ScopedNumaOps seam;
  seam.ops().available = [] { return -1; };
  auto topology = numa_topology();
  ASSERT_TRUE(topology) << topology.error().message();
  EXPECT_FALSE(topology->numa_available);
  ASSERT_EQ(topology->nodes.size(), 1U);
  EXPECT_EQ(topology->nodes[0].node, 0);
  EXPECT_EQ(topology->nodes[0].cpus, *allowed_cpus());
  EXPECT_EQ(topology->nodes[0].memory_bytes, -1);

  for (const Error& e : {check_numa_node(0).error(), numa_node_of_cpu(0).error()}) {
    EXPECT_EQ(e.code, Errc::kUnsupported);
    EXPECT_NE(e.message().find("numa_available() < 0"), std::string::npos) << e.message();
  }
  alignas(4096) static char page[4096];
  auto where = page_nodes(page, sizeof page);
  ASSERT_FALSE(where);
  EXPECT_EQ(where.error().code, Errc::kUnsupported);
}

TEST(NumaTopologyTest, UnreadableNodeCpusIsAnError) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  ScopedNumaOps seam;
  seam.ops().node_cpus = [](int, std::vector<int>*) { return EIO; };
  auto topology = numa_topology();
  ASSERT_FALSE(topology);
  EXPECT_EQ(topology.error().sys_errno, EIO);
  EXPECT_NE(topology.error().message().find("CPUs of NUMA node 0"), std::string::npos);
}

TEST(PinTest, PinsToEachAllowedCpuAndRefusesOthers) {
  ScopedAffinity restore;
  auto allowed = allowed_cpus();
  ASSERT_TRUE(allowed);
  ASSERT_FALSE(allowed->empty());
  for (const int cpu : *allowed) {
    ScopedAffinity each;  // Pinning narrows the allowed set: widen it again for the next CPU.
    ASSERT_TRUE(pin_thread_to_cpu(cpu)) << cpu;
    EXPECT_EQ(current_cpu(), cpu);
    auto now = allowed_cpus();
    ASSERT_TRUE(now);
    EXPECT_EQ(*now, std::vector<int>{cpu});
  }
  auto refused = pin_thread_to_cpu(4000);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kInvalidArgument);
  EXPECT_NE(refused.error().message().find("use one of CPUs"), std::string::npos)
      << refused.error().message();
  EXPECT_FALSE(pin_thread_to_cpu(-1));
}

TEST(PinTest, PinsToTheCpusOfANode) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  ScopedAffinity restore;
  const std::vector<int> before = *allowed_cpus();
  ASSERT_TRUE(pin_thread_to_node(0));
  EXPECT_EQ(*allowed_cpus(), before) << "one node: its CPUs are all the allowed ones";
  auto refused = pin_thread_to_node(77);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("use one of nodes 0"), std::string::npos)
      << refused.error().message();
}

TEST(PageNodesTest, CountsPresentAndAbsentPages) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  constexpr std::size_t kPages = 16;
  void* raw =
      mmap(nullptr, kPages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(raw, MAP_FAILED);
  auto* bytes = static_cast<char*>(raw);
  for (std::size_t i = 0; i < kPages / 2; ++i) bytes[i * 4096] = 1;
  auto where = page_nodes(raw, kPages * 4096);
  ASSERT_TRUE(where) << where.error().message();
  EXPECT_EQ(where->pages, kPages);
  EXPECT_EQ(where->page_bytes, 4096U);
  EXPECT_EQ(where->pages_absent, kPages / 2);
  ASSERT_FALSE(where->pages_on_node.empty());
  std::uint64_t present = 0;
  for (const std::uint64_t n : where->pages_on_node) present += n;
  EXPECT_EQ(present, kPages / 2);
  EXPECT_GE(where->main_node(), 0);
  EXPECT_EQ(where->pages_off_node(where->main_node()),
            present - where->pages_on_node[static_cast<std::size_t>(where->main_node())]);
  munmap(raw, kPages * 4096);
}

TEST(PageNodesTest, BadArgumentsAndFailingQueryAreErrors) {
  if (!numa_here()) GTEST_SKIP() << "no NUMA support here";
  alignas(8192) static char pages[8192];
  EXPECT_EQ(page_nodes(pages + 8, 4096).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(page_nodes(pages, 4096, 1000).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(page_nodes(pages + 4096, 4096, 8192).error().code, Errc::kInvalidArgument);
  ScopedNumaOps seam;
  seam.ops().move_pages = [](int, unsigned long, void**, const int*, int*, int) -> long {
    errno = ENOSYS;
    return -1;
  };
  auto failed = page_nodes(pages, 4096);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().sys_errno, ENOSYS);
  EXPECT_NE(failed.error().message().find("move_pages"), std::string::npos);
}

TEST(HugePageInfoTest, UnknownSizeAndNoMountAreClearErrors) {
  auto none = huge_page_info(3 * 4096);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::kUnsupported);
  EXPECT_NE(none.error().message().find("/sys/kernel/mm/hugepages"), std::string::npos);

  auto info = huge_page_info(kHugePageBytes);
  if (!info) GTEST_SKIP() << info.error().message();
  EXPECT_EQ(info->page_bytes, kHugePageBytes);
  EXPECT_LE(info->pages_free, info->pages_total);

  // No hugetlbfs found (statfs of every mount fails): huge_page_dir says how to mount one.
  test::ScopedEnv no_env(kHugeDirEnv, nullptr);
  ScopedNumaOps seam;
  seam.ops().statfs = [](const char*, struct statfs*) {
    errno = ENOENT;
    return -1;
  };
  auto dir = huge_page_dir();
  ASSERT_FALSE(dir);
  EXPECT_EQ(dir.error().code, Errc::kUnsupported);
  EXPECT_NE(dir.error().message().find("mount -t hugetlbfs"), std::string::npos)
      << dir.error().message();
  test::ScopedEnv env(kHugeDirEnv, "/somewhere/huge");
  EXPECT_EQ(*huge_page_dir(), "/somewhere/huge");
}

TEST(HugePageInfoTest, DirectoryPageSizeOfTmpfsIsBasePages) {
  auto page = directory_page_bytes("/dev/shm");
  ASSERT_TRUE(page) << page.error().message();
  EXPECT_EQ(*page, kBasePageBytes);
  auto missing = directory_page_bytes("/nonexistent-weft-dir");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().sys_errno, ENOENT);
}

}  // namespace
}  // namespace weft
