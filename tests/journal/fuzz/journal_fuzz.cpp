// The journal recovery fuzz harness: arbitrary bytes as segment contents, scanned in memory and
// recovered for real (Journal::open on a scratch directory), with the invariants recovery must
// keep. Shared by the libFuzzer target (clang) and the plain driver (journal_fuzz_driver.cpp).
//
// Input, little-endian:
//   [0]       flags: bit 0 takes the first segment's 72 header bytes raw from the input (else a
//             valid header is built); bit 1 splits the rest into two segments; bit 2 marks the
//             segments recycled
//   [1, ...)  record bytes, placed at offset 4096 of a 64 KiB segment (after the raw header when
//             bit 0 is set); with bit 1, the second half goes into segment 1
#include "journal_fuzz.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "journal/format.hpp"
#include "weft/journal.hpp"

namespace weft::fuzz {
namespace {

using journal::kSegmentHeaderBytes;
using journal::RecordHeader;
using journal::SegmentHeader;

constexpr std::uint64_t kEpoch = 0x5eed'0000'0000'0001ULL;
constexpr std::uint64_t kSegmentBytes = 64 * 1024;

JournalFuzzStats g_stats;
const std::uint8_t* g_input = nullptr;
std::size_t g_input_size = 0;

// Reports the broken invariant, saves the input ($WEFT_FUZZ_WORK_DIR or /tmp) and aborts.
[[noreturn]] void fail(const char* what, const std::string& detail) {
  const char* base = std::getenv("WEFT_FUZZ_WORK_DIR");
  const std::string path =
      std::string(base != nullptr ? base : "/tmp") + "/journal-fuzz-failure.bin";
  if (std::FILE* file = std::fopen(path.c_str(), "wb")) {
    std::fwrite(g_input, 1, g_input_size, file);
    std::fclose(file);
  }
  std::fprintf(stderr, "journal_fuzz: invariant broken: %s: %s (input saved to %s)\n", what,
               detail.c_str(), path.c_str());
  std::abort();
}

SegmentHeader make_header(std::uint64_t index, std::uint64_t first_sequence, bool recycled) {
  SegmentHeader header{};
  header.magic = journal::kSegmentMagic;
  header.version = journal::kFormatVersion;
  header.header_bytes = static_cast<std::uint32_t>(kSegmentHeaderBytes);
  header.segment_bytes = kSegmentBytes;
  header.index = index;
  header.epoch = kEpoch + index;
  header.first_sequence = first_sequence;
  header.flags = recycled ? journal::kSegmentRecycled : 0;
  header.checksum = journal::segment_checksum(header);
  return header;
}

std::string workspace() {
  static const std::string path = [] {
    std::string pattern = "/dev/shm/weft-journal-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) fail("mkdtemp", pattern);
    return pattern;
  }();
  return path;
}

void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("open", path);
  if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    fail("write", path);
  }
  ::close(fd);
}

}  // namespace

const JournalFuzzStats& journal_fuzz_stats() noexcept { return g_stats; }

void remove_journal_workspace() noexcept {
  std::error_code ignored;
  std::filesystem::remove_all(workspace(), ignored);
}

