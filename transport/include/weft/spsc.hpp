// The single-producer / single-consumer ring: the whole protocol is in this file.
//
// Concurrency
//   Roles: one SpscProducer and one SpscConsumer, usually in different processes, each holding
//   its role in the header (a second producer or consumer is refused while the first lives).
//   Single writers: the producer writes record headers, payloads and tail_position; the consumer
//   writes head_position. Neither writes the other's block.
//   Publication: the producer writes the payload, stores 0 into the header word that follows the
//   record (so stale bytes of an earlier lap never look committed), then stores the record's
//   header word with release. The consumer loads the header word at its head with acquire; a
//   non-zero word means the record and the zero after it are visible. After reading, the consumer
//   stores head_position with release; the producer loads it with acquire before it overwrites
//   the bytes below it.
//
// Records are 8-byte aligned: an 8-byte header word (type << 32 | length) then the payload. A
// record that would straddle the end of the ring is preceded by a padding record that fills the
// rest of the ring, so every payload is one contiguous span. The producer keeps 8 bytes free past
// every record for the zeroed next header; a ring of C bytes holds at most C - 8 bytes of records.
//
// Shared memory is untrusted: the consumer checks every header word it loads against the values
// it validated when it opened the channel, and a bad one stops it with kCorrupted and a message
// naming the position and the field; it never reads outside the ring.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "weft/channel.hpp"
#include "weft/detail/bell.hpp"
#include "weft/detail/layout.hpp"
#include "weft/error.hpp"
#include "weft/export.hpp"
#include "weft/options.hpp"
#include "weft/result.hpp"

#ifdef NDEBUG
#define WEFT_DASSERT(cond) static_cast<void>(0)
#else
#include <cassert>
#define WEFT_DASSERT(cond) assert(cond)
#endif

namespace weft {

enum class ClaimStatus : std::uint8_t {
  kOk,        // `bytes` is yours to fill; commit() or abort() next.
  kFull,      // Not enough free space now: back pressure. Retry, or wait for space.
  kTooLarge,  // Larger than record_bytes_max(): it will never fit. A caller bug.
};

struct ClaimResult {
  ClaimStatus status;
  std::span<std::byte> bytes;
  explicit operator bool() const noexcept { return status == ClaimStatus::kOk; }
};

enum class SendStatus : std::uint8_t { kOk, kFull, kTooLarge };

enum class PollStatus : std::uint8_t {
  kOk,         // `count` records were handed to the handler (possibly fewer than asked).
  kEmpty,      // Nothing committed yet.
  kCorrupted,  // A record header is invalid: see last_error(). The consumer stops here for good.
  kDetached,   // Broadcast: the producer detached this consumer (it looked dead); re-attach.
};

struct PollResult {
  PollStatus status;
  std::size_t count;
};

struct PeekResult {
  PollStatus status;
  std::span<const std::byte> bytes;  // Valid until release().
};

enum class RecvStatus : std::uint8_t {
  kOk,
  kEmpty,
  kTooSmall,   // The buffer is smaller than the next record; `size` says how large it is.
  kCorrupted,  // See last_error().
};

struct RecvResult {
  RecvStatus status;
  std::size_t size;
};

enum class WaitStatus : std::uint8_t { kReady, kTimedOut };

// What the other side of a channel is, as far as its registration in the header tells.
enum class PeerState : std::uint8_t {
  kNone,   // No process holds the role.
  kAlive,  // A live process holds it.
  kDead,   // The process that holds it has died (it will be replaced or detached).
};

struct PeerCounts {
  std::uint32_t alive;
  std::uint32_t dead;
};

namespace detail {
// The state of the process registered in `slot`. Reads /proc: control plane only.
WEFT_EXPORT PeerState peer_state(const RoleSlot& slot) noexcept;
}  // namespace detail

class WEFT_EXPORT SpscProducer {
 public:
  // Creates channel `name` and attaches as its producer.
  static Result<SpscProducer> create(std::string_view name, const ChannelOptions& options = {});
  // Opens an existing channel and attaches as its producer. kBusy if a live producer holds it.
  static Result<SpscProducer> open(std::string_view name, const OpenOptions& options = {});
  // Attaches to an open channel. A producer that died is replaced: the new one continues after
  // the last record the dead one committed.
  static Result<SpscProducer> attach(Channel&& channel);

