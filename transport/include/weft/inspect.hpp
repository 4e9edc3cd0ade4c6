// Read-only inspection of live channels: what weftctl shows, verifies, dumps and exports.
//
// A ChannelView maps a channel file PROT_READ: it takes no role, holds no lock and moves no
// cursor, so looking at a channel never disturbs it. Everything it reads is untrusted: the header
// is validated like Channel::open does, every slot field and record header is bounds-checked, and
// a corrupt channel yields an error or a list of violations, never a read outside the mapping.
//
// Concurrency
//   Roles: a view is an observer; the channel's producers and consumers keep running.
//   Reads: every shared field is loaded atomically (acquire where the value is then used to read
//   the ring, relaxed for statistics). Walks of a live ring (dump, verify) re-read the cursors
//   after anything that looks wrong: a record the consumer passed meanwhile may have been reused,
//   so only an anomaly still ahead of every cursor is reported.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "weft/export.hpp"
#include "weft/flush_policy.hpp"
#include "weft/options.hpp"
#include "weft/result.hpp"

namespace weft::inspect {

// The process registered in a role slot, as far as /proc tells.
enum class Liveness : std::uint8_t {
  kFree,   // No process holds the slot.
  kAlive,  // Its process runs (same pid and start time).
  kDead,   // Its process is gone, or the pid was recycled.
  kBusy,   // A detacher owns the slot for a moment.
};
WEFT_EXPORT const char* to_string(Liveness liveness) noexcept;

struct RoleInfo {
  std::uint32_t pid = 0;
  std::uint64_t start_ticks = 0;
  std::uint32_t heartbeat_s = 0;  // CLOCK_MONOTONIC seconds at its last attach, wait or slow path.
  std::int64_t heartbeat_age_s = -1;  // Seconds since then (-1: no heartbeat yet).
  std::uint64_t attach_count = 0;
  Liveness liveness = Liveness::kFree;
};

struct ProducerInfo {
  std::uint32_t slot = 0;  // MPSC slot index; 0 for the single producer of other kinds.
  RoleInfo role;
  std::uint64_t records_committed = 0;
  std::uint64_t claims_refused = 0;
  // MPSC only (kNoPosition: none).
  std::uint64_t intent = ~std::uint64_t{0};
  std::uint64_t intent_end = ~std::uint64_t{0};
  std::uint64_t chunk_start = ~std::uint64_t{0};
  std::uint64_t chunk_end = ~std::uint64_t{0};
  std::uint64_t chunk_limit = ~std::uint64_t{0};
  std::uint64_t write_position = ~std::uint64_t{0};
};

struct ConsumerInfo {
  std::uint32_t slot = 0;  // Broadcast slot index; 0 for the single consumer of other kinds.
  RoleInfo role;
  std::uint64_t head_position = 0;  // kNoPosition: a broadcast slot without a cursor.
  std::uint64_t records_consumed = 0;
  std::uint64_t lost_records = 0;  // Lossy broadcast.
  std::uint64_t lost_bytes = 0;
  bool detached = false;
  bool sleeping = false;
  std::uint64_t lag_bytes = 0;               // tail - head (0 when the head is ahead).
  std::optional<std::uint64_t> lag_records;  // Committed records not yet consumed, when known.
};

// What the channel header says about its recorder and journal (weft/recorder.hpp): present once
// a recorder has attached.
struct JournalInfo {
  RoleInfo recorder;
  std::uint64_t durable_position = 0;   // Records ending at or below it are on disk.
  std::uint64_t durable_sequence = 0;   // Journal sequence of the last durable record.
  std::uint64_t durable_lag_bytes = 0;  // tail_position - durable_position.
  std::uint64_t records_appended = 0;
  std::uint64_t lost_records = 0;  // Lossy broadcast: never seen by the recorder.
  std::uint32_t sync_mode = 0;     // weft::JournalSync.
  std::string sync;                // Its name ("unknown" for a value no version writes).
  std::uint32_t in_flight = 0;
  std::uint64_t flushes = 0;
  std::uint64_t bytes_durable = 0;
  std::uint64_t records_durable = 0;
  std::uint64_t errors = 0;
  std::uint64_t retries = 0;
  FlushPolicyStats policy;       // The batcher's estimates and current choices.
  bool stats_consistent = true;  // False when the statistics kept changing while being read.
};

// Why a channel needs attention, worst first. Computed by classify().
enum class Status : std::uint8_t {
  kOk,
  kBackPressured,  // A producer was refused space: the consumers are slower than the producers.
  kStuck,          // Work is pending and nothing will consume it (see ChannelSnapshot::reason).
  kStale,          // No process has the channel open: its users are all gone (weftctl gc).
};
WEFT_EXPORT const char* to_string(Status status) noexcept;

// Everything the header says, decoded, with derived figures. Taken at `taken_ns`.
struct ChannelSnapshot {
  std::string name;
  std::string path;
  ChannelKind kind = ChannelKind::kSpsc;
  bool lossy = false;
  std::uint32_t layout_version = 0;
  std::uint64_t size_bytes = 0;
  std::uint64_t header_bytes = 0;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t record_bytes_max = 0;
  std::uint64_t created_unix_ns = 0;
  std::uint32_t creator_pid = 0;
  std::string meta_name;  // The name stored in the header (normally equals `name`).
  std::uint32_t producers_max = 0;
  std::uint32_t consumers_max = 0;
  std::uint64_t unblock_timeout_ns = 0;
  std::uint32_t file_mode = 0;
  std::uint32_t file_uid = 0;
  std::uint32_t file_gid = 0;

