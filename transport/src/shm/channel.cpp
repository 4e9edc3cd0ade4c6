// Creating, opening and mapping channel files.
#include "weft/channel.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "error_util.hpp"
#include "numa/placement.hpp"
#include "shm/validate.hpp"
#include "sys/sys.hpp"

namespace weft {
namespace {

using detail::fail;
using detail::fail_errno;

constexpr std::size_t kPageBytes = 4096;

Result<void> validate_name(std::string_view name, const char* where) {
  if (name.empty() || name.size() >= detail::kNameBytesMax) {
    return fail(Errc::kInvalidArgument, 0, where,
                "channel name '{}' must be 1 to {} characters long", name,
                detail::kNameBytesMax - 1);
  }
  if (name.front() == '.') {
    return fail(Errc::kInvalidArgument, 0, where,
                "channel name '{}' must not start with '.' (reserved for files being created)",
                name);
  }
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return fail(Errc::kInvalidArgument, 0, where,
                  "channel name '{}' has character '{}': use only letters, digits, '.', '_', '-'",
                  name, c);
    }
  }
  return {};
}

// Populates the page tables of [address, address + bytes) so that no page fault lands on the
// data path. Writable mappings are populated writable without changing a byte.
void prefault(void* address, std::size_t bytes, bool writable) noexcept {
#ifdef MADV_POPULATE_WRITE
  const int advice = writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
  if (sys::ops().madvise(address, bytes, advice) == 0) return;
#endif
  // Older kernels: read one byte of every page. A read fault of a shared writable mapping maps
  // the page writable, and reading never disturbs a live ring.
  const auto* bytes_in = static_cast<const volatile unsigned char*>(address);
  unsigned char sink = 0;
  for (std::size_t offset = 0; offset < bytes; offset += kPageBytes) sink ^= bytes_in[offset];
  static_cast<void>(sink);
}

std::uint64_t unix_now_ns() noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) sys::ops().close(fd_);
  }
  [[nodiscard]] int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// Takes the shared "in use" lock without blocking; a remove_if_stale in progress holds the
// exclusive lock for a moment, so retry a few times before reporting kBusy.
int lock_shared(int fd) noexcept {
  constexpr int kAttemptsMax = 100;
  for (int attempt = 0; attempt < kAttemptsMax; ++attempt) {
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) return 0;
    if (errno != EWOULDBLOCK) return errno;
    usleep(1000);
  }
  return EWOULDBLOCK;
}

}  // namespace

namespace detail {
struct MappingOwner {
  void* address;
  std::size_t bytes;
  int fd;
  MappingOwner(void* mapping, std::size_t mapped_bytes, int descriptor) noexcept
      : address(mapping), bytes(mapped_bytes), fd(descriptor) {}
  MappingOwner(const MappingOwner&) = delete;
  MappingOwner& operator=(const MappingOwner&) = delete;
  ~MappingOwner() {
    sys::ops().munmap(address, bytes);
    // Closing the descriptor drops the shared lock: the channel may become stale.
    if (fd >= 0) sys::ops().close(fd);
  }
};
}  // namespace detail

// Grants the implementation access to Channel's private constructor and fields.
struct ChannelAccess {
  static Channel make() { return {}; }
  static void set(Channel& channel, std::string name, std::string path, void* mapping,
                  std::size_t mapped_bytes, const detail::ValidatedMeta& meta, bool read_only,
                  int fd) {
    channel.name_ = std::move(name);
    channel.path_ = std::move(path);
    channel.header_ = static_cast<detail::ChannelHeader*>(mapping);
    channel.ring_ = static_cast<std::byte*>(mapping) + meta.header_bytes;
    channel.header_bytes_ = meta.header_bytes;
    channel.producers_max_ = meta.producers_max;
    channel.consumers_max_ = meta.consumers_max;
    channel.flags_ = meta.flags;
    channel.unblock_timeout_ns_ = meta.unblock_timeout_ns;
    channel.fd_ = fd;
    channel.owner_ = std::make_shared<detail::MappingOwner>(mapping, mapped_bytes, fd);
    channel.mapped_bytes_ = mapped_bytes;
    channel.page_bytes_ = meta.page_bytes;
    channel.placement_flags_ = meta.placement_flags;
    channel.numa_node_ = meta.numa_node;
    channel.numa_cpu_ = meta.numa_cpu;
    channel.capacity_bytes_ = meta.capacity_bytes;
    channel.record_bytes_max_ = meta.record_bytes_max;
    channel.kind_ = meta.kind;
    channel.read_only_ = read_only;
  }
};