  SpscProducer(SpscProducer&& other) noexcept;
  SpscProducer& operator=(SpscProducer&& other) noexcept;
  SpscProducer(const SpscProducer&) = delete;
  SpscProducer& operator=(const SpscProducer&) = delete;
  ~SpscProducer();  // Gives the producer role back.

  // Claims space for a record of `payload_bytes` and returns it to be written in place.
  // Requires: no claim outstanding.
  [[nodiscard]] ClaimResult try_claim(std::size_t payload_bytes) noexcept {
    WEFT_DASSERT(claim_span_ == 0);
    if (payload_bytes > record_bytes_max_) [[unlikely]] {
      return {ClaimStatus::kTooLarge, {}};
    }
    const std::uint64_t span = detail::record_span_bytes(payload_bytes);
    const std::uint64_t slot = tail_ & mask_;
    const std::uint64_t to_end = capacity_ - slot;
    const std::uint64_t needed = span <= to_end ? span : to_end + span;
    // + header: the zeroed header word after the record must also be free.
    if (tail_ + needed + detail::kRecordHeaderBytes - head_cache_ > capacity_) [[unlikely]] {
      // Acquire: pairs with the consumer's release store of head_position; the consumer has
      // finished reading every byte below it, so we may overwrite them.
      head_cache_ = header_->consumer.head_position.load(std::memory_order_acquire);
      if (tail_ + needed + detail::kRecordHeaderBytes - head_cache_ > capacity_) {
        refused_bytes_ = needed + detail::kRecordHeaderBytes;
        // Relaxed: a statistic for observers; only this producer writes it.
        header_->producer.claims_refused.store(++claims_refused_, std::memory_order_relaxed);
        return {ClaimStatus::kFull, {}};
      }
    }
    if (span > to_end) [[unlikely]] {
      publish_padding(slot, to_end);
    }
    claim_span_ = span;
    claim_bytes_ = payload_bytes;
    std::byte* payload = ring_ + (tail_ & mask_) + detail::kRecordHeaderBytes;
    return {ClaimStatus::kOk, {payload, payload_bytes}};
  }

  // Publishes the claimed record with all its claimed bytes.
  void commit() noexcept { commit(claim_bytes_); }

  // Publishes the claimed record, shortened to `payload_bytes`.
  // Requires: a claim outstanding and payload_bytes <= the claimed size.
  void commit(std::size_t payload_bytes) noexcept {
    WEFT_DASSERT(claim_span_ != 0);
    WEFT_DASSERT(payload_bytes <= claim_bytes_);
    const std::uint64_t next = tail_ + detail::record_span_bytes(payload_bytes);
    // Relaxed: the release store below orders it before the header becomes visible.
    word_at(next).store(0, std::memory_order_relaxed);
    // Release: publishes the payload and the zeroed next header to the consumer's acquire load
    // of this word in poll()/peek().
    word_at(tail_).store(detail::make_record_word(detail::RecordType::kData,
                                                  static_cast<std::uint32_t>(payload_bytes)),
                         std::memory_order_release);
    tail_ = next;
    claim_span_ = 0;
    // Relaxed: a statistic for observers on the same line as tail_position; only we write it.
    header_->producer.records_committed.store(++records_committed_, std::memory_order_relaxed);
    // Release: publishes the new tail (and the count above) to observers such as weftctl; the
    // consumer's data path never reads it.
    header_->producer.tail_position.store(tail_, std::memory_order_release);
    detail::ring_bell(header_->data_sleepers, header_->data_seq, full_fence_);
  }

  // Drops the claimed record; nothing becomes visible. Requires: a claim outstanding.
  void abort() noexcept {
    WEFT_DASSERT(claim_span_ != 0);
    claim_span_ = 0;
  }

