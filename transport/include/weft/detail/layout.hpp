// The shared-memory layout of a channel file: the one place that defines it. docs/shm-layout.md
// describes the same layout byte by byte for readers of a live file.
//
// Concurrency
//   Roles: producers, consumers and read-only observers; how many of each depends on the kind
//   (SPSC: one and one; MPSC: up to producers_max and one; broadcast: one and up to
//   consumers_max).
//   Single writers: ChannelMeta and ChannelConfig are written once by the creator before the file
//   gets its name. ProducerBlock is written by the producer (MPSC: tail_position by every
//   producer, through compare-and-swap only); each ProducerSlot and ConsumerSlot by the process
//   holding it; ConsumerBlock by the consumer. The protocols of each kind are in spsc.hpp,
//   mpsc.hpp and broadcast.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "weft/options.hpp"

namespace weft::detail {

// Two cache lines: the adjacent-line prefetcher pulls pairs of 64-byte lines, so one line of
// padding is not enough to stop false sharing between writers.
inline constexpr std::size_t kFalseSharingRange = 128;

inline constexpr std::uint64_t kChannelMagic = 0x314e4843'54464557ULL;  // "WEFTCHN1" little-endian
inline constexpr std::uint32_t kLayoutVersion = 1;
inline constexpr std::uint64_t kHeaderBytes = 4096;  // SPSC header; others add slot pages.
inline constexpr std::uint64_t kPageBytes = 4096;    // The ring starts on its own page.
inline constexpr std::uint64_t kCapacityBytesMin = 4096;
inline constexpr std::uint64_t kCapacityBytesMax = std::uint64_t{1} << 40;
inline constexpr std::uint64_t kRecordAlign = 8;
inline constexpr std::uint64_t kRecordHeaderBytes = 8;
inline constexpr std::size_t kNameBytesMax = 64;  // Including the terminating NUL.

using weft::ChannelKind;

// ChannelConfig::flags.
inline constexpr std::uint32_t kFlagLossy = 1;  // Broadcast: the producer never waits.

inline constexpr std::uint32_t kProducersMaxLimit = 1024;  // MPSC producer slots, at most.
inline constexpr std::uint32_t kConsumersMaxLimit = 1024;  // Broadcast consumer slots, at most.
inline constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};

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
// time from /proc/PID/stat, so that a recycled pid is not mistaken for the holder. heartbeat_s
// is the holder's CLOCK_MONOTONIC seconds at its last attach, wait or slow path: an old heartbeat
// with work pending marks a live but stuck holder.
struct RoleSlot {
  std::atomic<std::uint32_t> pid;
  std::atomic<std::uint32_t> heartbeat_s;
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
  // MPSC: the consumer zeroes consumed bytes before it releases them; it stores the end of the
  // range here first, so that a consumer taking over from one killed mid-way can finish the job.
  std::atomic<std::uint64_t> zeroing_end;
  // MPSC: the rest [taken_start, taken_end) of producer slot taken_slot's chunk that the consumer
  // took back and has not padded yet (taken_end == kNoPosition: none). Kept here, not only in the
  // consumer's memory, so that a consumer taking over from one killed meanwhile pads it.
  std::atomic<std::uint64_t> taken_start;
  std::atomic<std::uint64_t> taken_end;
  std::atomic<std::uint32_t> taken_slot;
};

// A futex doorbell. The sleeping side announces itself in `sleepers` (its own block); the ringing
// side bumps `seq` (its own block) and calls futex_wake only when sleepers is non-zero.
struct alignas(kFalseSharingRange) BellSleepers {
  std::atomic<std::uint32_t> sleepers;
};
struct alignas(kFalseSharingRange) BellSeq {
  std::atomic<std::uint32_t> seq;  // The futex word.
};

