// Placement of a channel's pages, for channel.cpp: the checks made before a channel is created,
// the memory policy held while its pages are allocated, the binding of its mapping, the check of
// where the pages landed, mlock, and the page size of a channel file.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "numa/numa_ops.hpp"
#include "weft/detail/layout.hpp"
#include "weft/error.hpp"
#include "weft/options.hpp"
#include "weft/result.hpp"

namespace weft::detail {

// A creator's placement request, checked.
struct PlacementPlan {
  int node = -1;  // -1: nothing requested.
  int cpu = -1;   // The CPU the node came from; -1 when numa_node was given.
  NumaPolicy policy = NumaPolicy::kBind;
  bool lock = false;
  [[nodiscard]] std::uint32_t flags() const noexcept;
};

// Checks numa_node / numa_cpu / numa_policy of `options` against this machine.
Result<PlacementPlan> plan_placement(const ChannelOptions& options, std::string_view name);

// Sets the calling thread's memory policy to one node while it lives, so that the pages that
// fallocate and prefault allocate come from that node, and restores the previous policy (the
// policy is per thread; nothing else in the process sees it).
class ThreadPolicyScope {
 public:
  ThreadPolicyScope() = default;
  ~ThreadPolicyScope() { restore(); }
  ThreadPolicyScope(const ThreadPolicyScope&) = delete;
  ThreadPolicyScope& operator=(const ThreadPolicyScope&) = delete;

  Result<void> apply(int node, NumaPolicy policy, std::string_view name);
  void restore() noexcept;

 private:
  bool active_ = false;
  int old_mode_ = 0;
  std::array<unsigned long, sys::kNodeMaskWords> old_mask_{};
};

// mbind()s [address, address + bytes) to `node`: pages faulted later (after swap-in, or by
// another process of a tmpfs file, whose shared policy this sets) follow it too.
Result<void> bind_mapping(void* address, std::size_t bytes, int node, NumaPolicy policy,
                          std::string_view name);

// Asks where the pages of the mapping are. Under kBind every page must be on `node`; a page
// elsewhere or absent fails with the counts. Under kPreferred nothing fails.
Result<void> verify_placement(const void* address, std::size_t bytes, std::uint64_t page_bytes,
                              int node, NumaPolicy policy, std::string_view name);

// mlock()s the mapping; a refusal names RLIMIT_MEMLOCK and how to raise it.
Result<void> lock_mapping(const void* address, std::size_t bytes, std::string_view name,
                          const std::string& path);

// The page size of the file behind `fd`: the huge page size on hugetlbfs, else 4096.
Result<std::uint64_t> file_page_bytes(int fd, const std::string& path);

// The error for a huge-page allocation that failed with `err` (ENOMEM, ENOSPC): how many pages
// were needed, how many are free, and the sysctl to set.
Error huge_pages_error(int err, std::uint64_t page_bytes, std::uint64_t bytes,
                       std::string_view name, const std::string& dir);

}  // namespace weft::detail
