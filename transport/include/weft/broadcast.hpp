// The broadcast ring: one producer, up to consumers_max consumers, each with its own cursor. The
// whole protocol is in this file and in src/ring/broadcast.cpp (attach, join, detach).
//
// Concurrency
//   Roles: one BroadcastProducer (ProducerBlock), up to consumers_max BroadcastConsumers, each in
//   its own ConsumerSlot.
//   Single writers: the producer writes record headers, payloads, tail_position and
//   reserve_position; each consumer writes its slot. The producer writes a consumer's slot only to
//   detach a dead consumer, after winning a compare-and-swap of the slot's pid.
//   Publication: as in SPSC, with a 16-byte header (record word, then sequence number): the
//   producer writes the payload, zeroes the next record word and stores the next sequence number
//   after the record, then stores the record word with release; consumers acquire it.
//   Reliable flavour: the producer reuses bytes only below the smallest head of the live
//   consumers (acquired from their slots), so consumers read records in place. A consumer joins
//   by storing its head, issuing a full fence and re-reading tail_position; the producer scans
//   the heads behind a full fence (see join() in broadcast.cpp).
//   Lossy flavour: the producer never waits. Before writing it stores reserve_position (the end
//   of what it may overwrite) and issues a release fence. A consumer reads only below the
//   tail_position it last acquired (every record there was complete when the tail was stored),
//   through uninstrumented loads of header and payload (a lap later the producer writes payload
//   over them with plain stores), issues an acquire fence and reloads reserve_position: if the
//   producer may have reached the record's bytes a lap later, the copy is discarded and the
//   consumer jumps to tail_position, learning from the sequence number there exactly how many
//   records it lost.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>

#include "weft/channel.hpp"
#include "weft/detail/bell.hpp"
#include "weft/detail/layout.hpp"
#include "weft/error.hpp"
#include "weft/export.hpp"
#include "weft/options.hpp"
#include "weft/result.hpp"
#include "weft/spsc.hpp"

namespace weft {

struct BroadcastPollResult {
  PollStatus status;
  std::size_t count;           // Records handed to the handler.
  std::uint64_t lost_records;  // Lossy: records overwritten before this consumer read them.
  std::uint64_t lost_bytes;    // Lossy: ring bytes skipped with them.
};

namespace detail {
// Copies `bytes` bytes that the producer of a lossy channel may be overwriting at the same time.
// The copy is validated afterwards (see BroadcastConsumer); the race is intended, so the copy is
// kept out of ThreadSanitizer's view.
WEFT_EXPORT void racy_copy(void* destination, const void* source, std::size_t bytes) noexcept;
// Loads the 8-byte word at `source` the same way, for a lossy consumer's record headers: the
// producer may be writing a later lap's payload over them with plain stores.
WEFT_EXPORT std::uint64_t racy_load(const void* source) noexcept;
}  // namespace detail

class WEFT_EXPORT BroadcastProducer {
 public:
  // Creates broadcast channel `name` (options.kind is taken as kBroadcast) and attaches.
  static Result<BroadcastProducer> create(std::string_view name, ChannelOptions options = {});
  static Result<BroadcastProducer> open(std::string_view name, const OpenOptions& options = {});
  static Result<BroadcastProducer> attach(Channel&& channel);

  BroadcastProducer(BroadcastProducer&& other) noexcept;
  BroadcastProducer& operator=(BroadcastProducer&& other) noexcept;
  BroadcastProducer(const BroadcastProducer&) = delete;
  BroadcastProducer& operator=(const BroadcastProducer&) = delete;
  ~BroadcastProducer();

