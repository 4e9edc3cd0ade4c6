#include "numa/placement.hpp"

#include <numaif.h>
#include <sys/resource.h>
#include <sys/statfs.h>

#include <algorithm>
#include <cerrno>

#include "error_util.hpp"
#include "weft/numa.hpp"

namespace weft::detail {
namespace {

constexpr long kHugetlbfsMagic = 0x958458f6;

std::array<unsigned long, sys::kNodeMaskWords> mask_of(int node) {
  std::array<unsigned long, sys::kNodeMaskWords> mask{};
  const auto bits = 8 * sizeof(unsigned long);
  const auto index = static_cast<std::size_t>(node);
  mask[index / bits] = 1UL << (index % bits);
  return mask;
}

int mode_of(NumaPolicy policy) { return policy == NumaPolicy::kBind ? MPOL_BIND : MPOL_PREFERRED; }

std::string limit_text(rlim_t value) {
  return value == RLIM_INFINITY ? std::string("unlimited") : fmt::format("{} bytes", value);
}

}  // namespace

std::uint32_t PlacementPlan::flags() const noexcept {
  std::uint32_t bits = 0;
  if (node >= 0) bits |= kPlacementNode;
  if (node >= 0 && policy == NumaPolicy::kPreferred) bits |= kPlacementPreferred;
  if (cpu >= 0) bits |= kPlacementViaCpu;
  if (lock) bits |= kPlacementLock;
  return bits;
}

Result<PlacementPlan> plan_placement(const ChannelOptions& options, std::string_view name) {
  constexpr const char* kWhere = "channel create";
  PlacementPlan plan;
  plan.lock = options.lock_memory;
  plan.policy = options.numa_policy;
  if (options.numa_policy != NumaPolicy::kBind && options.numa_policy != NumaPolicy::kPreferred) {
    return fail(Errc::kInvalidArgument, 0, kWhere, "channel '{}': unknown numa_policy {}", name,
                static_cast<std::uint32_t>(options.numa_policy));
  }
  if (options.numa_node >= 0 && options.numa_cpu >= 0) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': set numa_node ({}) or numa_cpu ({}), not both", name,
                options.numa_node, options.numa_cpu);
  }
  if (options.numa_node < -1 || options.numa_cpu < -1) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': numa_node {} / numa_cpu {}: use -1 for none, else a node or CPU "
                "number",
                name, options.numa_node, options.numa_cpu);
  }
  if (options.numa_cpu >= 0) {
    auto node = numa_node_of_cpu(options.numa_cpu);
    if (!node) {
      Error e = node.error();
      e.where = kWhere;
      return unexpected(e);
    }
    plan.cpu = options.numa_cpu;
    plan.node = *node;
  } else {
    plan.node = options.numa_node;
  }
  if (plan.node >= 0) {
    if (auto ok = check_numa_node(plan.node); !ok) {
      Error e = ok.error();
      e.where = kWhere;
      return unexpected(e);
    }
  }
  return plan;
}

Result<void> ThreadPolicyScope::apply(int node, NumaPolicy policy, std::string_view name) {
  constexpr const char* kWhere = "channel create";
  if (sys::numa_ops().get_mempolicy(&old_mode_, old_mask_.data(), sys::kNodeMaskMaxnode, nullptr,
                                    0) != 0) {
    const int err = errno;
    return fail_errno(err, kWhere, "channel '{}': cannot read this thread's memory policy", name);
  }
  const auto mask = mask_of(node);
  if (sys::numa_ops().set_mempolicy(mode_of(policy), mask.data(), sys::kNodeMaskMaxnode) != 0) {
    const int err = errno;
    return fail_errno(err, kWhere, "channel '{}': cannot set the memory policy to node {}", name,
                      node);
  }
  active_ = true;
  return {};
}

void ThreadPolicyScope::restore() noexcept {
  if (!active_) return;
  active_ = false;
  // MPOL_DEFAULT takes no mask; any other mode gets the mask it had.
  const bool has_mask = (old_mode_ & 0xff) != MPOL_DEFAULT;
  sys::numa_ops().set_mempolicy(old_mode_, has_mask ? old_mask_.data() : nullptr,
                                has_mask ? sys::kNodeMaskMaxnode : 0);
}

Result<void> bind_mapping(void* address, std::size_t bytes, int node, NumaPolicy policy,
                          std::string_view name) {
  const auto mask = mask_of(node);
  if (sys::numa_ops().mbind(address, bytes, mode_of(policy), mask.data(), sys::kNodeMaskMaxnode,
                            0) != 0) {
    const int err = errno;
    return fail_errno(err, "channel create", "channel '{}': cannot bind its memory to node {}",
                      name, node);
  }
  return {};
}

Result<void> verify_placement(const void* address, std::size_t bytes, std::uint64_t page_bytes,
                              int node, NumaPolicy policy, std::string_view name) {
  auto where = page_nodes(address, bytes, page_bytes);
  if (!where) {
    Error e = where.error();
    e.where = "channel create";
    return unexpected(e);
  }
  if (policy != NumaPolicy::kBind) return {};
  const std::uint64_t off = where->pages_off_node(node);
  if (off != 0 || where->pages_absent != 0) {
    return fail(Errc::kIoError, 0, "channel create",
                "channel '{}': bound to node {} but {} of {} pages are on other nodes (main "
                "node {}) and {} absent after prefault",
                name, node, off, where->pages, where->main_node(), where->pages_absent);
  }
  return {};
}

Result<void> lock_mapping(const void* address, std::size_t bytes, std::string_view name,
                          const std::string& path) {
  if (sys::numa_ops().mlock(address, bytes) == 0) return {};
  const int err = errno;
  struct rlimit limit {};
  getrlimit(RLIMIT_MEMLOCK, &limit);
  if (err == ENOMEM || err == EPERM || err == EAGAIN) {
    return fail(Errc::kPermissionDenied, err, "channel lock",
                "channel '{}': cannot mlock {} bytes of {}: RLIMIT_MEMLOCK is {}: raise it "
                "(ulimit -l, LimitMEMLOCK=, limits.conf memlock) or grant CAP_IPC_LOCK",
                name, bytes, path, limit_text(limit.rlim_cur));
  }
  return fail_errno(err, "channel lock", "channel '{}': cannot mlock {} bytes of {}", name, bytes,
                    path);
}

Result<std::uint64_t> file_page_bytes(int fd, const std::string& path) {
  struct statfs st {};
  if (sys::numa_ops().fstatfs(fd, &st) != 0) {
    const int err = errno;
    return fail_errno(err, "channel open", "cannot statfs {}", path);
  }
  if (static_cast<long>(st.f_type) == kHugetlbfsMagic) {
    return static_cast<std::uint64_t>(st.f_bsize);
  }
  return kBasePageBytes;
}

Error huge_pages_error(int err, std::uint64_t page_bytes, std::uint64_t bytes,
                       std::string_view name, const std::string& dir) {
  const std::uint64_t needed = (bytes + page_bytes - 1) / page_bytes;
  auto info = huge_page_info(page_bytes);
  const std::uint64_t available = info ? info->pages_available() : 0;
  const std::uint64_t total = info ? info->pages_total : 0;
  return make_error(Errc::kNoMemory, err, "channel create",
                    "channel '{}': needs {} huge pages of {} KiB in {}; {} of {} reserved are "
                    "free: reserve more (sysctl -w vm.nr_hugepages={}) or check the mount's size=",
                    name, needed, page_bytes / 1024, dir, available, total,
                    total + needed - std::min(needed, available));
}

}  // namespace weft::detail
