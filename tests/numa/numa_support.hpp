// Helpers for the NUMA, placement and huge-page tests: a scoped override of the NUMA seam, and a
// private hugetlbfs mount with a few huge pages reserved for one test.
#pragma once

#include <cstdint>
#include <string>

#include "numa/numa_ops.hpp"

namespace weft::test {

// Restores the real NUMA seam on destruction.
class ScopedNumaOps {
 public:
  ScopedNumaOps() = default;
  ~ScopedNumaOps() { sys::numa_ops() = sys::default_numa_ops(); }
  ScopedNumaOps(const ScopedNumaOps&) = delete;
  ScopedNumaOps& operator=(const ScopedNumaOps&) = delete;
  sys::NumaOps& ops() { return sys::numa_ops(); }
};

// As root: mounts a private hugetlbfs of 2 MiB pages and raises vm.nr_hugepages so that `pages`
// more are free, holding a lock file so that test processes running in parallel take turns.
// Restores nr_hugepages and unmounts on destruction. ready() is false, with why() saying why, when
// this machine cannot do it (not root, no hugetlbfs, pages not reservable): the test then skips.
class HugePages {
 public:
  explicit HugePages(std::uint64_t pages);
  ~HugePages();
  HugePages(const HugePages&) = delete;
  HugePages& operator=(const HugePages&) = delete;

  [[nodiscard]] bool ready() const noexcept { return ready_; }
  [[nodiscard]] const std::string& why() const noexcept { return why_; }
  [[nodiscard]] const std::string& mount() const noexcept { return mount_; }
  // Sets nr_hugepages so that no huge page is free.
  void take_all_free();

 private:
  bool ready_ = false;
  std::string why_;
  std::string mount_;
  int lock_fd_ = -1;
  long old_total_ = -1;
};

// Reads a number from a /proc or /sys file, -1 on failure.
long read_long(const std::string& path);
// Writes a number into a /proc or /sys file; false on failure.
bool write_long(const std::string& path, long value);

}  // namespace weft::test
