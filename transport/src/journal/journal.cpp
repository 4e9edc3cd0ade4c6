// The journal's write path: framing into registered staging buffers, flushes through io_uring
// (write + linked fdatasync, or O_DIRECT|O_DSYNC), the durable position over the contiguous prefix
// of completed flushes, segment roll-over with pre-zeroed or recycled spares, recovery on open and
// retention. The format is in format.hpp and docs/journal.md.
#include "weft/journal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "error_util.hpp"
#include "journal/format.hpp"
#include "journal/io_seam.hpp"
#include "sys/sys.hpp"
#include "weft/detail/bell.hpp"

namespace weft {

namespace journal {
Faults& faults() noexcept {
  static Faults hooks;
  return hooks;
}
}  // namespace journal

using detail::fail;
using detail::fail_errno;
using detail::make_error;
using journal::kBlockBytes;
using journal::kSegmentHeaderBytes;
using journal::RecordHeader;
using journal::SegmentHeader;

const char* journal_sync_name(JournalSync sync) noexcept {
  switch (sync) {
    case JournalSync::kAuto:
      return "auto";
    case JournalSync::kWriteFdatasync:
      return "write+fdatasync";
    case JournalSync::kDirectDsync:
      return "O_DIRECT|O_DSYNC";
    case JournalSync::kNone:
      return "none";
  }
  return "unknown";
}

namespace {

constexpr std::uint32_t kOpsMax = 64;               // Flushes in flight at most.
constexpr std::uint64_t kZeroChunkBytes = 1 << 20;  // Pre-zeroing writes this much at a time.
constexpr int kSubmitRetriesMax = 1000;             // io_uring_submit -EAGAIN/-EBUSY retries.
// How long closing a journal waits for the requests it submitted (a failed journal stops waiting
// for its flushes, but the kernel still runs them).
constexpr std::int64_t kQuiesceNsMax = 30'000'000'000;

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t realtime_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::uint64_t random_epoch() {
  static thread_local std::mt19937_64 generator{std::random_device{}() ^
                                                static_cast<std::uint64_t>(monotonic_ns())};
  std::uint64_t epoch = 0;
  while (epoch == 0) epoch = generator();
  return epoch;
}

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() noexcept {
    if (fd_ >= 0) sys::ops().close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int get() const noexcept { return fd_; }

 private:
  int fd_ = -1;
};

// Whether the file system of `path` takes O_DIRECT writes of whole 4 KiB blocks from 4 KiB-aligned
// memory, as JournalSync::kDirectDsync issues them. statx reports the alignment where the kernel
// knows it (6.1 and later); otherwise an O_DIRECT open says whether the file system has it at all.
bool direct_io_supported(const std::string& path) {
#ifdef STATX_DIOALIGN
  struct statx stx {};
  if (statx(AT_FDCWD, path.c_str(), 0, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) != 0) {
    return stx.stx_dio_offset_align != 0 && stx.stx_dio_mem_align != 0 &&
           kBlockBytes % stx.stx_dio_offset_align == 0 && kBlockBytes % stx.stx_dio_mem_align == 0;
  }
#endif
  return Fd(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC)).get() >= 0;
}

Result<void> write_all(int fd, const void* bytes, std::uint64_t count, std::uint64_t offset,
                       const std::string& path) {
  const auto* cursor = static_cast<const std::byte*>(bytes);
  while (count > 0) {
    const ssize_t written =
        sys::ops().pwrite(fd, cursor, static_cast<std::size_t>(count), static_cast<off_t>(offset));
    if (written < 0) {
      if (errno == EINTR) continue;
      return fail_errno(errno, "journal write", "{}: writing {} bytes at offset {} failed", path,
                        count, offset);
    }
    if (written == 0) {
      return fail(Errc::kIoError, EIO, "journal write", "{}: pwrite wrote nothing at offset {}",
                  path, offset);
    }
    cursor += written;
    count -= static_cast<std::uint64_t>(written);
    offset += static_cast<std::uint64_t>(written);
  }
  return {};
}

Result<void> sync_fd(int fd, bool data_only, const std::string& path) {
  const int rc = data_only ? sys::ops().fdatasync(fd) : sys::ops().fsync(fd);
  if (rc != 0) {
    return fail_errno(errno, "journal fsync",
                      "{}: fsync failed; nothing written since the last "
                      "successful fsync is durable",
                      path);
  }
  return {};
}

// A memory mapping of a whole file, read-only.
struct Mapped {
  const std::byte* data = nullptr;
  std::size_t size = 0;
  Mapped() = default;
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  Mapped(Mapped&& other) noexcept
      : data(std::exchange(other.data, nullptr)), size(std::exchange(other.size, 0)) {}
  ~Mapped() {
    if (data != nullptr) sys::ops().munmap(const_cast<std::byte*>(data), size);
  }
};

Result<Mapped> map_file(const std::string& path) {
  Fd fd(sys::ops().open(path.c_str(), O_RDONLY | O_CLOEXEC, 0));
  if (fd.get() < 0) return fail_errno(errno, "journal open", "{}: cannot open segment", path);
  struct stat st {};
  if (sys::ops().fstat(fd.get(), &st) != 0) {
    return fail_errno(errno, "journal open", "{}: fstat failed", path);
  }
  Mapped mapped;
  if (st.st_size <= 0) return mapped;
  void* address = sys::ops().mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ,
                                  MAP_SHARED, fd.get(), 0);
  if (address == MAP_FAILED) {
    return fail_errno(errno, "journal open", "{}: mmap of {} bytes failed", path, st.st_size);
  }
  mapped.data = static_cast<const std::byte*>(address);
  mapped.size = static_cast<std::size_t>(st.st_size);
  return mapped;
}

struct DirEntries {
  std::vector<std::pair<std::uint64_t, std::string>> segments;  // (index, name), sorted.
  std::vector<std::string> spares;
};

Result<DirEntries> list_dir(const std::string& dir) {
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) {
    return fail_errno(errno, "journal open", "{}: cannot list the journal directory", dir);
  }
  DirEntries entries;
  // readdir is safe on a stream no other thread reads (glibc; POSIX 2024).
  while (const dirent* entry = readdir(handle)) {  // NOLINT(concurrency-mt-unsafe)
    std::uint64_t index = 0;
    if (journal::parse_segment_file_name(entry->d_name, &index)) {
      entries.segments.emplace_back(index, entry->d_name);
    } else {
      const std::size_t length = std::strlen(entry->d_name);
      const std::size_t suffix = std::strlen(journal::kSpareSuffix);
      if (length > suffix &&
          std::strcmp(entry->d_name + length - suffix, journal::kSpareSuffix) == 0) {
        entries.spares.emplace_back(entry->d_name);
      }
    }
  }
  closedir(handle);
  std::sort(entries.segments.begin(), entries.segments.end());
  std::sort(entries.spares.begin(), entries.spares.end());
  return entries;
}

std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

// Scans every segment of `dir`.
struct DirScan {
  journal::ScanResult scan;
  std::vector<std::string> spares;
};

Result<DirScan> scan_dir(const std::string& dir) {
  auto entries = list_dir(dir);
  if (!entries) return unexpected(entries.error());
  std::vector<std::string> paths;
  std::vector<Mapped> maps;
  std::vector<std::span<const std::byte>> spans;
  for (const auto& [index, name] : entries->segments) {
    paths.push_back(join(dir, name));
    auto mapped = map_file(paths.back());
    if (!mapped) return unexpected(mapped.error());
    spans.emplace_back(mapped->data, mapped->size);
    maps.push_back(std::move(*mapped));
  }
  DirScan out{journal::scan_segments(paths, spans), std::move(entries->spares)};
  for (std::size_t i = 0; i < out.scan.segments.size(); ++i) {
    struct stat st {};
    if (::stat(paths[i].c_str(), &st) == 0) {
      out.scan.segments[i].modified_unix_ns =
          std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
    }
  }
  return out;
}

}  // namespace

// ---- Journal ------------------------------------------------------------------------------------

