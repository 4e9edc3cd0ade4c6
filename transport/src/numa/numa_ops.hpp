// The seam through which every NUMA, memory-policy, huge-page and mlock call passes, so that tests
// can make libnuma look absent (numa_available() < 0), refuse a policy, report pages on another
// node, or fail mlock for a low RLIMIT_MEMLOCK, without such a machine. Like sys::ops(), the
// table is control plane only.
#pragma once

#include <sys/types.h>
#include <sys/vfs.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "weft/export.hpp"

namespace weft::sys {

struct NumaOps {
  // libnuma (numa.h).
  int (*available)();        // numa_available(): < 0 when the kernel has no NUMA support.
  int (*max_node)();         // numa_max_node()
  int (*configured_cpus)();  // numa_num_configured_cpus()
  // numa_node_size64(): total bytes of `node`, -1 when it does not exist; *free_bytes too.
  long long (*node_size)(int node, long long* free_bytes);
  // The CPUs of `node` into *cpus (cleared first); 0 or an errno value.
  int (*node_cpus)(int node, std::vector<int>* cpus);
  int (*node_of_cpu)(int cpu);  // numa_node_of_cpu(): -1 with errno when there is no such CPU.
  // Nodes this process may allocate on (cpuset mems_allowed) into *nodes; 0 or an errno value.
  int (*mems_allowed)(std::vector<int>* nodes);
  // System calls (numaif.h); -1 with errno on failure.
  long (*set_mempolicy)(int mode, const unsigned long* nodemask, unsigned long maxnode);
  long (*get_mempolicy)(int* mode, unsigned long* nodemask, unsigned long maxnode, void* address,
                        unsigned long flags);
  long (*mbind)(void* address, unsigned long length, int mode, const unsigned long* nodemask,
                unsigned long maxnode, unsigned flags);
  long (*move_pages)(int pid, unsigned long count, void** pages, const int* nodes, int* status,
                     int flags);
  int (*mlock)(const void* address, std::size_t length);
  int (*statfs)(const char* path, struct statfs* out);
  int (*fstatfs)(int fd, struct statfs* out);
};

// The table in use. Tests may overwrite entries and must restore them.
WEFT_EXPORT NumaOps& numa_ops() noexcept;
// The real calls.
WEFT_EXPORT const NumaOps& default_numa_ops() noexcept;

// Node masks passed to the memory-policy calls: 1024 nodes, the kernel's largest MAX_NUMNODES.
inline constexpr int kNodeMaskBits = 1024;
inline constexpr std::size_t kNodeMaskWords = kNodeMaskBits / (8 * sizeof(unsigned long));
// maxnode as the kernel reads it: one more than the bits it looks at (a historic off-by-one that
// libnuma also works around).
inline constexpr unsigned long kNodeMaskMaxnode = kNodeMaskBits + 1;

}  // namespace weft::sys
