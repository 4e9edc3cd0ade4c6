// Helpers for the journal tests: on-disk temporary directories, deterministic payloads, replay
// checks, byte surgery on segment files and fault hooks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "journal/io_seam.hpp"
#include "sys/sys.hpp"

namespace weft::test {

// A fresh directory on a disk file system ($WEFT_TEST_DISK_DIR, else /tmp), removed on
// destruction: for the paths that issue real fsyncs and O_DIRECT writes.
class DiskDir {
 public:
  DiskDir();
  ~DiskDir();
  DiskDir(const DiskDir&) = delete;
  DiskDir& operator=(const DiskDir&) = delete;
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// The payload of record `sequence`: its length (1..301 bytes, now and then up to 3000) and bytes
// are pure functions of seed and sequence; it starts with the sequence when long enough and never
// ends in a zero byte.
void payload_for(std::uint64_t seed, std::uint64_t sequence, std::vector<std::byte>& out);

// Replays `dir` from `from` and expects exactly records from..last with their payloads, then the
// end. Reports failures through gtest.
void expect_replay(const std::string& dir, std::uint64_t from, std::uint64_t last,
                   std::uint64_t seed);

void zero_range(const std::string& path, std::uint64_t offset, std::uint64_t count);
void flip_bit(const std::string& path, std::uint64_t offset, unsigned bit);
void write_file(const std::string& path, const std::vector<std::byte>& bytes);

// Installs a completion hook for the journal's I/O seam and removes it on destruction.
class FaultHook {
 public:
  using Fn = std::function<int(journal::IoOp, int, std::uint32_t)>;
  explicit FaultHook(Fn fn);
  ~FaultHook();
  FaultHook(const FaultHook&) = delete;
  FaultHook& operator=(const FaultHook&) = delete;
  [[nodiscard]] std::uint64_t writes() const noexcept { return writes_; }
  [[nodiscard]] std::uint64_t fsyncs() const noexcept { return fsyncs_; }
  // Completions of the requests that start segments (header, rename, directory fsync).
  [[nodiscard]] std::uint64_t segment_start_requests() const noexcept { return segment_starts_; }

 private:
  static int call(journal::IoOp op, int result, std::uint32_t requested, void* context);
  Fn fn_;
  std::uint64_t writes_ = 0;
  std::uint64_t fsyncs_ = 0;
  std::uint64_t segment_starts_ = 0;
};

// Makes fallocate fail with `err` until destroyed.
class ScopedFallocateFailure {
 public:
  explicit ScopedFallocateFailure(int err);
  ~ScopedFallocateFailure();
  ScopedFallocateFailure(const ScopedFallocateFailure&) = delete;
  ScopedFallocateFailure& operator=(const ScopedFallocateFailure&) = delete;

 private:
  sys::Ops saved_;
};

}  // namespace weft::test
