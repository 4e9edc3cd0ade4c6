// The journal: an append-only write-ahead log of framed, checksummed records in segment files,
// written through io_uring, recovered after a crash, replayed from any sequence number and trimmed
// by a retention policy. The on-disk format is described byte by byte in docs/journal.md.
//
// Concurrency
//   Roles: one writer (a Journal object, used by one thread: the thread that appends also reaps
//   completions) and any number of read-only readers (JournalReader, the inspection calls), in any
//   process. Single writer: only the Journal writes segment files; readers never modify them.
//   Publication: a record is durable once the write that holds it and the fdatasync after it have
//   completed (or the O_DIRECT|O_DSYNC write has), and every earlier flush is durable too;
//   durable_sequence() advances only over that contiguous prefix. A reader that follows the live
//   tail verifies every record's checksum, so a record still being written is never returned.
//
// Durability: a record is reported durable only after fdatasync (or O_DSYNC) returned success.
// A write or fsync error fails the journal for good (failed() is true, every later call returns
// the error): an fsync error is never retried, since the kernel may have dropped the dirty pages.
// On tmpfs nothing survives a power cut anyway, and no fsync is issued.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/export.hpp"
#include "weft/flush_policy.hpp"
#include "weft/result.hpp"

namespace weft {

// How flushes are made durable.
enum class JournalSync : std::uint8_t {
  kAuto,            // kDirectDsync where the file system takes O_DIRECT writes of 4 KiB blocks,
                    // else kWriteFdatasync; kNone on tmpfs.
  kWriteFdatasync,  // Buffered writes, each flush followed by a linked fdatasync.
  kDirectDsync,     // O_DIRECT|O_DSYNC writes of whole 4 KiB blocks (flushes padded to a block).
  kNone,            // No fsync: only for tmpfs or tests; nothing is durable across a power cut.
};

WEFT_EXPORT const char* journal_sync_name(JournalSync sync) noexcept;

struct JournalOptions {
  // Bytes per segment file, header included: a multiple of 4 KiB, at least 64 KiB.
  std::uint64_t segment_bytes = std::uint64_t{64} << 20;
  // Bytes per staging buffer (registered with io_uring): a multiple of 4 KiB. The largest record
  // is buffer_bytes - 8 KiB of payload.
  std::uint64_t buffer_bytes = std::uint64_t{1} << 20;
  // Staging buffers: one is filled while the others are in flight. At least 2.
  std::uint32_t buffers = 8;
  JournalSync sync = JournalSync::kAuto;
  // When to flush. Null: natural batching (make_natural_flush()).
  std::unique_ptr<FlushPolicy> policy;
  // Retention: remove the oldest whole segments while the journal holds more than retain_bytes
  // (0: no limit) or while the oldest was last written more than retain_age ago (0: no limit).
  // The segment being written and any segment a reader holds are never removed.
  std::uint64_t retain_bytes = 0;
  std::chrono::seconds retain_age{0};
  // Segments written with zeros ahead of use, so that a flush overwrites allocated blocks and
  // fdatasync has no metadata to commit. Removed segments are recycled as spares (with a new
  // epoch) up to this count instead of being deleted.
  std::uint32_t spare_segments = 1;
  // File mode of new segment files.
  mode_t mode = 0644;
};

// What a writer may attach to a record besides its payload.
struct RecordMeta {
  std::int64_t timestamp_ns = 0;  // Any clock; the recorder uses CLOCK_REALTIME.
  std::uint64_t source_position =
      ~std::uint64_t{0};  // The recorder: the record's channel position.
};

// What opening a journal found.
struct RecoveryReport {
  std::uint64_t segments = 0;
  std::uint64_t records = 0;          // Valid records kept.
  std::uint64_t bytes = 0;            // Their payload bytes.
  std::uint64_t dropped_records = 0;  // Torn-tail records dropped (partial or after a partial one).
  std::uint64_t dropped_bytes = 0;    // Bytes of the torn tail that were zeroed.
  std::uint64_t dropped_segments = 0;  // Segments after the torn tail that were removed.
  std::uint64_t last_sequence = 0;     // Last valid record (0: none).
  std::uint64_t last_source_position = ~std::uint64_t{0};
};

// Counters the journal keeps, plus its policy's statistics.
struct JournalStats {
  std::uint64_t appended_records = 0;
  std::uint64_t appended_bytes = 0;  // Payload bytes.
  std::uint64_t flushes = 0;         // Flushes that became durable.
  std::uint64_t durable_records = 0;
  std::uint64_t durable_bytes = 0;      // Framed bytes made durable.
  std::uint64_t retries = 0;            // Short writes and -EAGAIN resubmitted.
  std::uint64_t errors = 0;             // Write or fsync failures (each fails the journal).
  std::uint64_t segments_created = 0;   // Started in a file made then (no spare was ready).
  std::uint64_t segments_recycled = 0;  // Started in a spare.
  std::uint64_t segments_removed = 0;
  // Spare files written with zeros (ahead of use, or at a start when none was ready). A journal at
  // its retention limit recycles removed segments instead: this stops growing.
  std::uint64_t spares_zeroed = 0;
  FlushPolicyStats policy;
};

class WEFT_EXPORT Journal {
 public:
  // Opens (creating if needed) the journal in directory `dir`: scans every segment, verifies every
  // record, truncates a torn tail (see recovery()), and gets ready to append after the last valid
  // record. kCorrupted when a bad record is followed by records written after it was durable (the
  // message names the segment, offset and sequence); kNotFound/kPermissionDenied for the
  // directory; kUnsupported when io_uring is unavailable.
  static Result<Journal> open(std::string_view dir, JournalOptions options = {});

