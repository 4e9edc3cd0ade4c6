// Checksums, segment names and the scanner: the rules that decide which bytes are records.
#include "journal/format.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace weft::journal {
namespace {

bool all_zero(const std::byte* bytes, std::size_t count) noexcept {
  for (std::size_t i = 0; i < count; ++i) {
    if (bytes[i] != std::byte{0}) return false;
  }
  return true;
}

// Offset just past the last non-zero byte in [from, size), rounded up to 8; `from` if none.
std::uint64_t nonzero_end(std::span<const std::byte> bytes, std::uint64_t from) noexcept {
  std::uint64_t end = bytes.size();
  while (end > from && bytes[end - 1] == std::byte{0}) --end;
  if (end <= from) return from;
  const std::uint64_t rounded = (end + kRecordAlign - 1) & ~(kRecordAlign - 1);
  return rounded < bytes.size() ? rounded : bytes.size();
}

}  // namespace

std::uint64_t segment_checksum(const SegmentHeader& header) noexcept {
  return XXH3_64bits(&header, offsetof(SegmentHeader, checksum));
}

std::uint64_t record_checksum(const RecordHeader& header, const std::byte* payload) noexcept {
  // The header's hash seeds the payload's: one value over both, without copying them together.
  const XXH64_hash_t seed = XXH3_64bits(&header, offsetof(RecordHeader, checksum));
  return XXH3_64bits_withSeed(payload, header.length, seed);
}

std::string segment_file_name(std::uint64_t index) {
  char name[32];
  std::snprintf(name, sizeof name, "%016" PRIx64 ".wseg", index);
  return name;
}

bool parse_segment_file_name(const char* name, std::uint64_t* index) noexcept {
  if (std::strlen(name) != 21 || std::strcmp(name + 16, ".wseg") != 0) return false;
  std::uint64_t value = 0;
  for (int i = 0; i < 16; ++i) {
    const char c = name[i];
    std::uint64_t digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<std::uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<std::uint64_t>(c - 'a' + 10);
    } else {
      return false;
    }
    value = value << 4 | digit;
  }
  *index = value;
  return true;
}

const char* check_segment_header(const SegmentHeader& header, std::uint64_t file_bytes) noexcept {
  if (header.magic != kSegmentMagic) return "magic (not a weft journal segment)";
  if (header.version != kFormatVersion) return "version (written by another format version)";
  if (header.checksum != segment_checksum(header)) return "header checksum";
  if (header.header_bytes != kSegmentHeaderBytes) return "header_bytes";
  // A file shorter than segment_bytes (cut by hand, or a copy) is scanned as far as it goes.
  if (header.segment_bytes < kSegmentBytesMin || header.segment_bytes % kBlockBytes != 0 ||
      file_bytes < kSegmentHeaderBytes) {
    return "segment_bytes";
  }
  if (header.first_sequence == 0) return "first_sequence";
  return nullptr;
}

RecordCheck check_record(std::span<const std::byte> bytes, std::uint64_t offset,
                         const SegmentHeader& segment, std::uint64_t expected_sequence,
                         std::uint64_t prev_checksum, const char** why) noexcept {
  *why = nullptr;
  const std::uint64_t epoch = segment.epoch;
  if (offset > bytes.size() || bytes.size() - offset < sizeof(RecordHeader)) {
    if (offset >= bytes.size() || all_zero(bytes.data() + offset, bytes.size() - offset) ||
        (segment.flags & kSegmentRecycled) != 0) {
      return RecordCheck::kEnd;
    }
    *why = "record header runs past the segment end";
    return RecordCheck::kBad;
  }
  if (all_zero(bytes.data() + offset, sizeof(RecordHeader))) return RecordCheck::kEnd;
  const RecordHeader header = load_record_header(bytes, offset);
  // In a recycled file, bytes without this use's epoch are stale: nothing was written here in
  // this use. (Torn batches after the end are found by the tail classification.)
  if ((segment.flags & kSegmentRecycled) != 0 && header.epoch != epoch) return RecordCheck::kEnd;
  if (header.kind != static_cast<std::uint32_t>(RecordKind::kData) &&
      header.kind != static_cast<std::uint32_t>(RecordKind::kPadding)) {
    *why = "kind";
  } else if (record_span(header.length) > bytes.size() - offset) {
    *why = "length (runs past the segment end)";
  } else if (header.epoch != epoch) {
    *why = "epoch (stale bytes from an earlier use of the file)";
  } else if (header.checksum != record_checksum(header, bytes.data() + offset + sizeof header)) {
    *why = "checksum";
  } else if (header.sequence != expected_sequence) {
    *why = "sequence (out of order)";
  } else if (header.prev_checksum != prev_checksum) {
    *why = "chain (previous checksum does not match)";
  } else {
    return RecordCheck::kValid;
  }
  return RecordCheck::kBad;
}

