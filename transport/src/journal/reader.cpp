// Reading journals without modifying them: listing segments, verifying every record, and
// replaying from a sequence number while following the live tail.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "error_util.hpp"
#include "journal/format.hpp"
#include "sys/sys.hpp"
#include "weft/journal.hpp"

namespace weft {

using detail::fail;
using detail::fail_errno;
using detail::make_error;
using journal::kSegmentHeaderBytes;

namespace {

struct Mapping {
  int fd = -1;
  const std::byte* data = nullptr;
  std::size_t size = 0;

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&& other) noexcept
      : fd(std::exchange(other.fd, -1)),
        data(std::exchange(other.data, nullptr)),
        size(std::exchange(other.size, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      reset();
      fd = std::exchange(other.fd, -1);
      data = std::exchange(other.data, nullptr);
      size = std::exchange(other.size, 0);
    }
    return *this;
  }
  ~Mapping() { reset(); }
  void reset() noexcept {
    if (data != nullptr) sys::ops().munmap(const_cast<std::byte*>(data), size);
    if (fd >= 0) sys::ops().close(fd);
    fd = -1;
    data = nullptr;
    size = 0;
  }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data, size}; }
};

// Maps `path` read-only; with `lock`, holds a shared flock on it first (retention skips it).
Result<Mapping> map_segment(const std::string& path, bool lock) {
  Mapping mapping;
  mapping.fd = sys::ops().open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (mapping.fd < 0) return fail_errno(errno, "journal read", "{}: cannot open", path);
  if (lock && flock(mapping.fd, LOCK_SH) != 0) {
    return fail_errno(errno, "journal read", "{}: cannot lock", path);
  }
  struct stat st {};
  if (sys::ops().fstat(mapping.fd, &st) != 0) {
    return fail_errno(errno, "journal read", "{}: fstat failed", path);
  }
  if (st.st_size > 0) {
    void* address = sys::ops().mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ,
                                    MAP_SHARED, mapping.fd, 0);
    if (address == MAP_FAILED) return fail_errno(errno, "journal read", "{}: mmap failed", path);
    mapping.data = static_cast<const std::byte*>(address);
    mapping.size = static_cast<std::size_t>(st.st_size);
  }
  return mapping;
}

Result<std::vector<std::pair<std::uint64_t, std::string>>> segment_paths(const std::string& dir) {
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) {
    return fail_errno(errno, "journal read", "{}: cannot list the journal directory", dir);
  }
  std::vector<std::pair<std::uint64_t, std::string>> out;
  while (const dirent* entry = readdir(handle)) {
    std::uint64_t index = 0;
    if (journal::parse_segment_file_name(entry->d_name, &index)) {
      out.emplace_back(index, dir + "/" + entry->d_name);
    }
  }
  closedir(handle);
  std::sort(out.begin(), out.end());
  return out;
}

struct Scanned {
  journal::ScanResult scan;
  std::vector<Mapping> maps;
};

Result<Scanned> scan(const std::string& dir) {
  auto paths = segment_paths(dir);
  if (!paths) return unexpected(paths.error());
  Scanned out;
  std::vector<std::string> names;
  std::vector<std::span<const std::byte>> spans;
  for (const auto& [index, path] : *paths) {
    auto mapped = map_segment(path, false);
    if (!mapped) return unexpected(mapped.error());
    names.push_back(path);
    spans.push_back(mapped->bytes());
    out.maps.push_back(std::move(*mapped));
  }
  out.scan = journal::scan_segments(names, spans);
  return out;
}

}  // namespace

Result<std::vector<SegmentInfo>> list_segments(std::string_view dir) {
  auto scanned = scan(std::string(dir));
  if (!scanned) return unexpected(scanned.error());
  std::vector<SegmentInfo> out;
  for (const journal::ScannedSegment& segment : scanned->scan.segments) {
    SegmentInfo info;
    info.path = segment.path;
    info.index = segment.header.index;
    info.epoch = segment.header.epoch;
    info.first_sequence = segment.header.first_sequence;
    info.last_sequence = segment.last_sequence;
    info.records = segment.records;
    info.bytes = segment.end_offset - kSegmentHeaderBytes;
    info.file_bytes = segment.file_bytes;
    info.header_valid = segment.header_valid;
    struct stat st {};
    if (::stat(segment.path.c_str(), &st) == 0) {
      info.modified_unix_ns = std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
    }
    out.push_back(std::move(info));
  }
  return out;
}

Result<VerifyReport> verify_journal(std::string_view dir) {
  auto scanned = scan(std::string(dir));
  if (!scanned) return unexpected(scanned.error());
  const journal::ScanResult& result = scanned->scan;
  VerifyReport report;
  report.segments = result.segments.size();
  report.records = result.records;
  report.bytes = result.payload_bytes;
  report.first_sequence = result.records != 0 ? result.first_sequence : 0;
  report.last_sequence = result.last_sequence;
  report.torn_tail_bytes = result.stopped ? result.tail_bytes : 0;
  report.corrupted = result.corrupted;
  for (const journal::ScanIssue& issue : result.issues) {
    report.issues.push_back(
        {result.segments[issue.segment].path, issue.offset, issue.sequence, issue.what});
  }
  return report;
}

// ---- JournalReader ------------------------------------------------------------------------------

struct JournalReader::Impl {
  std::string dir;
  ReaderOptions options;
  Mapping segment;  // The segment being read, shared-locked.
  journal::SegmentHeader header{};
  std::uint64_t offset = 0;
  std::uint64_t next_sequence = 1;
  std::uint64_t chain = 0;
  bool open = false;
  Error error{};