  // Claims space for a record. Reliable: kFull while the slowest live consumer holds the space.
  // Lossy: never kFull. Requires: no claim outstanding.
  [[nodiscard]] ClaimResult try_claim(std::size_t payload_bytes) noexcept {
    WEFT_DASSERT(claim_span_ == 0);
    if (payload_bytes > record_bytes_max_) [[unlikely]] {
      return {ClaimStatus::kTooLarge, {}};
    }
    const std::uint64_t span = detail::broadcast_span_bytes(payload_bytes);
    const std::uint64_t slot = tail_ & mask_;
    const std::uint64_t to_end = capacity_ - slot;
    const std::uint64_t needed = span <= to_end ? span : to_end + span;
    // + header: the zeroed header after the record must also be free.
    const std::uint64_t reach = tail_ + needed + detail::kBroadcastHeaderBytes;
    if (lossy_) {
      if (reach > reserved_) [[unlikely]] {
        // Reserve a step ahead, so that this line (which every lossy consumer loads per record)
        // changes once per step instead of once per record.
        reserved_ = reach + reserve_step_;
        // Relaxed + release fence: every byte we write below is ordered after this store, for a
        // consumer that reads one of them and then (acquire fence) this position.
        header_->reserve.reserve_position.store(reserved_, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
      }
    } else if (reach - min_head_cache_ > capacity_) [[unlikely]] {
      if (!refresh_min_head(reach)) {
        refused_bytes_ = needed + detail::kBroadcastHeaderBytes;
        // Relaxed: a statistic; only the producer writes it.
        header_->producer.claims_refused.store(++claims_refused_, std::memory_order_relaxed);
        return {ClaimStatus::kFull, {}};
      }
    }
    if (span > to_end) [[unlikely]]
      publish_padding(slot, to_end);
    claim_span_ = span;
    claim_bytes_ = payload_bytes;
    std::byte* payload = ring_ + (tail_ & mask_) + detail::kBroadcastHeaderBytes;
    return {ClaimStatus::kOk, {payload, payload_bytes}};
  }

  // Publishes the claimed record to every consumer. Requires: a claim outstanding.
  void commit() noexcept {
    WEFT_DASSERT(claim_span_ != 0);
    const std::uint64_t next = tail_ + claim_span_;
    // Relaxed (both): the release store below orders them before the record becomes visible.
    word_at(next).store(0, std::memory_order_relaxed);
    seq_at(next).store(sequence_ + 1, std::memory_order_relaxed);
    // Release: publishes the payload and the zeroed next header to the consumers' acquire load.
    word_at(tail_).store(detail::make_record_word(detail::RecordType::kData,
                                                  static_cast<std::uint32_t>(claim_bytes_)),
                         std::memory_order_release);
    ++sequence_;
    tail_ = next;
    claim_span_ = 0;
    // Relaxed: a statistic, published with tail_position below.
    header_->producer.records_committed.store(sequence_, std::memory_order_relaxed);
    // Release: a consumer that acquires tail_position (to join, or after a loss) finds a record
    // boundary there, with the next sequence number already stored.
    header_->producer.tail_position.store(tail_, std::memory_order_release);
    detail::ring_bell(header_->data_sleepers, header_->data_seq, full_fence_);
  }

  // Drops the claimed record. Requires: a claim outstanding.
  void abort() noexcept {
    WEFT_DASSERT(claim_span_ != 0);
    claim_span_ = 0;
  }

  [[nodiscard]] SendStatus try_send(std::span<const std::byte> payload) noexcept {
    const ClaimResult claim = try_claim(payload.size());
    if (claim.status != ClaimStatus::kOk) {
      return claim.status == ClaimStatus::kFull ? SendStatus::kFull : SendStatus::kTooLarge;
    }
    if (!payload.empty()) std::memcpy(claim.bytes.data(), payload.data(), payload.size());
    commit();
    return SendStatus::kOk;
  }

  // Reliable: blocks until the record refused by the last kFull claim fits, or `timeout`.
  WaitStatus wait(std::chrono::nanoseconds timeout) noexcept;

  // Consumers registered in the slots, alive and dead. Reads /proc: not for the data path.
  [[nodiscard]] PeerCounts consumers() const noexcept;
  // Consumers seen by the last scan of the slots (without liveness checks).
  [[nodiscard]] std::uint32_t consumers_seen() const noexcept { return consumers_seen_; }
  [[nodiscard]] bool lossy() const noexcept { return lossy_; }
  [[nodiscard]] std::uint64_t position() const noexcept { return tail_; }
  [[nodiscard]] std::uint64_t record_bytes_max() const noexcept { return record_bytes_max_; }
  [[nodiscard]] const Channel& channel() const noexcept { return channel_; }

 private:
  explicit BroadcastProducer(Channel&& channel) noexcept;

  [[nodiscard]] std::atomic_ref<std::uint64_t> word_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_)));
  }
  [[nodiscard]] std::atomic_ref<std::uint64_t> seq_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_) + 8));
  }

  void publish_padding(std::uint64_t slot, std::uint64_t to_end) noexcept {
    // Relaxed (both): the release store below orders them.
    word_at(tail_ + to_end).store(0, std::memory_order_relaxed);
    seq_at(tail_ + to_end).store(sequence_, std::memory_order_relaxed);
    seq_at(slot).store(sequence_, std::memory_order_relaxed);
    // Release: pairs with the consumers' acquire load of this word.
    word_at(slot).store(detail::make_record_word(
                            detail::RecordType::kPadding,
                            static_cast<std::uint32_t>(to_end - detail::kBroadcastHeaderBytes)),
                        std::memory_order_release);
    tail_ += to_end;
  }

  // Reliable: rescans the consumers' heads (detaching dead consumers now and then). True when
  // `reach` now fits. Out of line: the slow path.
  bool refresh_min_head(std::uint64_t reach) noexcept;

  Channel channel_;
  detail::ChannelHeader* header_ = nullptr;
  std::byte* ring_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  std::uint64_t tail_ = 0;
  std::uint64_t sequence_ = 0;  // Records committed so far = the next record's sequence number.
  std::uint64_t min_head_cache_ = 0;
  std::uint64_t claim_span_ = 0;
  std::uint64_t claim_bytes_ = 0;
  std::uint64_t refused_bytes_ = 0;
  std::uint64_t claims_refused_ = 0;
  std::int64_t liveness_checked_ns_ = 0;
  std::uint64_t reserved_ = 0;      // Lossy: the reserve_position last stored.
  std::uint64_t reserve_step_ = 0;  // Lossy: how far beyond the claim it reserves.
  std::uint32_t consumers_seen_ = 0;
  bool lossy_ = false;
  bool full_fence_ = true;
  bool holds_role_ = false;
};