std::string Channel::resolve_dir(std::string_view dir) {
  if (!dir.empty()) return std::string(dir);
  const char* env = std::getenv(kShmDirEnv);  // NOLINT(concurrency-mt-unsafe): set-up path only.
  if (env != nullptr && env[0] != '\0') return env;
  return kDefaultShmDir;
}

Result<Channel> Channel::create(std::string_view name, const ChannelOptions& options) {
  constexpr const char* kWhere = "channel create";
  if (auto ok = validate_name(name, kWhere); !ok) return unexpected(ok.error());
  const std::uint64_t capacity = options.capacity_bytes;
  if (!std::has_single_bit(capacity) || capacity < detail::kCapacityBytesMin ||
      capacity > detail::kCapacityBytesMax) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': capacity_bytes {} must be a power of two in [{}, {}]", name,
                capacity, detail::kCapacityBytesMin, detail::kCapacityBytesMax);
  }
  const std::uint64_t record_max_limit = detail::record_bytes_max_limit(capacity);
  const std::uint64_t record_max =
      options.record_bytes_max == 0 ? capacity / 4 : options.record_bytes_max;
  if (record_max > record_max_limit) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': record_bytes_max {} exceeds {} (capacity_bytes / 2 - 16): raise "
                "capacity_bytes or lower record_bytes_max",
                name, record_max, record_max_limit);
  }
  const bool mpsc = options.kind == ChannelKind::kMpsc;
  const bool broadcast = options.kind == ChannelKind::kBroadcast;
  if (options.kind != ChannelKind::kSpsc && !mpsc && !broadcast) {
    return fail(Errc::kInvalidArgument, 0, kWhere, "channel '{}': unknown kind {}", name,
                static_cast<std::uint32_t>(options.kind));
  }
  if (mpsc && (options.producers_max == 0 || options.producers_max > detail::kProducersMaxLimit)) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': producers_max {} must be in 1..{}", name, options.producers_max,
                detail::kProducersMaxLimit);
  }
  if (broadcast &&
      (options.consumers_max == 0 || options.consumers_max > detail::kConsumersMaxLimit)) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': consumers_max {} must be in 1..{}", name, options.consumers_max,
                detail::kConsumersMaxLimit);
  }
  if (options.lossy && !broadcast) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': lossy applies to broadcast channels only", name);
  }
  if (mpsc && options.unblock_timeout.count() <= 0) {
    return fail(Errc::kInvalidArgument, 0, kWhere, "channel '{}': unblock_timeout must be positive",
                name);
  }
  if ((options.mode & ~mode_t{07777}) != 0) {
    return fail(Errc::kInvalidArgument, 0, kWhere, "channel '{}': mode {:o} has non-mode bits",
                name, options.mode);
  }

  // Placement and page size are checked before anything is made.
  auto plan = detail::plan_placement(options, name);
  if (!plan) return unexpected(plan.error());
  if (options.page_bytes != 0 && options.page_bytes != kBasePageBytes &&
      (!std::has_single_bit(options.page_bytes) ||
       options.page_bytes > detail::kHugePageBytesMax)) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': page_bytes {} must be 0, {} or a huge page size such as {}", name,
                options.page_bytes, kBasePageBytes, kHugePageBytes);
  }
  std::string dir;
  if (options.dir.empty() && options.page_bytes > kBasePageBytes) {
    auto huge_dir = huge_page_dir(options.page_bytes);
    if (!huge_dir) {
      Error e = huge_dir.error();
      e.where = kWhere;
      return unexpected(e);
    }
    dir = std::move(*huge_dir);
  } else {
    dir = resolve_dir(options.dir);
  }
  if (sys::ops().mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    const int err = errno;
    return fail_errno(err, kWhere, "cannot create channel directory {}: create it, or set {}", dir,
                      kShmDirEnv);
  }
  auto dir_page_bytes = directory_page_bytes(dir);
  if (!dir_page_bytes) {
    Error e = dir_page_bytes.error();
    e.where = kWhere;
    return unexpected(e);
  }
  const std::uint64_t page_bytes = *dir_page_bytes;
  const bool huge = page_bytes > kBasePageBytes;
  if (options.page_bytes != 0 && options.page_bytes != page_bytes) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "channel '{}': page_bytes {} asked for, but {} has {}-byte pages: use a hugetlbfs "
                "directory for huge pages (weft::huge_page_dir()), a tmpfs one for 4 KiB pages",
                name, options.page_bytes, dir, page_bytes);
  }
  const std::string path = dir + "/" + std::string(name);
  static std::atomic<std::uint32_t> counter{0};
  // Relaxed: only uniqueness within this process matters.
  const std::string temp_path = fmt::format("{}/.{}.{}.{}.tmp", dir, name, getpid(),
                                            counter.fetch_add(1, std::memory_order_relaxed));

  const int raw_fd =
      sys::ops().open(temp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, options.mode);
  if (raw_fd < 0) {
    const int err = errno;
    return fail_errno(err, kWhere, "channel '{}': cannot create {} in {}", name, temp_path, dir);
  }
  FileDescriptor fd(raw_fd);
  struct TempGuard {
    const std::string& path;
    bool armed = true;
    ~TempGuard() {
      if (armed) sys::ops().unlink(path.c_str());
    }
  } temp_guard{temp_path};

  // fchmod sets the mode exactly: the umask applied by open() must not narrow a shared mode.
  if (sys::ops().fchmod(fd.get(), options.mode) != 0) {
    const int err = errno;
    return fail_errno(err, kWhere, "channel '{}': cannot set mode {:o} on {}", name, options.mode,
                      temp_path);
  }
  const detail::ValidatedMeta config{
      options.kind,
      capacity,
      record_max,
      detail::header_bytes_for(mpsc ? options.producers_max : 0,
                               broadcast ? options.consumers_max : 0),
      mpsc ? options.producers_max : 0,
      broadcast ? options.consumers_max : 0,
      options.lossy ? detail::kFlagLossy : 0U,
      mpsc ? static_cast<std::uint64_t>(options.unblock_timeout.count()) : 0,
      page_bytes,
      plan->flags(),
      plan->node,
      plan->cpu};
  // Huge-page files are whole pages: mmap and ftruncate on hugetlbfs take nothing else.
  const std::uint64_t size = detail::file_bytes_for(config.header_bytes, capacity, page_bytes);
  // With a node requested, this thread allocates from that node until the pages are prefaulted:
  // fallocate (tmpfs and hugetlbfs alike) and the first touch both follow the thread's policy.
  detail::ThreadPolicyScope thread_policy;
  if (plan->node >= 0) {
    if (auto ok = thread_policy.apply(plan->node, plan->policy, name); !ok)
      return unexpected(ok.error());
  }
  // Allocate every page now: on tmpfs a sparse file would fail later with SIGBUS on first touch
  // when the file system is full; this way it fails here, with ENOSPC. On hugetlbfs this takes
  // the huge pages from the pool, and fails with ENOSPC/ENOMEM when too few are reserved.
  if (const int err = sys::ops().fallocate(fd.get(), 0, static_cast<off_t>(size)); err != 0) {
    if (huge && (err == ENOSPC || err == ENOMEM)) {
      return unexpected(detail::huge_pages_error(err, page_bytes, size, name, dir));
    }
    if (plan->node >= 0 && (err == ENOSPC || err == ENOMEM)) {
      return fail_errno(err, kWhere,
                        "channel '{}': node {} cannot hold {} more bytes ({}): free memory there, "
                        "use NumaPolicy::kPreferred, or choose another node",
                        name, plan->node, size, dir);
    }
    if (err != EOPNOTSUPP && err != EINVAL) {
      return fail_errno(err, kWhere,
                        "channel '{}': cannot allocate {} bytes in {}: free space there, lower "
                        "capacity_bytes, or choose another directory",
                        name, size, dir);
    }
    if (sys::ops().ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      const int err2 = errno;
      return fail_errno(err2, kWhere, "channel '{}': cannot size {} to {} bytes", name, temp_path,
                        size);
    }
  }
  void* mapping = sys::ops().mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (mapping == MAP_FAILED) {
    const int err = errno;
    if (huge && err == ENOMEM) {
      return unexpected(detail::huge_pages_error(err, page_bytes, size, name, dir));
    }
    return fail_errno(err, kWhere, "channel '{}': cannot map {} bytes of {}", name, size,
                      temp_path);
  }
  struct MappingGuard {
    void* address;
    std::size_t bytes;
    bool armed = true;
    ~MappingGuard() {
      if (armed) sys::ops().munmap(address, bytes);
    }
  } mapping_guard{mapping, size};
  if (plan->node >= 0) {
    // The mapping's own policy (on tmpfs: the file's shared policy) keeps pages faulted later,
    // after a swap-in or by another process, on the node too.
    if (auto ok = detail::bind_mapping(mapping, size, plan->node, plan->policy, name); !ok) {
      return unexpected(ok.error());
    }
  }
  prefault(mapping, size, true);
  thread_policy.restore();
  if (plan->node >= 0) {
    if (auto ok =
            detail::verify_placement(mapping, size, page_bytes, plan->node, plan->policy, name);
        !ok) {
      return unexpected(ok.error());
    }
  }
  if (plan->lock) {
    if (auto ok = detail::lock_mapping(mapping, size, name, temp_path); !ok)
      return unexpected(ok.error());
  }

  auto* header = static_cast<detail::ChannelHeader*>(mapping);
  detail::ChannelMeta& meta = header->meta;
  meta.magic = detail::kChannelMagic;
  meta.layout_version = detail::kLayoutVersion;
  meta.kind = static_cast<std::uint32_t>(options.kind);
  meta.size_bytes = size;
  meta.header_bytes = config.header_bytes;
  meta.capacity_bytes = capacity;
  meta.record_bytes_max = record_max;
  meta.created_unix_ns = unix_now_ns();
  meta.creator_pid = static_cast<std::uint32_t>(getpid());
  std::memset(meta.name, 0, sizeof meta.name);
  std::memcpy(meta.name, name.data(), name.size());
  header->config.producers_max = config.producers_max;
  header->config.consumers_max = config.consumers_max;
  header->config.flags = config.flags;
  header->config.unblock_timeout_ns = config.unblock_timeout_ns;
  header->config.page_bytes = page_bytes;
  header->config.placement_flags = config.placement_flags;
  header->config.numa_node = plan->node;
  header->config.numa_cpu = plan->cpu;
  // Free slots: no claim, no cursor.
  auto* bytes = static_cast<std::byte*>(mapping);
  auto* producer_slots = reinterpret_cast<detail::ProducerSlot*>(bytes + detail::kSlotsOffset);
  for (std::uint32_t i = 0; i < config.producers_max; ++i) {
    // Relaxed (all): nothing else can see the file before link() below.
    producer_slots[i].intent.store(detail::kNoPosition, std::memory_order_relaxed);
    producer_slots[i].intent_end.store(detail::kNoPosition, std::memory_order_relaxed);
    producer_slots[i].chunk_start.store(detail::kNoPosition, std::memory_order_relaxed);
    producer_slots[i].chunk_end.store(detail::kNoPosition, std::memory_order_relaxed);
    producer_slots[i].chunk_limit.store(detail::kNoPosition, std::memory_order_relaxed);
    producer_slots[i].write_position.store(detail::kNoPosition, std::memory_order_relaxed);
  }
  auto* consumer_slots = reinterpret_cast<detail::ConsumerSlot*>(
      bytes + detail::kSlotsOffset + config.producers_max * detail::kFalseSharingRange);
  for (std::uint32_t i = 0; i < config.consumers_max; ++i) {
    consumer_slots[i].head_position.store(detail::kNoPosition, std::memory_order_relaxed);
  }
  // The creator's shared lock marks the file in use from the moment it has a name.
  if (const int err = lock_shared(fd.get()); err != 0) {
    return fail_errno(err, kWhere, "channel '{}': cannot lock {}", name, temp_path);
  }
  // The rest of the file is zero from fallocate: cursors at 0, no sleepers, every record header
  // word 0 ("nothing committed").

  // link() gives the finished file its name atomically and fails if the name exists; the header
  // stores above are complete before the system call, so an opener sees all of them.
  if (sys::ops().link(temp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    if (err == EEXIST) {
      return fail(Errc::kAlreadyExists, err, kWhere,
                  "channel '{}' already exists at {}: open it, or remove it first (weftctl rm)",
                  name, path);
    }
    return fail_errno(err, kWhere, "channel '{}': cannot link {} to {}", name, temp_path, path);
  }
  // The temporary name goes now; the guard would do the same.
  temp_guard.armed = false;
  sys::ops().unlink(temp_path.c_str());
  mapping_guard.armed = false;

  Channel channel = ChannelAccess::make();
  ChannelAccess::set(channel, std::string(name), path, mapping, size, config, false, fd.release());
  return channel;
}