// The requests behind one entry of the in-flight window: a flush's write and its fdatasync, or the
// chain that starts a segment (its header block, made durable, then the rename from the spare's
// name to the segment's, then an fsync of the directory).
enum class IoOpKind : std::uint32_t {
  kWrite = 1,
  kFsync = 2,
  kHeaderWrite = 3,
  kHeaderFsync = 4,
  kRename = 5,
  kDirFsync = 6,
};

struct Journal::Impl {
  // One entry of the in-flight window. A flush: a range of a staging buffer written at a file
  // offset, then made durable. A segment start (`starts_segment`): the new segment's header and
  // name made durable; records of that segment count as durable only after it, since the window
  // is reported durable in order.
  struct Op {
    bool starts_segment = false;
    int fd = -1;               // The segment file written (the journal keeps it open until done).
    std::uint64_t serial = 0;  // 1, 2, 3 ... in submission order.
    std::uint32_t buffer = 0;
    std::uint64_t buffer_offset = 0;
    std::uint64_t length = 0;
    std::uint64_t written = 0;  // Bytes the kernel reported written (short writes resume here).
    std::uint64_t file_offset = 0;
    std::uint64_t last_sequence = 0;  // Last data record in the flush (0: none).
    std::uint64_t last_source = journal::kNoSource;
    std::uint64_t records = 0;
    std::int64_t submit_ns = 0;
    std::uint32_t attempt = 0;  // Completions of an earlier attempt are ignored.
    bool write_done = false;
    bool durable = false;
  };
  struct Buffer {
    std::byte* base = nullptr;
    std::uint64_t fill = 0;       // Bytes framed.
    std::uint64_t submitted = 0;  // Bytes handed to flushes.
    std::uint64_t file_base = 0;  // File offset of the buffer's byte 0.
    std::uint32_t in_flight = 0;  // Flushes still reading it.
  };
  struct Segment {
    std::uint64_t index = 0;
    std::string path;
    std::int64_t modified_unix_ns = 0;
    // Serial of the last flush into it (kWriting while it is the segment being written):
    // retention never removes it before that flush is done.
    std::uint64_t last_serial = 0;
  };
  static constexpr std::uint64_t kWriting = ~std::uint64_t{0};
  // The file of a segment no longer written, open until its last flush (serial) is done.
  struct RetiredFile {
    std::uint64_t last_serial = 0;
    Fd fd;
  };
  // A spare file and whether it may hold bytes of an earlier use (recycled by retention, or left
  // by an earlier run that may have written into it before it was named).
  struct Spare {
    std::string path;
    bool recycled = false;
  };

  std::string dir;
  JournalOptions options;
  JournalSync sync = JournalSync::kWriteFdatasync;
  bool need_fsync = true;
  std::unique_ptr<FlushPolicy> policy;
  Fd dir_fd;
  Fd lock_fd;
  io_uring ring{};
  bool ring_ready = false;
  // Requests submitted to the ring whose completions have not been consumed yet.
  std::uint64_t requests_outstanding = 0;
  bool buffers_registered = false;
  void* buffer_memory = nullptr;
  std::vector<Buffer> buffers;
  std::uint32_t current_buffer = 0;

  // The segment being written.
  Fd segment_fd;
  std::uint64_t segment_index = 0;
  std::uint64_t segment_epoch = 0;
  std::uint64_t segment_offset = 0;  // Where the next framed byte goes in the file.
  std::deque<Segment> segments;      // Oldest first; the back one is being written.
  std::deque<RetiredFile> retired_files;

  std::uint64_t next_sequence = 1;
  std::uint64_t chain = 0;
  std::uint64_t durable_sequence = 0;
  std::uint64_t durable_source = journal::kNoSource;
  std::uint64_t last_source = journal::kNoSource;
  std::uint64_t pending_records = 0;
  std::uint64_t pending_last_sequence = 0;
  std::int64_t oldest_pending_ns = 0;
  std::int64_t recheck_at_ns = 0;
  std::uint32_t max_in_flight = 1;
  // The io-wq worker cap the policy asked for and the one in effect (0: the kernel's limit), and
  // the kernel's own bounded limit, read back when the first cap is set.
  std::uint32_t io_workers_asked = 0;
  std::uint32_t io_workers_applied = 0;
  std::uint32_t io_workers_kernel = 0;
  bool io_workers_unsupported = false;

  Op ops[kOpsMax];
  std::uint32_t ops_head = 0;  // Oldest flush in flight.
  std::uint32_t ops_count = 0;
  std::uint64_t op_serial = 0;         // Serial of the last op submitted.
  std::uint64_t completed_serial = 0;  // Every op up to this serial is done.
  // A segment start is in the window (one at a time, so that segment names become durable in
  // order). The policy does not count it as a flush.
  bool start_in_flight = false;
  // Its rename's names, relative to dir_fd, and the header block it writes (block-aligned for
  // O_DIRECT); only one segment start is in flight at a time.
  std::string start_from;
  std::string start_to;
  std::byte* header_block = nullptr;
  // The kernel can rename through io_uring (5.11 and later): segment starts do not block appends.
  bool async_rename = false;
  // Attempt numbers count submissions of all flushes, so that a late completion of an earlier
  // flush in the same slot is never taken for the current one's.
  std::uint32_t attempts = 0;

  RecoveryReport recovery;
  JournalStats stats;
  bool failed = false;
  Error error{};

  // Spare segments: files written with zeros (or recycled), waiting to become the next segment.
  std::mutex spare_mutex;
  std::condition_variable spare_cv;
  std::vector<Spare> spares;        // Guarded by spare_mutex.
  bool spare_stop = false;          // Guarded by spare_mutex.
  std::uint64_t spare_counter = 0;  // Guarded by spare_mutex.
  // Spares the background thread keeps ready (see set_spare_target). Guarded by spare_mutex.
  std::uint64_t spare_target = 0;
  std::uint64_t spares_zeroed = 0;  // Guarded by spare_mutex.
  std::thread spare_thread;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  ~Impl() {
    {
      std::lock_guard lock(spare_mutex);
      spare_stop = true;
    }
    spare_cv.notify_all();
    if (spare_thread.joinable()) spare_thread.join();
    // The pool is the appending thread's, shared with its other rings: give its limit back.
    if (ring_ready) cap_io_workers(0);
    // Tearing the ring down does not wait for the requests in it: io-wq would still write staging
    // buffers freed below, and a segment could change after the journal is closed (a reopen's
    // recovery would then miss records that a reader finds).
    const bool quiet = !ring_ready || quiesce();
    if (ring_ready) io_uring_queue_exit(&ring);
    if (quiet) {
      std::free(buffer_memory);
      std::free(header_block);
    }
    // Otherwise a request outlived kQuiesceNsMax: the kernel may still read the buffers, which
    // are left allocated rather than handed back to the heap.
  }

