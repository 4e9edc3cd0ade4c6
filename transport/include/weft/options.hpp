// Options for creating and opening channels.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace weft {

enum class ChannelKind : std::uint32_t {
  kSpsc = 1,       // One producer, one consumer.
  kMpsc = 2,       // Many producers, one consumer.
  kBroadcast = 3,  // One producer, many consumers, each with its own cursor.
};

// The page size of a huge-page channel on x86-64 (the default huge page size there).
inline constexpr std::uint64_t kHugePageBytes = std::uint64_t{2} << 20;
// The base page size.
inline constexpr std::uint64_t kBasePageBytes = 4096;

// How a channel's memory is tied to its NUMA node (see docs/numa.md).
enum class NumaPolicy : std::uint32_t {
  // MPOL_BIND: pages come from that node only; creation fails when the node has not enough free
  // memory, and any page found elsewhere after prefault fails it too.
  kBind = 0,
  // MPOL_PREFERRED: that node first, any other node when it is full. Channel::placement() shows
  // how many pages landed elsewhere.
  kPreferred = 1,
};

inline constexpr const char* kDefaultShmDir = "/dev/shm/weft";
inline constexpr const char* kShmDirEnv = "WEFT_SHM_DIR";

struct ChannelOptions {
  ChannelKind kind = ChannelKind::kSpsc;
  // Bytes in the data ring; a power of two between 4 KiB and 1 TiB.
  std::uint64_t capacity_bytes = std::uint64_t{1} << 20;
  // Largest record payload; 0 means capacity_bytes / 4. At most capacity_bytes / 2 - 16.
  std::uint64_t record_bytes_max = 0;
  // File mode of the channel file, applied exactly (the umask does not narrow it).
  mode_t mode = 0600;
  // Directory holding channel files. Empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string dir;
  // MPSC: producer slots (producers attached at once), 1..1024.
  std::uint32_t producers_max = 64;
  // Broadcast: consumer slots (consumers attached at once), 1..1024.
  std::uint32_t consumers_max = 64;
  // Broadcast: lossy (the producer never waits; a consumer that falls a ring behind is told how
  // many records and bytes it lost) instead of reliable (the slowest live consumer holds the
  // producer back).
  bool lossy = false;
  // MPSC: how long a claim whose producer is dead may block the consumer before it becomes
  // padding.
  std::chrono::nanoseconds unblock_timeout = std::chrono::seconds(2);

  // ---- Placement, page size and locking (docs/numa.md) ----
  // Put the channel's memory on this NUMA node (-1: wherever the creating thread's policy puts
  // it). The memory policy is bound before the pages are allocated and prefaulted, and where they
  // landed is verified afterwards. A node that does not exist, is offline, has no memory or is
  // outside the cpuset is refused with the list of usable nodes.
  int numa_node = -1;
  // Or: on the node of this CPU (-1: unused). Set at most one of numa_node and numa_cpu.
  int numa_cpu = -1;
  NumaPolicy numa_policy = NumaPolicy::kBind;
  // Page size: 0 takes the directory's (huge pages on a hugetlbfs mount, else 4 KiB);
  // kBasePageBytes or a huge page size (kHugePageBytes) requires it. With a huge size and an
  // empty `dir`, the channel goes to weft::huge_page_dir() ($WEFT_HUGE_DIR, else
  // "<hugetlbfs mount>/weft"), and openers must pass that directory too. Creation fails with
  // kNoMemory, naming vm.nr_hugepages, when too few huge pages are reserved.
  std::uint64_t page_bytes = 0;
  // Lock the pages in memory (mlock) so they are never swapped out: in the creator and in every
  // process that opens the channel read-write (the flag is kept in the header). Needs
  // RLIMIT_MEMLOCK of at least the file size, or CAP_IPC_LOCK; else a clear kPermissionDenied.
  bool lock_memory = false;
};

struct OpenOptions {
  // Directory holding channel files. Empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string dir;
  // Map read-only: for inspection tools, which must never disturb a channel.
  bool read_only = false;
};

}  // namespace weft