  // Opens segment `path` and checks its header; positions at its first record.
  Result<void> enter(const std::string& path) {
    auto mapped = map_segment(path, true);
    if (!mapped) return unexpected(mapped.error());
    if (mapped->size < sizeof header) {
      return fail(Errc::kCorrupted, 0, "journal read", "{}: shorter than a segment header", path);
    }
    std::memcpy(&header, mapped->data, sizeof header);
    if (const char* why = journal::check_segment_header(header, mapped->size)) {
      return fail(Errc::kCorrupted, 0, "journal read", "{}: bad segment header: {}", path, why);
    }
    segment = std::move(*mapped);
    offset = kSegmentHeaderBytes;
    chain = header.checksum;
    open = true;
    return {};
  }

  // Moves to the segment after the current one, if it exists and continues the sequence.
  bool advance() {
    const std::string path = dir + "/" + journal::segment_file_name(header.index + 1);
    if (::access(path.c_str(), F_OK) != 0) return false;
    Mapping previous = std::move(segment);
    const journal::SegmentHeader previous_header = header;
    if (!enter(path) || header.first_sequence != next_sequence) {
      segment = std::move(previous);
      header = previous_header;
      open = segment.data != nullptr;
      return false;
    }
    return true;
  }
};

Result<JournalReader> JournalReader::open(std::string_view dir, std::uint64_t from_sequence,
                                          const ReaderOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->dir = std::string(dir);
  impl->options = options;
  auto paths = segment_paths(impl->dir);
  if (!paths) return unexpected(paths.error());
  if (paths->empty()) {
    return fail(Errc::kNotFound, ENOENT, "journal read", "{}: holds no journal segment", impl->dir);
  }
  // The last segment whose first sequence is <= from_sequence (the oldest if none is).
  std::size_t pick = 0;
  for (std::size_t i = 0; i < paths->size(); ++i) {
    auto mapped = map_segment((*paths)[i].second, false);
    if (!mapped || mapped->size < sizeof(journal::SegmentHeader)) continue;
    journal::SegmentHeader header{};
    std::memcpy(&header, mapped->data, sizeof header);
    if (journal::check_segment_header(header, mapped->size) != nullptr) continue;
    if (header.first_sequence <= from_sequence) pick = i;
  }
  if (auto entered = impl->enter((*paths)[pick].second); !entered) {
    return unexpected(entered.error());
  }
  impl->next_sequence = impl->header.first_sequence;
  JournalReader reader(std::move(impl));
  // Skip to from_sequence.
  JournalRecord record;
  while (reader.impl_->next_sequence < from_sequence) {
    const std::uint64_t before = reader.impl_->next_sequence;
    const ReadStatus status = reader.next(record);
    if (status != ReadStatus::kRecord || reader.impl_->next_sequence == before) break;
  }
  return reader;
}

JournalReader::JournalReader(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
JournalReader::JournalReader(JournalReader&& other) noexcept = default;
JournalReader& JournalReader::operator=(JournalReader&& other) noexcept = default;
JournalReader::~JournalReader() = default;

ReadStatus JournalReader::next(JournalRecord& record) {
  Impl& impl = *impl_;
  if (!impl.open) return ReadStatus::kEnd;
  if (impl.next_sequence > impl.options.sequence_limit) return ReadStatus::kEnd;
  for (;;) {
    const std::span<const std::byte> file = impl.segment.bytes().first(
        std::min<std::uint64_t>(impl.segment.size, impl.header.segment_bytes));
    const char* why = nullptr;
    const journal::RecordCheck check =
        journal::check_record(file, impl.offset, impl.header, impl.next_sequence, impl.chain, &why);
    if (check == journal::RecordCheck::kValid) {
      const journal::RecordHeader header = journal::load_record_header(file, impl.offset);
      const std::uint64_t at = impl.offset;
      impl.offset += journal::record_span(header.length);
      impl.chain = header.checksum;
      if (header.kind != static_cast<std::uint32_t>(journal::RecordKind::kData)) continue;
      ++impl.next_sequence;
      record.sequence = header.sequence;
      record.timestamp_ns = header.timestamp_ns;
      record.source_position = header.source_position;
      record.payload = file.subspan(at + sizeof header, header.length);
      return ReadStatus::kRecord;
    }
    if (check == journal::RecordCheck::kEnd) {
      // The end of this segment's records: the next segment may continue the sequence.
      if (impl.advance()) continue;
      return ReadStatus::kEnd;
    }
    // A bad record: still being written (live tail), or corruption if it was durable.
    if (impl.next_sequence <= impl.options.sequence_limit &&
        impl.options.sequence_limit != ~std::uint64_t{0}) {
      impl.error = make_error(Errc::kCorrupted, 0, "journal read",
                              "{}: segment {} offset {}: durable record {} fails its {} check",
                              impl.dir, impl.header.index, impl.offset, impl.next_sequence, why);
      return ReadStatus::kCorrupted;
    }
    return ReadStatus::kEnd;
  }
}

void JournalReader::set_sequence_limit(std::uint64_t limit) noexcept {
  impl_->options.sequence_limit = limit;
}
std::uint64_t JournalReader::next_sequence() const noexcept { return impl_->next_sequence; }
const Error& JournalReader::last_error() const noexcept { return impl_->error; }

}  // namespace weft
