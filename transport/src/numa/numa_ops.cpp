#include "numa/numa_ops.hpp"

#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace weft::sys {
namespace {

long long real_node_size(int node, long long* free_bytes) {
  return numa_node_size64(node, free_bytes);
}

int real_node_cpus(int node, std::vector<int>* cpus) {
  cpus->clear();
  struct bitmask* mask = numa_allocate_cpumask();
  if (mask == nullptr) return ENOMEM;
  const int rc = numa_node_to_cpus(node, mask);
  const int err = errno;
  if (rc == 0) {
    for (unsigned cpu = 0; cpu < mask->size; ++cpu) {
      if (numa_bitmask_isbitset(mask, cpu) != 0) cpus->push_back(static_cast<int>(cpu));
    }
  }
  numa_bitmask_free(mask);
  return rc == 0 ? 0 : (err != 0 ? err : EINVAL);
}

int real_mems_allowed(std::vector<int>* nodes) {
  nodes->clear();
  struct bitmask* mask = numa_get_mems_allowed();
  if (mask == nullptr) return ENOMEM;
  for (unsigned node = 0; node < mask->size; ++node) {
    if (numa_bitmask_isbitset(mask, node) != 0) nodes->push_back(static_cast<int>(node));
  }
  numa_bitmask_free(mask);
  return 0;
}

long real_set_mempolicy(int mode, const unsigned long* nodemask, unsigned long maxnode) {
  return ::set_mempolicy(mode, nodemask, maxnode);
}
long real_get_mempolicy(int* mode, unsigned long* nodemask, unsigned long maxnode, void* address,
                        unsigned long flags) {
  return ::get_mempolicy(mode, nodemask, maxnode, address, static_cast<unsigned>(flags));
}
long real_mbind(void* address, unsigned long length, int mode, const unsigned long* nodemask,
                unsigned long maxnode, unsigned flags) {
  return ::mbind(address, length, mode, nodemask, maxnode, flags);
}
long real_move_pages(int pid, unsigned long count, void** pages, const int* nodes, int* status,
                     int flags) {
  return ::move_pages(pid, count, pages, nodes, status, flags);
}
// The system call itself: the sanitizers' runtimes intercept mlock() and make it a no-op.
int real_mlock(const void* address, std::size_t length) {
  return static_cast<int>(syscall(SYS_mlock, address, length));
}
int real_statfs(const char* path, struct statfs* out) { return ::statfs(path, out); }
int real_fstatfs(int fd, struct statfs* out) { return ::fstatfs(fd, out); }

constexpr NumaOps kDefaultNumaOps{
    numa_available,     numa_max_node,    numa_num_configured_cpus, real_node_size,
    real_node_cpus,     numa_node_of_cpu, real_mems_allowed,        real_set_mempolicy,
    real_get_mempolicy, real_mbind,       real_move_pages,          real_mlock,
    real_statfs,        real_fstatfs,
};

NumaOps g_numa_ops = kDefaultNumaOps;

}  // namespace

NumaOps& numa_ops() noexcept { return g_numa_ops; }
const NumaOps& default_numa_ops() noexcept { return kDefaultNumaOps; }

}  // namespace weft::sys
