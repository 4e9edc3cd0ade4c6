// The multi-producer / single-consumer ring: the whole protocol is in this file and in
// src/ring/mpsc.cpp (attach, chunk claims, taking back an idle or dead producer's chunk).
//
// Concurrency
//   Roles: up to producers_max MpscProducers (each in its own ProducerSlot), one MpscConsumer.
//   Single writers: each producer writes its slot (the consumer only lowers chunk_limit, by CAS,
//   and only for an idle or dead producer) and the records in its chunks; producers advance
//   tail_position by compare-and-swap only; the consumer writes head_position and zeroes the
//   bytes it consumed.
//   Publication: a producer claims a chunk [tail, tail + n) by a CAS of tail_position (once per
//   chunk, not per record) and then, for each record: stores write_position, checks chunk_limit
//   (the consumer may have taken the chunk's rest back), writes the payload and stores the header
//   word with release. The consumer acquires header words at its head; after reading it zeroes
//   the consumed bytes and stores head_position with release; producers acquire it before
//   claiming those bytes again. Wherever nothing is committed the ring is all zeros, so old
//   bytes are never mistaken for a record.
//   Taking back a chunk's rest: if the head waits at H inside a live producer's chunk while other
//   producers have claimed beyond it, the consumer lowers chunk_limit to H (CAS), then (full
//   barrier: membarrier) reads write_position. The producer stores write_position, then (compiler
//   barrier, paired with that membarrier) reads chunk_limit. Either the producer sees the new end
//   and claims a new chunk, or the consumer sees write_position == H and waits for that record;
//   it then pads the rest [H, end) so the head can move on.
//
// One producer's records reach the consumer in that producer's order. The rest of a chunk whose
// producer died is padded once it has blocked the head for the channel's unblock_timeout (see
// check_stalled in mpsc.cpp); a live producer's record is never touched.
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
#include "weft/spsc.hpp"

namespace weft {

class WEFT_EXPORT MpscProducer {
 public:
  // Creates MPSC channel `name` (options.kind is taken as kMpsc) and attaches to it.
  static Result<MpscProducer> create(std::string_view name, ChannelOptions options = {});
  // Opens an MPSC channel and attaches. kBusy when every producer slot is held by a live process.
  static Result<MpscProducer> open(std::string_view name, const OpenOptions& options = {});
  static Result<MpscProducer> attach(Channel&& channel);

  MpscProducer(MpscProducer&& other) noexcept;
  MpscProducer& operator=(MpscProducer&& other) noexcept;
  MpscProducer(const MpscProducer&) = delete;
  MpscProducer& operator=(const MpscProducer&) = delete;
  ~MpscProducer();  // Gives the slot back.

  // Claims space for a record of `payload_bytes`. Requires: no claim outstanding.
  [[nodiscard]] ClaimResult try_claim(std::size_t payload_bytes) noexcept {
    WEFT_DASSERT(claim_span_ == 0);
    if (payload_bytes > record_bytes_max_) [[unlikely]] {
      return {ClaimStatus::kTooLarge, {}};
    }
    const std::uint64_t span = detail::record_span_bytes(payload_bytes);
    for (;;) {
      if (chunk_end_ != detail::kNoPosition) [[likely]] {
        // Release: a consumer that reads this value (acquire) also sees the records we committed
        // before it; the barrier below orders it before the chunk_end load.
        slot_->write_position.store(write_position_, std::memory_order_release);
        if (full_fence_) {
          // StoreLoad against the consumer taking back our chunk; pairs with its fence.
          std::atomic_thread_fence(std::memory_order_seq_cst);
        } else {
          // The consumer's membarrier supplies the hardware barrier (see Concurrency).
          std::atomic_signal_fence(std::memory_order_seq_cst);
        }
        // Relaxed: ordered by the barrier above; the value carries no data to acquire.
        const std::uint64_t limit = slot_->chunk_limit.load(std::memory_order_relaxed);
        if (write_position_ + span <= limit) [[likely]] {
          claim_span_ = span;
          claim_bytes_ = payload_bytes;
          std::byte* payload = ring_ + (write_position_ & mask_) + detail::kRecordHeaderBytes;
          return {ClaimStatus::kOk, {payload, payload_bytes}};
        }
        close_chunk(limit);
      }
      if (!open_chunk(span)) return {ClaimStatus::kFull, {}};
    }
  }