void run_journal_input(const std::uint8_t* data, std::size_t size) {
  ++g_stats.inputs;
  g_input = data;
  g_input_size = size;
  const std::uint8_t flags = size > 0 ? data[0] : 0;
  const bool raw_header = (flags & 1) != 0;
  const bool two = (flags & 2) != 0;
  const bool recycled = (flags & 4) != 0;
  std::span<const std::uint8_t> rest(data + (size > 0 ? 1 : 0), size > 0 ? size - 1 : 0);

  std::vector<std::vector<std::byte>> files;
  for (std::uint64_t index = 0; index < (two ? 2u : 1u); ++index) {
    std::vector<std::byte> file(kSegmentBytes);
    SegmentHeader header = make_header(index, 1, recycled);
    std::memcpy(file.data(), &header, sizeof header);
    if (index == 0 && raw_header) {
      const std::size_t n = std::min(rest.size(), sizeof(SegmentHeader));
      std::memcpy(file.data(), rest.data(), n);
      rest = rest.subspan(n);
    }
    const std::span<const std::uint8_t> part = two && index == 0
                                                   ? rest.first(rest.size() / 2)
                                                   : (two ? rest.subspan(rest.size() / 2) : rest);
    const std::size_t n = std::min<std::size_t>(part.size(), kSegmentBytes - kSegmentHeaderBytes);
    std::memcpy(file.data() + kSegmentHeaderBytes, part.data(), n);
    files.push_back(std::move(file));
  }
  if (two) {
    // Segment 1 continues the sequence where segment 0's valid records end.
    const std::vector<std::string> names{"0"};
    const std::vector<std::span<const std::byte>> spans{files[0]};
    const journal::ScanResult first = journal::scan_segments(names, spans);
    SegmentHeader header = make_header(1, first.next_sequence, recycled);
    std::memcpy(files[1].data(), &header, sizeof header);
  }

  // (a) The scanner, in memory: everything it reports lies inside the files.
  std::vector<std::string> names;
  std::vector<std::span<const std::byte>> spans;
  for (std::size_t i = 0; i < files.size(); ++i) {
    names.push_back(std::to_string(i));
    spans.emplace_back(files[i]);
  }
  const journal::ScanResult scan = journal::scan_segments(names, spans);
  if (scan.stopped && scan.stop_offset > kSegmentBytes) fail("stop offset", "past the segment");
  if (scan.stopped && scan.stop_offset + scan.tail_bytes > kSegmentBytes) {
    fail("tail bytes", "past the segment");
  }
  for (const auto& segment : scan.segments) {
    if (segment.end_offset > kSegmentBytes) fail("end offset", "past the segment");
  }

  // (b) Real recovery on files, then the invariants: a recovered journal verifies clean, replays
  // exactly the records recovery kept, and accepts a new record after them.
  const std::string dir = workspace() + "/j";
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  std::filesystem::create_directories(dir);
  for (std::size_t i = 0; i < files.size(); ++i) {
    write_file(dir + "/" + journal::segment_file_name(i), files[i]);
  }
  JournalOptions options;
  options.segment_bytes = kSegmentBytes;
  options.buffer_bytes = 16 * 1024;
  options.buffers = 2;
  options.spare_segments = 0;
  options.sync = JournalSync::kNone;
  std::uint64_t kept = 0;
  std::uint64_t first_sequence = 0;
  {
    auto opened = Journal::open(dir, std::move(options));
    if (!opened) {
      if (opened.error().code != Errc::kCorrupted) fail("open error", opened.error().message());
      ++g_stats.corrupt;
      auto report = verify_journal(dir);
      if (!report || !report->corrupted) fail("verify after kCorrupted", "not corrupted");
      return;
    }
    ++g_stats.recovered;
    kept = opened->recovery().records;
    g_stats.records += kept;
    if (opened->recovery().dropped_records != 0) ++g_stats.torn;
    first_sequence = opened->next_sequence() - kept;
    const std::byte extra[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
    auto appended = opened->append(extra);
    if (!appended) fail("append after recovery", appended.error().message());
    if (auto synced = opened->sync(); !synced) fail("sync", synced.error().message());
  }
  auto report = verify_journal(dir);
  if (!report) fail("verify", report.error().message());
  if (report->corrupted || !report->issues.empty()) {
    fail("verify after recovery", report->issues.empty() ? "corrupted" : report->issues[0].what);
  }
  if (report->records != kept + 1) fail("verify count", std::to_string(report->records));
  auto reader = JournalReader::open(dir, first_sequence);
  if (!reader) fail("reader", reader.error().message());
  JournalRecord record;
  std::uint64_t replayed = 0;
  while (reader->next(record) == ReadStatus::kRecord) {
    if (record.sequence != first_sequence + replayed) fail("replay order", "gap");
    ++replayed;
  }
  if (replayed != kept + 1) fail("replay count", std::to_string(replayed));
}

std::vector<std::vector<std::uint8_t>> make_journal_seeds() {
  std::vector<std::vector<std::uint8_t>> seeds;
  // Records framed exactly as the writer frames them: a chain of valid records, then variants.
  for (const int count : {0, 1, 3, 8}) {
    for (const int flag_bits : {0, 2, 4}) {
      const auto flags = static_cast<std::uint8_t>(flag_bits);
      std::vector<std::uint8_t> input{flags};
      const SegmentHeader header = make_header(0, 1, (flags & 4) != 0);
      std::uint64_t chain = header.checksum;
      for (int i = 0; i < count; ++i) {
        std::vector<std::byte> payload(static_cast<std::size_t>(i * 13 + 1),
                                       std::byte{static_cast<unsigned char>(i + 1)});
        RecordHeader record{};
        record.kind = static_cast<std::uint32_t>(journal::RecordKind::kData);
        record.length = static_cast<std::uint32_t>(payload.size());
        record.sequence = static_cast<std::uint64_t>(i + 1);
        record.epoch = header.epoch;
        record.timestamp_ns = i;
        record.source_position = static_cast<std::uint64_t>(i) * 64;
        record.durable_before = static_cast<std::uint64_t>(i / 2 + 1);
        record.prev_checksum = chain;
        record.checksum = journal::record_checksum(record, payload.data());
        chain = record.checksum;
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(&record);
        input.insert(input.end(), bytes, bytes + sizeof record);
        const auto* p = reinterpret_cast<const std::uint8_t*>(payload.data());
        input.insert(input.end(), p, p + payload.size());
        input.resize((input.size() - 1 + 7) / 8 * 8 + 1, 0);
      }
      seeds.push_back(input);
      if (input.size() > 40) {
        std::vector<std::uint8_t> torn(input.begin(), input.end() - 20);
        seeds.push_back(torn);
        std::vector<std::uint8_t> flipped = input;
        flipped[flipped.size() / 2] ^= 0x10;
        seeds.push_back(flipped);
      }
    }
  }
  return seeds;
}

}  // namespace weft::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  weft::fuzz::run_journal_input(data, size);
  return 0;
}