  Journal(Journal&& other) noexcept;
  Journal& operator=(Journal&& other) noexcept;
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal();  // Flushes what is pending and waits for it (best effort), then closes.

  // Frames `payload` as the next record and returns its sequence number (the first is 1). It is
  // not durable yet: the policy decides when it is flushed. Blocks only while every staging buffer
  // is in flight. kInvalidArgument when it is larger than record_bytes_max().
  Result<std::uint64_t> append(std::span<const std::byte> payload, const RecordMeta& meta = {});
  // Reaps completed flushes and consults the policy; never blocks.
  Result<void> poll();
  // Blocks until a flush completes, the policy's recheck time comes, or `timeout` passes, then
  // polls. Returns at once when nothing is in flight and nothing is pending.
  Result<void> wait(std::chrono::nanoseconds timeout);
  // Flushes everything appended so far and waits until it is durable (or the journal fails).
  Result<void> sync();
  // Removes segments that the retention options say are too old or too many (also done whenever
  // a segment fills). Returns the number removed.
  Result<std::uint64_t> apply_retention();

  // Every record with a sequence <= durable_sequence() is durable.
  [[nodiscard]] std::uint64_t durable_sequence() const noexcept;
  // The source_position of the last durable record (~0: none carried one).
  [[nodiscard]] std::uint64_t durable_source_position() const noexcept;
  [[nodiscard]] std::uint64_t next_sequence() const noexcept;
  [[nodiscard]] std::uint64_t last_source_position() const noexcept;  // Of the last appended.
  [[nodiscard]] std::uint32_t in_flight() const noexcept;
  [[nodiscard]] std::uint64_t pending_bytes() const noexcept;
  // CLOCK_MONOTONIC time at which the policy wants to be asked again (0: none).
  [[nodiscard]] std::int64_t recheck_at_ns() const noexcept;
  [[nodiscard]] std::uint64_t record_bytes_max() const noexcept;
  [[nodiscard]] JournalSync sync_mode() const noexcept;
  [[nodiscard]] const RecoveryReport& recovery() const noexcept;
  [[nodiscard]] JournalStats stats() const noexcept;
  [[nodiscard]] const char* policy_name() const noexcept;
  [[nodiscard]] const std::string& dir() const noexcept;
  // The io_uring file descriptor, for callers that poll it together with other descriptors.
  [[nodiscard]] int ring_fd() const noexcept;
  // True once a write or fsync failed; error() says which.
  [[nodiscard]] bool failed() const noexcept;
  [[nodiscard]] const Error& error() const noexcept;

