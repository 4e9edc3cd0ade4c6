#include "sys/sys.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

namespace weft::sys {
namespace {

int sys_open(const char* path, int flags, mode_t mode) { return ::open(path, flags, mode); }
int sys_fallocate(int fd, off_t offset, off_t length) {
  return ::posix_fallocate(fd, offset, length);
}

constexpr Ops kDefaultOps{
    sys_open,  ::close, ::fstat,  ::fchmod, ::ftruncate, sys_fallocate, ::mmap,  ::munmap,
    ::madvise, ::link,  ::unlink, ::mkdir,  ::pwrite,    ::fdatasync,   ::fsync, ::rename,
};

Ops g_ops = kDefaultOps;

}  // namespace

Ops& ops() noexcept { return g_ops; }
const Ops& default_ops() noexcept { return kDefaultOps; }

}  // namespace weft::sys
