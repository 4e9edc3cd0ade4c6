// The channel fuzz harness: shared between the libFuzzer target (clang) and the plain driver
// (every compiler; fuzz_driver_main.cpp).
//
// Each input is run two ways:
//  (a) as a header: bytes [0, 8) are a claimed file size, bytes [8, 8 + 4096) (zero-filled when
//      short) a channel header, and detail::validate_header judges them. What it accepts must
//      satisfy every rule the data path relies on.
//  (b) as a channel file: a valid header for a 4096-byte ring is built around fuzzed fields and
//      fuzzed ring bytes, written to a real file, opened with Channel::open, and read by an
//      SpscConsumer (poll, peek/release, try_recv) and written by an SpscProducer (claim,
//      commit, abort), each for a bounded number of steps. Every span handed out must lie inside
//      the ring; nothing may crash, read out of bounds or hang.
//
// Layout of an input for (b), little-endian:
//   [0]        flags: bit 0 derives tail_position from head_position (tail = head + field % 2C,
//              8-aligned) instead of taking it raw
//   [1, 3)     record_bytes_max, as 1 + value % 2032
//   [3, 11)    head_position
//   [11, 19)   tail_position (see flags)
//   [19, 35)   a script of 16 operation bytes for the consumer and the producer
//   [35, ...)  the ring, up to 4096 bytes, zero-filled when short
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft::fuzz {

inline constexpr std::size_t kRingBytes = 4096;
inline constexpr std::size_t kFlagsOffset = 0;
inline constexpr std::size_t kRecordMaxOffset = 1;
inline constexpr std::size_t kHeadOffset = 3;
inline constexpr std::size_t kTailOffset = 11;
inline constexpr std::size_t kScriptOffset = 19;
inline constexpr std::size_t kScriptBytes = 16;
inline constexpr std::size_t kRingOffset = kScriptOffset + kScriptBytes;
inline constexpr std::size_t kInputBytesMax = kRingOffset + kRingBytes;

// Runs one input; aborts when it finds a bug.
void run_one(const std::uint8_t* data, std::size_t size);

// How far the inputs got: a driver prints these so that a harness that stopped reaching the data
// path is noticed.
struct Stats {
  std::uint64_t inputs = 0;
  std::uint64_t headers_accepted = 0;   // (a) inputs validate_header accepted.
  std::uint64_t channels_opened = 0;    // (b) inputs Channel::open accepted.
  std::uint64_t records_read = 0;       // Records handed to the consumer.
  std::uint64_t corruptions_found = 0;  // Consumers stopped with kCorrupted.
  std::uint64_t producers_attached = 0;
  std::uint64_t records_written = 0;  // Records the producer committed.
};
const Stats& stats() noexcept;

// Removes the harness's scratch directory; async-signal-safe, for a driver about to abort.
void remove_workspace() noexcept;

// Seed inputs built from real channel states (empty, partly full, full, wrapped with padding,
// largest records, a producer that died after a commit) and real headers.
std::vector<std::vector<std::uint8_t>> make_seed_inputs();

}  // namespace weft::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
