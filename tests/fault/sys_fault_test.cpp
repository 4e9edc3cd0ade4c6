// Fault injection through the sys seam (sys/sys.hpp): every system call of create and open goes
// through weft::sys::ops(), so each failure is injected without a real fault. Each failure must
// map to the code a caller can act on, name the file or directory, and leave no temporary file,
// no descriptor and no mapping behind.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "sys/sys.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using test::TempDir;

// Restores the real system calls when a test ends, whatever happened in it.
class ScopedSysOps {
 public:
  ScopedSysOps() : saved_(sys::ops()) {}
  ~ScopedSysOps() { sys::ops() = saved_; }
  ScopedSysOps(const ScopedSysOps&) = delete;
  ScopedSysOps& operator=(const ScopedSysOps&) = delete;

 private:
  sys::Ops saved_;
};

// What the fakes below inject. Set by each test before it calls into weft.
int g_errno = 0;      // The errno (or, for fallocate, the return value) to fail with.
int g_fail_call = 1;  // Fail the n-th call of the faked operation (1-based); the rest pass.
int g_calls = 0;      // Calls of the faked operation so far.

void inject(int err, int fail_call = 1) {
  g_errno = err;
  g_fail_call = fail_call;
  g_calls = 0;
}
bool this_call_fails() { return ++g_calls == g_fail_call; }

// Sets errno to `err` and returns `value`: how a failing system call reports.
template <class T>
T fail_with(int err, T value) {
  errno = err;
  return value;
}