class WEFT_EXPORT BroadcastConsumer {
 public:
  // Opens a broadcast channel and joins it: the consumer starts with the next record committed.
  // kBusy when every consumer slot is held by a live process.
  static Result<BroadcastConsumer> open(std::string_view name, const OpenOptions& options = {});
  static Result<BroadcastConsumer> attach(Channel&& channel);

  BroadcastConsumer(BroadcastConsumer&& other) noexcept;
  BroadcastConsumer& operator=(BroadcastConsumer&& other) noexcept;
  BroadcastConsumer(const BroadcastConsumer&) = delete;
  BroadcastConsumer& operator=(const BroadcastConsumer&) = delete;
  ~BroadcastConsumer();  // Leaves: the producer stops waiting for this consumer.

  // Hands up to `records_max` records to `handler(std::span<const std::byte>)`, in order.
  // Reliable: in place. Lossy: a validated copy (a record overwritten while it was read is never
  // handed out); records lost to the producer lapping this consumer are counted in the result
  // (and in the slot, for weftctl), and reading resumes at a record boundary.
  template <class Handler>
  [[nodiscard]] BroadcastPollResult poll(Handler&& handler, std::size_t records_max = SIZE_MAX) {
    BroadcastPollResult result{PollStatus::kEmpty, 0, 0, 0};
    if (corrupted_) [[unlikely]]
      return {PollStatus::kCorrupted, 0, 0, 0};
    // Relaxed: only the producer's detach changes our slot's pid; a late view delays the news.
    if (slot_->role.pid.load(std::memory_order_relaxed) != pid_) [[unlikely]] {
      return {PollStatus::kDetached, 0, 0, 0};
    }
    std::uint64_t position = head_;
    while (result.count < records_max) {
      std::uint64_t word = 0;
      if (lossy_) {
        // Lossy: records are read only below the producer's tail, and their bytes through
        // uninstrumented loads validated by lapped() afterwards (a lap later the producer writes
        // payload over them with plain stores).
        if (position >= tail_seen_) {
          // Acquire: pairs with the producer's release store of tail_position in commit() and
          // publish_padding(): every record below it was complete when it was stored.
          tail_seen_ = header_->producer.tail_position.load(std::memory_order_acquire);
          if (position >= tail_seen_) {
            if (result.count == 0) __builtin_prefetch(ring_ + (position & mask_));
            break;
          }
        }
        word = detail::racy_load(ring_ + (position & mask_));
        if (word == 0) [[unlikely]] {
          // Below the tail a record is never zero unless a later lap is being written here.
          // Acquire fence: pairs with the producer's release fence after its reserve_position
          // store; if the zero is a later lap's, lapped() sees that lap.
          std::atomic_thread_fence(std::memory_order_acquire);
          if (lapped(position)) {
            if (!resync(position, result)) break;
            continue;
          }
          record_corrupt(position, word, next_sequence_);
          corrupted_ = true;
          break;
        }
      } else {
        // Acquire: pairs with the producer's release store of this word in commit() or
        // publish_padding().
        word = word_at(position).load(std::memory_order_acquire);
        if (word == 0) {
          // Ask for the following line as well (see SpscConsumer::poll).
          if (result.count == 0) __builtin_prefetch(ring_ + ((position + 64) & mask_));
          break;
        }
      }
      const std::uint64_t span = checked_span(position, word);
      if (span == 0) [[unlikely]] {
        // Lossy: bytes of a later lap, not corruption.
        if (lossy_ && lapped(position)) {
          if (!resync(position, result)) break;
          continue;
        }
        corrupted_ = true;
        break;
      }
      if (detail::record_word_type(word) == static_cast<std::uint32_t>(detail::RecordType::kData))
          [[likely]] {
        const std::uint64_t length = detail::record_word_length(word);
        const std::byte* payload = ring_ + (position & mask_) + detail::kBroadcastHeaderBytes;
        if (lossy_) {
          // Validated by lapped() after the copy, like the payload.
          const std::uint64_t sequence = detail::racy_load(ring_ + (position & mask_) + 8);
          detail::racy_copy(copy_.get(), payload, length);
          // Acquire fence: pairs with the producer's release fence after its reserve_position
          // store; if we read any byte it wrote for a later lap, lapped() sees that lap.
          std::atomic_thread_fence(std::memory_order_acquire);
          if (lapped(position)) {  // The copy may be torn: drop it.
            if (!resync(position, result)) break;
            continue;
          }
          if (sequence != next_sequence_) [[unlikely]] {
            record_corrupt(position, word, sequence);
            corrupted_ = true;
            break;
          }
          handler(std::span<const std::byte>(copy_.get(), length));
        } else {
          handler(std::span<const std::byte>(payload, length));
        }
        ++next_sequence_;
        ++result.count;
      }
      position += span;
      if (position - head_ >= capacity_ / 4) [[unlikely]] {
        // Acquire: pairs with the producer's release store. A consumer is never more than a
        // record past the tail; a ring of valid-looking records with no end is corruption.
        const std::uint64_t tail = header_->producer.tail_position.load(std::memory_order_acquire);
        if (position > tail && position - tail > capacity_) {
          record_corrupt(position, word, next_sequence_);
          corrupted_ = true;
          break;
        }
        head_ = position;
        publish_head();
      }
    }
    if (position != head_ || result.lost_records != 0) {
      head_ = position;
      publish_head();
    }
    if (corrupted_)
      result.status = result.count != 0 ? PollStatus::kOk : PollStatus::kCorrupted;
    else if (result.count != 0)
      result.status = PollStatus::kOk;
    return result;
  }