Result<Channel> Channel::open(std::string_view name, const OpenOptions& options) {
  constexpr const char* kWhere = "channel open";
  if (auto ok = validate_name(name, kWhere); !ok) return unexpected(ok.error());
  const std::string path = resolve_dir(options.dir) + "/" + std::string(name);
  const int raw_fd =
      sys::ops().open(path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0);
  if (raw_fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      return fail(Errc::kNotFound, err, kWhere,
                  "channel '{}' does not exist at {}: create it first, or check {}", name, path,
                  kShmDirEnv);
    }
    if (err == EACCES || err == EPERM) {
      return fail(Errc::kPermissionDenied, err, kWhere,
                  "channel '{}': no {} permission on {}: run as its owner or widen its mode", name,
                  options.read_only ? "read" : "read-write", path);
    }
    return fail_errno(err, kWhere, "channel '{}': cannot open {}", name, path);
  }
  FileDescriptor fd(raw_fd);
  struct stat st {};
  if (sys::ops().fstat(fd.get(), &st) != 0) {
    const int err = errno;
    return fail_errno(err, kWhere, "channel '{}': cannot stat {}", name, path);
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(Errc::kCorrupted, 0, kWhere, "{}: not a regular file", path);
  }
  const auto file_bytes = static_cast<std::uint64_t>(st.st_size);
  if (file_bytes < detail::kPageBytes) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: file is {} bytes, smaller than the {}-byte channel header", path, file_bytes,
                detail::kPageBytes);
  }
  // The file system decides the page size (hugetlbfs: its huge pages); every mapping and unmapping
  // below uses whole pages of it.
  auto file_page_bytes = detail::file_page_bytes(fd.get(), path);
  if (!file_page_bytes) return unexpected(file_page_bytes.error());
  const std::uint64_t page_bytes = *file_page_bytes;
  // (A base-page file of the wrong size is reported by validate_header, naming size_bytes.)
  if (page_bytes > kBasePageBytes && file_bytes % page_bytes != 0) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: file is {} bytes, not a multiple of its {}-byte pages", path, file_bytes,
                page_bytes);
  }
  if (!options.read_only) {
    if (const int err = lock_shared(fd.get()); err != 0) {
      return fail(Errc::kBusy, err, kWhere,
                  "channel '{}': {} is being removed (locked exclusively): retry", name, path);
    }
    // A remove_if_stale may have unlinked the name between our open() and our lock: then this
    // file is an orphan that no producer will ever find. Check that the name still leads here.
    struct stat by_name {};
    if (::stat(path.c_str(), &by_name) != 0 || by_name.st_ino != st.st_ino ||
        by_name.st_dev != st.st_dev) {
      return fail(Errc::kNotFound, ENOENT, kWhere,
                  "channel '{}' was removed while it was being opened ({}): create it again", name,
                  path);
    }
  }
  const int prot = options.read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  // Map the header alone first: the size in it is not trusted until validated.
  void* head_map = sys::ops().mmap(nullptr, page_bytes, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (head_map == MAP_FAILED) {
    const int err = errno;
    return fail_errno(err, kWhere, "channel '{}': cannot map the header of {}", name, path);
  }
  auto meta = detail::validate_header(*static_cast<const detail::ChannelHeader*>(head_map),
                                      file_bytes, path);
  sys::ops().munmap(head_map, page_bytes);
  if (!meta) return unexpected(meta.error());
  if (meta->page_bytes != page_bytes) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'page_bytes' is {} but the file lies on a file system with {}-byte "
                "pages: copied between file systems, or overwritten",
                path, meta->page_bytes, page_bytes);
  }

  const std::size_t size = file_bytes;
  void* mapping = sys::ops().mmap(nullptr, size, prot, MAP_SHARED, fd.get(), 0);
  if (mapping == MAP_FAILED) {
    const int err = errno;
    return fail_errno(err, kWhere, "channel '{}': cannot map {} bytes of {}", name, size, path);
  }
  // Validate again through the final mapping: the file may have changed between the two maps.
  auto final_meta = detail::validate_header(*static_cast<const detail::ChannelHeader*>(mapping),
                                            file_bytes, path);
  if (!final_meta || final_meta->capacity_bytes != meta->capacity_bytes ||
      final_meta->record_bytes_max != meta->record_bytes_max ||
      final_meta->header_bytes != meta->header_bytes ||
      final_meta->producers_max != meta->producers_max ||
      final_meta->consumers_max != meta->consumers_max ||
      final_meta->page_bytes != meta->page_bytes) {
    sys::ops().munmap(mapping, size);
    if (!final_meta) return unexpected(final_meta.error());
    return fail(Errc::kCorrupted, 0, kWhere, "{}: header changed while it was being opened", path);
  }
  prefault(mapping, size, !options.read_only);
  // The creator asked for locked pages: every read-write user locks them, so that they stay
  // resident whoever of them lives longest. Read-only observers never disturb a channel.
  if (!options.read_only && (final_meta->placement_flags & detail::kPlacementLock) != 0) {
    if (auto ok = detail::lock_mapping(mapping, size, name, path); !ok) {
      sys::ops().munmap(mapping, size);
      return unexpected(ok.error());
    }
  }

  Channel channel = ChannelAccess::make();
  ChannelAccess::set(channel, std::string(name), path, mapping, size, *final_meta,
                     options.read_only, options.read_only ? -1 : fd.release());
  return channel;
}