// Written once by the creator, like ChannelMeta. Zero for SPSC.
struct alignas(kFalseSharingRange) ChannelConfig {
  std::uint32_t producers_max;  // MPSC: producer slots.
  std::uint32_t consumers_max;  // Broadcast: consumer slots.
  std::uint32_t flags;          // kFlagLossy.
  std::uint32_t reserved0;
  std::uint64_t unblock_timeout_ns;  // MPSC: a dead producer's claim becomes padding after this.
  // Placement (docs/numa.md), written once by the creator like the rest. Zero in files made
  // before these fields existed, which reads as "4 KiB pages, nothing requested".
  std::uint64_t page_bytes;       // Page size of the file: 0 or 4096, or the huge page size.
  std::uint32_t placement_flags;  // kPlacement* bits.
  std::int32_t numa_node;         // The node asked for; meaningful with kPlacementNode.
  std::int32_t numa_cpu;          // The CPU whose node was asked for; with kPlacementViaCpu.
  std::uint32_t reserved1;
};

// ChannelConfig::placement_flags.
inline constexpr std::uint32_t kPlacementNode = 1;       // numa_node holds a requested node.
inline constexpr std::uint32_t kPlacementPreferred = 2;  // MPOL_PREFERRED, else MPOL_BIND.
inline constexpr std::uint32_t kPlacementViaCpu = 4;     // The node came from numa_cpu.
inline constexpr std::uint32_t kPlacementLock = 8;       // Every read-write opener mlocks.
inline constexpr std::uint32_t kPlacementFlagsAll =
    kPlacementNode | kPlacementPreferred | kPlacementViaCpu | kPlacementLock;
inline constexpr std::uint64_t kHugePageBytesMax = std::uint64_t{1} << 30;

// Recovery counters. unblocks/unblocked_bytes are written by the MPSC consumer role, detaches by
// the broadcast producer; each has that one writer.
struct alignas(kFalseSharingRange) RecoveryCounters {
  std::atomic<std::uint64_t> unblocks;  // MPSC: dead producers' claims turned into padding.
  std::atomic<std::uint64_t> unblocked_bytes;
  std::atomic<std::uint64_t> detaches;  // Broadcast: dead consumers detached by the producer.
};

// Lossy broadcast: the producer's reserve_position on its own block, away from tail_position
// (stored on every commit), since every lossy consumer loads it for every record it copies.
struct alignas(kFalseSharingRange) ReserveBlock {
  std::atomic<std::uint64_t> reserve_position;
};

// ---- Durability (the recorder; see weft/recorder.hpp) -----------------------------------------

// The durable position, written only by the recorder (one writer). Every data record that ends at
// or below durable_position has reached the journal and is durable there.
struct alignas(kFalseSharingRange) DurableBlock {
  std::atomic<std::uint64_t> durable_position;  // Channel position (a record end).
  std::atomic<std::uint64_t> durable_sequence;  // Journal sequence of the last durable record.
  std::atomic<std::uint64_t> channel_created_unix_ns;  // The channel the journal follows.
  std::atomic<std::uint64_t> lost_records;  // Lossy broadcast: records the recorder never saw.
};

// The recorder's role: pid + start time, like every other role, so liveness works the same way.
struct alignas(kFalseSharingRange) RecorderBlock {
  RoleSlot role;
  std::atomic<std::uint64_t> records_appended;  // Records the recorder appended, ever.
};

// Journal statistics, published by the recorder for weftctl and metrics. A seqlock: `version` is
// odd while the recorder rewrites the fields; a reader retries until it reads the same even
// version before and after. Floating-point fields are stored as their bit patterns.
struct alignas(kFalseSharingRange) JournalStatsBlock {
  std::atomic<std::uint32_t> version;
  std::atomic<std::uint32_t> sync_mode;              // weft::JournalSync.
  std::atomic<std::uint64_t> arrival_records_per_s;  // double bits (FlushPolicyStats).
  std::atomic<std::uint64_t> arrival_bytes_per_s;    // double bits
  std::atomic<std::uint64_t> flush_fixed_ns;         // double bits
  std::atomic<std::uint64_t> flush_ns_per_byte;      // double bits
  std::atomic<std::uint64_t> flush_cost_spread_ns;   // double bits
  std::atomic<std::uint64_t> gather_bytes;
  std::atomic<std::int64_t> max_delay_ns;
  std::atomic<std::uint32_t> max_in_flight;
  std::atomic<std::uint32_t> in_flight;
  std::atomic<std::uint64_t> flushes;        // Flushes that became durable.
  std::atomic<std::uint64_t> bytes_durable;  // Framed bytes made durable.
  std::atomic<std::uint64_t> records_durable;
  std::atomic<std::uint64_t> errors;          // Write or fsync failures (each stops the recorder).
  std::atomic<std::uint64_t> retries;         // Short writes and -EAGAIN resubmitted.
  std::atomic<std::uint32_t> max_io_workers;  // io-wq cap in effect (0: the kernel's limit).
};