  // Waits until every submitted request has completed (kQuiesceNsMax at most); true when none is
  // left.
  bool quiesce() noexcept {
    const std::int64_t deadline_ns = monotonic_ns() + kQuiesceNsMax;
    while (requests_outstanding != 0 && monotonic_ns() < deadline_ns) {
      __kernel_timespec ts{0, 100'000'000};
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
      if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN) break;
      unsigned seen = 0;
      unsigned head = 0;
      io_uring_for_each_cqe(&ring, head, cqe) { ++seen; }
      io_uring_cq_advance(&ring, seen);
      requests_outstanding -= std::min<std::uint64_t>(seen, requests_outstanding);
    }
    return requests_outstanding == 0;
  }

  Result<void> fail_journal(const Error& e) {
    if (!failed) {
      failed = true;
      error = e;
      ++stats.errors;
    }
    return unexpected(error);
  }

  // ---- Segments ---------------------------------------------------------------------------------

  Result<void> sync_dir() {
    if (!need_fsync) return {};
    return sync_fd(dir_fd.get(), false, dir);
  }

  // Creates a spare: a file of segment_bytes written with zeros (so later flushes overwrite
  // allocated blocks) and synced, under a ".spare" name.
  Result<std::string> create_spare(std::uint64_t number) {
    const std::string name = fmt::format("s{}-{}{}", number, getpid(), journal::kSpareSuffix);
    const std::string temp = join(dir, name + ".tmp");
    const std::string path = join(dir, name);
    Fd fd(sys::ops().open(temp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, options.mode));
    if (fd.get() < 0) {
      return fail_errno(errno, "journal segment", "{}: cannot create a segment file", temp);
    }
    if (const int err =
            sys::ops().fallocate(fd.get(), 0, static_cast<off_t>(options.segment_bytes));
        err != 0) {
      sys::ops().unlink(temp.c_str());
      return fail_errno(err, "journal segment",
                        "{}: cannot allocate {} bytes for a segment; free space or lower "
                        "retain_bytes",
                        temp, options.segment_bytes);
    }
    if (need_fsync) {
      // Written zeros, not just allocated extents: a flush into an unwritten extent makes
      // fdatasync commit the extent conversion too, about half as fast again.
      static const std::vector<std::byte> zeros(kZeroChunkBytes);
      for (std::uint64_t offset = 0; offset < options.segment_bytes; offset += kZeroChunkBytes) {
        const std::uint64_t count = std::min(kZeroChunkBytes, options.segment_bytes - offset);
        if (auto written = write_all(fd.get(), zeros.data(), count, offset, temp); !written) {
          sys::ops().unlink(temp.c_str());
          return unexpected(written.error());
        }
      }
      if (auto synced = sync_fd(fd.get(), true, temp); !synced) {
        sys::ops().unlink(temp.c_str());
        return unexpected(synced.error());
      }
    }
    if (sys::ops().rename(temp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      sys::ops().unlink(temp.c_str());
      return fail_errno(err, "journal segment", "{}: rename to {} failed", temp, path);
    }
    if (need_fsync) {
      std::lock_guard lock(spare_mutex);
      ++spares_zeroed;
    }
    return path;
  }

  // How many spares the background thread keeps ready: enough for the segment starts before
  // retention recycles one segment per start (a journal at its size limit writes no zeros), and
  // at least one, so that a start never waits for zeros; at most spare_segments.
  void set_spare_target() {
    std::uint64_t target = options.spare_segments;
    if (options.retain_bytes != 0 && options.retain_age.count() == 0) {
      const std::uint64_t retained = options.retain_bytes / options.segment_bytes;
      const std::uint64_t starts_before_recycling =
          retained > segments.size() ? retained - segments.size() : 0;
      target = std::min(target, std::max<std::uint64_t>(starts_before_recycling, 1));
    }
    {
      std::lock_guard lock(spare_mutex);
      spare_target = target;
    }
    spare_cv.notify_all();
  }

  void start_spare_thread() {
    if (options.spare_segments == 0) return;
    spare_thread = std::thread([this] {
      std::unique_lock lock(spare_mutex);
      for (;;) {
        spare_cv.wait(lock, [this] { return spare_stop || spares.size() < spare_target; });
        if (spare_stop) return;
        const std::uint64_t number = ++spare_counter;
        lock.unlock();
        auto spare = create_spare(number);
        lock.lock();
        if (!spare) return;  // The writer creates one itself when it needs it, and reports why.
        spares.push_back({std::move(*spare), false});
      }
    });
  }

  // Turns a spare (or a new file) into segment `index` starting at `first_sequence`, and makes it
  // the segment being written. Its header block is written and made durable, then the spare is
  // renamed to the segment's name and the directory synced, so that a named segment always has a
  // valid header. With `in_window` (and a kernel that renames through io_uring) that chain is
  // submitted as an entry of the in-flight window and appends go on at once: the records of the
  // new segment are reported durable only after the chain, since the window is reported in order.
  // Otherwise the chain runs here, synchronously. Requires: no segment start in flight.
  Result<void> start_segment(std::uint64_t index, std::uint64_t first_sequence, bool in_window) {
    Spare spare;
    {
      std::lock_guard lock(spare_mutex);
      if (!spares.empty()) {
        spare = std::move(spares.front());
        spares.erase(spares.begin());
      }
    }
    if (spare.path.empty()) {
      std::uint64_t number = 0;
      {
        std::lock_guard lock(spare_mutex);
        number = ++spare_counter;
      }
      auto created = create_spare(number);
      if (!created) return unexpected(created.error());
      spare.path = std::move(*created);
      ++stats.segments_created;
    } else {
      ++stats.segments_recycled;
    }
    const int direct = sync == JournalSync::kDirectDsync ? O_DIRECT | O_DSYNC : 0;
    Fd fd(sys::ops().open(spare.path.c_str(), O_RDWR | O_CLOEXEC | direct, 0));
    if (fd.get() < 0) {
      return fail_errno(errno, "journal segment", "{}: cannot open a spare segment{}", spare.path,
                        direct != 0 ? " with O_DIRECT (does the file system support it?)" : "");
    }
    SegmentHeader header{};
    header.magic = journal::kSegmentMagic;
    header.version = journal::kFormatVersion;
    header.header_bytes = static_cast<std::uint32_t>(kSegmentHeaderBytes);
    header.segment_bytes = options.segment_bytes;
    header.index = index;
    header.epoch = random_epoch();
    header.first_sequence = first_sequence;
    header.created_unix_ns = static_cast<std::uint64_t>(realtime_ns());
    header.flags = spare.recycled ? journal::kSegmentRecycled : 0;
    header.checksum = journal::segment_checksum(header);
    // The whole first block, so that O_DIRECT accepts it.
    std::memset(header_block, 0, kBlockBytes);
    std::memcpy(header_block, &header, sizeof header);
    const std::string path = join(dir, journal::segment_file_name(index));
    if (in_window && async_rename) {
      start_from = spare.path.substr(spare.path.rfind('/') + 1);
      start_to = journal::segment_file_name(index);
      const std::uint32_t slot = ops_head + ops_count;
      Op& op = op_at(slot);
      op = Op{};
      op.starts_segment = true;
      op.fd = fd.get();
      op.serial = ++op_serial;
      op.submit_ns = monotonic_ns();
      ++ops_count;
      start_in_flight = true;
      if (auto submitted = submit_op(slot); !submitted) return submitted;
    } else {
      if (auto written = write_all(fd.get(), header_block, kBlockBytes, 0, spare.path); !written) {
        return unexpected(written.error());
      }
      if (need_fsync && direct == 0) {
        if (auto synced = sync_fd(fd.get(), true, spare.path); !synced) {
          return unexpected(synced.error());
        }
      }
      if (sys::ops().rename(spare.path.c_str(), path.c_str()) != 0) {
        return fail_errno(errno, "journal segment", "{}: rename to {} failed", spare.path, path);
      }
      if (auto synced = sync_dir(); !synced) return unexpected(synced.error());
    }
    if (!segments.empty()) {
      // The segment written so far stays open until its flushes are done.
      const std::uint64_t last_flush = op_serial - (in_window && async_rename ? 1 : 0);
      segments.back().last_serial = last_flush;
      if (last_flush > completed_serial) {
        retired_files.push_back({last_flush, std::move(segment_fd)});
      }
    }
    segment_fd = std::move(fd);
    segment_index = index;
    segment_epoch = header.epoch;
    segment_offset = kSegmentHeaderBytes;
    chain = header.checksum;
    segments.push_back({index, path, realtime_ns(), kWriting});
    Buffer& buffer = buffers[current_buffer];
    buffer.fill = buffer.submitted = 0;
    buffer.file_base = segment_offset;
    return {};
  }

  // Opens the last segment to continue writing at `offset` (recovery found it healthy).
  Result<void> reopen_segment(const journal::ScannedSegment& scanned, std::uint64_t offset,
                              std::uint64_t last_checksum) {
    const int direct = sync == JournalSync::kDirectDsync ? O_DIRECT | O_DSYNC : 0;
    Fd fd(sys::ops().open(scanned.path.c_str(), O_RDWR | O_CLOEXEC | direct, 0));
    if (fd.get() < 0) {
      return fail_errno(errno, "journal open", "{}: cannot open the last segment", scanned.path);
    }
    segment_fd = std::move(fd);
    segment_index = scanned.header.index;
    segment_epoch = scanned.header.epoch;
    segment_offset = offset;
    chain = last_checksum;
    Buffer& buffer = buffers[current_buffer];
    buffer.fill = buffer.submitted = 0;
    buffer.file_base = segment_offset;
    return {};
  }

  // ---- Flushing -----------------------------------------------------------------------------

  [[nodiscard]] std::uint64_t reserve_bytes() const noexcept {
    // Room a flush may need for a padding record in O_DIRECT mode.
    return sync == JournalSync::kDirectDsync ? 2 * kBlockBytes : 0;
  }

  [[nodiscard]] std::uint64_t pending_bytes() const noexcept {
    const Buffer& buffer = buffers[current_buffer];
    return buffer.fill - buffer.submitted;
  }

  Op& op_at(std::uint32_t slot) noexcept { return ops[slot % kOpsMax]; }

  [[nodiscard]] std::uint64_t encode(std::uint32_t slot, IoOpKind kind,
                                     std::uint32_t attempt) const noexcept;

  // Frames a record at the current buffer's fill point.
  void frame(journal::RecordKind kind, std::span<const std::byte> payload, const RecordMeta& meta,
             std::uint64_t sequence) noexcept {
    Buffer& buffer = buffers[current_buffer];
    std::byte* at = buffer.base + buffer.fill;
    RecordHeader header{};
    header.kind = static_cast<std::uint32_t>(kind);
    header.length = static_cast<std::uint32_t>(payload.size());
    header.sequence = sequence;
    header.epoch = segment_epoch;
    header.timestamp_ns = meta.timestamp_ns;
    header.source_position = meta.source_position;
    header.durable_before = durable_sequence + 1;
    header.prev_checksum = chain;
    const std::uint64_t span = journal::record_span(payload.size());
    if (!payload.empty()) std::memcpy(at + sizeof header, payload.data(), payload.size());
    std::memset(at + sizeof header + payload.size(), 0, span - sizeof header - payload.size());
    header.checksum = journal::record_checksum(header, at + sizeof header);
    std::memcpy(at, &header, sizeof header);
    chain = header.checksum;
    buffer.fill += span;
    segment_offset += span;
  }

  // Submits the pending bytes of the current buffer as one flush. Requires ops_count < kOpsMax.
  Result<void> submit_pending() {
    Buffer& buffer = buffers[current_buffer];
    if (buffer.fill == buffer.submitted) return {};
    if (sync == JournalSync::kDirectDsync) {
      // O_DIRECT writes whole blocks: pad to the next block boundary with a padding record, which
      // takes no sequence number.
      std::uint64_t gap = (kBlockBytes - segment_offset % kBlockBytes) % kBlockBytes;
      if (gap != 0 && gap < sizeof(RecordHeader)) gap += kBlockBytes;
      if (gap != 0) {
        static const std::vector<std::byte> zeros(2 * kBlockBytes);
        frame(journal::RecordKind::kPadding,
              std::span<const std::byte>(zeros.data(), gap - sizeof(RecordHeader)), RecordMeta{},
              next_sequence);
      }
    }
    const std::uint32_t slot = ops_head + ops_count;
    Op& op = op_at(slot);
    op = Op{};
    op.fd = segment_fd.get();
    op.serial = ++op_serial;
    op.buffer = current_buffer;
    op.buffer_offset = buffer.submitted;
    op.length = buffer.fill - buffer.submitted;
    op.file_offset = buffer.file_base + buffer.submitted;
    op.last_sequence = pending_records != 0 ? pending_last_sequence : 0;
    op.last_source = last_source;
    op.records = pending_records;
    op.submit_ns = monotonic_ns();
    buffer.submitted = buffer.fill;
    ++buffer.in_flight;
    ++ops_count;
    pending_records = 0;
    oldest_pending_ns = 0;
    return submit_op(slot);
  }

  Result<void> submit_op(std::uint32_t slot);
  Result<void> reap(bool* progressed);
  Result<void> handle(std::uint64_t user_data, int result);
  // Asks the policy and submits what it says; now_ns: the clock as the caller last read it (0:
  // read it here).
  Result<void> consult(std::int64_t now_ns = 0);
  void cap_io_workers(std::uint32_t workers) noexcept;
  Result<void> wait_for_completion(std::int64_t deadline_ns);
  // Reaps completions, waiting for more, until `done()` (which something in flight must bring).
  template <class Done>
  Result<void> reap_until(Done done) {
    while (!done()) {
      bool progressed = false;
      if (auto reaped = reap(&progressed); !reaped) return reaped;
      if (done()) break;
      if (auto waited = wait_for_completion(monotonic_ns() + 100'000'000); !waited) return waited;
    }
    return {};
  }
  Result<void> drain();
  Result<void> switch_buffer();
  Result<void> roll_segment();
  Result<std::uint64_t> append(std::span<const std::byte> payload, const RecordMeta& meta);
  Result<std::uint64_t> apply_retention(std::uint64_t starting, bool sync_after);
  Result<void> submit_segment_start(std::uint32_t slot);
  Result<void> submit_prepared();
  Result<void> handle_segment_start(Op& op, IoOpKind kind, int result);
  [[nodiscard]] std::uint32_t flushes_in_flight() const noexcept {
    return ops_count - (start_in_flight ? 1 : 0);
  }
  Result<void> recover(const DirScan& found);
  void recycle_or_remove(const Segment& segment);
};