  // Copies `payload` into a new record and commits it.
  [[nodiscard]] SendStatus try_send(std::span<const std::byte> payload) noexcept {
    const ClaimResult claim = try_claim(payload.size());
    if (claim.status != ClaimStatus::kOk) {
      return claim.status == ClaimStatus::kFull ? SendStatus::kFull : SendStatus::kTooLarge;
    }
    if (!payload.empty()) std::memcpy(claim.bytes.data(), payload.data(), payload.size());
    commit();
    return SendStatus::kOk;
  }

  // Blocks on the channel's futex until the record refused by the last kFull claim would fit, or
  // `timeout` passes. Returns kReady at once when it fits already.
  WaitStatus wait(std::chrono::nanoseconds timeout) noexcept;

  // Whether a consumer is attached, and alive. Reads /proc: not for the data path.
  [[nodiscard]] PeerState consumer_state() const noexcept {
    return detail::peer_state(header_->consumer.role);
  }

  // Position just past the last committed record.
  [[nodiscard]] std::uint64_t position() const noexcept { return tail_; }
  [[nodiscard]] std::uint64_t record_bytes_max() const noexcept { return record_bytes_max_; }
  [[nodiscard]] std::uint64_t capacity_bytes() const noexcept { return capacity_; }
  [[nodiscard]] const Channel& channel() const noexcept { return channel_; }

 private:
  explicit SpscProducer(Channel&& channel) noexcept;

  [[nodiscard]] std::atomic_ref<std::uint64_t> word_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_)));
  }

  // Fills [slot, end of ring) with a padding record so the next record starts at offset 0.
  void publish_padding(std::uint64_t slot, std::uint64_t to_end) noexcept {
    // Relaxed: the header at ring offset 0 is free (checked by the caller) and the release
    // store below orders this zero before the padding becomes visible.
    word_at(tail_ + to_end).store(0, std::memory_order_relaxed);
    // Release: pairs with the consumer's acquire load of this header word.
    word_at(slot).store(
        detail::make_record_word(detail::RecordType::kPadding,
                                 static_cast<std::uint32_t>(to_end - detail::kRecordHeaderBytes)),
        std::memory_order_release);
    tail_ += to_end;
  }

  Channel channel_;
  detail::ChannelHeader* header_ = nullptr;
  std::byte* ring_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  std::uint64_t tail_ = 0;        // Producer-local: next record starts here.
  std::uint64_t head_cache_ = 0;  // Last head_position seen; refreshed only when space looks short.
  std::uint64_t claim_span_ = 0;  // Non-zero while a claim is outstanding.
  std::uint64_t claim_bytes_ = 0;
  std::uint64_t refused_bytes_ = 0;
  std::uint64_t records_committed_ = 0;  // Mirrors producer.records_committed.
  std::uint64_t claims_refused_ = 0;     // Mirrors producer.claims_refused.
  bool full_fence_ = true;
  bool holds_role_ = false;
};

class WEFT_EXPORT SpscConsumer {
 public:
  // Opens an existing channel and attaches as its consumer. kBusy if a live consumer holds it.
  // A consumer that replaces a dead one continues at the dead one's last released position.
  static Result<SpscConsumer> open(std::string_view name, const OpenOptions& options = {});
  static Result<SpscConsumer> attach(Channel&& channel);

  SpscConsumer(SpscConsumer&& other) noexcept;
  SpscConsumer& operator=(SpscConsumer&& other) noexcept;
  SpscConsumer(const SpscConsumer&) = delete;
  SpscConsumer& operator=(const SpscConsumer&) = delete;
  ~SpscConsumer();  // Gives the consumer role back.