struct ChannelHeader {
  ChannelMeta meta;               // offset 0
  ProducerBlock producer;         // offset 128
  ConsumerBlock consumer;         // offset 256
  BellSleepers data_sleepers;     // offset 384: consumers asleep waiting for data
  BellSeq data_seq;               // offset 512: bumped by the producer to wake them
  BellSleepers space_sleepers;    // offset 640: producers asleep waiting for space
  BellSeq space_seq;              // offset 768: bumped by the consumer to wake them
  ChannelConfig config;           // offset 896
  RecoveryCounters recovery;      // offset 1024
  ReserveBlock reserve;           // offset 1152
  DurableBlock durable;           // offset 1280: written by the recorder
  RecorderBlock recorder;         // offset 1408: the recorder's role
  BellSleepers durable_sleepers;  // offset 1536: producers/consumers asleep waiting for durability
  BellSeq durable_seq;            // offset 1664: bumped by the recorder to wake them
  JournalStatsBlock journal_stats;  // offset 1792: written by the recorder
};

// An MPSC producer's own block. A producer claims a chunk of the ring by compare-and-swap of
// tail_position and then writes its records into it without further atomic read-modify-writes.
// `intent`/`intent_end` are the range it is about to claim, stored before the compare-and-swap;
// `chunk_start`/`chunk_end` the chunk it holds after a successful one; `chunk_limit` starts as
// chunk_end and is lowered by the consumer (compare-and-swap) to take back the unused rest of an
// idle producer's chunk; `write_position` is where the producer is about to write a record.
// Together they identify the owner of any claimed byte, whatever instruction its producer was
// killed at.
struct alignas(kFalseSharingRange) ProducerSlot {
  RoleSlot role;
  std::atomic<std::uint64_t> intent;
  std::atomic<std::uint64_t> intent_end;
  std::atomic<std::uint64_t> chunk_start;
  std::atomic<std::uint64_t> chunk_end;
  std::atomic<std::uint64_t> chunk_limit;
  std::atomic<std::uint64_t> write_position;
  std::atomic<std::uint64_t> records_committed;
  std::atomic<std::uint64_t> claims_refused;
  // The unwritten rest of a chunk the consumer took back, as the producer left it: the consumer
  // pads it (the producer never writes there again). Zero/zero: none.
  std::atomic<std::uint64_t> given_up_start;
  std::atomic<std::uint64_t> given_up_end;
  // Seqlock over chunk_start/chunk_end/chunk_limit: odd while the producer rewrites them, so
  // that a reader never combines one chunk's limit with another chunk's range.
  std::atomic<std::uint64_t> chunk_version;
};

// A broadcast consumer's own block.
struct alignas(kFalseSharingRange) ConsumerSlot {
  RoleSlot role;
  std::atomic<std::uint64_t> head_position;  // kNoPosition while the slot is free.
  std::atomic<std::uint64_t> records_consumed;
  std::atomic<std::uint64_t> lost_records;  // Lossy: records overwritten before it read them.
  std::atomic<std::uint64_t> lost_bytes;
  std::atomic<std::uint32_t> detached;  // Set by the producer when it detached this slot.
  // 1 while this consumer is counted in data_sleepers: whoever frees the slot of a consumer that
  // died asleep takes its count back.
  std::atomic<std::uint32_t> sleeping;
};

inline constexpr std::uint64_t kSlotsOffset = 2048;  // Slot arrays start here.

// Broadcast records carry a 16-byte header: the record word, then the record's sequence number
// (data records counted from 0), so that a lossy consumer can tell exactly how many it missed.
// Records are 16-byte aligned so that a padding header always fits before the ring's end.
inline constexpr std::uint64_t kBroadcastHeaderBytes = 16;
inline constexpr std::uint64_t kBroadcastAlign = 16;
constexpr std::uint64_t broadcast_span_bytes(std::uint64_t payload_bytes) noexcept {
  return (kBroadcastHeaderBytes + payload_bytes + kBroadcastAlign - 1) & ~(kBroadcastAlign - 1);
}

