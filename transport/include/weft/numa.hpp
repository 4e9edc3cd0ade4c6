// NUMA topology, CPU pinning, huge pages, and where a mapping's pages really are.
//
// On a multi-socket server a ring in the far node's memory pays a remote access on every cache
// miss, and with 4 KiB pages a large ring pays TLB misses. These calls let a program see the
// machine (nodes, their CPUs and memory, the huge pages reserved), pin its producer and consumer
// threads, and check where the pages of a channel landed. Placement and page size of a channel
// are chosen with ChannelOptions (options.hpp) and read back with Channel::placement().
//
// Everything here is control plane: each call makes system calls and may allocate. None is meant
// for the data path. libnuma is used internally; this header does not include <numa.h>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "weft/export.hpp"
#include "weft/options.hpp"
#include "weft/result.hpp"

namespace weft {

// Environment variable naming the directory for huge-page channels (a hugetlbfs mount or a
// directory in one). Unset: "<first hugetlbfs mount of that page size>/weft".
inline constexpr const char* kHugeDirEnv = "WEFT_HUGE_DIR";

struct NumaNode {
  int node = -1;
  std::vector<int> cpus;           // CPUs of this node, ascending.
  std::int64_t memory_bytes = -1;  // Total memory of the node; -1 when unknown.
  std::int64_t free_bytes = -1;    // Free memory now; -1 when unknown.
};

struct NumaTopology {
  // False when libnuma reports no NUMA support (numa_available() < 0): then `nodes` holds one
  // pseudo-node 0 with every online CPU and memory -1, and placement options are refused.
  bool numa_available = false;
  int cpus_configured = 0;      // CPUs the kernel knows about.
  std::vector<NumaNode> nodes;  // Nodes that exist (have memory or CPUs), ascending by node.
};

// The machine's NUMA nodes, their CPUs and memory. Fails only when the CPU list cannot be read.
WEFT_EXPORT Result<NumaTopology> numa_topology();

// The node of `cpu`. kInvalidArgument when there is no such CPU; kUnsupported without NUMA
// support (numa_available() < 0).
WEFT_EXPORT Result<int> numa_node_of_cpu(int cpu);

// Checks that memory can be placed on `node`: it exists, has memory, and this process may
// allocate there (cpuset). Returns kInvalidArgument naming the nodes that can be used, or
// kUnsupported without NUMA support.
WEFT_EXPORT Result<void> check_numa_node(int node);

// Pins the calling thread to one CPU. kInvalidArgument naming the allowed CPUs when `cpu` is not
// in this process's affinity mask (or does not exist).
WEFT_EXPORT Result<void> pin_thread_to_cpu(int cpu);
// Pins the calling thread to the CPUs of `node` (those in its affinity mask).
WEFT_EXPORT Result<void> pin_thread_to_node(int node);
// The CPUs the calling thread may run on, ascending.
WEFT_EXPORT Result<std::vector<int>> allowed_cpus();
// The CPU the calling thread runs on now (sched_getcpu), -1 on failure.
WEFT_EXPORT int current_cpu() noexcept;

// Where the pages of [address, address + bytes) are, counted by node.
struct PageNodes {
  std::uint64_t page_bytes = 0;    // The step used: the mapping's page size.
  std::uint64_t pages = 0;         // Pages asked about.
  std::uint64_t pages_absent = 0;  // Not present (never touched, or swapped out).
  // pages_on_node[n]: pages on node n. Sized to the highest node seen + 1.
  std::vector<std::uint64_t> pages_on_node;
  // The node holding most pages, -1 when none is present.
  [[nodiscard]] int main_node() const noexcept;
  // Pages present on a node other than `node`.
  [[nodiscard]] std::uint64_t pages_off_node(int node) const noexcept;
};

// Asks the kernel (move_pages with no target nodes: a query that moves nothing) which node holds
// each page of the range. `page_bytes` is the mapping's page size (kBasePageBytes, or the huge page
// size of a hugetlbfs mapping). Requires: address aligned to page_bytes. kUnsupported without
// NUMA support.
WEFT_EXPORT Result<PageNodes> page_nodes(const void* address, std::size_t bytes,
                                         std::uint64_t page_bytes = kBasePageBytes);

// A channel's placement: what its creator asked for (kept in the channel header) and where its
// pages are now. See Channel::placement().
struct ChannelPlacement {
  std::uint64_t page_bytes = kBasePageBytes;  // Page size of the mapping.
  int node_requested = -1;                    // -1: no node was asked for.
  int cpu_requested = -1;                     // The CPU whose node was asked for; -1: none.
  NumaPolicy policy = NumaPolicy::kBind;
  bool lock_memory = false;  // Read-write openers mlock the mapping.
  bool pages_known = false;  // False without NUMA support; `pages` is then empty.
  PageNodes pages;           // Where the mapping's pages are now (move_pages).
};

// Huge pages of one size, from /sys/kernel/mm/hugepages and /proc/mounts.
struct HugePageInfo {
  std::uint64_t page_bytes = 0;
  std::uint64_t pages_total = 0;     // nr_hugepages: reserved in the pool.
  std::uint64_t pages_free = 0;      // free_hugepages, including those promised to mappings.
  std::uint64_t pages_reserved = 0;  // resv_hugepages: promised to mappings, not yet faulted.
  std::string mount;                 // A hugetlbfs mount of this size; empty when none.
  // Pages a new mapping can still get: free minus promised.
  [[nodiscard]] std::uint64_t pages_available() const noexcept {
    return pages_free > pages_reserved ? pages_free - pages_reserved : 0;
  }
};

// The huge page pool of `page_bytes`. kUnsupported when the kernel has no such page size.
WEFT_EXPORT Result<HugePageInfo> huge_page_info(std::uint64_t page_bytes = kHugePageBytes);

// The directory for huge-page channels of `page_bytes`: $WEFT_HUGE_DIR when set, else
// "<hugetlbfs mount>/weft". kUnsupported, naming the mount command, when no hugetlbfs of that size
// is mounted. Creator and openers must use the same directory (OpenOptions::dir).
WEFT_EXPORT Result<std::string> huge_page_dir(std::uint64_t page_bytes = kHugePageBytes);

// The page size of files in directory `dir`: the huge page size on hugetlbfs, else kBasePageBytes.
WEFT_EXPORT Result<std::uint64_t> directory_page_bytes(const std::string& dir);

}  // namespace weft