  std::uint64_t tail_position = 0;
  std::uint64_t head_position = 0;     // SPSC/MPSC: the consumer's; broadcast: slowest consumer.
  std::uint64_t reserve_position = 0;  // Lossy broadcast.
  std::uint64_t zeroing_end = 0;       // MPSC.
  std::uint64_t taken_start = 0;       // MPSC.
  std::uint64_t taken_end = ~std::uint64_t{0};
  std::uint32_t taken_slot = 0;
  std::uint32_t data_sleepers = 0;
  std::uint32_t data_seq = 0;
  std::uint32_t space_sleepers = 0;
  std::uint32_t space_seq = 0;
  std::uint64_t unblocks = 0;
  std::uint64_t unblocked_bytes = 0;
  std::uint64_t detaches = 0;

  // Registered processes only (free slots are left out), in slot order.
  std::vector<ProducerInfo> producers;
  std::vector<ConsumerInfo> consumers;
  std::uint32_t producers_alive = 0;
  std::uint32_t producers_dead = 0;
  std::uint32_t consumers_alive = 0;
  std::uint32_t consumers_dead = 0;

  std::uint64_t records_committed = 0;  // All producers, ever.
  std::uint64_t records_consumed = 0;   // SPSC/MPSC: the consumer; broadcast: the slowest.
  std::uint64_t claims_refused = 0;     // All producers, ever.
  std::uint64_t used_bytes = 0;         // Ring bytes between the slowest head and the tail.
  std::uint64_t lag_bytes = 0;          // Largest consumer lag.
  std::optional<std::uint64_t> lag_records;
  // MPSC: the head waits on a claim whose producer is dead (weftctl unblock).
  bool head_blocked_by_dead_producer = false;
  std::int32_t blocking_slot = -1;

  std::optional<JournalInfo> journal;

  std::int64_t taken_ns = 0;  // CLOCK_MONOTONIC when the snapshot was taken.

  // Derived by classify().
  bool stale = false;
  Status status = Status::kOk;
  std::string reason;  // Why status is not ok, in words.
};

// One record of a dump, copied out of the ring.
struct DumpedRecord {
  std::uint64_t position = 0;
  bool padding = false;
  bool gap = false;          // MPSC: claimed, not committed yet (length: the bytes skipped).
  std::uint64_t length = 0;  // Payload bytes (padding, gap: bytes covered).
  std::optional<std::uint64_t> sequence;  // Broadcast records carry one.
  std::vector<std::byte> payload;         // Up to DumpOptions::payload_bytes_max.
};

struct DumpOptions {
  // Broadcast: the consumer slot whose cursor the dump starts at; -1: the slowest consumer.
  std::int32_t consumer_slot = -1;
  std::size_t count_max = 100;  // Records (data) at most.
  std::size_t payload_bytes_max = 4096;
  bool include_padding = false;
};

struct DumpResult {
  std::uint64_t from = 0;  // The cursor the dump started at.
  std::uint64_t tail = 0;
  std::vector<DumpedRecord> records;
  bool complete = false;  // Reached the tail.
  std::string note;       // Why it stopped early, when it did.
};

struct Violation {
  std::string field;    // What is wrong: a header field, a slot, or "ring".
  std::string message;  // In words, with the values.
};

// A read-only mapping of one channel file.
class WEFT_EXPORT ChannelView {
 public:
  // Maps channel `name` in `dir` (empty: as Channel::resolve_dir) read-only and validates its
  // header. kNotFound, kPermissionDenied, kCorrupted (naming the field) or kVersionMismatch.
  static Result<ChannelView> open(std::string_view name, std::string_view dir = {});

  ChannelView(ChannelView&&) noexcept;
  ChannelView& operator=(ChannelView&&) noexcept;
  ChannelView(const ChannelView&) = delete;
  ChannelView& operator=(const ChannelView&) = delete;
  ~ChannelView();

  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] const std::string& path() const noexcept;
  [[nodiscard]] ChannelKind kind() const noexcept;

  // Checks that the file still has the size it was mapped with and a valid header: a view kept
  // across refreshes (weftctl watch) calls it before reading, so that a file truncated under the
  // mapping is reported instead of faulting. kCorrupted naming what changed.
  [[nodiscard]] Result<void> revalidate() const;
  // Decodes the header. `liveness` false skips the /proc lookups (fast resampling of counters).
  [[nodiscard]] ChannelSnapshot snapshot(bool liveness = true) const;
  // The records between a consumer's cursor and the tail, copied without consuming.
  [[nodiscard]] Result<DumpResult> dump(const DumpOptions& options) const;
  // Checks every invariant of the header, the slots and the ring; empty when all hold.
  [[nodiscard]] std::vector<Violation> verify() const;

 private:
  struct State;
  explicit ChannelView(std::unique_ptr<State> state) noexcept;
  std::unique_ptr<State> state_;
};

// The channel names in `dir` (empty: as Channel::resolve_dir), sorted; hidden files (channels
// being created) are left out. kNotFound when the directory does not exist.
WEFT_EXPORT Result<std::vector<std::string>> list_channels(std::string_view dir = {});

// Leftover temporary files of channel creations whose creator died (".NAME.PID.N.tmp").
WEFT_EXPORT Result<std::vector<std::string>> list_orphan_temp_files(std::string_view dir = {});

// Sets snapshot.stale, .status and .reason. `before`, an earlier snapshot of the same channel,
// lets progress be judged (a stuck consumer has not moved); `stuck_after_s` is how old a live
// consumer's heartbeat must be, with work pending and no progress, to call it stuck.
WEFT_EXPORT void classify(ChannelSnapshot& snapshot, const ChannelSnapshot* before, bool stale,
                          std::int64_t stuck_after_s = 5);

// CLOCK_MONOTONIC in nanoseconds, the clock of ChannelSnapshot::taken_ns.
WEFT_EXPORT std::int64_t monotonic_now_ns() noexcept;

}  // namespace weft::inspect
