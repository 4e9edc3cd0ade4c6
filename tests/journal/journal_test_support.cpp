#include "journal_test_support.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/journal.hpp"

namespace weft::test {

DiskDir::DiskDir() {
  const char* base = std::getenv("WEFT_TEST_DISK_DIR");
  std::string pattern =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/weft-journal-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << pattern << ": " << std::strerror(errno);
  }
  path_ = pattern;
}

DiskDir::~DiskDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void payload_for(std::uint64_t seed, std::uint64_t sequence, std::vector<std::byte>& out) {
  const std::uint64_t key = mix64(seed, sequence);
  std::size_t length = key % 301;
  if (key % 17 == 0) length = 300 + (key >> 20) % 2700;
  out.resize(length);
  fill_pattern(out, key);
  if (length >= sizeof sequence) std::memcpy(out.data(), &sequence, sizeof sequence);
  // Never ends in a zero byte: a test that zeroes a record's last byte must change it.
  out.push_back(std::byte{0x5a});
}

void expect_replay(const std::string& dir, std::uint64_t from, std::uint64_t last,
                   std::uint64_t seed) {
  auto reader = JournalReader::open(dir, from);
  ASSERT_TRUE(reader) << reader.error().message();
  JournalRecord record;
  std::vector<std::byte> expected;
  for (std::uint64_t sequence = from; sequence <= last; ++sequence) {
    ASSERT_EQ(reader->next(record), ReadStatus::kRecord) << dir << ": record " << sequence;
    ASSERT_EQ(record.sequence, sequence);
    payload_for(seed, sequence, expected);
    ASSERT_EQ(record.payload.size(), expected.size()) << "record " << sequence;
    ASSERT_TRUE(expected.empty() ||
                std::memcmp(record.payload.data(), expected.data(), expected.size()) == 0)
        << "record " << sequence;
  }
  ASSERT_EQ(reader->next(record), ReadStatus::kEnd) << dir << ": more than " << last;
}

void zero_range(const std::string& path, std::uint64_t offset, std::uint64_t count) {
  const std::vector<std::byte> zeros(count);
  pwrite_file(path, offset, zeros.data(), zeros.size());
}

void flip_bit(const std::string& path, std::uint64_t offset, unsigned bit) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  byte = static_cast<unsigned char>(byte ^ (1u << bit));
  ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ::close(fd);
  pwrite_file(path, 0, bytes.data(), bytes.size());
}

FaultHook::FaultHook(Fn fn) : fn_(std::move(fn)) {
  journal::faults().completion = &FaultHook::call;
  journal::faults().context = this;
}

FaultHook::~FaultHook() { journal::faults() = journal::Faults{}; }

int FaultHook::call(journal::IoOp op, int result, std::uint32_t requested, void* context) {
  auto* self = static_cast<FaultHook*>(context);
  if (op == journal::IoOp::kWrite) {
    ++self->writes_;
  } else if (op == journal::IoOp::kFsync) {
    ++self->fsyncs_;
  } else {
    ++self->segment_starts_;
  }
  return self->fn_(op, result, requested);
}

namespace {
int g_fallocate_errno = 0;
int failing_fallocate(int /*fd*/, off_t /*offset*/, off_t /*length*/) { return g_fallocate_errno; }
}  // namespace

ScopedFallocateFailure::ScopedFallocateFailure(int err) : saved_(sys::ops()) {
  g_fallocate_errno = err;
  sys::ops().fallocate = failing_fallocate;
}

ScopedFallocateFailure::~ScopedFallocateFailure() { sys::ops() = saved_; }

}  // namespace weft::test