  // Hands up to `records_max` committed records, in order, to `handler(std::span<const
  // std::byte>)`, in place, then releases their space to the producer. The span is valid only
  // during the call.
  template <class Handler>
  [[nodiscard]] PollResult poll(Handler&& handler, std::size_t records_max = SIZE_MAX) noexcept(
      noexcept(handler(std::span<const std::byte>{}))) {
    if (corrupted_) [[unlikely]]
      return {PollStatus::kCorrupted, 0};
    std::size_t count = 0;
    std::uint64_t position = head_;
    while (count < records_max) {
      // Acquire: pairs with the producer's release store of this header word in commit() or
      // publish_padding(); the payload and the zeroed header after it are visible.
      const std::uint64_t word = word_at(position).load(std::memory_order_acquire);
      if (word == 0) {
        // Nothing yet. Ask for the line after the header too, so that a record longer than the
        // header's line arrives in two parallel transfers instead of two in a row.
        if (count == 0) __builtin_prefetch(ring_ + ((position + 64) & mask_));
        break;
      }
      const std::uint64_t span = checked_span(position, word);
      if (span == 0) [[unlikely]] {
        head_ = position;
        publish_head();
        return {count != 0 ? PollStatus::kOk : PollStatus::kCorrupted, count};
      }
      if (detail::record_word_type(word) == static_cast<std::uint32_t>(detail::RecordType::kData))
          [[likely]] {
        handler(std::span<const std::byte>(ring_ + (position & mask_) + detail::kRecordHeaderBytes,
                                           detail::record_word_length(word)));
        ++count;
        ++records_consumed_;
      }
      position += span;
      if (position - published_head_ >= release_interval_) [[unlikely]] {
        // Acquire: pairs with the producer's release store of tail_position. A healthy consumer
        // is never more than one record past it; a ring of valid-looking records with no end
        // (corrupt shared memory) must not keep poll() going forever.
        const std::uint64_t tail = header_->producer.tail_position.load(std::memory_order_acquire);
        if (position > tail && position - tail > capacity_) {
          fail_runaway(position, tail);
          head_ = position;
          publish_head();
          return {count != 0 ? PollStatus::kOk : PollStatus::kCorrupted, count};
        }
        head_ = position;
        publish_head();
      }
    }
    head_ = position;
    if (head_ != published_head_) publish_head();
    return {count != 0 ? PollStatus::kOk : PollStatus::kEmpty, count};
  }

  // Returns the next record in place without consuming it. Repeated calls return the same record
  // until release().
  [[nodiscard]] PeekResult peek() noexcept {
    if (corrupted_) [[unlikely]]
      return {PollStatus::kCorrupted, {}};
    for (;;) {
      // Acquire: as in poll().
      const std::uint64_t word = word_at(head_).load(std::memory_order_acquire);
      if (word == 0) {
        __builtin_prefetch(ring_ + ((head_ + 64) & mask_));  // As in poll().
        return {PollStatus::kEmpty, {}};
      }
      const std::uint64_t span = checked_span(head_, word);
      if (span == 0) [[unlikely]]
        return {PollStatus::kCorrupted, {}};
      if (detail::record_word_type(word) ==
          static_cast<std::uint32_t>(detail::RecordType::kPadding)) {
        head_ += span;  // Skip padding; published with the next release().
        continue;
      }
      peeked_span_ = span;
      return {
          PollStatus::kOk,
          {ring_ + (head_ & mask_) + detail::kRecordHeaderBytes, detail::record_word_length(word)}};
    }
  }

  // Consumes the record returned by the last successful peek() and frees its space.
  // Requires: peek() returned kOk since the last release().
  void release() noexcept {
    WEFT_DASSERT(peeked_span_ != 0);
    head_ += peeked_span_;
    peeked_span_ = 0;
    ++records_consumed_;
    publish_head();
  }

  // Copies the next record into `out` and consumes it.
  [[nodiscard]] RecvResult try_recv(std::span<std::byte> out) noexcept {
    const PeekResult next = peek();
    if (next.status != PollStatus::kOk) {
      return {next.status == PollStatus::kEmpty ? RecvStatus::kEmpty : RecvStatus::kCorrupted, 0};
    }
    if (next.bytes.size() > out.size()) return {RecvStatus::kTooSmall, next.bytes.size()};
    if (!next.bytes.empty()) std::memcpy(out.data(), next.bytes.data(), next.bytes.size());
    release();
    return {RecvStatus::kOk, next.bytes.size()};
  }

  // True when a committed record (or padding) waits at the head.
  [[nodiscard]] bool has_data() const noexcept {
    // Acquire: as in poll(); a caller that sees true will read the record.
    return word_at(head_).load(std::memory_order_acquire) != 0;
  }