// user_data: slot (32 bits) | kind (8 bits) | attempt (24 bits).
std::uint64_t Journal::Impl::encode(std::uint32_t slot, IoOpKind kind,
                                    std::uint32_t attempt) const noexcept {
  return std::uint64_t{slot % kOpsMax} | std::uint64_t{static_cast<std::uint32_t>(kind)} << 32 |
         std::uint64_t{attempt & 0xff'ffff} << 40;
}

Result<void> Journal::Impl::submit_op(std::uint32_t slot) {
  Op& op = op_at(slot);
  op.attempt = ++attempts & 0xff'ffff;
  if (op.starts_segment) return submit_segment_start(slot);
  Buffer& buffer = buffers[op.buffer];
  io_uring_sqe* write = io_uring_get_sqe(&ring);
  io_uring_sqe* fsync = nullptr;
  if (write != nullptr && need_fsync && sync == JournalSync::kWriteFdatasync) {
    fsync = io_uring_get_sqe(&ring);
  }
  if (write == nullptr ||
      (need_fsync && sync == JournalSync::kWriteFdatasync && fsync == nullptr)) {
    // Cannot happen: the queue holds two entries per flush slot and every prepared entry is
    // submitted before this returns.
    return fail_journal(make_error(Errc::kIoError, EBUSY, "journal flush",
                                   "{}: io_uring submission queue full", dir));
  }
  const std::uint64_t skip = op.written;
  std::byte* data = buffer.base + op.buffer_offset + skip;
  const auto length = static_cast<unsigned>(op.length - skip);
  const __u64 offset = op.file_offset + skip;
  if (buffers_registered) {
    io_uring_prep_write_fixed(write, op.fd, data, length, offset, static_cast<int>(op.buffer));
  } else {
    io_uring_prep_write(write, op.fd, data, length, offset);
  }
  io_uring_sqe_set_data64(write, encode(slot, IoOpKind::kWrite, op.attempt));
  if (fsync != nullptr) {
    // Linked: the fdatasync starts only after the write completed in full; a short or failed
    // write cancels it (-ECANCELED), and the write's completion handler resubmits both.
    io_uring_sqe_set_flags(write, IOSQE_IO_LINK);
    io_uring_prep_fsync(fsync, op.fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(fsync, encode(slot, IoOpKind::kFsync, op.attempt));
  }
  return submit_prepared();
}

// The chain that starts a segment, linked so that each request runs only after the one before it
// succeeded in full: the header block; its fdatasync (not with O_DSYNC, nor without fsyncs); the
// rename from the spare's name to the segment's; the directory's fsync. A short or failed request
// cancels the rest (-ECANCELED); handle_segment_start() resubmits the chain or fails the journal.
Result<void> Journal::Impl::submit_segment_start(std::uint32_t slot) {
  const Op& op = op_at(slot);
  const bool fsync_header = need_fsync && sync == JournalSync::kWriteFdatasync;
  io_uring_sqe* sqes[4] = {};
  const unsigned count = 2 + (fsync_header ? 1u : 0u) + (need_fsync ? 1u : 0u);
  for (unsigned i = 0; i < count; ++i) {
    sqes[i] = io_uring_get_sqe(&ring);
    if (sqes[i] == nullptr) {
      // Cannot happen: the queue holds two entries per window slot, and every prepared entry is
      // submitted before this returns.
      return fail_journal(make_error(Errc::kIoError, EBUSY, "journal segment",
                                     "{}: io_uring submission queue full", dir));
    }
  }
  unsigned next = 0;
  io_uring_prep_write(sqes[next], op.fd, header_block, static_cast<unsigned>(kBlockBytes), 0);
  io_uring_sqe_set_data64(sqes[next++], encode(slot, IoOpKind::kHeaderWrite, op.attempt));
  if (fsync_header) {
    io_uring_prep_fsync(sqes[next], op.fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqes[next++], encode(slot, IoOpKind::kHeaderFsync, op.attempt));
  }
  io_uring_prep_renameat(sqes[next], dir_fd.get(), start_from.c_str(), dir_fd.get(),
                         start_to.c_str(), 0);
  io_uring_sqe_set_data64(sqes[next++], encode(slot, IoOpKind::kRename, op.attempt));
  if (need_fsync) {
    io_uring_prep_fsync(sqes[next], dir_fd.get(), 0);
    io_uring_sqe_set_data64(sqes[next++], encode(slot, IoOpKind::kDirFsync, op.attempt));
  }
  for (unsigned i = 0; i + 1 < count; ++i) io_uring_sqe_set_flags(sqes[i], IOSQE_IO_LINK);
  return submit_prepared();
}

Result<void> Journal::Impl::submit_prepared() {
  for (int tries = 0;; ++tries) {
    const int submitted = io_uring_submit(&ring);
    if (submitted >= 0) {
      requests_outstanding += static_cast<std::uint64_t>(submitted);
      return {};
    }
    if ((submitted == -EAGAIN || submitted == -EBUSY || submitted == -EINTR) &&
        tries < kSubmitRetriesMax) {
      // The kernel is short of resources or the completion queue is backed up: reap, retry.
      bool progressed = false;
      if (auto reaped = reap(&progressed); !reaped) return reaped;
      continue;
    }
    return fail_journal(make_error(detail::errc_from_errno(-submitted), -submitted, "journal flush",
                                   "{}: io_uring_submit failed", dir));
  }
}

Result<void> Journal::Impl::handle(std::uint64_t user_data, int result) {
  const auto slot_index = static_cast<std::uint32_t>(user_data & 0xffff'ffff);
  const auto kind = static_cast<IoOpKind>((user_data >> 32) & 0xff);
  const auto attempt = static_cast<std::uint32_t>(user_data >> 40);
  if (slot_index >= kOpsMax) return {};
  // Find the flush in the in-flight window: slot indices repeat modulo kOpsMax.
  Op& op = ops[slot_index];
  if (op.attempt != attempt || op.durable) return {};  // An earlier attempt's.
  if (op.starts_segment) return handle_segment_start(op, kind, result);
  const journal::Faults& hooks = journal::faults();
  if (kind == IoOpKind::kWrite) {
    const auto requested = static_cast<std::uint32_t>(op.length - op.written);
    if (hooks.completion != nullptr) {
      result = hooks.completion(journal::IoOp::kWrite, result, requested, hooks.context);
    }
    if (result == -EAGAIN || result == -EINTR) {
      ++stats.retries;
      const auto slot = static_cast<std::uint32_t>(&op - ops);
      return submit_op(slot);
    }
    if (result < 0) {
      return fail_journal(make_error(
          detail::errc_from_errno(-result), -result, "journal write",
          "{}: writing {} bytes at offset {} of segment {} failed; records from sequence {} on "
          "are not durable",
          dir, requested, op.file_offset + op.written, segment_index, durable_sequence + 1));
    }
    if (result == 0 && requested != 0) {
      return fail_journal(make_error(Errc::kIoError, EIO, "journal write",
                                     "{}: a write at offset {} wrote nothing", dir,
                                     op.file_offset + op.written));
    }
    op.written += static_cast<std::uint64_t>(result) < requested
                      ? static_cast<std::uint64_t>(result)
                      : requested;
    if (op.written < op.length) {
      // A short write: write the rest (the linked fdatasync was cancelled with it).
      ++stats.retries;
      return submit_op(static_cast<std::uint32_t>(&op - ops));
    }
    op.write_done = true;
    if (!need_fsync || sync == JournalSync::kDirectDsync) op.durable = true;
    return {};
  }
  if (hooks.completion != nullptr) {
    result = hooks.completion(journal::IoOp::kFsync, result, 0, hooks.context);
  }
  if (result == -ECANCELED) return {};  // Its write failed or was short; see above.
  if (result < 0) {
    // Never retried: after a failed fsync the kernel may have dropped the dirty pages, so a later
    // fsync's success would not mean these bytes are on disk.
    return fail_journal(make_error(
        detail::errc_from_errno(-result), -result, "journal fsync",
        "{}: fdatasync of segment {} failed; records from sequence {} on are not durable and the "
        "journal stops",
        dir, segment_index, durable_sequence + 1));
  }
  if (op.write_done) op.durable = true;
  return {};
}

Result<void> Journal::Impl::handle_segment_start(Op& op, IoOpKind kind, int result) {
  const journal::Faults& hooks = journal::faults();
  if (hooks.completion != nullptr) {
    const std::uint32_t requested =
        kind == IoOpKind::kHeaderWrite ? static_cast<std::uint32_t>(kBlockBytes) : 0;
    result = hooks.completion(journal::IoOp::kSegmentStart, result, requested, hooks.context);
  }
  if (result == -ECANCELED) return {};  // A request before it was short or failed; see below.
  const auto not_durable = [&](int err, std::string_view what) {
    return fail_journal(make_error(detail::errc_from_errno(err), err, "journal segment",
                                   "{}: {} while starting segment {} (from spare {}) failed; "
                                   "records from sequence {} on are not durable and the journal "
                                   "stops",
                                   dir, what, start_to, start_from, durable_sequence + 1));
  };
  switch (kind) {
    case IoOpKind::kHeaderWrite:
      // -EAGAIN, -EINTR or a short write: the rest of the chain was cancelled; write it all again.
      if (result == -EAGAIN || result == -EINTR ||
          (result > 0 && static_cast<std::uint64_t>(result) < kBlockBytes)) {
        ++stats.retries;
        return submit_op(static_cast<std::uint32_t>(&op - ops));
      }
      if (result <= 0) return not_durable(result < 0 ? -result : EIO, "writing the header");
      return {};
    case IoOpKind::kHeaderFsync:
      // Never retried, like a flush's fdatasync.
      if (result < 0) return not_durable(-result, "fdatasync of the header");
      return {};
    case IoOpKind::kRename:
      if (result < 0) return not_durable(-result, "the rename");
      if (!need_fsync) op.durable = true;
      return {};
    case IoOpKind::kDirFsync:
      if (result < 0) return not_durable(-result, "fsync of the directory");
      op.durable = true;
      return {};
    default:
      return {};
  }
}

Result<void> Journal::Impl::reap(bool* progressed) {
  io_uring_cqe* cqe = nullptr;
  unsigned seen = 0;
  unsigned head = 0;
  Result<void> outcome;
  io_uring_for_each_cqe(&ring, head, cqe) {
    ++seen;
    if (outcome) outcome = handle(io_uring_cqe_get_data64(cqe), cqe->res);
  }
  io_uring_cq_advance(&ring, seen);
  requests_outstanding -= std::min<std::uint64_t>(seen, requests_outstanding);
  if (!outcome) return outcome;
  if (failed) return unexpected(error);
  // The durable position advances over the contiguous prefix of durable flushes only.
  while (ops_count != 0 && ops[ops_head % kOpsMax].durable) {
    Op& op = ops[ops_head % kOpsMax];
    completed_serial = op.serial;
    if (op.starts_segment) {
      start_in_flight = false;
    } else {
      if (op.last_sequence != 0) {
        durable_sequence = op.last_sequence;
        durable_source = op.last_source;
      }
      ++stats.flushes;
      stats.durable_records += op.records;
      stats.durable_bytes += op.length;
      --buffers[op.buffer].in_flight;
      policy->on_flush_complete({op.submit_ns, monotonic_ns(), op.length, op.records});
    }
    ops_head = (ops_head + 1) % kOpsMax;
    --ops_count;
    *progressed = true;
  }
  // Close the files of earlier segments whose last flush is done.
  while (!retired_files.empty() && retired_files.front().last_serial <= completed_serial) {
    retired_files.pop_front();
  }
  if (seen != 0) *progressed = true;
  return {};
}

Result<void> Journal::Impl::consult(std::int64_t now_ns) {
  const std::uint64_t pending = pending_bytes();
  FlushState state;
  state.now_ns = now_ns != 0 ? now_ns : monotonic_ns();
  state.pending_bytes = pending;
  state.pending_records = pending_records;
  state.oldest_pending_ns = oldest_pending_ns;
  state.in_flight = flushes_in_flight();
  const FlushDecision decision = policy->decide(state);
  if (decision.max_io_workers != io_workers_asked) cap_io_workers(decision.max_io_workers);
  recheck_at_ns = decision.recheck_at_ns;
  max_in_flight = std::clamp<std::uint32_t>(decision.max_in_flight, 1, kOpsMax);
  if (decision.flush_now && pending != 0 && flushes_in_flight() < max_in_flight &&
      ops_count < kOpsMax) {
    return submit_pending();
  }
  return {};
}

// Bounded io-wq workers (regular-file writes, fsyncs, renames) of the ring: `workers`, or with 0
// the kernel's limit again. Only a bound on new work: workers that exist idle out by themselves.
// A kernel without IORING_REGISTER_IOWQ_MAX_WORKERS (before 5.15) keeps its limit; that changes
// only speed, so it is not an error (stats show 0).
void Journal::Impl::cap_io_workers(std::uint32_t workers) noexcept {
  io_workers_asked = workers;
  if (io_workers_unsupported) return;
  if (workers == 0 && io_workers_applied == 0) return;
  unsigned values[2] = {workers != 0 ? workers : io_workers_kernel, 0};  // {bounded, unbounded}
  if (values[0] == 0) return;
  if (io_uring_register_iowq_max_workers(&ring, values) < 0) {
    io_workers_unsupported = true;
    return;
  }
  // The previous limits come back in `values`: the first time, the kernel's own.
  if (io_workers_applied == 0) io_workers_kernel = values[0];
  io_workers_applied = workers;
}

Result<void> Journal::Impl::wait_for_completion(std::int64_t deadline_ns) {
  const std::int64_t remaining = deadline_ns - monotonic_ns();
  if (remaining <= 0) return {};
  __kernel_timespec ts{remaining / 1'000'000'000, remaining % 1'000'000'000};
  io_uring_cqe* cqe = nullptr;
  const int rc = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN) {
    return fail_journal(make_error(detail::errc_from_errno(-rc), -rc, "journal wait",
                                   "{}: waiting for io_uring completions failed", dir));
  }
  return {};
}

// Submits everything pending and waits until every flush is durable.
Result<void> Journal::Impl::drain() {
  for (;;) {
    if (failed) return unexpected(error);
    bool progressed = false;
    if (auto reaped = reap(&progressed); !reaped) return reaped;
    if (pending_bytes() != 0 && ops_count < kOpsMax) {
      if (auto submitted = submit_pending(); !submitted) return submitted;
    }
    if (ops_count == 0 && pending_bytes() == 0) return {};
    if (auto waited = wait_for_completion(monotonic_ns() + 100'000'000); !waited) return waited;
  }
}

// Moves to the next staging buffer, waiting until no flush reads it.
Result<void> Journal::Impl::switch_buffer() {
  if (pending_bytes() != 0) {
    if (auto waited = reap_until([this] { return ops_count < kOpsMax; }); !waited) return waited;
    if (auto submitted = submit_pending(); !submitted) return submitted;
  }
  const std::uint32_t next = (current_buffer + 1) % static_cast<std::uint32_t>(buffers.size());
  if (auto waited = reap_until([&] { return buffers[next].in_flight == 0; }); !waited) {
    return waited;
  }
  current_buffer = next;
  Buffer& buffer = buffers[next];
  buffer.fill = buffer.submitted = 0;
  buffer.file_base = segment_offset;
  return {};
}

// Starts the next segment without draining the window: the flushes of the one that filled stay in
// flight (its file stays open until they are done), and the new segment's header and name are made
// durable by a chain in the window (see start_segment).
Result<void> Journal::Impl::roll_segment() {
  // One segment start at a time, so that segment names become durable in order (a crash never
  // leaves a gap in the segment indices).
  if (auto waited = reap_until([this] { return !start_in_flight; }); !waited) return waited;
  // The rest of the full segment goes out, and the next staging buffer starts at the new
  // segment's first record.
  if (auto switched = switch_buffer(); !switched) return switched;
  if (auto waited = reap_until([this] { return ops_count < kOpsMax; }); !waited) return waited;
  segments.back().modified_unix_ns = realtime_ns();
  // Retention first (counting the segment about to start): a removed segment becomes the spare
  // that the new one recycles, so a journal at its size limit never writes zeros ahead. Its
  // renames are made durable by the new segment's directory fsync.
  if (auto retained = apply_retention(1, false); !retained) return unexpected(retained.error());
  if (auto started = start_segment(segment_index + 1, next_sequence, true); !started) {
    return fail_journal(started.error());
  }
  set_spare_target();  // Top the spares up if this start needs it.
  return {};
}

Result<std::uint64_t> Journal::Impl::append(std::span<const std::byte> payload,
                                            const RecordMeta& meta) {
  if (failed) return unexpected(error);
  const std::uint64_t record_max = options.buffer_bytes - 2 * kBlockBytes - sizeof(RecordHeader);
  if (payload.size() > record_max) {
    return fail(Errc::kInvalidArgument, 0, "journal append",
                "{}: a record of {} bytes is larger than the journal's largest, {} "
                "(raise buffer_bytes)",
                dir, payload.size(), record_max);
  }
  const std::uint64_t span = journal::record_span(payload.size());
  if (segment_offset + span + reserve_bytes() > options.segment_bytes) {
    if (auto rolled = roll_segment(); !rolled) return unexpected(rolled.error());
  }
  if (buffers[current_buffer].fill + span + reserve_bytes() > options.buffer_bytes) {
    if (auto switched = switch_buffer(); !switched) return unexpected(switched.error());
  }
  const std::uint64_t sequence = next_sequence++;
  frame(journal::RecordKind::kData, payload, meta, sequence);
  const std::int64_t now = monotonic_ns();
  if (pending_records == 0) oldest_pending_ns = now;
  ++pending_records;
  pending_last_sequence = sequence;
  last_source = meta.source_position;
  ++stats.appended_records;
  stats.appended_bytes += payload.size();
  policy->on_append(now, span);
  bool progressed = false;
  const std::uint64_t flushes_before = stats.flushes;
  if (auto reaped = reap(&progressed); !reaped) return unexpected(reaped.error());
  const bool completed = stats.flushes != flushes_before;
  // With every slot the policy allows taken, an append cannot start a flush: the policy hears of
  // it at the next completion of a flush (which reap may just have reported) or at its recheck
  // time. At saturation a flush is nearly always in flight, and this spares the appending thread
  // a call into the policy and a clock read per record.
  if (!completed && flushes_in_flight() >= max_in_flight &&
      (recheck_at_ns == 0 || now < recheck_at_ns)) {
    return sequence;
  }
  if (auto consulted = consult(progressed ? 0 : now); !consulted) {
    return unexpected(consulted.error());
  }
  return sequence;
}

void Journal::Impl::recycle_or_remove(const Segment& segment) {
  bool recycled = false;
  {
    std::lock_guard lock(spare_mutex);
    // Up to one more than the pool holds: the segment start that follows takes one.
    if (spares.size() < std::uint64_t{options.spare_segments} + 1) {
      const std::string spare =
          join(dir, fmt::format("r{}-{}{}", ++spare_counter, segment.index, journal::kSpareSuffix));
      if (sys::ops().rename(segment.path.c_str(), spare.c_str()) == 0) {
        spares.push_back({spare, true});
        recycled = true;
      }
    }
  }
  if (!recycled) sys::ops().unlink(segment.path.c_str());
  ++stats.segments_removed;
}

// `starting`: segments about to be added, counted against retain_bytes. `sync_after`: fsync the
// directory after removing (a segment start that follows does it anyway).
Result<std::uint64_t> Journal::Impl::apply_retention(std::uint64_t starting, bool sync_after) {
  if (options.retain_bytes == 0 && options.retain_age.count() == 0) return std::uint64_t{0};
  std::uint64_t removed = 0;
  const std::int64_t now = realtime_ns();
  while (segments.size() > 1) {
    const Segment& oldest = segments.front();
    const std::uint64_t total = (segments.size() + starting) * options.segment_bytes;
    const bool too_big = options.retain_bytes != 0 && total > options.retain_bytes;
    const bool too_old =
        options.retain_age.count() != 0 &&
        now - oldest.modified_unix_ns > options.retain_age.count() * 1'000'000'000LL;
    // Age: a segment is as old as its last write (set when the next one started).
    if (!too_big && !too_old) break;
    // Its last flushes are still in flight: not yet.
    if (oldest.last_serial > completed_serial) break;
    // A reader holds a shared lock on the segment it reads: never remove that one (or newer).
    Fd fd(sys::ops().open(oldest.path.c_str(), O_RDONLY | O_CLOEXEC, 0));
    if (fd.get() < 0) {
      segments.pop_front();  // Already gone.
      continue;
    }
    if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) break;
    recycle_or_remove(oldest);
    segments.pop_front();
    ++removed;
  }
  if (removed != 0 && sync_after) {
    if (auto synced = sync_dir(); !synced) return unexpected(synced.error());
  }
  return removed;
}

Result<void> Journal::Impl::recover(const DirScan& found) {
  const journal::ScanResult& scan = found.scan;
  if (scan.corrupted) {
    const journal::ScanIssue& issue = scan.issues.front();
    const std::string& why = scan.issues.size() > 1 ? scan.issues[1].what : issue.what;
    return fail(Errc::kCorrupted, 0, "journal open",
                "{} offset {} (sequence {}): {}; {}. Inspect it with `weftctl journal verify "
                "{}`, then move the directory aside",
                scan.segments[issue.segment].path, issue.offset, issue.sequence, issue.what,
                why == issue.what ? "the journal cannot be appended to" : why, dir);
  }
  recovery.segments = scan.segments.size();
  recovery.records = scan.records;
  recovery.bytes = scan.payload_bytes;
  recovery.last_sequence = scan.last_sequence;
  recovery.last_source_position = scan.last_source_position;
  if (scan.segments.empty()) return {};
  std::size_t keep = scan.segments.size();  // Segments kept (the last one is continued).
  if (scan.stopped) {
    recovery.dropped_records = scan.tail_records + (scan.bad_record ? 1 : 0);
    // A stop at offset 0 is only ever in the first segment (see scan_segments): nothing is kept.
    keep = scan.stop_offset == 0 ? scan.stop_segment : scan.stop_segment + 1;
    if (scan.stop_offset != 0) {
      const journal::ScannedSegment& segment = scan.segments[scan.stop_segment];
      // Zero the torn tail so that its records can never be mistaken for new ones.
      if (scan.tail_bytes != 0) {
        Fd fd(sys::ops().open(segment.path.c_str(), O_RDWR | O_CLOEXEC, 0));
        if (fd.get() < 0) {
          return fail_errno(errno, "journal recovery", "{}: cannot open to truncate the torn tail",
                            segment.path);
        }
        const std::vector<std::byte> zeros(scan.tail_bytes);
        if (auto w =
                write_all(fd.get(), zeros.data(), zeros.size(), scan.stop_offset, segment.path);
            !w) {
          return w;
        }
        if (need_fsync) {
          if (auto s = sync_fd(fd.get(), true, segment.path); !s) return s;
        }
        recovery.dropped_bytes = scan.tail_bytes;
      }
    }
    for (std::size_t i = keep; i < scan.segments.size(); ++i) {
      if (sys::ops().unlink(scan.segments[i].path.c_str()) == 0) ++recovery.dropped_segments;
    }
    if (auto synced = sync_dir(); !synced) return synced;
  }
  for (std::size_t i = 0; i < keep; ++i) {
    segments.push_back({scan.segments[i].index, scan.segments[i].path,
                        scan.segments[i].modified_unix_ns, i + 1 == keep ? kWriting : 0});
  }
  next_sequence = scan.next_sequence;
  durable_sequence = scan.last_sequence;
  durable_source = scan.last_source_position;
  last_source = scan.last_source_position;
  if (keep == 0) return {};  // open() starts a new segment.
  // The last segment kept is continued where its valid records end: after a stop, that is the
  // stop (its torn tail now zero); never where a dropped segment's records ended.
  const journal::ScannedSegment& last = scan.segments[keep - 1];
  // O_DIRECT continues only on a block boundary; otherwise open() starts a new segment.
  if (sync == JournalSync::kDirectDsync && last.end_offset % kBlockBytes != 0) return {};
  return reopen_segment(last, last.end_offset, last.last_checksum);
}

// ---- Public surface -------------------------------------------------------------------------

Result<Journal> Journal::open(std::string_view dir_view, JournalOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->dir = std::string(dir_view);
  if (impl->dir.empty()) {
    return fail(Errc::kInvalidArgument, 0, "journal open", "the journal directory is empty");
  }
  if (options.segment_bytes < journal::kSegmentBytesMin || options.segment_bytes % kBlockBytes) {
    return fail(Errc::kInvalidArgument, 0, "journal open",
                "{}: segment_bytes {} must be a multiple of 4096 and at least {}", impl->dir,
                options.segment_bytes, journal::kSegmentBytesMin);
  }
  if (options.buffer_bytes < 4 * kBlockBytes || options.buffer_bytes % kBlockBytes != 0 ||
      options.buffer_bytes > options.segment_bytes - kSegmentHeaderBytes ||
      options.buffer_bytes > (std::uint64_t{1} << 30)) {
    return fail(Errc::kInvalidArgument, 0, "journal open",
                "{}: buffer_bytes {} must be a multiple of 4096, at least 16 KiB, at most 1 GiB "
                "and at most segment_bytes - 4096",
                impl->dir, options.buffer_bytes);
  }
  if (options.buffers < 2 || options.buffers > 1024) {
    return fail(Errc::kInvalidArgument, 0, "journal open", "{}: buffers {} must be 2..1024",
                impl->dir, options.buffers);
  }
  // Like mkdir -p: the parents too (a journal root that does not exist yet).
  for (std::size_t slash = impl->dir.find('/', 1); slash != std::string::npos;
       slash = impl->dir.find('/', slash + 1)) {
    const std::string parent = impl->dir.substr(0, slash);
    if (sys::ops().mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
      return fail_errno(errno, "journal open", "{}: cannot create its parent directory {}",
                        impl->dir, parent);
    }
  }
  if (sys::ops().mkdir(impl->dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return fail_errno(errno, "journal open", "{}: cannot create the journal directory", impl->dir);
  }
  impl->dir_fd = Fd(sys::ops().open(impl->dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
  if (impl->dir_fd.get() < 0) {
    return fail_errno(errno, "journal open", "{}: cannot open the journal directory", impl->dir);
  }
  // One writer per journal: an exclusive lock on DIR/LOCK, dropped by the kernel if we die.
  const std::string lock_path = join(impl->dir, "LOCK");
  impl->lock_fd = Fd(sys::ops().open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (impl->lock_fd.get() < 0) {
    return fail_errno(errno, "journal open", "{}: cannot create the lock file", lock_path);
  }
  if (flock(impl->lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return fail(Errc::kBusy, errno, "journal open",
                "{}: another process has this journal open for writing", impl->dir);
  }
  struct statfs fs {};
  const bool tmpfs =
      fstatfs(impl->dir_fd.get(), &fs) == 0 && static_cast<unsigned long>(fs.f_type) == TMPFS_MAGIC;
  impl->sync = options.sync;
  if (impl->sync == JournalSync::kAuto) {
    impl->sync = tmpfs                            ? JournalSync::kNone
                 : direct_io_supported(lock_path) ? JournalSync::kDirectDsync
                                                  : JournalSync::kWriteFdatasync;
  }
  if (tmpfs && impl->sync == JournalSync::kDirectDsync) {
    return fail(Errc::kUnsupported, EINVAL, "journal open",
                "{}: tmpfs does not support O_DIRECT; use JournalSync::kAuto", impl->dir);
  }
  impl->need_fsync = impl->sync != JournalSync::kNone;
  impl->policy = options.policy ? std::move(options.policy) : make_natural_flush();
  impl->options = std::move(options);
  impl->stats.policy = impl->policy->stats();

  // Staging buffers, block-aligned for O_DIRECT and registered with the ring.
  const std::uint64_t total = impl->options.buffer_bytes * impl->options.buffers;
  impl->buffer_memory = std::aligned_alloc(kBlockBytes, total);
  if (impl->buffer_memory == nullptr) {
    return fail(Errc::kNoMemory, ENOMEM, "journal open", "{}: cannot allocate {} buffer bytes",
                impl->dir, total);
  }
  std::memset(impl->buffer_memory, 0, total);
  std::vector<iovec> iovecs;
  for (std::uint32_t i = 0; i < impl->options.buffers; ++i) {
    Impl::Buffer buffer;
    buffer.base = static_cast<std::byte*>(impl->buffer_memory) + i * impl->options.buffer_bytes;
    impl->buffers.push_back(buffer);
    iovecs.push_back({buffer.base, impl->options.buffer_bytes});
  }
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = 4 * kOpsMax;  // Two completions per flush at most: never overflows.
  if (const int rc = io_uring_queue_init_params(2 * kOpsMax, &impl->ring, &params); rc < 0) {
    return fail(rc == -ENOSYS || rc == -EPERM ? Errc::kUnsupported : Errc::kIoError, -rc,
                "journal open", "{}: io_uring_queue_init failed (is io_uring disabled?)",
                impl->dir);
  }
  impl->ring_ready = true;
  // Segments start through io_uring (no stall of the appends) where the kernel renames through it.
  if (io_uring_probe* probe = io_uring_get_probe_ring(&impl->ring); probe != nullptr) {
    impl->async_rename = io_uring_opcode_supported(probe, IORING_OP_RENAMEAT) != 0 &&
                         !journal::faults().synchronous_segment_start;
    io_uring_free_probe(probe);
  }
  impl->header_block = static_cast<std::byte*>(std::aligned_alloc(kBlockBytes, kBlockBytes));
  if (impl->header_block == nullptr) {
    return fail(Errc::kNoMemory, ENOMEM, "journal open", "{}: cannot allocate a header block",
                impl->dir);
  }
  // Registration pins the buffers; when RLIMIT_MEMLOCK forbids it, plain writes still work.
  impl->buffers_registered = io_uring_register_buffers(&impl->ring, iovecs.data(),
                                                       static_cast<unsigned>(iovecs.size())) == 0;

  auto found = scan_dir(impl->dir);
  if (!found) return unexpected(found.error());
  // Leftover spares: ours from an earlier run (any unfinished ".tmp" is removed). Counted as
  // recycled: that run may have written records into one before it was named.
  for (const std::string& name : found->spares) {
    impl->spares.push_back({join(impl->dir, name), true});
  }
  if (auto recovered = impl->recover(*found); !recovered) return unexpected(recovered.error());
  if (impl->segment_fd.get() < 0) {
    const std::uint64_t index = impl->segments.empty() ? 0 : impl->segments.back().index + 1;
    if (auto started = impl->start_segment(index, impl->next_sequence, false); !started) {
      return unexpected(started.error());
    }
  }
  // The spares asked for are ready before open returns, so that the first segments of a run are
  // not zero-filled while it writes; later ones are topped up in the background.
  for (;;) {
    std::uint64_t number = 0;
    {
      std::lock_guard lock(impl->spare_mutex);
      if (impl->spares.size() >= impl->options.spare_segments) break;
      number = ++impl->spare_counter;
    }
    auto spare = impl->create_spare(number);
    if (!spare) return unexpected(spare.error());
    std::lock_guard lock(impl->spare_mutex);
    impl->spares.push_back({std::move(*spare), false});
  }
  impl->set_spare_target();
  impl->start_spare_thread();
  return Journal(std::move(impl));
}

Journal::Journal(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Journal::Journal(Journal&& other) noexcept = default;
Journal& Journal::operator=(Journal&& other) noexcept = default;
Journal::~Journal() {
  if (impl_ && !impl_->failed) static_cast<void>(impl_->drain());
}

Result<std::uint64_t> Journal::append(std::span<const std::byte> payload, const RecordMeta& meta) {
  return impl_->append(payload, meta);
}

Result<void> Journal::poll() {
  if (impl_->failed) return unexpected(impl_->error);
  bool progressed = false;
  if (auto reaped = impl_->reap(&progressed); !reaped) return reaped;
  return impl_->consult();
}

Result<void> Journal::wait(std::chrono::nanoseconds timeout) {
  if (auto polled = poll(); !polled) return polled;
  if (impl_->ops_count == 0 && impl_->pending_bytes() == 0) return {};
  std::int64_t deadline = detail::deadline_after(timeout);
  if (impl_->recheck_at_ns != 0 && impl_->recheck_at_ns < deadline) deadline = impl_->recheck_at_ns;
  if (impl_->ops_count != 0) {
    if (auto waited = impl_->wait_for_completion(deadline); !waited) return waited;
  } else {
    const std::int64_t remaining = deadline - monotonic_ns();
    if (remaining > 0) {
      timespec ts{remaining / 1'000'000'000, remaining % 1'000'000'000};
      nanosleep(&ts, nullptr);
    }
  }
  return poll();
}

Result<void> Journal::sync() { return impl_->drain(); }

Result<std::uint64_t> Journal::apply_retention() { return impl_->apply_retention(0, true); }

std::uint64_t Journal::durable_sequence() const noexcept { return impl_->durable_sequence; }
std::uint64_t Journal::durable_source_position() const noexcept { return impl_->durable_source; }
std::uint64_t Journal::next_sequence() const noexcept { return impl_->next_sequence; }
std::uint64_t Journal::last_source_position() const noexcept { return impl_->last_source; }
std::uint32_t Journal::in_flight() const noexcept { return impl_->ops_count; }
std::uint64_t Journal::pending_bytes() const noexcept { return impl_->pending_bytes(); }
std::int64_t Journal::recheck_at_ns() const noexcept { return impl_->recheck_at_ns; }
std::uint64_t Journal::record_bytes_max() const noexcept {
  return impl_->options.buffer_bytes - 2 * kBlockBytes - sizeof(RecordHeader);
}
JournalSync Journal::sync_mode() const noexcept { return impl_->sync; }
const RecoveryReport& Journal::recovery() const noexcept { return impl_->recovery; }
JournalStats Journal::stats() const noexcept {
  JournalStats out = impl_->stats;
  out.policy = impl_->policy->stats();
  out.policy.max_io_workers = impl_->io_workers_applied;  // What is in effect.
  {
    std::lock_guard lock(impl_->spare_mutex);
    out.spares_zeroed = impl_->spares_zeroed;
  }
  return out;
}
const char* Journal::policy_name() const noexcept { return impl_->policy->name(); }
const std::string& Journal::dir() const noexcept { return impl_->dir; }
int Journal::ring_fd() const noexcept { return impl_->ring.ring_fd; }
bool Journal::failed() const noexcept { return impl_->failed; }
const Error& Journal::error() const noexcept { return impl_->error; }

}  // namespace weft