  // Blocks until a record is committed after this consumer's head, or `timeout` passes.
  WaitStatus wait(std::chrono::nanoseconds timeout) noexcept;

  [[nodiscard]] const Error& last_error() const noexcept { return error_; }
  // Whether the producer is attached, and alive. Reads /proc: not for the data path.
  [[nodiscard]] PeerState producer_state() const noexcept {
    return detail::peer_state(header_->producer.role);
  }
  [[nodiscard]] std::uint64_t position() const noexcept { return head_; }
  [[nodiscard]] std::uint32_t slot_index() const noexcept { return slot_index_; }
  [[nodiscard]] std::uint64_t lost_records_total() const noexcept { return lost_records_; }
  [[nodiscard]] std::uint64_t lost_bytes_total() const noexcept { return lost_bytes_; }
  [[nodiscard]] const Channel& channel() const noexcept { return channel_; }

 private:
  explicit BroadcastConsumer(Channel&& channel) noexcept;

  [[nodiscard]] std::atomic_ref<std::uint64_t> word_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_)));
  }
  [[nodiscard]] std::atomic_ref<std::uint64_t> seq_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_) + 8));
  }

  // Lossy: true when the producer may already be writing over the record at `position` (the
  // bytes of one ring later).
  [[nodiscard]] bool lapped(std::uint64_t position) const noexcept {
    // Relaxed: ordered after the loads it validates by the caller's acquire fence (or, before
    // any load, it is merely an early check).
    return header_->reserve.reserve_position.load(std::memory_order_relaxed) > position + capacity_;
  }

  [[nodiscard]] std::uint64_t checked_span(std::uint64_t position, std::uint64_t word) noexcept {
    const std::uint32_t type = detail::record_word_type(word);
    const std::uint64_t length = detail::record_word_length(word);
    const std::uint64_t slot = position & mask_;
    if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) [[likely]] {
      const std::uint64_t span = detail::broadcast_span_bytes(length);
      if (length <= record_bytes_max_ && slot + span <= capacity_) [[likely]]
        return span;
    } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding) && slot != 0 &&
               length + detail::kBroadcastHeaderBytes == capacity_ - slot) {
      return capacity_ - slot;
    }
    if (lossy_) {
      // Acquire fence: orders the (uninstrumented) load of `word` before lapped()'s load; pairs
      // with the producer's release fence after its reserve_position store.
      std::atomic_thread_fence(std::memory_order_acquire);
      if (lapped(position)) return 0;
    }
    record_corrupt(position, word, 0);
    return 0;
  }

  void publish_head() noexcept {
    // Relaxed: a statistic, published with head_position below.
    slot_->records_consumed.store(next_sequence_ - first_sequence_, std::memory_order_relaxed);
    // Release: tells the producer (reliable) that every byte below head_ is read; pairs with its
    // acquire loads in refresh_min_head(). Lossy: for observers only.
    slot_->head_position.store(head_, std::memory_order_release);
    if (!lossy_) detail::ring_bell(header_->space_sleepers, header_->space_seq, full_fence_);
  }

  // Lossy: moves head_ from `position` to the producer's tail (a record boundary), counting what
  // was lost into `result` and the slot. False if it could not find a safe boundary this time.
  // Out of line: the rare path.
  bool resync(std::uint64_t& position, BroadcastPollResult& result) noexcept;
  void record_corrupt(std::uint64_t position, std::uint64_t word, std::uint64_t sequence) noexcept;

  Channel channel_;
  detail::ChannelHeader* header_ = nullptr;
  detail::ConsumerSlot* slot_ = nullptr;
  std::byte* ring_ = nullptr;
  std::unique_ptr<std::byte[]> copy_;  // Lossy: record_bytes_max bytes.
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  std::uint64_t head_ = 0;
  std::uint64_t tail_seen_ = 0;  // Lossy: the producer's tail_position last loaded.
  std::uint64_t next_sequence_ = 0;
  std::uint64_t first_sequence_ = 0;
  std::uint64_t lost_records_ = 0;
  std::uint64_t lost_bytes_ = 0;
  std::uint32_t slot_index_ = 0;
  std::uint32_t pid_ = 0;
  bool lossy_ = false;
  bool corrupted_ = false;
  bool full_fence_ = true;
  bool holds_slot_ = false;
  Error error_{};
};

}  // namespace weft