  // Blocks on the channel's futex until a record is committed or `timeout` passes. The producer
  // calls futex_wake only when a consumer sleeps here; a record committed at any moment before or
  // during the call ends the wait.
  WaitStatus wait(std::chrono::nanoseconds timeout) noexcept;

  // Holds back the release of consumed records that end above `limit`: the producer may not
  // overwrite them, and a consumer that replaces this one after a crash reads them again. The
  // recorder sets it to the durable position, so that a record leaves the ring only once it is
  // on disk. Raising it releases what it no longer holds back. ~0 (the default): release as read.
  void set_release_limit(std::uint64_t limit) noexcept {
    release_limit_ = limit;
    publish_head();
  }

  // The error behind the last kCorrupted: the channel, the position and the bad field.
  [[nodiscard]] const Error& last_error() const noexcept { return error_; }
  [[nodiscard]] bool corrupted() const noexcept { return corrupted_; }
  // Whether a producer is attached, and alive. Reads /proc: not for the data path.
  [[nodiscard]] PeerState producer_state() const noexcept {
    return detail::peer_state(header_->producer.role);
  }
  // Position of the next record to read.
  [[nodiscard]] std::uint64_t position() const noexcept { return head_; }
  [[nodiscard]] std::uint64_t record_bytes_max() const noexcept { return record_bytes_max_; }
  [[nodiscard]] const Channel& channel() const noexcept { return channel_; }

 private:
  explicit SpscConsumer(Channel&& channel) noexcept;

  [[nodiscard]] std::atomic_ref<std::uint64_t> word_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_)));
  }

  // Returns the bytes the record at `position` spans, or 0 after recording why `word` is invalid.
  [[nodiscard]] std::uint64_t checked_span(std::uint64_t position, std::uint64_t word) noexcept {
    const std::uint32_t type = detail::record_word_type(word);
    const std::uint64_t length = detail::record_word_length(word);
    const std::uint64_t slot = position & mask_;
    if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) [[likely]] {
      if (length <= record_bytes_max_ && slot + detail::record_span_bytes(length) <= capacity_)
          [[likely]] {
        return detail::record_span_bytes(length);
      }
    } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding) && slot != 0 &&
               length + detail::kRecordHeaderBytes == capacity_ - slot) {
      // Padding fills the rest of the ring after a record, so it never starts at offset 0; one
      // that did would send the consumer round the whole ring onto the same word forever.
      return capacity_ - slot;
    }
    fail_corrupt(position, word);
    return 0;
  }

  void publish_head() noexcept {
    published_head_ = head_;
    // Released up to head_, or less under a release limit; never backwards.
    const std::uint64_t limited = head_ < release_limit_ ? head_ : release_limit_;
    if (limited <= released_ && released_ != 0) return;
    released_ = limited;
    // Relaxed: a statistic for observers; only this consumer writes it, and the release store
    // below publishes it together with the head.
    header_->consumer.records_consumed.store(records_consumed_, std::memory_order_relaxed);
    // Release: tells the producer every byte below the released head is read; pairs with its
    // acquire load of head_position in try_claim() and wait().
    header_->consumer.head_position.store(released_, std::memory_order_release);
    detail::ring_bell(header_->space_sleepers, header_->space_seq, full_fence_);
  }

  void fail_corrupt(std::uint64_t position, std::uint64_t word) noexcept;  // Out of line.
  void fail_runaway(std::uint64_t position, std::uint64_t tail) noexcept;  // Out of line.

  Channel channel_;
  detail::ChannelHeader* header_ = nullptr;
  std::byte* ring_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  std::uint64_t head_ = 0;                           // Consumer-local: next record to read.
  std::uint64_t published_head_ = 0;                 // head_ at the last publish_head().
  std::uint64_t released_ = 0;                       // Last value stored into head_position.
  std::uint64_t release_limit_ = ~std::uint64_t{0};  // See set_release_limit().
  std::uint64_t release_interval_ = 0;
  std::uint64_t peeked_span_ = 0;
  std::uint64_t records_consumed_ = 0;  // Mirrors consumer.records_consumed.
  bool corrupted_ = false;
  bool full_fence_ = true;
  bool holds_role_ = false;
  Error error_{};
};

}  // namespace weft
