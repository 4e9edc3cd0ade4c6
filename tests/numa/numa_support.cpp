#include "numa/numa_support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace weft::test {
namespace {
constexpr const char* kNrHugepages = "/proc/sys/vm/nr_hugepages";
constexpr const char* kFreeHugepages = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
constexpr const char* kLockPath = "/tmp/weft-hugepage-tests.lock";
// Removes everything below `dir` (and `dir` itself when `self`).
void remove_tree(const std::string& dir, bool self) {
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* entry = readdir(d)) {
      const std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      const std::string path = dir + "/" + name;
      if (entry->d_type == DT_DIR) {
        remove_tree(path, true);
      } else {
        ::unlink(path.c_str());
      }
    }
    closedir(d);
  }
  if (self) rmdir(dir.c_str());
}

}  // namespace

long read_long(const std::string& path) {
  std::ifstream in(path);
  long value = -1;
  if (!(in >> value)) return -1;
  return value;
}

bool write_long(const std::string& path, long value) {
  std::ofstream out(path);
  out << value << '\n';
  out.flush();
  return static_cast<bool>(out);
}

HugePages::HugePages(std::uint64_t pages) {
  if (geteuid() != 0) {
    why_ = "not root: cannot mount hugetlbfs or reserve huge pages";
    return;
  }
  lock_fd_ = ::open(kLockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0 || flock(lock_fd_, LOCK_EX) != 0) {
    why_ = std::string("cannot lock ") + kLockPath + ": " + std::strerror(errno);
    return;
  }
  old_total_ = read_long(kNrHugepages);
  const long free_now = read_long(kFreeHugepages);
  if (old_total_ < 0 || free_now < 0) {
    why_ = "this kernel has no 2 MiB huge pages";
    return;
  }
  const long wanted = old_total_ + static_cast<long>(pages);
  if (!write_long(kNrHugepages, wanted) ||
      read_long(kFreeHugepages) < free_now + static_cast<long>(pages)) {
    why_ = "cannot reserve " + std::to_string(pages) + " huge pages (vm.nr_hugepages)";
    return;
  }
  char pattern[] = "/tmp/weft-hugetlbfs-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    why_ = std::string("mkdtemp: ") + std::strerror(errno);
    return;
  }
  if (::mount("none", pattern, "hugetlbfs", 0, "pagesize=2M") != 0) {
    why_ = std::string("cannot mount hugetlbfs: ") + std::strerror(errno);
    rmdir(pattern);
    return;
  }
  mount_ = pattern;
  ready_ = true;
}

void HugePages::take_all_free() {
  const long total = read_long(kNrHugepages);
  const long free_now = read_long(kFreeHugepages);
  write_long(kNrHugepages, total - free_now);
}

HugePages::~HugePages() {
  if (!mount_.empty()) {
    // Files left by a failed test hold pages; remove them so the pool can shrink back.
    remove_tree(mount_, false);
    if (::umount(mount_.c_str()) != 0) {
      std::fprintf(stderr, "umount %s: %s\n", mount_.c_str(), std::strerror(errno));
    }
    rmdir(mount_.c_str());
  }
  if (old_total_ >= 0) write_long(kNrHugepages, old_total_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

}  // namespace weft::test