  struct Impl;

 private:
  explicit Journal(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

// ---- Read-only inspection (weftctl journal ls|verify|dump) -----------------------------------

struct SegmentInfo {
  std::string path;
  std::uint64_t index = 0;
  std::uint64_t epoch = 0;
  std::uint64_t first_sequence = 0;
  std::uint64_t last_sequence = 0;  // 0 when the segment holds no valid record.
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;       // Bytes of valid records (framing included) after the header.
  std::uint64_t file_bytes = 0;  // The file's size (preallocated).
  std::int64_t modified_unix_ns = 0;
  bool header_valid = false;
};

// The segments in `dir`, oldest first. Reads headers and scans records; modifies nothing.
WEFT_EXPORT Result<std::vector<SegmentInfo>> list_segments(std::string_view dir);

struct RecordIssue {
  std::string segment;
  std::uint64_t offset = 0;
  std::uint64_t sequence = 0;  // The sequence expected there.
  std::string what;            // Which check failed.
};

struct VerifyReport {
  std::uint64_t segments = 0;
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  std::uint64_t first_sequence = 0;
  std::uint64_t last_sequence = 0;  // The durable end on disk: the last record of the valid prefix.
  std::uint64_t torn_tail_bytes = 0;  // Non-zero bytes after the valid prefix (a torn tail).
  bool corrupted = false;  // A bad record followed by records written after it was durable.
  std::vector<RecordIssue> issues;  // Every bad record found.
};

// Verifies every record's checksum, sequence, epoch and chain without modifying anything.
WEFT_EXPORT Result<VerifyReport> verify_journal(std::string_view dir);

struct JournalRecord {
  std::uint64_t sequence = 0;
  std::int64_t timestamp_ns = 0;
  std::uint64_t source_position = ~std::uint64_t{0};
  std::span<const std::byte> payload;  // Valid until the next call to next().
};

enum class ReadStatus : std::uint8_t {
  kRecord,     // `record` holds the next record.
  kEnd,        // Nothing more now; with follow, call again later for records written since.
  kCorrupted,  // A record below the durable limit failed verification: see last_error().
};

struct ReaderOptions {
  // Only records with sequence <= this are returned (e.g. the channel's published durable
  // journal sequence); a bad record below it is corruption. ~0: no limit (a bad record is taken
  // for the end of what was written so far).
  std::uint64_t sequence_limit = ~std::uint64_t{0};
};

// Replays the journal in `dir` from a sequence number, and follows the live tail. Holds a shared
// flock on the segment it reads, so retention never removes it.
class WEFT_EXPORT JournalReader {
 public:
  // kNotFound when `dir` holds no journal; from_sequence older than the oldest retained record
  // starts at the oldest one (first_sequence() says where).
  static Result<JournalReader> open(std::string_view dir, std::uint64_t from_sequence = 1,
                                    const ReaderOptions& options = {});
  JournalReader(JournalReader&& other) noexcept;
  JournalReader& operator=(JournalReader&& other) noexcept;
  JournalReader(const JournalReader&) = delete;
  JournalReader& operator=(const JournalReader&) = delete;
  ~JournalReader();

  [[nodiscard]] ReadStatus next(JournalRecord& record);
  void set_sequence_limit(std::uint64_t limit) noexcept;
  // The sequence of the record the next call to next() returns.
  [[nodiscard]] std::uint64_t next_sequence() const noexcept;
  [[nodiscard]] const Error& last_error() const noexcept;

  struct Impl;

 private:
  explicit JournalReader(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft
