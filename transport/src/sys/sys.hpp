// The one seam through which the control plane makes its system calls, so that tests can inject
// failures (ENOSPC from fallocate, EACCES from open, ENOMEM from mmap) without a real fault.
// The data path makes no system calls and does not use this.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>

#include "weft/export.hpp"

namespace weft::sys {

struct Ops {
  int (*open)(const char* path, int flags, mode_t mode);
  int (*close)(int fd);
  int (*fstat)(int fd, struct stat* st);
  int (*fchmod)(int fd, mode_t mode);
  int (*ftruncate)(int fd, off_t length);
  int (*fallocate)(int fd, off_t offset, off_t length);  // Returns an errno value, not -1.
  void* (*mmap)(void* address, std::size_t length, int prot, int flags, int fd, off_t offset);
  int (*munmap)(void* address, std::size_t length);
  int (*madvise)(void* address, std::size_t length, int advice);
  int (*link)(const char* from, const char* to);
  int (*unlink)(const char* path);
  int (*mkdir)(const char* path, mode_t mode);
  // Added for the journal (segment files); appended so existing initialisers keep their meaning.
  ssize_t (*pwrite)(int fd, const void* buffer, std::size_t count, off_t offset);
  int (*fdatasync)(int fd);
  int (*fsync)(int fd);
  int (*rename)(const char* from, const char* to);
};

// The table in use. Tests may overwrite entries and must restore them (see ScopedSysOverride in
// tests/sys). Not thread-safe to modify while channels are being created or opened.
WEFT_EXPORT Ops& ops() noexcept;
// The real system calls.
WEFT_EXPORT const Ops& default_ops() noexcept;

}  // namespace weft::sys