bool record_self_valid(std::span<const std::byte> bytes, std::uint64_t offset,
                       std::uint64_t epoch) noexcept {
  if (offset > bytes.size() || bytes.size() - offset < sizeof(RecordHeader)) return false;
  // Cheap filters first: the kind word and the epoch reject almost every offset.
  std::uint32_t kind = 0;
  std::memcpy(&kind, bytes.data() + offset, sizeof kind);
  if (kind != static_cast<std::uint32_t>(RecordKind::kData) &&
      kind != static_cast<std::uint32_t>(RecordKind::kPadding)) {
    return false;
  }
  const RecordHeader header = load_record_header(bytes, offset);
  if (header.epoch != epoch) return false;
  if (record_span(header.length) > bytes.size() - offset) return false;
  return header.checksum == record_checksum(header, bytes.data() + offset + sizeof header);
}

namespace {

// Looks past the end of the valid prefix for records of the same epoch that verify on their own:
// counts them (a torn batch that recovery drops), and marks corruption when one says that the
// sequence at the end was already durable when it was written.
void classify_tail(ScanResult& result, const std::vector<std::span<const std::byte>>& bytes,
                   std::uint64_t end_bad_span) {
  const std::uint64_t stop_sequence = result.next_sequence;
  std::uint64_t zero_end = result.stop_offset + end_bad_span;
  for (std::size_t i = result.stop_segment; i < result.segments.size(); ++i) {
    const ScannedSegment& segment = result.segments[i];
    if (!segment.header_valid) continue;
    const std::span<const std::byte> file =
        bytes[i].first(std::min<std::uint64_t>(bytes[i].size(), segment.header.segment_bytes));
    std::uint64_t offset = kSegmentHeaderBytes;
    if (i == result.stop_segment && result.stop_offset > offset) offset = result.stop_offset;
    while (offset + sizeof(RecordHeader) <= file.size()) {
      if (!record_self_valid(file, offset, segment.header.epoch)) {
        offset += kRecordAlign;
        continue;
      }
      const RecordHeader header = load_record_header(file, offset);
      if (header.kind == static_cast<std::uint32_t>(RecordKind::kData)) ++result.tail_records;
      if (header.durable_before > stop_sequence) {
        if (!result.corrupted) {
          result.issues.push_back(
              {i, offset, header.sequence,
               "record " + std::to_string(header.sequence) + " was written after record " +
                   std::to_string(stop_sequence) +
                   " was durable, so the bad record is corruption, not a torn tail"});
        }
        result.corrupted = true;
      }
      offset += record_span(header.length);
      if (i == result.stop_segment) zero_end = std::max(zero_end, offset);
    }
    // A fresh segment is zeros past its records: whatever a torn write left there goes too, so
    // that records appended after recovery are never followed by junk.
    // A recycled one holds stale bytes of another epoch there, harmless, unless this use wrote
    // something past the stop (a bad record or torn records): then all of it goes.
    const bool recycled = (segment.header.flags & kSegmentRecycled) != 0;
    if (i == result.stop_segment && result.stop_offset >= kSegmentHeaderBytes) {
      if (!recycled || result.stopped || result.tail_records != 0) {
        zero_end = std::max(zero_end, nonzero_end(file, result.stop_offset));
      } else {
        // A clean end in a recycled segment: only bytes of this use matter, and a header of this
        // use repeats the epoch at an 8-aligned offset. Zero through the last one found.
        for (std::uint64_t at = result.stop_offset + offsetof(RecordHeader, epoch);
             at + sizeof(std::uint64_t) <= file.size(); at += kRecordAlign) {
          std::uint64_t word = 0;
          std::memcpy(&word, file.data() + at, sizeof word);
          if (word == segment.header.epoch) {
            zero_end = std::max<std::uint64_t>(
                zero_end, std::min<std::uint64_t>(file.size(), at + sizeof(RecordHeader)));
          }
        }
      }
    }
  }
  if (result.stop_offset >= kSegmentHeaderBytes) result.tail_bytes = zero_end - result.stop_offset;
}

}  // namespace