Result<void> Channel::unlink(std::string_view name, std::string_view dir) {
  constexpr const char* kWhere = "channel unlink";
  if (auto ok = validate_name(name, kWhere); !ok) return ok;
  const std::string path = resolve_dir(dir) + "/" + std::string(name);
  if (sys::ops().unlink(path.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      return fail(Errc::kNotFound, err, kWhere, "channel '{}' does not exist at {}", name, path);
    }
    return fail_errno(err, kWhere, "channel '{}': cannot remove {}", name, path);
  }
  return {};
}

namespace {

// Opens `name` and tries to take its exclusive lock: success means no process holds it open.
// Returns the locked descriptor, or -1 with *in_use set when someone holds it.
Result<int> lock_if_unused(std::string_view name, std::string_view dir, const char* where,
                           bool* in_use) {
  if (auto ok = validate_name(name, where); !ok) return unexpected(ok.error());
  const std::string path = Channel::resolve_dir(dir) + "/" + std::string(name);
  const int raw_fd = sys::ops().open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (raw_fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      return fail(Errc::kNotFound, err, where, "channel '{}' does not exist at {}", name, path);
    }
    return fail_errno(err, where, "channel '{}': cannot open {}", name, path);
  }
  if (flock(raw_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    sys::ops().close(raw_fd);
    if (err == EWOULDBLOCK) {
      *in_use = true;
      return -1;
    }
    return fail_errno(err, where, "channel '{}': cannot lock {}", name, path);
  }
  *in_use = false;
  return raw_fd;
}

}  // namespace