// Header bytes for a channel: the fixed blocks, then producer slots, then consumer slots, rounded
// up to whole pages.
constexpr std::uint64_t header_bytes_for(std::uint32_t producers_max,
                                         std::uint32_t consumers_max) noexcept {
  const std::uint64_t end = kSlotsOffset + std::uint64_t{producers_max} * kFalseSharingRange +
                            std::uint64_t{consumers_max} * kFalseSharingRange;
  return (end + kPageBytes - 1) / kPageBytes * kPageBytes;
}

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
static_assert(offsetof(ChannelHeader, config) == 896, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelHeader, recovery) == 1024, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelConfig, page_bytes) == 24, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelConfig, placement_flags) == 32, "layout in shm-layout.md");
static_assert(offsetof(ChannelConfig, numa_node) == 36, "layout documented in shm-layout.md");
static_assert(offsetof(ChannelConfig, numa_cpu) == 40, "layout documented in shm-layout.md");
static_assert(sizeof(ChannelConfig) == kFalseSharingRange, "config fills exactly one block");
static_assert(sizeof(ChannelHeader) <= kSlotsOffset, "fixed blocks end before the slots");
static_assert(sizeof(ProducerSlot) == kFalseSharingRange, "one block per producer");
static_assert(offsetof(ProducerSlot, given_up_start) == 88, "layout in shm-layout.md");
static_assert(offsetof(ProducerSlot, chunk_version) == 104, "layout in shm-layout.md");
static_assert(sizeof(ConsumerSlot) == kFalseSharingRange, "one block per consumer");
static_assert(header_bytes_for(0, 0) == kHeaderBytes, "SPSC keeps a one-page header");
static_assert(offsetof(ProducerBlock, role) == 8, "layout documented in shm-layout.md");
static_assert(offsetof(ProducerBlock, records_committed) == 32, "layout in shm-layout.md");
static_assert(offsetof(ProducerBlock, claims_refused) == 40, "layout in shm-layout.md");
static_assert(offsetof(ChannelHeader, reserve) == 1152, "layout in shm-layout.md");
static_assert(offsetof(ChannelHeader, durable) == 1280, "layout in shm-layout.md");
static_assert(offsetof(ChannelHeader, recorder) == 1408, "layout in shm-layout.md");
static_assert(offsetof(ChannelHeader, durable_sleepers) == 1536, "layout in shm-layout.md");
static_assert(offsetof(ChannelHeader, durable_seq) == 1664, "layout in shm-layout.md");
static_assert(offsetof(ChannelHeader, journal_stats) == 1792, "layout in shm-layout.md");
static_assert(sizeof(DurableBlock) == kFalseSharingRange, "one block");
static_assert(sizeof(RecorderBlock) == kFalseSharingRange, "one block");
static_assert(sizeof(JournalStatsBlock) == kFalseSharingRange, "one block");
static_assert(offsetof(DurableBlock, durable_sequence) == 8, "layout in shm-layout.md");
static_assert(offsetof(JournalStatsBlock, flushes) == 72, "layout in shm-layout.md");
static_assert(offsetof(JournalStatsBlock, retries) == 104, "layout in shm-layout.md");
static_assert(offsetof(JournalStatsBlock, max_io_workers) == 112, "layout in shm-layout.md");
static_assert(std::atomic<std::int64_t>::is_always_lock_free, "see above");
static_assert(offsetof(ConsumerBlock, records_consumed) == 32, "layout in shm-layout.md");
static_assert(offsetof(ConsumerBlock, zeroing_end) == 40, "layout in shm-layout.md");
static_assert(sizeof(RoleSlot) == 24, "layout documented in shm-layout.md");
static_assert(kHeaderBytes % kFalseSharingRange == 0, "the ring starts on a block boundary");
static_assert(kCapacityBytesMin % kRecordAlign == 0, "capacities keep records aligned");
static_assert(kRecordHeaderBytes == kRecordAlign, "a padding header exactly fills any gap");

}  // namespace weft::detail