  // Publishes the claimed record. Requires: a claim outstanding.
  void commit() noexcept {
    WEFT_DASSERT(claim_span_ != 0);
    // Release: publishes the payload to the consumer's acquire load of this word.
    word_at(write_position_)
        .store(detail::make_record_word(detail::RecordType::kData,
                                        static_cast<std::uint32_t>(claim_bytes_)),
               std::memory_order_release);
    write_position_ += claim_span_;
    claim_span_ = 0;
    // Relaxed: a statistic; only this producer writes its slot.
    slot_->records_committed.store(++records_committed_, std::memory_order_relaxed);
    detail::ring_bell(header_->data_sleepers, header_->data_seq, full_fence_);
  }

  // Drops the claimed record; nothing becomes visible and the space is reused by the next claim.
  // Requires: a claim outstanding.
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

  // Blocks on the channel's futex until the record refused by the last kFull claim would fit (as
  // far as the consumer's progress goes), or `timeout` passes.
  WaitStatus wait(std::chrono::nanoseconds timeout) noexcept;

  [[nodiscard]] std::uint32_t slot_index() const noexcept { return slot_index_; }
  [[nodiscard]] std::uint64_t record_bytes_max() const noexcept { return record_bytes_max_; }
  [[nodiscard]] std::uint64_t capacity_bytes() const noexcept { return capacity_; }
  [[nodiscard]] const Channel& channel() const noexcept { return channel_; }

 private:
  static constexpr std::uint64_t kChunkBytesMax = 4096;  // Records per CAS: ~100 of 32 bytes.

  explicit MpscProducer(Channel&& channel) noexcept;

  [[nodiscard]] std::atomic_ref<std::uint64_t> word_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_)));
  }

  // Claims a new chunk for a record of `span` bytes by CAS of tail_position. False: no space.
  bool open_chunk(std::uint64_t span) noexcept;  // Out of line: once per chunk.
  // Gives up the current chunk; pads its unused rest unless the consumer took it back (`limit`
  // lowered). Requires: write_position was stored, and the barrier issued, by the caller.
  void close_chunk(std::uint64_t limit) noexcept;

  Channel channel_;
  detail::ChannelHeader* header_ = nullptr;
  detail::ProducerSlot* slot_ = nullptr;
  std::byte* ring_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  std::uint64_t head_cache_ = 0;
  std::uint64_t write_position_ = 0;               // Next record in the current chunk.
  std::uint64_t chunk_end_ = detail::kNoPosition;  // End of the current chunk as claimed.
  std::uint64_t chunk_bytes_ = 0;                  // Preferred chunk size.
  std::uint64_t claim_span_ = 0;                   // Non-zero while a claim is outstanding.
  std::uint64_t claim_bytes_ = 0;
  std::uint64_t refused_bytes_ = 0;
  std::uint64_t records_committed_ = 0;
  std::uint64_t claims_refused_ = 0;
  std::uint32_t slot_index_ = 0;
  bool full_fence_ = true;
  bool holds_slot_ = false;
};

class WEFT_EXPORT MpscConsumer {
 public:
  static Result<MpscConsumer> open(std::string_view name, const OpenOptions& options = {});
  static Result<MpscConsumer> attach(Channel&& channel);

  MpscConsumer(MpscConsumer&& other) noexcept;
  MpscConsumer& operator=(MpscConsumer&& other) noexcept;
  MpscConsumer(const MpscConsumer&) = delete;
  MpscConsumer& operator=(const MpscConsumer&) = delete;
  ~MpscConsumer();