Result<bool> Channel::is_stale(std::string_view name, std::string_view dir) {
  bool in_use = false;
  auto fd = lock_if_unused(name, dir, "channel stale check", &in_use);
  if (!fd) return unexpected(fd.error());
  if (!in_use) sys::ops().close(*fd);
  return !in_use;
}

Result<bool> Channel::remove_if_stale(std::string_view name, std::string_view dir) {
  constexpr const char* kWhere = "channel remove";
  bool in_use = false;
  auto fd = lock_if_unused(name, dir, kWhere, &in_use);
  if (!fd) return unexpected(fd.error());
  if (in_use) return false;
  // Holding the exclusive lock, unlink the name: an opener now either fails to lock until we
  // close, or locks afterwards and finds the name gone (see open()).
  const std::string path = resolve_dir(dir) + "/" + std::string(name);
  const int rc = sys::ops().unlink(path.c_str());
  const int err = errno;
  sys::ops().close(*fd);
  if (rc != 0) return fail_errno(err, kWhere, "channel '{}': cannot remove {}", name, path);
  return true;
}

Channel::Channel(Channel&& other) noexcept
    : name_(std::move(other.name_)),
      path_(std::move(other.path_)),
      header_(std::exchange(other.header_, nullptr)),
      ring_(std::exchange(other.ring_, nullptr)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)),
      page_bytes_(other.page_bytes_),
      placement_flags_(other.placement_flags_),
      numa_node_(other.numa_node_),
      numa_cpu_(other.numa_cpu_),
      capacity_bytes_(other.capacity_bytes_),
      record_bytes_max_(other.record_bytes_max_),
      header_bytes_(other.header_bytes_),
      unblock_timeout_ns_(other.unblock_timeout_ns_),
      producers_max_(other.producers_max_),
      consumers_max_(other.consumers_max_),
      flags_(other.flags_),
      kind_(other.kind_),
      fd_(std::exchange(other.fd_, -1)),
      owner_(std::move(other.owner_)),
      read_only_(other.read_only_) {}

