// The control-plane half of the MPSC ring: attaching to a slot, blocking waits, and turning a
// dead producer's claim into padding. The data path is in weft/mpsc.hpp.
#include "weft/mpsc.hpp"

#include <ctime>
#include <new>
#include <utility>

#include "error_util.hpp"
#include "ring/role.hpp"

namespace weft {
namespace {

bool covers(std::uint64_t start, std::uint64_t end, std::uint64_t position) noexcept {
  return start != detail::kNoPosition && start <= position && position < end;
}

}  // namespace

// ---- MpscProducer ----------------------------------------------------------------------------

MpscProducer::MpscProducer(Channel&& channel) noexcept
    : channel_(std::move(channel)),
      header_(channel_.header()),
      ring_(channel_.ring()),
      mask_(channel_.capacity_bytes() - 1),
      capacity_(channel_.capacity_bytes()),
      record_bytes_max_(channel_.record_bytes_max()),
      chunk_bytes_(std::min<std::uint64_t>(channel_.capacity_bytes() / 16, kChunkBytesMax)) {}

Result<MpscProducer> MpscProducer::create(std::string_view name, ChannelOptions options) {
  options.kind = ChannelKind::kMpsc;
  auto channel = Channel::create(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<MpscProducer> MpscProducer::open(std::string_view name, const OpenOptions& options) {
  auto channel = Channel::open(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<MpscProducer> MpscProducer::attach(Channel&& channel) {
  if (auto ok = detail::check_attachable(channel, ChannelKind::kMpsc, "producer"); !ok)
    return unexpected(ok.error());
  detail::ProducerSlot* slots = channel.producer_slots();
  const std::uint32_t slot_count = channel.producers_max();
  // Acquire: pairs with the consumer's release store; claims ending below it are resolved.
  const std::uint64_t head =
      channel.header()->consumer.head_position.load(std::memory_order_acquire);
  // A dead producer's slot is reused only once nothing it claimed can still block the head; until
  // then the consumer needs its ranges to pad them. try_take_slot() asks only after it has seen
  // the holder dead, so these are that holder's final ranges: asked earlier, they could be those
  // of a predecessor, or of this holder before it claimed a chunk and died in it, and its chunk
  // would be wiped from the slot below while the head still waits in it.
  struct Resolved {
    const detail::ProducerSlot* slot;
    std::uint64_t head;
  };
  const detail::DeadHolderCheck resolved = [](const void* raw) noexcept {
    const auto* c = static_cast<const Resolved*>(raw);
    // Acquire (both): pair with the dead holder's stores, complete since it died (see
    // try_take_slot).
    const std::uint64_t chunk_end = c->slot->chunk_end.load(std::memory_order_acquire);
    const std::uint64_t intent_end = c->slot->intent_end.load(std::memory_order_acquire);
    return (chunk_end == detail::kNoPosition || chunk_end <= c->head) &&
           (intent_end == detail::kNoPosition || intent_end <= c->head);
  };
  for (std::uint32_t i = 0; i < slot_count; ++i) {
    detail::ProducerSlot& slot = slots[i];
    const detail::SlotTakeSeam& seam = detail::slot_take_seam();
    if (seam.before_take != nullptr) seam.before_take(i, seam.context);
    const Resolved context{&slot, head};
    if (!detail::try_take_slot(slot.role, resolved, &context)) continue;
    MpscProducer producer(std::move(channel));
    producer.slot_ = &slot;
    producer.slot_index_ = i;
    producer.holds_slot_ = true;
    producer.full_fence_ = !detail::register_ringer();
    producer.head_cache_ = head;
    // Relaxed (all): we hold the slot now; its fields have no other writer until we publish a
    // chunk. The chunk fields change inside the seqlock (see open_chunk()).
    slot.intent.store(detail::kNoPosition, std::memory_order_relaxed);
    slot.intent_end.store(detail::kNoPosition, std::memory_order_relaxed);
    producer.begin_chunk_update();
    slot.chunk_start.store(detail::kNoPosition, std::memory_order_relaxed);
    slot.chunk_end.store(detail::kNoPosition, std::memory_order_relaxed);
    slot.chunk_limit.store(detail::kNoPosition, std::memory_order_relaxed);
    producer.end_chunk_update();
    slot.write_position.store(detail::kNoPosition, std::memory_order_relaxed);
    // The previous holder's given-up rest stays until the head has passed it: after a consumer
    // killed between its take-back and remembering the range, it is the only record of that rest
    // (the holder may have detached since, freeing the slot). Our own first give-up replaces it
    // only after a consumer has read past it (a take-back happens at the head, inside one of our
    // chunks, all claimed after it). Relaxed (all): acquired with the slot (the holder's release
    // of pid, or its death); cleared only when resolved, so a consumer reading the two stores
    // apart never sees a range that covers its head.
    if (slot.given_up_end.load(std::memory_order_relaxed) <= head) {
      slot.given_up_start.store(0, std::memory_order_relaxed);
      slot.given_up_end.store(0, std::memory_order_relaxed);
    }
    producer.records_committed_ = slot.records_committed.load(std::memory_order_relaxed);
    producer.claims_refused_ = slot.claims_refused.load(std::memory_order_relaxed);
    return producer;
  }
  return detail::fail(Errc::kBusy, 0, "attach",
                      "{}: all {} producer slots are held by live processes (or by dead ones "
                      "whose claims are not yet unblocked): detach one, or create the channel "
                      "with a larger producers_max",
                      channel.path(), slot_count);
}

MpscProducer::MpscProducer(MpscProducer&& other) noexcept
    : channel_(std::move(other.channel_)),
      header_(std::exchange(other.header_, nullptr)),
      slot_(std::exchange(other.slot_, nullptr)),
      ring_(std::exchange(other.ring_, nullptr)),
      mask_(other.mask_),
      capacity_(other.capacity_),
      record_bytes_max_(other.record_bytes_max_),
      head_cache_(other.head_cache_),
      write_position_(other.write_position_),
      chunk_end_(std::exchange(other.chunk_end_, detail::kNoPosition)),
      chunk_bytes_(other.chunk_bytes_),
      claim_span_(std::exchange(other.claim_span_, 0)),
      claim_bytes_(other.claim_bytes_),
      refused_bytes_(other.refused_bytes_),
      records_committed_(other.records_committed_),
      claims_refused_(other.claims_refused_),
      slot_index_(other.slot_index_),
      full_fence_(other.full_fence_),
      holds_slot_(std::exchange(other.holds_slot_, false)) {}

MpscProducer& MpscProducer::operator=(MpscProducer&& other) noexcept {
  if (this != &other) {
    this->~MpscProducer();
    new (this) MpscProducer(std::move(other));
  }
  return *this;
}

MpscProducer::~MpscProducer() {
  if (!holds_slot_ || slot_ == nullptr) return;
  if (chunk_end_ != detail::kNoPosition) {
    // Pad the unused rest of our chunk now, or the consumer would wait for it. The same
    // write_position / barrier / chunk_end sequence as a claim keeps it safe against the consumer
    // taking the rest back at this moment.
    slot_->write_position.store(write_position_, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    close_chunk(slot_->chunk_limit.load(std::memory_order_relaxed));
  }
  detail::give_back_role(slot_->role);
}

bool MpscProducer::open_chunk(std::uint64_t span) noexcept {
  // Relaxed: the compare-and-swap below validates the value; a stale one costs a retry.
  std::uint64_t tail = header_->producer.tail_position.load(std::memory_order_relaxed);
  std::uint64_t start = 0;
  std::uint64_t end = 0;
  for (;;) {
    const std::uint64_t to_end = capacity_ - (tail & mask_);
    // A chunk never crosses the ring's end: shrink it to fit, or pad to the end and start over.
    start = span <= to_end ? tail : tail + to_end;
    const std::uint64_t room = span <= to_end ? to_end : capacity_;
    end = start + std::max(span, std::min(chunk_bytes_, room));
    if (end - head_cache_ > capacity_) {
      // Acquire: pairs with the consumer's release store of head_position, made after it
      // zeroed the bytes below it; we may write them.
      head_cache_ = header_->consumer.head_position.load(std::memory_order_acquire);
      if (start + span - head_cache_ > capacity_) {
        refused_bytes_ = start + span - tail;
        // Relaxed (both): our own slot; no claim attempt is in progress any more.
        slot_->intent.store(detail::kNoPosition, std::memory_order_relaxed);
        slot_->claims_refused.store(++claims_refused_, std::memory_order_relaxed);
        return false;
      }
      // Take what is free now, at least the record.
      end = std::min(end, head_cache_ + capacity_);
    }
    // Relaxed (both): the release half of the CAS below orders them before the new tail.
    slot_->intent.store(tail, std::memory_order_relaxed);
    slot_->intent_end.store(end, std::memory_order_relaxed);
    // Acq_rel: release publishes the intent above to whoever acquires the new tail; acquire
    // orders our writes into the chunk after the claim. On failure `tail` is reloaded (relaxed:
    // validated again by the next attempt).
    if (header_->producer.tail_position.compare_exchange_weak(tail, end, std::memory_order_acq_rel,
                                                              std::memory_order_relaxed)) {
      break;
    }
  }
  // Inside the seqlock: a consumer that loads the fields while we store them sees an odd or a
  // changed chunk_version and looks again. Relaxed (first two): published by the release store
  // of chunk_limit, which the consumer acquires before it acts on the chunk.
  begin_chunk_update();
  slot_->chunk_start.store(start, std::memory_order_relaxed);
  slot_->chunk_end.store(end, std::memory_order_relaxed);
  slot_->chunk_limit.store(end, std::memory_order_release);
  end_chunk_update();
  if (start != tail) {
    // Release: the padding to the ring's end is complete; pairs with the consumer's acquire.
    word_at(tail).store(detail::make_record_word(
                            detail::RecordType::kPadding,
                            static_cast<std::uint32_t>(start - tail - detail::kRecordHeaderBytes)),
                        std::memory_order_release);
  }
  // Fetch the chunk's first lines for writing while the consumer may still hold them shared.
  __builtin_prefetch(ring_ + (start & mask_), 1, 3);
  write_position_ = start;
  chunk_end_ = end;
  detail::beat(slot_->role);
  return true;
}

void MpscProducer::close_chunk(std::uint64_t limit) noexcept {
  if (limit == chunk_end_ && write_position_ < chunk_end_) {
    // Not taken back: the rest is ours to pad. Release: pairs with the consumer's acquire.
    word_at(write_position_)
        .store(detail::make_record_word(detail::RecordType::kPadding,
                                        static_cast<std::uint32_t>(chunk_end_ - write_position_ -
                                                                   detail::kRecordHeaderBytes)),
               std::memory_order_release);
    detail::ring_bell(header_->data_sleepers, header_->data_seq, full_fence_);
  } else if (limit != chunk_end_ && write_position_ < chunk_end_) {
    // Taken back: tell the consumer which rest we give up, before the next chunk overwrites the
    // slot's description of this one.
    slot_->given_up_start.store(write_position_, std::memory_order_relaxed);
    slot_->given_up_end.store(chunk_end_, std::memory_order_release);
  }
  chunk_end_ = detail::kNoPosition;
  // Release: not writing anywhere now; a consumer that took our chunk back may pad its rest.
  slot_->write_position.store(detail::kNoPosition, std::memory_order_release);
}

WaitStatus MpscProducer::wait(std::chrono::nanoseconds timeout) noexcept {
  struct Context {
    const MpscProducer* self;
    std::uint64_t needed;
  } context{this, refused_bytes_};
  const auto ready = [](const void* raw) {
    const auto* c = static_cast<const Context*>(raw);
    // Relaxed: only an estimate of the space; try_claim decides for real.
    const std::uint64_t tail =
        c->self->header_->producer.tail_position.load(std::memory_order_relaxed);
    // Acquire: pairs with the consumer's release store of head_position.
    const std::uint64_t head =
        c->self->header_->consumer.head_position.load(std::memory_order_acquire);
    return tail + c->needed - head <= c->self->capacity_;
  };
  detail::beat(slot_->role);
  if (ready(&context)) return WaitStatus::kReady;
  return detail::sleep_on_bell(header_->space_sleepers, header_->space_seq, ready, &context,
                               timeout)
             ? WaitStatus::kReady
             : WaitStatus::kTimedOut;
}

// ---- MpscConsumer ----------------------------------------------------------------------------

MpscConsumer::MpscConsumer(Channel&& channel) noexcept
    : channel_(std::move(channel)),
      header_(channel_.header()),
      ring_(channel_.ring()),
      mask_(channel_.capacity_bytes() - 1),
      capacity_(channel_.capacity_bytes()),
      record_bytes_max_(channel_.record_bytes_max()),
      release_interval_(channel_.capacity_bytes() / 4),
      release_batch_bytes_(std::min<std::uint64_t>(channel_.capacity_bytes() / 16, 16384)) {}

Result<MpscConsumer> MpscConsumer::open(std::string_view name, const OpenOptions& options) {
  auto channel = Channel::open(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<MpscConsumer> MpscConsumer::attach(Channel&& channel) {
  if (auto ok = detail::check_attachable(channel, ChannelKind::kMpsc, "consumer"); !ok)
    return unexpected(ok.error());
  detail::ChannelHeader& header = *channel.header();
  if (auto ok = detail::take_role(header.consumer.role, channel.path(), "consumer"); !ok) {
    return unexpected(ok.error());
  }
  MpscConsumer consumer(std::move(channel));
  consumer.holds_role_ = true;
  consumer.full_fence_ = !detail::register_ringer();
  // The role is exclusive: a consumer still counted asleep is a dead one (killed in wait()).
  // Relaxed: a stale count only costs spare wake-ups, which this clears.
  header.data_sleepers.sleepers.store(0, std::memory_order_relaxed);
  // Acquire (both): pairs with the previous consumer's release store of head_position; its
  // zeroing_end store was ordered before its zeroing by a release fence.
  const std::uint64_t head = header.consumer.head_position.load(std::memory_order_acquire);
  const std::uint64_t zeroing_end = header.consumer.zeroing_end.load(std::memory_order_acquire);
  consumer.head_ = head;
  consumer.read_position_ = head;
  // A rest of a chunk the previous consumer took back and had not padded yet. Relaxed (all):
  // written only by the consumer role, acquired above with the role.
  const std::uint64_t taken_end = header.consumer.taken_end.load(std::memory_order_relaxed);
  const std::uint32_t taken_slot = header.consumer.taken_slot.load(std::memory_order_relaxed);
  const std::uint64_t taken_start = header.consumer.taken_start.load(std::memory_order_relaxed);
  if (taken_end != 0 && taken_end != detail::kNoPosition &&
      taken_slot < consumer.channel_.producers_max() && taken_start < taken_end &&
      taken_end - taken_start <= consumer.capacity_) {
    consumer.taken_start_ = taken_start;
    consumer.taken_end_ = taken_end;
    consumer.taken_slot_ = taken_slot;
  }
  // Relaxed: written only by the consumer role, which we now hold.
  consumer.records_consumed_ = header.consumer.records_consumed.load(std::memory_order_relaxed);
  if (zeroing_end > head && zeroing_end - head <= consumer.capacity_ &&
      zeroing_end % detail::kRecordAlign == 0) {
    // The previous consumer was killed after delivering [head, zeroing_end) and while zeroing
    // it: finish the zeroing and release the range, or it would look uncommitted forever.
    consumer.read_position_ = zeroing_end;
    consumer.release_to(zeroing_end);
  }
  return consumer;
}

MpscConsumer::MpscConsumer(MpscConsumer&& other) noexcept
    : channel_(std::move(other.channel_)),
      header_(std::exchange(other.header_, nullptr)),
      ring_(std::exchange(other.ring_, nullptr)),
      mask_(other.mask_),
      capacity_(other.capacity_),
      record_bytes_max_(other.record_bytes_max_),
      head_(other.head_),
      read_position_(other.read_position_),
      release_limit_(other.release_limit_),
      release_interval_(other.release_interval_),
      release_batch_bytes_(other.release_batch_bytes_),
      records_consumed_(other.records_consumed_),
      empty_polls_(other.empty_polls_),
      stall_position_(other.stall_position_),
      taken_start_(other.taken_start_),
      taken_end_(other.taken_end_),
      taken_slot_(other.taken_slot_),
      stall_since_ns_(other.stall_since_ns_),
      corrupted_(other.corrupted_),
      full_fence_(other.full_fence_),
      holds_role_(std::exchange(other.holds_role_, false)),
      error_(other.error_) {}

MpscConsumer& MpscConsumer::operator=(MpscConsumer&& other) noexcept {
  if (this != &other) {
    this->~MpscConsumer();
    new (this) MpscConsumer(std::move(other));
  }
  return *this;
}

MpscConsumer::~MpscConsumer() {
  if (!holds_role_ || header_ == nullptr) return;
  if (!corrupted_) release();
  detail::give_back_role(header_->consumer.role);
}

WaitStatus MpscConsumer::wait(std::chrono::nanoseconds timeout) noexcept {
  struct Context {
    const MpscConsumer* self;
    std::uint64_t tail;  // tail_position when the wait began.
  };
  // Ready: a record (or padding) at the head, or a new claim anywhere, which may mean an idle
  // producer's chunk now blocks others (check_stalled decides).
  const auto ready = [](const void* raw) {
    const auto* c = static_cast<const Context*>(raw);
    // Acquire (both): as in poll() and check_stalled().
    return c->self->word_at(c->self->read_position_).load(std::memory_order_acquire) != 0 ||
           c->self->header_->producer.tail_position.load(std::memory_order_acquire) != c->tail;
  };
  const auto has_record = [this] {
    return word_at(read_position_).load(std::memory_order_acquire) != 0;  // Acquire: as above.
  };
  if (corrupted_ || has_record()) return WaitStatus::kReady;
  release();  // Producers may be waiting for the space we hold.
  detail::beat(header_->consumer.role);
  const std::int64_t deadline = detail::deadline_after(timeout);
  // Wake now and then to look for a dead producer's chunk blocking the head.
  const std::chrono::nanoseconds slice(std::max<std::int64_t>(
      1'000'000, static_cast<std::int64_t>(channel_.unblock_timeout_ns() / 4)));
  for (;;) {
    if (check_stalled() || has_record()) return WaitStatus::kReady;
    const std::int64_t remaining = deadline - detail::monotonic_ns();
    if (remaining <= 0) return WaitStatus::kTimedOut;
    // Acquire: pairs with the producers' CAS of tail_position.
    const Context context{this, header_->producer.tail_position.load(std::memory_order_acquire)};
    auto this_wait = std::min(slice, std::chrono::nanoseconds(remaining));
    if (stall_position_ == read_position_) {
      // A stall is being timed: wake when it times out, not up to a slice later.
      const std::int64_t until = stall_since_ns_ +
                                 static_cast<std::int64_t>(channel_.unblock_timeout_ns()) -
                                 detail::monotonic_ns() + 1'000'000;
      this_wait = std::min(this_wait, std::chrono::nanoseconds(std::max<std::int64_t>(until, 0)));
    }
    (void)detail::sleep_on_bell(header_->data_sleepers, header_->data_seq, ready, &context,
                                this_wait);
  }
}

bool MpscConsumer::check_stalled() noexcept {
  if (corrupted_) return false;
  const std::uint64_t at = read_position_;
  // Acquire: pairs with the producers' release (CAS) of tail_position, which also publishes the
  // intent ranges in their slots.
  const std::uint64_t tail = header_->producer.tail_position.load(std::memory_order_acquire);
  // Acquire: as in poll().
  if (tail == at || word_at(at).load(std::memory_order_acquire) != 0) {
    stall_position_ = detail::kNoPosition;
    return false;
  }
  const std::int64_t now = detail::monotonic_ns();
  if (stall_position_ != at) {
    stall_position_ = at;
    stall_since_ns_ = now;
  }
  const bool timed_out =
      static_cast<std::uint64_t>(now - stall_since_ns_) >= channel_.unblock_timeout_ns();

  detail::ProducerSlot* slots = channel_.producer_slots();
  const std::uint32_t slot_count = channel_.producers_max();
  // A rest we took back earlier. The producer's slot may describe a newer chunk by now, so the
  // range is remembered here, not looked up again.
  if (taken_end_ != detail::kNoPosition) {
    if (at < taken_start_ || at >= taken_end_) {
      forget_taken();  // Consumed past it (it was padded, or filled).
    } else {
      // Anywhere in the range, not only at taken_start_: the take-back may have been decided on
      // a record already committed at taken_start_, while its producer was claiming the next one
      // (write_position == at) with the limit it read before the take-back.
      detail::ProducerSlot& slot = slots[taken_slot_];
      // Acquire: pairs with the producer's release store of write_position, made after its
      // commit at taken_start_ if there was one; the word load below then sees that commit.
      if (slot.write_position.load(std::memory_order_acquire) == at) {
        const bool alive =
            detail::process_alive(slot.role.pid.load(std::memory_order_acquire),
                                  slot.role.start_ticks.load(std::memory_order_acquire));
        if (alive || !timed_out) return false;  // Mid-claim at `at`: its record may still land.
      } else if (word_at(at).load(std::memory_order_acquire) != 0) {
        return false;  // Landed just now: read it first.
      }
      pad(at, taken_end_);
      forget_taken();
      return true;
    }
  }
  // Whose chunk holds `at`? Acquire (all loads below): pair with the slot holders' stores; a dead
  // holder's are complete.
  for (std::uint32_t i = 0; i < slot_count; ++i) {
    detail::ProducerSlot& slot = slots[i];
    // One chunk's limit, start and end, never a mix of two chunks' (a limit below the new
    // chunk's start would look like a take-back and pad over records about to be written).
    std::uint64_t limit = 0;
    std::uint64_t start = 0;
    std::uint64_t end = 0;
    bool consistent = false;
    for (int attempt = 0; attempt < 64 && !consistent; ++attempt) {
      // Acquire: pairs with the producer's release store of an even version after its stores.
      const std::uint64_t version = slot.chunk_version.load(std::memory_order_acquire);
      if (version % 2 != 0) continue;
      // Acquire (all): pair with the producer's stores of a complete chunk.
      limit = slot.chunk_limit.load(std::memory_order_acquire);
      start = slot.chunk_start.load(std::memory_order_acquire);
      end = slot.chunk_end.load(std::memory_order_acquire);
      // Acquire fence: orders the loads above before the version check (seqlock reader); pairs
      // with the producer's release fence after it made the version odd.
      std::atomic_thread_fence(std::memory_order_acquire);
      // Relaxed: ordered by the fence above.
      consistent = slot.chunk_version.load(std::memory_order_relaxed) == version;
    }
    const std::uint32_t pid = slot.role.pid.load(std::memory_order_acquire);
    const bool alive =
        detail::process_alive(pid, slot.role.start_ticks.load(std::memory_order_acquire));
    if (!consistent) {
      // Alive: it is publishing a chunk right now; look again later. Dead in the middle of it:
      // its compare-and-swap succeeded, so its intent (below) describes the chunk.
      if (alive) return false;
      continue;
    }
    if (!covers(start, end, at)) continue;
    if (!alive) {
      // Dead: its chunk's rest can never be written. Pad it after the timeout.
      if (!timed_out) return false;
      pad(at, end);
      // Relaxed (both): statistics with this consumer as their only writer.
      header_->recovery.unblocks.fetch_add(1, std::memory_order_relaxed);
      header_->recovery.unblocked_bytes.fetch_add(end - at, std::memory_order_relaxed);
      return true;
    }
    if (limit > at) {
      // Alive and idle, or about to write. Nothing waits behind its chunk: leave it be.
      if (tail <= end) return false;
      // Others' records wait behind it: take the rest back. Acq_rel: pairs with the producer's
      // load of chunk_limit; fails if the producer moved on meanwhile (look again later).
      if (!slot.chunk_limit.compare_exchange_strong(limit, at, std::memory_order_acq_rel,
                                                    std::memory_order_relaxed)) {
        return false;
      }
      // Full barrier on every CPU running a producer: from now on its claims see the new limit.
      detail::heavy_barrier();
    }
    // Taken back at or before `at`. One claim that passed its check before may still land at
    // `at`; then write_position says `at`. Load it first, then the word (acquire both:
    // write_position is stored with release after the producer's earlier commits).
    if (slot.write_position.load(std::memory_order_acquire) == at ||
        word_at(at).load(std::memory_order_acquire) != 0) {
      // Still writing there, or just committed: look again later. The producer may close this
      // chunk and open another before then (its slot no longer describes this one): remember it.
      remember_taken(at, end, i);
      return false;
    }
    pad(at, end);
    return true;
  }

  for (std::uint32_t i = 0; i < slot_count; ++i) {
    const std::uint64_t end = slots[i].given_up_end.load(std::memory_order_acquire);
    const std::uint64_t start = slots[i].given_up_start.load(std::memory_order_acquire);
    if (start < end && covers(start, end, at) && word_at(at).load(std::memory_order_acquire) == 0) {
      pad(at, end);
      return true;
    }
  }

  // No chunk holds `at`: its owner died between its compare-and-swap and publishing the chunk.
  // Only intents remain; a live producer's intent means it may still publish: wait.
  std::uint64_t end = detail::kNoPosition;
  for (std::uint32_t i = 0; i < slot_count; ++i) {
    detail::ProducerSlot& slot = slots[i];
    const std::uint64_t intent = slot.intent.load(std::memory_order_acquire);
    const std::uint64_t intent_end = slot.intent_end.load(std::memory_order_acquire);
    if (!covers(intent, intent_end, at)) continue;
    const std::uint32_t pid = slot.role.pid.load(std::memory_order_acquire);
    if (detail::process_alive(pid, slot.role.start_ticks.load(std::memory_order_acquire))) {
      return false;
    }
    // A dead intent whose CAS failed ends where no claim boundary is: the true one ends at the
    // tail or where another claim (a chunk, an intent, a written word) begins.
    bool boundary = intent_end == tail || word_at(intent_end).load(std::memory_order_acquire) != 0;
    for (std::uint32_t j = 0; j < slot_count && !boundary; ++j) {
      boundary = slots[j].chunk_start.load(std::memory_order_acquire) == intent_end ||
                 slots[j].intent.load(std::memory_order_acquire) == intent_end;
    }
    if (!boundary) continue;
    if (end != detail::kNoPosition && end != intent_end) return false;  // Ambiguous: wait.
    end = intent_end;
  }
  if (end == detail::kNoPosition || !timed_out || end > tail || end - at > capacity_) return false;
  pad(at, end);
  // Relaxed (both): statistics with this consumer as their only writer.
  header_->recovery.unblocks.fetch_add(1, std::memory_order_relaxed);
  header_->recovery.unblocked_bytes.fetch_add(end - at, std::memory_order_relaxed);
  return true;
}

void MpscConsumer::remember_taken(std::uint64_t start, std::uint64_t end,
                                  std::uint32_t slot) noexcept {
  taken_start_ = start;
  taken_end_ = end;
  taken_slot_ = slot;
  // Relaxed (all): only the consumer role writes these; a successor reads them after acquiring
  // the role, when our stores are complete.
  header_->consumer.taken_start.store(start, std::memory_order_relaxed);
  header_->consumer.taken_slot.store(slot, std::memory_order_relaxed);
  header_->consumer.taken_end.store(end, std::memory_order_relaxed);
}

void MpscConsumer::forget_taken() noexcept {
  taken_end_ = detail::kNoPosition;
  // Relaxed: as in remember_taken().
  header_->consumer.taken_end.store(detail::kNoPosition, std::memory_order_relaxed);
}

void MpscConsumer::pad(std::uint64_t from, std::uint64_t to) noexcept {
  // Pieces never cross the ring's end. Only this consumer reads these words to act on them;
  // release for observers such as weftctl.
  std::uint64_t position = from;
  while (position < to) {
    const std::uint64_t ring_end = (position | mask_) + 1;
    const std::uint64_t piece_end = to < ring_end ? to : ring_end;
    word_at(position).store(
        detail::make_record_word(
            detail::RecordType::kPadding,
            static_cast<std::uint32_t>(piece_end - position - detail::kRecordHeaderBytes)),
        std::memory_order_release);
    position = piece_end;
  }
  stall_position_ = detail::kNoPosition;
}

PeerCounts MpscConsumer::producers() const noexcept {
  PeerCounts counts{0, 0};
  const detail::ProducerSlot* slots = channel_.producer_slots();
  for (std::uint32_t i = 0; i < channel_.producers_max(); ++i) {
    const PeerState state = detail::peer_state(slots[i].role);
    if (state == PeerState::kAlive) ++counts.alive;
    if (state == PeerState::kDead) ++counts.dead;
  }
  return counts;
}

void MpscConsumer::fail_corrupt(std::uint64_t position, std::uint64_t word) noexcept {
  corrupted_ = true;
  error_ = detail::make_error(Errc::kCorrupted, 0, "consumer poll",
                              "{}: record header {:#018x} at position {} (ring offset {}) is "
                              "invalid: unknown type, length above record_bytes_max {}, or past "
                              "the ring end ({} bytes)",
                              channel_.path(), word, position, position & mask_, record_bytes_max_,
                              capacity_);
}

}  // namespace weft