  // Hands up to `records_max` committed records, in ring order, to `handler(std::span<const
  // std::byte>)` in place, then zeroes and releases their space. When the head is blocked by an
  // uncommitted claim, it checks now and then whether the claim's producer died, and unblocks it
  // after the channel's unblock_timeout (see unblocks()).
  template <class Handler>
  [[nodiscard]] PollResult poll(Handler&& handler, std::size_t records_max = SIZE_MAX) noexcept(
      noexcept(handler(std::span<const std::byte>{}))) {
    if (corrupted_) [[unlikely]]
      return {PollStatus::kCorrupted, 0};
    std::size_t count = 0;
    const std::uint64_t start = read_position_;
    std::uint64_t position = read_position_;
    while (count < records_max) {
      // Acquire: pairs with the producer's release store of this header word in commit(),
      // abort() or try_claim()'s padding, and with try_unblock's padding.
      const std::uint64_t word = word_at(position).load(std::memory_order_acquire);
      const std::uint32_t type = detail::record_word_type(word);
      if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) [[likely]] {
        const std::uint64_t length = detail::record_word_length(word);
        const std::uint64_t span = detail::record_span_bytes(length);
        if (length > record_bytes_max_ || (position & mask_) + span > capacity_) [[unlikely]] {
          fail_corrupt(position, word);
          break;
        }
        handler(std::span<const std::byte>(ring_ + (position & mask_) + detail::kRecordHeaderBytes,
                                           length));
        ++count;
        ++records_consumed_;
        position += span;
      } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding)) {
        const std::uint64_t span = detail::kRecordHeaderBytes + detail::record_word_length(word);
        // Padding never spans the whole ring: that would bring the head back onto this word.
        if (span % detail::kRecordAlign != 0 || span >= capacity_ ||
            (position & mask_) + span > capacity_) {
          fail_corrupt(position, word);
          break;
        }
        position += span;
      } else if (word == 0) {
        // Not committed yet. Ask for the following line as well (see SpscConsumer::poll).
        if (count == 0) __builtin_prefetch(ring_ + ((position + 64) & mask_));
        break;
      } else {
        fail_corrupt(position, word);
        break;
      }
      if (position - head_ >= release_interval_) [[unlikely]] {
        // Acquire: pairs with the producers' CAS. Nothing past the claimed tail can have been
        // written: a ring of valid-looking records with no end is corruption, not work.
        if (position > header_->producer.tail_position.load(std::memory_order_acquire)) {
          fail_corrupt(position, word);
          break;
        }
        release_to(position);
      }
    }
    read_position_ = position;
    // Zeroing what was just read would pull the cache lines the producers are writing next to
    // it; release in batches, or once the ring has stayed empty for a few polls.
    if (position != start) {
      empty_polls_ = 0;
      if (position - head_ >= release_batch_bytes_) release_to(position);
    } else if (++empty_polls_ >= kIdlePollsBeforeRelease && position != head_) {
      release_to(position);
    } else if (empty_polls_ % kStallCheckInterval == 0) [[unlikely]] {
      check_stalled();
    }
    if (count != 0) return {PollStatus::kOk, count};
    return {corrupted_ ? PollStatus::kCorrupted : PollStatus::kEmpty, 0};
  }

  // Zeroes and releases everything read so far (poll() batches releases; a consumer about to
  // stop or sleep calls this so the producers get the space now). wait() calls it.
  void release() noexcept {
    if (read_position_ != head_) release_to(read_position_);
  }

  // Holds back the release of read records that end above `limit` (see
  // SpscConsumer::set_release_limit): the recorder sets it to the durable position. Raising it
  // releases what it no longer holds back. ~0 (the default): release as read.
  void set_release_limit(std::uint64_t limit) noexcept {
    release_limit_ = limit;
    release();
  }

  // Blocks until a record is committed at the head or `timeout` passes; wakes at least every
  // unblock_timeout / 4 to look for a dead producer's claim.
  WaitStatus wait(std::chrono::nanoseconds timeout) noexcept;

  // Looks at what blocks the head now: takes back the unused rest of an idle producer's chunk
  // when other producers' records wait behind it, and pads a dead producer's chunk once it has
  // blocked the head for unblock_timeout. Returns true when it padded something (the head can
  // move). poll() and wait() call it by themselves.
  bool check_stalled() noexcept;

  [[nodiscard]] const Error& last_error() const noexcept { return error_; }
  [[nodiscard]] bool corrupted() const noexcept { return corrupted_; }
  // Producers registered in the slots, alive and dead. Reads /proc: not for the data path.
  [[nodiscard]] PeerCounts producers() const noexcept;
  // Position of the next record to read.
  [[nodiscard]] std::uint64_t position() const noexcept { return read_position_; }
  [[nodiscard]] const Channel& channel() const noexcept { return channel_; }

 private:
  static constexpr std::uint64_t kStallCheckInterval = 1024;  // Empty polls between checks.
  static constexpr std::uint64_t kIdlePollsBeforeRelease = 64;

  explicit MpscConsumer(Channel&& channel) noexcept;

  [[nodiscard]] std::atomic_ref<std::uint64_t> word_at(std::uint64_t position) const noexcept {
    return std::atomic_ref<std::uint64_t>(
        *reinterpret_cast<std::uint64_t*>(ring_ + (position & mask_)));
  }

  // Zeroes [head_, position) and publishes position as the new head.
  void release_to(std::uint64_t position) noexcept {
    if (position > release_limit_) position = release_limit_;  // Held back: see above.
    if (position <= head_) return;
    const std::uint64_t start = head_ & mask_;
    const std::uint64_t bytes = position - head_;
    // Relaxed + release fence: the fence keeps the zeroing below from being reordered before
    // this store, so a successor taking over after our death knows which range to finish.
    header_->consumer.zeroing_end.store(position, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    if (start + bytes <= capacity_) {
      std::memset(ring_ + start, 0, bytes);
    } else {
      std::memset(ring_ + start, 0, capacity_ - start);
      std::memset(ring_, 0, bytes - (capacity_ - start));
    }
    head_ = position;
    // Relaxed: a statistic for observers, published by the release store below.
    header_->consumer.records_consumed.store(records_consumed_, std::memory_order_relaxed);
    // Release: publishes the zeroed bytes below head_ to the producers' acquire load of
    // head_position in try_claim(); only then may they write there.
    header_->consumer.head_position.store(head_, std::memory_order_release);
    detail::ring_bell(header_->space_sleepers, header_->space_seq, full_fence_);
  }

  // Records (here and in the consumer block) / clears a taken-back chunk rest.
  void remember_taken(std::uint64_t start, std::uint64_t end, std::uint32_t slot) noexcept;
  void forget_taken() noexcept;
  // Pads [from, to) (split at the ring's end) so that the head can move past it.
  void pad(std::uint64_t from, std::uint64_t to) noexcept;
  void fail_corrupt(std::uint64_t position, std::uint64_t word) noexcept;

  Channel channel_;
  detail::ChannelHeader* header_ = nullptr;
  std::byte* ring_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  std::uint64_t head_ = 0;           // Released: zeroed and given back to the producers.
  std::uint64_t read_position_ = 0;  // Next record to read; head_ <= read_position_.
  std::uint64_t release_limit_ = ~std::uint64_t{0};  // See set_release_limit().
  std::uint64_t release_interval_ = 0;               // Release at least this often inside one poll.
  std::uint64_t release_batch_bytes_ = 0;  // Release when this much is pending after a poll.
  std::uint64_t records_consumed_ = 0;
  std::uint64_t empty_polls_ = 0;
  std::uint64_t stall_position_ = detail::kNoPosition;  // Head when the current stall began.
  // The rest [taken_start_, taken_end_) of producer slot taken_slot_'s chunk, taken back while
  // that producer may still have been writing at taken_start_: at most that one record lands
  // there; the rest is padded once it has (or once the producer has moved on).
  std::uint64_t taken_start_ = detail::kNoPosition;
  std::uint64_t taken_end_ = detail::kNoPosition;
  std::uint32_t taken_slot_ = 0;
  std::int64_t stall_since_ns_ = 0;
  bool corrupted_ = false;
  bool full_fence_ = true;
  bool holds_role_ = false;
  Error error_{};
};

}  // namespace weft