Channel& Channel::operator=(Channel&& other) noexcept {
  if (this != &other) {
    reset();
    name_ = std::move(other.name_);
    path_ = std::move(other.path_);
    header_ = std::exchange(other.header_, nullptr);
    ring_ = std::exchange(other.ring_, nullptr);
    mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
    page_bytes_ = other.page_bytes_;
    placement_flags_ = other.placement_flags_;
    numa_node_ = other.numa_node_;
    numa_cpu_ = other.numa_cpu_;
    capacity_bytes_ = other.capacity_bytes_;
    record_bytes_max_ = other.record_bytes_max_;
    header_bytes_ = other.header_bytes_;
    unblock_timeout_ns_ = other.unblock_timeout_ns_;
    producers_max_ = other.producers_max_;
    consumers_max_ = other.consumers_max_;
    flags_ = other.flags_;
    kind_ = other.kind_;
    fd_ = std::exchange(other.fd_, -1);
    read_only_ = other.read_only_;
    owner_ = std::move(other.owner_);
  }
  return *this;
}

Channel::~Channel() { reset(); }

Channel Channel::share() const {
  Channel copy;
  copy.name_ = name_;
  copy.path_ = path_;
  copy.header_ = header_;
  copy.ring_ = ring_;
  copy.mapped_bytes_ = mapped_bytes_;
  copy.page_bytes_ = page_bytes_;
  copy.placement_flags_ = placement_flags_;
  copy.numa_node_ = numa_node_;
  copy.numa_cpu_ = numa_cpu_;
  copy.capacity_bytes_ = capacity_bytes_;
  copy.record_bytes_max_ = record_bytes_max_;
  copy.header_bytes_ = header_bytes_;
  copy.unblock_timeout_ns_ = unblock_timeout_ns_;
  copy.producers_max_ = producers_max_;
  copy.consumers_max_ = consumers_max_;
  copy.flags_ = flags_;
  copy.kind_ = kind_;
  copy.fd_ = fd_;
  copy.read_only_ = read_only_;
  copy.owner_ = owner_;
  return copy;
}

Result<ChannelPlacement> Channel::placement() const {
  ChannelPlacement placement;
  placement.page_bytes = page_bytes_;
  placement.node_requested = numa_node_;
  placement.cpu_requested = numa_cpu_;
  placement.policy = (placement_flags_ & detail::kPlacementPreferred) != 0 ? NumaPolicy::kPreferred
                                                                           : NumaPolicy::kBind;
  placement.lock_memory = (placement_flags_ & detail::kPlacementLock) != 0;
  if (header_ == nullptr) {
    return fail(Errc::kInvalidArgument, 0, "channel placement",
                "channel handle is empty (moved "
                "from)");
  }
  auto pages = page_nodes(header_, mapped_bytes_, page_bytes_);
  if (!pages) {
    if (pages.error().code == Errc::kUnsupported) return placement;
    return unexpected(pages.error());
  }
  placement.pages_known = true;
  placement.pages = std::move(*pages);
  return placement;
}

void Channel::reset() noexcept {
  owner_.reset();  // The last handle unmaps and closes.
  fd_ = -1;
  header_ = nullptr;
  ring_ = nullptr;
  mapped_bytes_ = 0;
}

}  // namespace weft