ScanResult scan_segments(const std::vector<std::string>& paths,
                         const std::vector<std::span<const std::byte>>& bytes) {
  ScanResult result;
  result.segments.resize(paths.size());
  bool prefix_open = true;     // Still extending the valid prefix.
  std::uint64_t bad_span = 0;  // Bytes the bad record at the stop claims.
  // Segment `i` cannot continue the prefix (its header is bad, or it does not start where the
  // prefix ends): the prefix ends where segment i - 1 ends, so that recovery continues that one at
  // its end, zeroes what a later write left past it there, and drops segment i and those after it.
  // With no segment before it, nothing is kept (a stop at offset 0 of segment 0).
  const auto stop_before = [&](std::size_t i) {
    result.stopped = true;
    prefix_open = false;
    result.stop_segment = i == 0 ? 0 : i - 1;
    result.stop_offset = i == 0 ? 0 : result.segments[i - 1].end_offset;
  };
  for (std::size_t i = 0; i < paths.size(); ++i) {
    ScannedSegment& segment = result.segments[i];
    segment.path = paths[i];
    segment.file_bytes = bytes[i].size();
    if (bytes[i].size() >= sizeof(SegmentHeader)) {
      std::memcpy(&segment.header, bytes[i].data(), sizeof segment.header);
      const char* why = check_segment_header(segment.header, bytes[i].size());
      segment.header_valid = why == nullptr;
      if (!segment.header_valid) {
        result.issues.push_back({i, 0, 0, std::string("segment header: ") + why});
        result.corrupted = true;  // Headers are written before the segment gets its name.
      }
    } else {
      result.issues.push_back({i, 0, 0, "segment file shorter than its header"});
      result.corrupted = true;
    }
    segment.index = segment.header.index;
    segment.end_offset = kSegmentHeaderBytes;
    if (!prefix_open) continue;
    if (!segment.header_valid) {
      stop_before(i);
      continue;
    }
    if (i == 0) {
      result.next_sequence = segment.header.first_sequence;
      result.first_sequence = segment.header.first_sequence;
    } else if (segment.header.first_sequence != result.next_sequence ||
               segment.header.index != result.segments[i - 1].header.index + 1) {
      result.issues.push_back({i, 0, result.next_sequence,
                               "segment starts at sequence " +
                                   std::to_string(segment.header.first_sequence) + " (index " +
                                   std::to_string(segment.header.index) + "), expected " +
                                   std::to_string(result.next_sequence)});
      stop_before(i);
      continue;
    }
    const std::span<const std::byte> file =
        bytes[i].first(std::min<std::uint64_t>(bytes[i].size(), segment.header.segment_bytes));
    std::uint64_t chain = segment.header.checksum;
    std::uint64_t offset = kSegmentHeaderBytes;
    for (;;) {
      const char* why = nullptr;
      const RecordCheck check =
          check_record(file, offset, segment.header, result.next_sequence, chain, &why);
      if (check == RecordCheck::kValid) {
        const RecordHeader header = load_record_header(file, offset);
        if (header.kind == static_cast<std::uint32_t>(RecordKind::kData)) {
          ++segment.records;
          segment.payload_bytes += header.length;
          segment.last_sequence = header.sequence;
          segment.last_source_position = header.source_position;
          ++result.records;
          result.payload_bytes += header.length;
          result.last_sequence = header.sequence;
          result.last_source_position = header.source_position;
          ++result.next_sequence;
        }
        chain = header.checksum;
        offset += record_span(header.length);
        continue;
      }
      segment.end_offset = offset;
      segment.last_checksum = chain;
      if (check == RecordCheck::kBad) {
        result.issues.push_back({i, offset, result.next_sequence, std::string("record: ") + why});
        result.stopped = true;
        result.bad_record = true;
        // Zero the bad record's whole claimed span when it lies in the segment, else what of
        // its header does.
        bad_span = std::min<std::uint64_t>(sizeof(RecordHeader), file.size() - offset);
        if (bad_span == sizeof(RecordHeader)) {
          const RecordHeader header = load_record_header(file, offset);
          if (record_span(header.length) <= file.size() - offset) {
            bad_span = record_span(header.length);
          }
        }
      }
      break;
    }
    if (result.stopped) {
      result.stop_segment = i;
      result.stop_offset = segment.end_offset;
      prefix_open = false;
    }
  }
  if (!result.stopped && !result.segments.empty()) {
    // A clean end: the last segment of the prefix ends here. Records after it mean a torn batch.
    std::size_t last = result.segments.size() - 1;
    result.stop_segment = last;
    result.stop_offset = result.segments[last].end_offset;
  }
  if (!result.segments.empty() && (result.stopped || result.segments.back().header_valid)) {
    const std::uint64_t records_before = result.tail_records;
    classify_tail(result, bytes, bad_span);
    if (!result.stopped && (result.tail_records != records_before || result.tail_bytes != 0)) {
      // Written bytes after a zero header: part of a flush reached the disk, its start did not.
      result.stopped = true;
      result.issues.push_back({result.stop_segment, result.stop_offset, result.next_sequence,
                               "record: missing (unwritten) before bytes of a later write"});
    }
  }
  if (!result.stopped) result.tail_bytes = 0;
  return result;
}

}  // namespace weft::journal
