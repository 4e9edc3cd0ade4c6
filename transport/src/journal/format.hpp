// The journal's on-disk format (docs/journal.md describes it byte by byte) and the scanner that
// verifies segment bytes: the one place that decides whether a record is valid.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace weft::journal {

inline constexpr std::uint64_t kSegmentMagic = 0x31474553'54464557ULL;  // "WEFTSEG1"
inline constexpr std::uint32_t kFormatVersion = 1;
inline constexpr std::uint64_t kSegmentHeaderBytes = 4096;  // Records start on the second block.
inline constexpr std::uint64_t kBlockBytes = 4096;
inline constexpr std::uint64_t kRecordAlign = 8;
inline constexpr std::uint64_t kSegmentBytesMin = std::uint64_t{64} * 1024;
inline constexpr std::uint64_t kNoSource = ~std::uint64_t{0};

enum class RecordKind : std::uint32_t {
  kData = 0x4A524557,     // "WERJ": a payload.
  kPadding = 0x4A504557,  // "WEPJ": fills a flush to a block boundary (O_DIRECT); no sequence.
};

// Segment file header, at offset 0; the rest of the first block is zero.
struct SegmentHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_bytes;
  std::uint64_t segment_bytes;
  std::uint64_t index;           // Segment number; the file is named after it.
  std::uint64_t epoch;           // Random per use of the file; every record repeats it.
  std::uint64_t first_sequence;  // Sequence of the first data record in this segment.
  std::uint64_t created_unix_ns;
  std::uint64_t flags;     // kSegmentRecycled.
  std::uint64_t checksum;  // XXH3-64 of the 64 bytes above.
};
static_assert(sizeof(SegmentHeader) == 72, "documented in docs/journal.md");
// The file was used before: past the records of this use it holds stale bytes, which never carry
// this use's epoch. A fresh segment is all zeros past its records.
inline constexpr std::uint64_t kSegmentRecycled = 1;
static_assert(std::is_trivially_copyable_v<SegmentHeader>, "read and written as bytes");

// Record header; the payload follows, then zero bytes up to an 8-byte boundary.
struct RecordHeader {
  std::uint32_t kind;      // RecordKind.
  std::uint32_t length;    // Payload bytes.
  std::uint64_t sequence;  // Data: its sequence. Padding: the next data record's sequence.
  std::uint64_t epoch;     // The segment's epoch: stale bytes of a recycled file never match.
  std::int64_t timestamp_ns;
  std::uint64_t source_position;
  // Every record with a sequence below this was durable when this one was framed: a bad record
  // below it, followed by this one, is corruption, not a torn tail.
  std::uint64_t durable_before;
  std::uint64_t prev_checksum;  // The previous record's checksum (the segment's for the first).
  std::uint64_t checksum;       // XXH3-64 over the 56 bytes above and the payload.
};
static_assert(sizeof(RecordHeader) == 64, "documented in docs/journal.md");
static_assert(offsetof(RecordHeader, checksum) == 56, "checksum covers the bytes before it");
static_assert(std::is_trivially_copyable_v<RecordHeader>, "read and written as bytes");

constexpr std::uint64_t record_span(std::uint64_t payload_bytes) noexcept {
  return (sizeof(RecordHeader) + payload_bytes + kRecordAlign - 1) & ~(kRecordAlign - 1);
}

std::uint64_t segment_checksum(const SegmentHeader& header) noexcept;
std::uint64_t record_checksum(const RecordHeader& header, const std::byte* payload) noexcept;

// "0000000000000003.wseg" for index 3.
std::string segment_file_name(std::uint64_t index);
// Parses a segment file name; false if `name` is not one.
bool parse_segment_file_name(const char* name, std::uint64_t* index) noexcept;
inline constexpr const char* kSpareSuffix = ".spare";

// Why a segment header is unusable, or nullptr when it is valid for a file of `file_bytes`.
const char* check_segment_header(const SegmentHeader& header, std::uint64_t file_bytes) noexcept;

// What the record at `offset` of a segment is.
enum class RecordCheck : std::uint8_t {
  kValid,
  kEnd,  // A zero header: nothing was written here.
  kBad,  // Something non-zero that fails verification; `why` says which check.
};

// Verifies the record at `offset` of the segment `bytes` (whole file) against the segment's
// epoch, the expected sequence and the chain; `why` names the failed check.
RecordCheck check_record(std::span<const std::byte> bytes, std::uint64_t offset,
                         const SegmentHeader& segment, std::uint64_t expected_sequence,
                         std::uint64_t prev_checksum, const char** why) noexcept;

// True when the record at `offset` verifies on its own (kind, length, epoch, checksum), whatever
// its sequence and chain: used to tell a torn tail from corruption.
bool record_self_valid(std::span<const std::byte> bytes, std::uint64_t offset,
                       std::uint64_t epoch) noexcept;

inline RecordHeader load_record_header(std::span<const std::byte> bytes,
                                       std::uint64_t offset) noexcept {
  RecordHeader header;
  std::memcpy(&header, bytes.data() + offset, sizeof header);
  return header;
}

// One segment as the scanner found it.
struct ScannedSegment {
  std::string path;
  std::uint64_t index = 0;
  std::uint64_t file_bytes = 0;
  std::int64_t modified_unix_ns = 0;
  bool header_valid = false;
  SegmentHeader header{};
  std::uint64_t records = 0;  // Valid data records of the valid prefix in this segment.
  std::uint64_t payload_bytes = 0;
  std::uint64_t end_offset = 0;  // Just past the last valid record (or padding).
  std::uint64_t last_sequence = 0;
  std::uint64_t last_checksum = 0;  // Chain value for the next record.
  std::uint64_t last_source_position = kNoSource;
};

struct ScanIssue {
  std::size_t segment = 0;  // Index into ScanResult::segments.
  std::uint64_t offset = 0;
  std::uint64_t sequence = 0;
  std::string what;
};

// The result of scanning a directory of segments.
struct ScanResult {
  std::vector<ScannedSegment> segments;  // Sorted by index.
  // The end of the valid prefix: the first segment/offset that is not a valid next record.
  bool stopped = false;  // True when something other than a clean end stops the prefix.
  std::size_t stop_segment = 0;
  std::uint64_t stop_offset = 0;
  std::uint64_t next_sequence = 1;  // Sequence after the valid prefix.
  std::uint64_t records = 0;
  std::uint64_t payload_bytes = 0;
  std::uint64_t first_sequence = 0;
  std::uint64_t last_sequence = 0;
  std::uint64_t last_source_position = kNoSource;
  // Past the valid prefix:
  bool bad_record = false;         // The stop is a record that fails verification.
  std::uint64_t tail_records = 0;  // Records found after the stop (dropped by recovery).
  std::uint64_t tail_bytes = 0;    // Non-zero bytes after the stop in the stop segment.
  bool corrupted = false;          // A record after the stop says the stop was durable.
  std::vector<ScanIssue> issues;
};

// Scans `segments` (paths sorted by index, each with its bytes mapped by the caller) and
// classifies everything. Never reads outside the spans.
ScanResult scan_segments(const std::vector<std::string>& paths,
                         const std::vector<std::span<const std::byte>>& bytes);

}  // namespace weft::journal
