// Topology, pinning, page-node queries and huge-page pools. Every call goes through the
// sys::numa_ops() seam so that tests can take NUMA support away.
#include "weft/numa.hpp"

#include <sched.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "error_util.hpp"
#include "numa/numa_ops.hpp"

namespace weft {
namespace {

using detail::fail;
using detail::fail_errno;

constexpr long kHugetlbfsMagic = 0x958458f6;
// Pages asked about per move_pages call: bounds the arrays whatever the range.
constexpr std::size_t kPagesPerQuery = 4096;
// The highest node number the masks in numa_ops.hpp can carry.
constexpr int kNodeMax = sys::kNodeMaskBits - 1;

std::string join_ints(const std::vector<int>& values) {
  return values.empty() ? std::string("none") : fmt::format("{}", fmt::join(values, ","));
}

// Nodes that have memory this process may allocate on.
std::vector<int> usable_nodes() {
  std::vector<int> allowed;
  if (sys::numa_ops().mems_allowed(&allowed) != 0) allowed.clear();
  std::vector<int> usable;
  const int max_node = std::min(sys::numa_ops().max_node(), kNodeMax);
  for (int node = 0; node <= max_node; ++node) {
    long long free_bytes = 0;
    if (sys::numa_ops().node_size(node, &free_bytes) <= 0) continue;
    if (std::find(allowed.begin(), allowed.end(), node) == allowed.end()) continue;
    usable.push_back(node);
  }
  return usable;
}

std::uint64_t read_u64_file(const std::string& path, bool* ok) {
  std::ifstream in(path);
  std::uint64_t value = 0;
  *ok = static_cast<bool>(in >> value);
  return value;
}

}  // namespace

int PageNodes::main_node() const noexcept {
  int best = -1;
  std::uint64_t best_pages = 0;
  for (std::size_t node = 0; node < pages_on_node.size(); ++node) {
    if (pages_on_node[node] > best_pages) {
      best_pages = pages_on_node[node];
      best = static_cast<int>(node);
    }
  }
  return best;
}

std::uint64_t PageNodes::pages_off_node(int node) const noexcept {
  std::uint64_t off = 0;
  for (std::size_t n = 0; n < pages_on_node.size(); ++n) {
    if (static_cast<int>(n) != node) off += pages_on_node[n];
  }
  return off;
}

Result<NumaTopology> numa_topology() {
  constexpr const char* kWhere = "numa topology";
  NumaTopology topology;
  topology.numa_available = sys::numa_ops().available() >= 0;
  if (!topology.numa_available) {
    // No NUMA support: one pseudo-node with every CPU this process may use.
    auto cpus = allowed_cpus();
    if (!cpus) return unexpected(cpus.error());
    const long online = sysconf(_SC_NPROCESSORS_CONF);
    topology.cpus_configured = online > 0 ? static_cast<int>(online) : 0;
    topology.nodes.push_back(NumaNode{0, std::move(*cpus), -1, -1});
    return topology;
  }
  topology.cpus_configured = sys::numa_ops().configured_cpus();
  const int max_node = std::min(sys::numa_ops().max_node(), kNodeMax);
  for (int node = 0; node <= max_node; ++node) {
    NumaNode entry;
    entry.node = node;
    long long free_bytes = -1;
    const long long size = sys::numa_ops().node_size(node, &free_bytes);
    entry.memory_bytes = size;
    entry.free_bytes = size >= 0 ? free_bytes : -1;
    if (const int err = sys::numa_ops().node_cpus(node, &entry.cpus); err != 0) {
      if (size < 0) continue;  // Neither CPUs nor memory: the node does not exist.
      return fail_errno(err, kWhere, "cannot read the CPUs of NUMA node {}", node);
    }
    if (size < 0 && entry.cpus.empty()) continue;
    topology.nodes.push_back(std::move(entry));
  }
  return topology;
}

Result<int> numa_node_of_cpu(int cpu) {
  constexpr const char* kWhere = "numa node of cpu";
  if (sys::numa_ops().available() < 0) {
    return fail(Errc::kUnsupported, 0, kWhere,
                "cannot find the node of CPU {}: no NUMA support (libnuma's numa_available() < 0)",
                cpu);
  }
  const int configured = sys::numa_ops().configured_cpus();
  const int node = cpu >= 0 && cpu < configured ? sys::numa_ops().node_of_cpu(cpu) : -1;
  if (node < 0) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "CPU {} does not exist: this machine has CPUs 0..{}", cpu, configured - 1);
  }
  return node;
}

Result<void> check_numa_node(int node) {
  constexpr const char* kWhere = "numa placement";
  if (sys::numa_ops().available() < 0) {
    return fail(Errc::kUnsupported, 0, kWhere,
                "cannot place memory on NUMA node {}: no NUMA support (libnuma's "
                "numa_available() < 0); leave the node unset",
                node);
  }
  const std::vector<int> usable = usable_nodes();
  if (std::find(usable.begin(), usable.end(), node) == usable.end()) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "NUMA node {} does not exist, is offline, has no memory or is outside this "
                "process's cpuset: use one of nodes {}",
                node, join_ints(usable));
  }
  return {};
}

Result<std::vector<int>> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) {
    const int err = errno;
    return fail_errno(err, "cpu affinity", "cannot read this thread's CPU affinity");
  }
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(static_cast<std::size_t>(cpu), &set)) cpus.push_back(cpu);
  }
  return cpus;
}

Result<void> pin_thread_to_cpu(int cpu) {
  constexpr const char* kWhere = "pin thread";
  auto cpus = allowed_cpus();
  if (!cpus) return unexpected(cpus.error());
  if (std::find(cpus->begin(), cpus->end(), cpu) == cpus->end()) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "CPU {} is not one this process may run on: use one of CPUs {}", cpu,
                join_ints(*cpus));
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    const int err = errno;
    return fail_errno(err, kWhere, "cannot pin this thread to CPU {}", cpu);
  }
  return {};
}

Result<void> pin_thread_to_node(int node) {
  constexpr const char* kWhere = "pin thread";
  auto topology = numa_topology();
  if (!topology) return unexpected(topology.error());
  auto cpus = allowed_cpus();
  if (!cpus) return unexpected(cpus.error());
  std::vector<int> known;
  for (const NumaNode& entry : topology->nodes) {
    if (!entry.cpus.empty()) known.push_back(entry.node);
    if (entry.node != node) continue;
    cpu_set_t set;
    CPU_ZERO(&set);
    int count = 0;
    for (const int cpu : entry.cpus) {
      if (cpu < CPU_SETSIZE && std::find(cpus->begin(), cpus->end(), cpu) != cpus->end()) {
        CPU_SET(static_cast<std::size_t>(cpu), &set);
        ++count;
      }
    }
    if (count == 0) {
      return fail(Errc::kInvalidArgument, 0, kWhere,
                  "NUMA node {} has no CPU this process may run on (its CPUs: {}; allowed: {})",
                  node, join_ints(entry.cpus), join_ints(*cpus));
    }
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      const int err = errno;
      return fail_errno(err, kWhere, "cannot pin this thread to the CPUs of node {}", node);
    }
    return {};
  }
  return fail(Errc::kInvalidArgument, 0, kWhere,
              "NUMA node {} does not exist or has no CPUs: use one of nodes {}", node,
              join_ints(known));
}

int current_cpu() noexcept { return sched_getcpu(); }

Result<PageNodes> page_nodes(const void* address, std::size_t bytes, std::uint64_t page_bytes) {
  constexpr const char* kWhere = "page nodes";
  if (page_bytes < kBasePageBytes || (page_bytes & (page_bytes - 1)) != 0) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "page_bytes {} must be a power of two of at least {}", page_bytes, kBasePageBytes);
  }
  const auto start = reinterpret_cast<std::uintptr_t>(address);
  if (start % page_bytes != 0) {
    return fail(Errc::kInvalidArgument, 0, kWhere, "address {:#x} is not aligned to {} bytes",
                start, page_bytes);
  }
  if (sys::numa_ops().available() < 0) {
    return fail(Errc::kUnsupported, 0, kWhere,
                "cannot ask where pages are: no NUMA support (libnuma's numa_available() < 0)");
  }
  PageNodes result;
  result.page_bytes = page_bytes;
  result.pages = (bytes + page_bytes - 1) / page_bytes;
  std::vector<void*> pages;
  std::vector<int> status;
  pages.reserve(std::min<std::uint64_t>(result.pages, kPagesPerQuery));
  status.reserve(pages.capacity());
  for (std::uint64_t first = 0; first < result.pages; first += kPagesPerQuery) {
    const std::uint64_t count = std::min<std::uint64_t>(kPagesPerQuery, result.pages - first);
    pages.resize(count);
    status.assign(count, 0);
    for (std::uint64_t i = 0; i < count; ++i) {
      pages[i] = reinterpret_cast<void*>(start + (first + i) * page_bytes);
    }
    // nodes == nullptr: a query; nothing moves.
    if (sys::numa_ops().move_pages(0, count, pages.data(), nullptr, status.data(), 0) != 0) {
      const int err = errno;
      return fail_errno(err, kWhere, "move_pages cannot report where {} pages at {:#x} are", count,
                        start + first * page_bytes);
    }
    for (const int s : status) {
      if (s < 0 || s > kNodeMax) {
        ++result.pages_absent;  // -ENOENT: not present; -EFAULT: not mapped.
        continue;
      }
      const auto node = static_cast<std::size_t>(s);
      if (result.pages_on_node.size() <= node) result.pages_on_node.resize(node + 1, 0);
      ++result.pages_on_node[node];
    }
  }
  return result;
}

Result<HugePageInfo> huge_page_info(std::uint64_t page_bytes) {
  constexpr const char* kWhere = "huge pages";
  const std::string base =
      fmt::format("/sys/kernel/mm/hugepages/hugepages-{}kB/", page_bytes / 1024);
  HugePageInfo info;
  info.page_bytes = page_bytes;
  bool ok = false;
  info.pages_total = read_u64_file(base + "nr_hugepages", &ok);
  if (!ok || page_bytes % 1024 != 0) {
    return fail(Errc::kUnsupported, 0, kWhere,
                "this kernel has no {}-byte huge pages ({} missing): use the sizes listed in "
                "/sys/kernel/mm/hugepages",
                page_bytes, base);
  }
  info.pages_free = read_u64_file(base + "free_hugepages", &ok);
  info.pages_reserved = read_u64_file(base + "resv_hugepages", &ok);
  std::ifstream mounts("/proc/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string device;
    std::string mount_point;
    std::string type;
    if (!(fields >> device >> mount_point >> type) || type != "hugetlbfs") continue;
    struct statfs st {};
    if (sys::numa_ops().statfs(mount_point.c_str(), &st) != 0) continue;
    if (static_cast<std::uint64_t>(st.f_bsize) == page_bytes) {
      info.mount = mount_point;
      break;
    }
  }
  return info;
}

Result<std::string> huge_page_dir(std::uint64_t page_bytes) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): set-up path only.
  const char* env = std::getenv(kHugeDirEnv);
  if (env != nullptr && env[0] != '\0') return std::string(env);
  auto info = huge_page_info(page_bytes);
  if (!info) return unexpected(info.error());
  if (info->mount.empty()) {
    return fail(Errc::kUnsupported, 0, "huge pages",
                "no hugetlbfs of {} KiB pages is mounted: mount one (mount -t hugetlbfs -o "
                "pagesize={}K none /dev/hugepages) or set {} to a directory in one",
                page_bytes / 1024, page_bytes / 1024, kHugeDirEnv);
  }
  return info->mount + "/weft";
}

Result<std::uint64_t> directory_page_bytes(const std::string& dir) {
  struct statfs st {};
  if (sys::numa_ops().statfs(dir.c_str(), &st) != 0) {
    const int err = errno;
    return fail_errno(err, "page size", "cannot statfs {}", dir);
  }
  if (static_cast<long>(st.f_type) == kHugetlbfsMagic) {
    return static_cast<std::uint64_t>(st.f_bsize);
  }
  return kBasePageBytes;
}

}  // namespace weft
