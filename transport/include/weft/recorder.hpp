// The recorder: makes a channel durable. It tails the channel as a consumer (SPSC and MPSC: the
// consumer; broadcast: one more consumer), appends every record to a journal, and publishes the
// durable position into the channel header, so that a producer can wait until its record is on
// disk and a broadcast consumer can read only durable records.
//
// Concurrency
//   Roles: one recorder per channel (its RoleSlot at header offset 1408, taken like any role: a
//   live recorder refuses a second one, a dead one is replaced), any number of waiters.
//   Single writer: the recorder writes DurableBlock (1280), JournalStatsBlock (1792) and
//   durable_seq (1664); waiters write only durable_sleepers (1536).
//   Publication: the recorder stores durable_position with release after the journal reported the
//   flush durable, then rings the durable bell (the Dekker protocol of weft/detail/bell.hpp); a
//   waiter loads it with acquire.
//
// Positions: a record's durable position is its end in the channel (the producer's position()
// right after its commit()). durable_position is always such an end, so a consumer whose
// position() is below it may read its next record.
//
// Crash and restart: on SPSC and MPSC channels the recorder releases a record's ring space only
// once the record is durable (a release limit at the durable position), so a recorder that
// replaces a dead one reads every non-durable record again; each journal record carries its
// channel end position and the journal remembers which channel (by creation time) it follows, so
// the new recorder skips what the journal already holds: nothing is lost, nothing duplicated.
// Broadcast: a consumer cannot resume a dead one's cursor, so records committed while no recorder
// runs are not journaled (a producer waiting for them is told durable only if the position is
// covered by a later publication: wait_durable reports positions, not individual records).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "weft/channel.hpp"
#include "weft/export.hpp"
#include "weft/journal.hpp"
#include "weft/result.hpp"
#include "weft/spsc.hpp"

namespace weft {

struct RecorderOptions {
  // Directory of the channel file. Empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string shm_dir;
  JournalOptions journal;
  // Busy-poll the channel and the journal instead of sleeping when idle: lowest latency, one core.
  bool spin = false;
  // Longest sleep when idle (so that a stop request is seen).
  std::chrono::nanoseconds idle_sleep = std::chrono::milliseconds(100);
};

struct RecorderStats {
  std::uint64_t records = 0;       // Appended by this recorder.
  std::uint64_t skipped = 0;       // Already in the journal (a restart after a crash).
  std::uint64_t lost_records = 0;  // Lossy broadcast: overwritten before the recorder read them.
  std::uint64_t durable_position = 0;
  JournalStats journal;
};

class WEFT_EXPORT Recorder {
 public:
  // Opens channel `channel` and journal directory `journal_dir` (created if missing; recovered),
  // takes the recorder role and the consumer role. kNotFound naming the channel if it does not
  // exist; kBusy when a live recorder or (SPSC/MPSC) another consumer holds the channel.
  static Result<Recorder> open(std::string_view channel, std::string_view journal_dir,
                               RecorderOptions options = {});

  Recorder(Recorder&& other) noexcept;
  Recorder& operator=(Recorder&& other) noexcept;
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;
  ~Recorder();  // Flushes what it appended, publishes it, gives the roles back.

  // Moves what the channel holds now into the journal, reaps finished flushes and publishes the
  // durable position. Returns the records appended; never sleeps.
  Result<std::size_t> step();
  // Runs step() until `stop` becomes true (then syncs everything and returns) or an error.
  Result<void> run(const std::atomic<bool>& stop);
  // Makes everything appended durable and publishes it.
  Result<void> sync();

  [[nodiscard]] RecorderStats stats() const noexcept;
  [[nodiscard]] const Journal& journal() const noexcept;
  [[nodiscard]] const Channel& channel() const noexcept;

  struct Impl;

 private:
  explicit Recorder(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

// ---- Waiting for durability (producers and consumers) -----------------------------------------

// The channel's published durable position (0: nothing recorded yet).
WEFT_EXPORT std::uint64_t durable_position(const Channel& channel) noexcept;

enum class DurableWait : std::uint8_t {
  kSpin,   // Busy-poll the durable position: lowest latency, burns the core (yielding it for a
           // moment every few tens of microseconds, so that the kernel threads that complete the
           // write are never stuck behind the spinner until a scheduler tick).
  kSleep,  // Block on the durable futex; the recorder wakes sleepers only when someone sleeps.
};

// Waits until durable_position(channel) >= position or `timeout` passes. kReady at once when it
// already is. Works on read-only mappings too, except kSleep needs a writable one (the sleeper
// count); a read-only channel spins.
WEFT_EXPORT WaitStatus wait_durable(const Channel& channel, std::uint64_t position,
                                    std::chrono::nanoseconds timeout,
                                    DurableWait how = DurableWait::kSleep) noexcept;

// Hands `handler` only records that are durable: polls one record at a time while the consumer's
// position is below the durable position. For broadcast consumers (SPSC and MPSC channels have the
// recorder as their only consumer). Returns the number of records handed over.
template <class Consumer, class Handler>
std::size_t poll_durable(Consumer& consumer, Handler&& handler,
                         std::size_t records_max = SIZE_MAX) {
  std::size_t count = 0;
  const std::uint64_t limit = durable_position(consumer.channel());
  while (count < records_max && consumer.position() < limit) {
    const auto result = consumer.poll(handler, 1);
    if (result.count == 0) break;
    count += result.count;
  }
  return count;
}

// What the header says about a channel's recorder, for weftctl.
struct RecorderStatus {
  PeerState state = PeerState::kNone;
  std::uint32_t pid = 0;
  std::uint64_t durable_position = 0;
  std::uint64_t durable_sequence = 0;
  std::uint64_t records_appended = 0;
  std::uint64_t lost_records = 0;
  JournalSync sync = JournalSync::kAuto;
  std::uint32_t in_flight = 0;
  std::uint64_t flushes = 0;
  std::uint64_t bytes_durable = 0;
  std::uint64_t records_durable = 0;
  std::uint64_t errors = 0;
  std::uint64_t retries = 0;
  FlushPolicyStats policy;
};

// Reads the recorder's blocks of the channel header (a consistent snapshot of the statistics).
WEFT_EXPORT RecorderStatus recorder_status(const Channel& channel) noexcept;

}  // namespace weft