int fake_open(const char* path, int flags, mode_t mode) {
  if (this_call_fails()) {
    errno = g_errno;
    return -1;
  }
  return sys::default_ops().open(path, flags, mode);
}
int fake_fallocate(int fd, off_t offset, off_t length) {
  if (this_call_fails()) return g_errno;
  return sys::default_ops().fallocate(fd, offset, length);
}
int fake_ftruncate(int fd, off_t length) {
  if (this_call_fails()) {
    errno = g_errno;
    return -1;
  }
  return sys::default_ops().ftruncate(fd, length);
}
int unsupported_fallocate(int, off_t, off_t) { return EOPNOTSUPP; }
int einval_fallocate(int, off_t, off_t) { return EINVAL; }
void* fake_mmap(void* address, std::size_t length, int prot, int flags, int fd, off_t offset) {
  if (this_call_fails()) {
    errno = g_errno;
    return MAP_FAILED;
  }
  return sys::default_ops().mmap(address, length, prot, flags, fd, offset);
}
int fake_link(const char* from, const char* to) {
  if (this_call_fails()) {
    errno = g_errno;
    return -1;
  }
  return sys::default_ops().link(from, to);
}
int fake_fchmod(int fd, mode_t mode) {
  if (this_call_fails()) {
    errno = g_errno;
    return -1;
  }
  return sys::default_ops().fchmod(fd, mode);
}
int fake_mkdir(const char* path, mode_t mode) {
  if (this_call_fails()) {
    errno = g_errno;
    return -1;
  }
  return sys::default_ops().mkdir(path, mode);
}
int fake_fstat(int fd, struct stat* st) {
  if (this_call_fails()) {
    errno = g_errno;
    return -1;
  }
  return sys::default_ops().fstat(fd, st);
}
int fake_unlink(const char* path) {
  if (this_call_fails()) {
    errno = g_errno;
    return -1;
  }
  return sys::default_ops().unlink(path);
}
int failing_madvise(void*, std::size_t, int) {
  errno = EINVAL;
  return -1;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class SysFaultTest : public ::testing::Test {
 protected:
  void SetUp() override { fds_before_ = test::open_fd_count(); }

  // The channel directory holds exactly `names`, and no descriptor or mapping leaked.
  void expect_clean(const std::vector<std::string>& names = {}) {
    EXPECT_EQ(dir_.list(), names) << "a temporary or partial file was left behind";
    EXPECT_EQ(test::open_fd_count(), fds_before_) << "a file descriptor leaked";
    EXPECT_FALSE(test::maps_mention(dir_.path())) << "a mapping leaked";
  }

  // Expects `result` to have failed with `code`, `err`, and a message containing `part`.
  template <class T>
  void expect_error(const Result<T>& result, Errc code, int err, const std::string& part) {
    ASSERT_FALSE(result) << "the injected failure was ignored";
    EXPECT_EQ(result.error().code, code) << result.error().message();
    EXPECT_EQ(result.error().sys_errno, err) << result.error().message();
    EXPECT_TRUE(contains(result.error().message(), part))
        << "expected '" << part << "' in: " << result.error().message();
  }

  ScopedSysOps restore_;
  TempDir dir_;
  std::size_t fds_before_ = 0;
};

TEST_F(SysFaultTest, FallocateEnospcIsNoSpaceNamingTheDirectory) {
  sys::ops().fallocate = fake_fallocate;
  inject(ENOSPC);
  auto channel = Channel::create("full", dir_.channel_options());
  expect_error(channel, Errc::kNoSpace, ENOSPC, dir_.path());
  EXPECT_TRUE(contains(channel.error().message(), "No space left")) << channel.error().message();
  expect_clean();
}

TEST_F(SysFaultTest, FallocateEdquotIsNoSpace) {
  sys::ops().fallocate = fake_fallocate;
  inject(EDQUOT);
  expect_error(Channel::create("quota", dir_.channel_options()), Errc::kNoSpace, EDQUOT,
               dir_.path());
  expect_clean();
}

TEST_F(SysFaultTest, UnsupportedFallocateFallsBackToFtruncate) {
  for (auto* fallocate : {&unsupported_fallocate, &einval_fallocate}) {
    sys::ops().fallocate = fallocate;
    const std::string name = fallocate == &unsupported_fallocate ? "eopnotsupp" : "einval";
    auto channel = Channel::create(name, dir_.channel_options(8192));
    ASSERT_TRUE(channel) << channel.error().message();
    EXPECT_EQ(test::file_size(dir_.file(name)), detail::kHeaderBytes + 8192);
    EXPECT_TRUE(Channel::open(name, dir_.open_options()));
  }
}

TEST_F(SysFaultTest, FtruncateFailureAfterTheFallbackLeavesNothing) {
  sys::ops().fallocate = unsupported_fallocate;
  sys::ops().ftruncate = fake_ftruncate;
  inject(EFBIG);
  expect_error(Channel::create("big", dir_.channel_options()), Errc::kNoSpace, EFBIG, ".tmp");
  expect_clean();
}

TEST_F(SysFaultTest, OpenEaccesOrEpermOnCreateIsPermissionDenied) {
  sys::ops().open = fake_open;
  for (const int err : {EACCES, EPERM}) {
    inject(err);
    auto channel = Channel::create("denied", dir_.channel_options());
    expect_error(channel, Errc::kPermissionDenied, err, dir_.path());
    expect_clean();
  }
}

TEST_F(SysFaultTest, OpenEaccesOrEpermOnOpenIsPermissionDenied) {
  ASSERT_TRUE(Channel::create("denied", dir_.channel_options()));
  sys::ops().open = fake_open;
  for (const int err : {EACCES, EPERM}) {
    inject(err);
    auto channel = Channel::open("denied", dir_.open_options());
    expect_error(channel, Errc::kPermissionDenied, err, dir_.file("denied"));
    EXPECT_TRUE(contains(channel.error().message(), "permission")) << channel.error().message();
    // The roles report the same.
    inject(err);
    expect_error(SpscConsumer::open("denied", dir_.open_options()), Errc::kPermissionDenied, err,
                 dir_.file("denied"));
    expect_clean({"denied"});
  }
}

TEST_F(SysFaultTest, OpenEmfileIsAnIoErrorWithTheErrno) {
  sys::ops().open = fake_open;
  inject(EMFILE);
  auto channel = Channel::create("fds", dir_.channel_options());
  expect_error(channel, Errc::kIoError, EMFILE, dir_.path());
  EXPECT_TRUE(contains(channel.error().message(), "errno " + std::to_string(EMFILE)))
      << channel.error().message();
  expect_clean();
}

TEST_F(SysFaultTest, MmapEnomemOnCreateIsNoMemory) {
  sys::ops().mmap = fake_mmap;
  inject(ENOMEM);
  expect_error(Channel::create("nomem", dir_.channel_options()), Errc::kNoMemory, ENOMEM, "map");
  expect_clean();
}

TEST_F(SysFaultTest, MmapEnomemOnOpenIsNoMemoryForTheHeaderAndTheRing) {
  ASSERT_TRUE(Channel::create("nomem", dir_.channel_options()));
  sys::ops().mmap = fake_mmap;
  // Open maps the header alone first, then the whole file: fail each in turn.
  for (const int fail_call : {1, 2}) {
    SCOPED_TRACE("failing mmap call " + std::to_string(fail_call));
    inject(ENOMEM, fail_call);
    auto channel = Channel::open("nomem", dir_.open_options());
    expect_error(channel, Errc::kNoMemory, ENOMEM, dir_.file("nomem"));
    EXPECT_EQ(g_calls, fail_call);
    expect_clean({"nomem"});
  }
}

TEST_F(SysFaultTest, LinkEexistIsAlreadyExists) {
  sys::ops().link = fake_link;
  inject(EEXIST);
  auto channel = Channel::create("raced", dir_.channel_options());
  expect_error(channel, Errc::kAlreadyExists, EEXIST, dir_.file("raced"));
  expect_clean();
}

TEST_F(SysFaultTest, LinkEioIsAnIoError) {
  sys::ops().link = fake_link;
  inject(EIO);
  expect_error(Channel::create("io", dir_.channel_options()), Errc::kIoError, EIO, dir_.file("io"));
  expect_clean();
}

TEST_F(SysFaultTest, FchmodFailureLeavesNothing) {
  sys::ops().fchmod = fake_fchmod;
  inject(EPERM);
  expect_error(Channel::create("mode", dir_.channel_options()), Errc::kPermissionDenied, EPERM,
               "mode");
  expect_clean();
}

TEST_F(SysFaultTest, MkdirEaccesIsPermissionDeniedNamingTheDirectory) {
  sys::ops().mkdir = fake_mkdir;
  inject(EACCES);
  ChannelOptions options = dir_.channel_options();
  options.dir = dir_.file("sub");
  auto channel = Channel::create("inner", options);
  expect_error(channel, Errc::kPermissionDenied, EACCES, dir_.file("sub"));
  EXPECT_TRUE(contains(channel.error().message(), "WEFT_SHM_DIR")) << channel.error().message();
  expect_clean();
}

TEST_F(SysFaultTest, FstatFailureOnOpenIsAnIoError) {
  ASSERT_TRUE(Channel::create("stat", dir_.channel_options()));
  sys::ops().fstat = fake_fstat;
  inject(EIO);
  expect_error(Channel::open("stat", dir_.open_options()), Errc::kIoError, EIO, dir_.file("stat"));
  expect_clean({"stat"});
}

TEST_F(SysFaultTest, UnlinkEaccesIsPermissionDenied) {
  ASSERT_TRUE(Channel::create("keep", dir_.channel_options()));
  sys::ops().unlink = fake_unlink;
  inject(EACCES);
  expect_error(Channel::unlink("keep", dir_.path()), Errc::kPermissionDenied, EACCES,
               dir_.file("keep"));
  EXPECT_EQ(dir_.list(), std::vector<std::string>{"keep"});
}

TEST_F(SysFaultTest, FailedMadviseFallsBackToTouchingEveryPage) {
  sys::ops().madvise = failing_madvise;
  auto producer = SpscProducer::create("touch", dir_.channel_options(1 << 16));
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = SpscConsumer::open("touch", dir_.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  const std::byte payload[4] = {};
  ASSERT_EQ(producer->try_send(payload), SendStatus::kOk);
  EXPECT_EQ(consumer->poll([](std::span<const std::byte>) {}).count, 1U);
}

TEST_F(SysFaultTest, EveryFailingCallOfCreateCleansUp) {
  // Fail each system call of a create in turn, whatever it is, and check the directory after
  // each: the n-th call through the seam fails with EIO until a create makes fewer calls.
  static int counted = 0;
  static int fail_at = 0;
  struct Counting {
    static bool fails() { return ++counted == fail_at; }
    static int open(const char* p, int f, mode_t m) {
      if (fails()) return fail_with(EIO, -1);
      return sys::default_ops().open(p, f, m);
    }
    static int fchmod(int fd, mode_t m) {
      if (fails()) return fail_with(EIO, -1);
      return sys::default_ops().fchmod(fd, m);
    }
    static int fallocate(int fd, off_t o, off_t l) {
      if (fails()) return EIO;
      return sys::default_ops().fallocate(fd, o, l);
    }
    static void* mmap(void* a, std::size_t l, int p, int f, int fd, off_t o) {
      if (fails()) return fail_with(EIO, MAP_FAILED);
      return sys::default_ops().mmap(a, l, p, f, fd, o);
    }
    static int link(const char* from, const char* to) {
      if (fails()) return fail_with(EIO, -1);
      return sys::default_ops().link(from, to);
    }
    static int mkdir(const char* p, mode_t m) {
      if (fails()) return fail_with(EIO, -1);
      return sys::default_ops().mkdir(p, m);
    }
  };
  sys::ops().open = Counting::open;
  sys::ops().fchmod = Counting::fchmod;
  sys::ops().fallocate = Counting::fallocate;
  sys::ops().mmap = Counting::mmap;
  sys::ops().link = Counting::link;
  sys::ops().mkdir = Counting::mkdir;
  int failures = 0;
  for (fail_at = 1; fail_at < 20; ++fail_at) {
    counted = 0;
    auto channel = Channel::create("each", dir_.channel_options());
    if (channel) break;  // No call left to fail.
    ++failures;
    EXPECT_EQ(channel.error().sys_errno, EIO) << channel.error().message();
    expect_clean();
  }
  EXPECT_GE(failures, 5) << "mkdir, open, fchmod, fallocate, mmap and link can each fail";
  EXPECT_EQ(dir_.list(), std::vector<std::string>{"each"});
}

TEST(SysOpsTest, GuardRestoresTheRealSystemCalls) {
  {
    ScopedSysOps guard;
    sys::ops().open = fake_open;
    sys::ops().mmap = fake_mmap;
  }
  EXPECT_EQ(sys::ops().open, sys::default_ops().open);
  EXPECT_EQ(sys::ops().mmap, sys::default_ops().mmap);
}

}  // namespace
}  // namespace weft
