// The shared-memory layout of a channel file: the one place that defines it. docs/shm-layout.md
// describes the same layout byte by byte for readers of a live file.
//
// Concurrency
//   Roles: one producer process, one consumer process, any number of read-only observers.
//   Single writers: ChannelMeta is written once by the creator before the file gets its name;
//   ProducerBlock, DataBell::seq and SpaceBell::sleepers are written by the producer only;
//   ConsumerBlock, DataBell::sleepers and SpaceBell::seq by the consumer only. Record headers
//   in the ring are written by the producer only.
//   Publication: the producer writes a payload, zeroes the next record header, then stores the
//   record header with release; the consumer acquires the header, reads the payload, and
//   releases its head position, which the producer acquires before reusing those bytes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace weft::detail {

// Two cache lines: the adjacent-line prefetcher pulls pairs of 64-byte lines, so one line of
// padding is not enough to stop false sharing between writers.
inline constexpr std::size_t kFalseSharingRange = 128;

inline constexpr std::uint64_t kChannelMagic = 0x314e4843'54464557ULL;  // "WEFTCHN1" little-endian
inline constexpr std::uint32_t kLayoutVersion = 1;
inline constexpr std::uint64_t kHeaderBytes = 4096;  // The ring starts on its own page.
inline constexpr std::uint64_t kCapacityBytesMin = 4096;
inline constexpr std::uint64_t kCapacityBytesMax = std::uint64_t{1} << 40;
inline constexpr std::uint64_t kRecordAlign = 8;
inline constexpr std::uint64_t kRecordHeaderBytes = 8;
inline constexpr std::size_t kNameBytesMax = 64;  // Including the terminating NUL.

enum class ChannelKind : std::uint32_t { kSpsc = 1 };

// Record header word: (type << 32) | payload length. Zero means "nothing committed here yet":
// the producer zeroes the next header before it commits a record, so stale bytes from an earlier
// lap are never mistaken for a record.
enum class RecordType : std::uint32_t { kData = 0x57440001, kPadding = 0x57500002 };

constexpr std::uint64_t make_record_word(RecordType type, std::uint32_t length) noexcept {
  return (std::uint64_t{static_cast<std::uint32_t>(type)} << 32) | length;
}
constexpr std::uint32_t record_word_type(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word >> 32);
}
constexpr std::uint32_t record_word_length(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word & 0xffff'ffffULL);
}
constexpr std::uint64_t align_record(std::uint64_t bytes) noexcept {
  return (bytes + kRecordAlign - 1) & ~(kRecordAlign - 1);
}
// Bytes a record of `payload_bytes` occupies in the ring, header and alignment included.
constexpr std::uint64_t record_span_bytes(std::uint64_t payload_bytes) noexcept {
  return align_record(kRecordHeaderBytes + payload_bytes);
}

// Written once by the creator before the file is linked under its name; read-only afterwards.
struct alignas(kFalseSharingRange) ChannelMeta {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t kind;        // ChannelKind
  std::uint64_t size_bytes;  // Whole file: kHeaderBytes + capacity_bytes.
  std::uint64_t header_bytes;
  std::uint64_t capacity_bytes;
  std::uint64_t record_bytes_max;
  std::uint64_t created_unix_ns;
  std::uint32_t creator_pid;
  std::uint32_t reserved0;
  char name[kNameBytesMax];
};

// A process that holds a role. pid 0 means the role is free. start_ticks is the process start
// time from /proc/PID/stat, so that a recycled pid is not mistaken for the holder.
struct RoleSlot {
  std::atomic<std::uint32_t> pid;
  std::uint32_t reserved0;
  std::atomic<std::uint64_t> start_ticks;
  std::atomic<std::uint64_t> attach_count;  // Times the role was taken; for weftctl.
};

struct alignas(kFalseSharingRange) ProducerBlock {
  std::atomic<std::uint64_t> tail_position;  // End of the last committed record.
  RoleSlot role;
  std::atomic<std::uint64_t> records_committed;  // Data records committed, ever.
  std::atomic<std::uint64_t> claims_refused;  // Claims refused for lack of space (back pressure).
};

struct alignas(kFalseSharingRange) ConsumerBlock {
  std::atomic<std::uint64_t> head_position;  // Everything below is consumed and free.
  RoleSlot role;
  std::atomic<std::uint64_t> records_consumed;  // Data records released, ever.
};

// A futex doorbell. The sleeping side announces itself in `sleepers` (its own block); the ringing
// side bumps `seq` (its own block) and calls futex_wake only when sleepers is non-zero.
struct alignas(kFalseSharingRange) BellSleepers {
  std::atomic<std::uint32_t> sleepers;
};
struct alignas(kFalseSharingRange) BellSeq {
  std::atomic<std::uint32_t> seq;  // The futex word.
};

struct ChannelHeader {
  ChannelMeta meta;             // offset 0
  ProducerBlock producer;       // offset 128
  ConsumerBlock consumer;       // offset 256
  BellSleepers data_sleepers;   // offset 384: consumers asleep waiting for data
  BellSeq data_seq;             // offset 512: bumped by the producer to wake them
  BellSleepers space_sleepers;  // offset 640: producer asleep waiting for space
  BellSeq space_seq;            // offset 768: bumped by the consumer to wake it
};

static_assert(std::is_standard_layout_v<ChannelHeader>, "shared layout must be standard-layout");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "lock-free atomics are address-free, which sharing between processes requires");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "see above");
static_assert(sizeof(std::atomic<std::uint64_t>) == 8, "atomics must have the plain type's size");
static_assert(sizeof(ChannelMeta) == kFalseSharingRange, "meta fills exactly one block");
static_assert(offsetof(ChannelHeader, producer) == 128, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelHeader, consumer) == 256, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelHeader, data_sleepers) == 384, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelHeader, data_seq) == 512, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelHeader, space_sleepers) == 640, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelHeader, space_seq) == 768, "layout documented in shm-layout.md");
static_assert(sizeof(ChannelHeader) <= kHeaderBytes, "header must fit before the ring");
static_assert(offsetof(ProducerBlock, role) == 8, "layout documented in shm-layout.md");
static_assert(offsetof(ProducerBlock, records_committed) == 32, "layout in shm-layout.md");
static_assert(offsetof(ProducerBlock, claims_refused) == 40, "layout in shm-layout.md");
static_assert(offsetof(ConsumerBlock, records_consumed) == 32, "layout in shm-layout.md");
static_assert(sizeof(RoleSlot) == 24, "layout documented in shm-layout.md");
static_assert(kHeaderBytes % kFalseSharingRange == 0, "the ring starts on a block boundary");
static_assert(kCapacityBytesMin % kRecordAlign == 0, "capacities keep records aligned");
static_assert(kRecordHeaderBytes == kRecordAlign, "a padding header exactly fills any gap");

}  // namespace weft::detail
