// Helpers for the MPSC and broadcast tests (issue 3): private channel directories, seeds and
// scale factors, the self-checking record format, child processes and shared memory between a
// test and the children it forks.
//
// Every test creates its channels in its own TempDir (mkdtemp under /dev/shm, never
// /dev/shm/weft) and passes it as ChannelOptions::dir / OpenOptions::dir, so the test programs can
// run in parallel and leave nothing behind. ctest sets WEFT_SHM_DIR to an unusable path, so a test
// that forgets its directory fails instead of touching the default one.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <span>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "weft/broadcast.hpp"
#include "weft/channel.hpp"
#include "weft/idle.hpp"
#include "weft/options.hpp"

namespace weft::kinds_test {

// ---- Directories -----------------------------------------------------------------------------

// The shared tests' TempDir (tests/support), with options for a channel of any kind.
class TempDir : public test::TempDir {
 public:
  [[nodiscard]] bool exists(std::string_view name) const;
  // Options for a channel of `kind` in this directory.
  [[nodiscard]] ChannelOptions options(ChannelKind kind, std::uint64_t capacity_bytes,
                                       std::uint64_t record_bytes_max = 0) const;
  [[nodiscard]] OpenOptions open_options(bool read_only = false) const;
};

// ---- Seeds, scale, time and random numbers ---------------------------------------------------

using test::scaled;
using test::test_scale;
using test::test_seed;

// True in a ThreadSanitizer build.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif

// A one-line dump of an MPSC or broadcast channel's header and slots, for failure messages.
std::string describe_channel(const Channel& channel);

// The non-zero 8-byte words of `channel`'s ring in [position - before, position + after), one
// "position: value" per line, for failure messages about corrupt records.
std::string dump_ring(const Channel& channel, std::uint64_t position, std::uint64_t before,
                      std::uint64_t after);

// CLOCK_MONOTONIC in nanoseconds.
std::int64_t monotonic_ns() noexcept;
// Busy-waits (no system call) for about `ns` nanoseconds.
void spin_for_ns(std::int64_t ns) noexcept;

using test::mix64;
using test::Rng;

// ---- The self-checking record ----------------------------------------------------------------
//
// A test record is a 24-byte stamp (source: which producer, or 0; the payload length; the
// source's 64-bit sequence number; a checksum of the payload keyed by source and sequence)
// followed by a payload filled with a pattern of the same key. A receiver checks the length and
// the checksum, so a truncated, torn or corrupted record is always detected; the sequence number
// tells lost, duplicated and reordered records apart.

struct Stamp {
  std::uint32_t source;
  std::uint32_t payload_bytes;
  std::uint64_t sequence;
  std::uint64_t checksum;
};
inline constexpr std::size_t kStampBytes = sizeof(Stamp);
static_assert(kStampBytes == 24, "the stamp is three 8-byte words");

// Payload bytes of record (source, sequence) under `seed`: mostly 0..small_max, one in 64 up to
// payload_max.
std::size_t payload_bytes_for(std::uint64_t seed, std::uint32_t source, std::uint64_t sequence,
                              std::size_t small_max, std::size_t payload_max) noexcept;

// Writes the stamp and payload of record (source, sequence) into `out`, whose size is
// kStampBytes + payload bytes. Requires: out.size() >= kStampBytes.
void write_record(std::span<std::byte> out, std::uint32_t source, std::uint64_t sequence) noexcept;

// Reads the stamp of `record` (zeros when it is too short).
Stamp read_stamp(std::span<const std::byte> record) noexcept;

// Checks a received record's size and checksum. Returns "" when it is intact, else what is
// wrong. Does not allocate when the record is intact.
std::string check_record(std::span<const std::byte> record);

using test::fill_pattern;
// A 64-bit checksum of `bytes` keyed by `key`.
std::uint64_t checksum64(std::span<const std::byte> bytes, std::uint64_t key) noexcept;

// ---- Processes -------------------------------------------------------------------------------

using test::ChildProcess;
using test::ChildStatus;

// Anonymous shared memory holding `count` objects of type T, visible to the test and to every
// child forked after it was made. T must work across processes: lock-free atomics, plain data.
template <class T>
class Shared {
 public:
  explicit Shared(std::size_t count = 1) : count_(count) {
    void* memory =
        mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    objects_ = static_cast<T*>(memory);
    for (std::size_t i = 0; i < count_; ++i) new (objects_ + i) T();
  }
  ~Shared() {
    for (std::size_t i = 0; i < count_; ++i) objects_[i].~T();
    munmap(objects_, bytes());
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  T* operator->() const noexcept { return objects_; }
  T& operator*() const noexcept { return *objects_; }
  T& operator[](std::size_t index) const noexcept { return objects_[index]; }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }

 private:
  [[nodiscard]] std::size_t bytes() const noexcept {
    return sizeof(T) * (count_ == 0 ? 1 : count_);
  }
  T* objects_ = nullptr;
  std::size_t count_ = 0;
};

using test::ChildMessage;
using test::Watchdog;

// ---- Waiting and broadcast consumers -----------------------------------------------------------

// Spins a little, then blocks on the channel's futex for a short slice: in these tests processes
// outnumber the two cores.
struct SpinThenWait {
  std::uint32_t spins = 0;
  template <class Waitable>
  void idle(Waitable& waitable) {
    if (++spins < 256) {
      cpu_relax();
      return;
    }
    spins = 0;
    (void)waitable.wait(std::chrono::milliseconds(10));
  }
};

inline constexpr std::uint32_t kDataSource = 0;
inline constexpr std::uint32_t kEndSource = 0xe0d;  // Broadcast: "the producer is done" markers.

// What a broadcast consumer process saw, for its parent.
struct ConsumerReport {
  std::atomic<std::uint32_t> attached{0};
  std::atomic<std::uint32_t> done{0};
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> lost_records{0};  // Summed from the poll results.
  std::atomic<std::uint64_t> lost_bytes{0};
  std::atomic<std::uint64_t> gaps{0};  // Gaps in the sequence numbers, before the first included.
  std::atomic<std::uint64_t> last_sequence{0};
  std::atomic<std::uint64_t> lost_records_total{0};  // BroadcastConsumer::lost_records_total().
  std::atomic<std::uint64_t> slot_lost_records{0};   // The slot's lost_records field.
  std::atomic<std::uint64_t> sessions{0};
  ChildMessage message;
};

// How a consumer reads: `slow_ns` busy-waits per record; every `stall_every` records it also
// waits until the producer (*producer_sent) is `stall_records` ahead, so that a lossy consumer
// surely falls a ring behind.
struct ConsumeSpec {
  std::int64_t slow_ns = 0;
  std::uint64_t stall_every = 0;
  std::uint64_t stall_records = 0;
};

// Reads (joined before the first record, so sequence numbers start at 0) until an end marker,
// checking every record: intact, sequence numbers increasing, every gap a reported loss (none on a
// reliable channel). Fills `report`; returns 0, or non-zero after setting report.message.
int consume_until_end(BroadcastConsumer& consumer, ConsumerReport& report,
                      const std::atomic<std::uint64_t>* producer_sent, const ConsumeSpec& spec);

}  // namespace weft::kinds_test
