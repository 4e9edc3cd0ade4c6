// The control-plane half of the broadcast ring: attaching, joining and leaving, detaching dead
// consumers, lossy resynchronisation and blocking waits. The data path is in weft/broadcast.hpp.
#include "weft/broadcast.hpp"

#include <algorithm>
#include <ctime>
#include <new>
#include <utility>

#include "error_util.hpp"
#include "ring/role.hpp"

namespace weft {
namespace detail {

#if defined(__clang__)
#define WEFT_NO_SANITIZE_THREAD __attribute__((no_sanitize("thread")))
#else
#define WEFT_NO_SANITIZE_THREAD __attribute__((no_sanitize_thread))
#endif

WEFT_NO_SANITIZE_THREAD void racy_copy(void* destination, const void* source,
                                       std::size_t bytes) noexcept {
  // A plain byte loop: an instrumented memcpy would still be seen by ThreadSanitizer.
  auto* out = static_cast<unsigned char*>(destination);
  const auto* in = static_cast<const unsigned char*>(source);
  for (std::size_t i = 0; i < bytes; ++i) out[i] = in[i];
}

WEFT_NO_SANITIZE_THREAD std::uint64_t racy_load(const void* source) noexcept {
  // Volatile: one 8-byte load (the word is 8-byte aligned), not reused or split by the compiler.
  return *static_cast<const volatile std::uint64_t*>(source);
}

}  // namespace detail

namespace {

constexpr std::int64_t kLivenessCheckIntervalNs = 10'000'000;  // Dead-consumer scans, at most.
constexpr std::uint32_t kDetachingPid = detail::kSlotBusyPid;  // The producer is detaching it.

}  // namespace

// ---- BroadcastProducer -----------------------------------------------------------------------

BroadcastProducer::BroadcastProducer(Channel&& channel) noexcept
    : channel_(std::move(channel)),
      header_(channel_.header()),
      ring_(channel_.ring()),
      mask_(channel_.capacity_bytes() - 1),
      capacity_(channel_.capacity_bytes()),
      record_bytes_max_(channel_.record_bytes_max()),
      lossy_(channel_.lossy()) {}

Result<BroadcastProducer> BroadcastProducer::create(std::string_view name, ChannelOptions options) {
  options.kind = ChannelKind::kBroadcast;
  auto channel = Channel::create(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<BroadcastProducer> BroadcastProducer::open(std::string_view name,
                                                  const OpenOptions& options) {
  auto channel = Channel::open(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<BroadcastProducer> BroadcastProducer::attach(Channel&& channel) {
  if (auto ok = detail::check_attachable(channel, ChannelKind::kBroadcast, "producer"); !ok)
    return unexpected(ok.error());
  detail::ChannelHeader& header = *channel.header();
  if (auto ok = detail::take_role(header.producer.role, channel.path(), "producer"); !ok) {
    return unexpected(ok.error());
  }
  BroadcastProducer producer(std::move(channel));
  producer.holds_role_ = true;
  producer.full_fence_ = !detail::register_ringer();
  // Acquire (both): pair with the previous producer's release stores.
  std::uint64_t tail = header.producer.tail_position.load(std::memory_order_acquire);
  std::uint64_t sequence = header.producer.records_committed.load(std::memory_order_acquire);
  // A producer killed between storing a record word and storing tail_position left committed
  // records past it: walk over them (each commit zeroed the word after it first).
  const std::uint64_t start = tail;
  while (tail - start < producer.capacity_) {
    // Acquire: pairs with the dead producer's release store of the word.
    const std::uint64_t word = producer.word_at(tail).load(std::memory_order_acquire);
    if (word == 0) break;
    const std::uint32_t type = detail::record_word_type(word);
    const std::uint64_t length = detail::record_word_length(word);
    const std::uint64_t slot = tail & producer.mask_;
    if (type == static_cast<std::uint32_t>(detail::RecordType::kData) &&
        length <= producer.record_bytes_max_ &&
        slot + detail::broadcast_span_bytes(length) <= producer.capacity_) {
      tail += detail::broadcast_span_bytes(length);
      // Relaxed: the record's own sequence number, published with its word.
      sequence = producer.seq_at(tail - detail::broadcast_span_bytes(length))
                     .load(std::memory_order_relaxed) +
                 1;
    } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding) && slot != 0 &&
               length + detail::kBroadcastHeaderBytes == producer.capacity_ - slot) {
      tail += producer.capacity_ - slot;
    } else {
      return detail::fail(Errc::kCorrupted, 0, "attach",
                          "{}: record header {:#018x} at position {} after tail_position {} is "
                          "invalid",
                          producer.channel_.path(), word, tail, start);
    }
  }
  producer.tail_ = tail;
  producer.sequence_ = sequence;
  // Relaxed (all): published by the release store of tail_position below.
  header.producer.records_committed.store(sequence, std::memory_order_relaxed);
  producer.reserved_ =
      std::max(tail, header.reserve.reserve_position.load(std::memory_order_relaxed));
  producer.reserve_step_ = std::min<std::uint64_t>(producer.capacity_ / 8, 65536);
  header.reserve.reserve_position.store(producer.reserved_, std::memory_order_relaxed);
  // Release: publishes the recovered tail and sequence to joining consumers.
  header.producer.tail_position.store(tail, std::memory_order_release);
  producer.min_head_cache_ = tail;
  (void)producer.refresh_min_head(tail);
  return producer;
}

BroadcastProducer::BroadcastProducer(BroadcastProducer&& other) noexcept
    : channel_(std::move(other.channel_)),
      header_(std::exchange(other.header_, nullptr)),
      ring_(std::exchange(other.ring_, nullptr)),
      mask_(other.mask_),
      capacity_(other.capacity_),
      record_bytes_max_(other.record_bytes_max_),
      tail_(other.tail_),
      sequence_(other.sequence_),
      min_head_cache_(other.min_head_cache_),
      claim_span_(other.claim_span_),
      claim_bytes_(other.claim_bytes_),
      refused_bytes_(other.refused_bytes_),
      claims_refused_(other.claims_refused_),
      liveness_checked_ns_(other.liveness_checked_ns_),
      reserved_(other.reserved_),
      reserve_step_(other.reserve_step_),
      consumers_seen_(other.consumers_seen_),
      lossy_(other.lossy_),
      full_fence_(other.full_fence_),
      holds_role_(std::exchange(other.holds_role_, false)) {}

BroadcastProducer& BroadcastProducer::operator=(BroadcastProducer&& other) noexcept {
  if (this != &other) {
    this->~BroadcastProducer();
    new (this) BroadcastProducer(std::move(other));
  }
  return *this;
}

BroadcastProducer::~BroadcastProducer() {
  if (holds_role_ && header_ != nullptr) detail::give_back_role(header_->producer.role);
}

bool BroadcastProducer::refresh_min_head(std::uint64_t reach) noexcept {
  // Full fence: pairs with the one a joining consumer issues between storing its head and
  // re-reading tail_position: either we see its head here, or it starts at or after our tail.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  detail::ConsumerSlot* slots = channel_.consumer_slots();
  const std::uint32_t slot_count = channel_.consumers_max();
  const auto scan = [&] {
    std::uint64_t min_head = tail_;
    std::uint32_t seen = 0;
    for (std::uint32_t i = 0; i < slot_count; ++i) {
      // Acquire (both): pair with the consumer's release stores in join and publish_head().
      if (slots[i].role.pid.load(std::memory_order_acquire) == 0) continue;
      const std::uint64_t head = slots[i].head_position.load(std::memory_order_acquire);
      if (head == detail::kNoPosition || head > tail_) continue;
      min_head = std::min(min_head, head);
      ++seen;
    }
    min_head_cache_ = min_head;
    consumers_seen_ = seen;
  };
  scan();
  if (reach - min_head_cache_ <= capacity_) return true;
  // Still full: is a dead consumer holding us back? Look now and then, not on every retry.
  const std::int64_t now = detail::monotonic_ns();
  if (now - liveness_checked_ns_ < kLivenessCheckIntervalNs) return false;
  liveness_checked_ns_ = now;
  bool detached_any = false;
  for (std::uint32_t i = 0; i < slot_count; ++i) {
    detail::RoleSlot& role = slots[i].role;
    // Acquire (both): pair with the consumer's release stores in try_take_slot.
    std::uint32_t pid = role.pid.load(std::memory_order_acquire);
    if (pid == 0 || pid == kDetachingPid) continue;
    if (detail::process_alive(pid, role.start_ticks.load(std::memory_order_acquire))) continue;
    // Dead: detach. The CAS makes us the slot's only writer until we free it; a consumer taking
    // the dead slot at the same moment wins or loses it as a whole.
    if (!role.pid.compare_exchange_strong(pid, kDetachingPid, std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
      continue;
    }
    detail::forget_dead_sleeper(header_->data_sleepers, slots[i].sleeping);
    // Relaxed (all): published by the release store of pid below.
    slots[i].head_position.store(detail::kNoPosition, std::memory_order_relaxed);
    slots[i].detached.store(1, std::memory_order_relaxed);
    role.start_ticks.store(0, std::memory_order_relaxed);
    // Relaxed: a statistic with the producer as its only writer.
    header_->recovery.detaches.fetch_add(1, std::memory_order_relaxed);
    // Release: the slot is free, its fields reset, for the next consumer's acquire of pid.
    role.pid.store(0, std::memory_order_release);
    detached_any = true;
  }
  if (detached_any) scan();
  return reach - min_head_cache_ <= capacity_;
}

PeerCounts BroadcastProducer::consumers() const noexcept {
  PeerCounts counts{0, 0};
  const detail::ConsumerSlot* slots = channel_.consumer_slots();
  for (std::uint32_t i = 0; i < channel_.consumers_max(); ++i) {
    const PeerState state = detail::peer_state(slots[i].role);
    if (state == PeerState::kAlive) ++counts.alive;
    if (state == PeerState::kDead) ++counts.dead;
  }
  return counts;
}

WaitStatus BroadcastProducer::wait(std::chrono::nanoseconds timeout) noexcept {
  if (lossy_) return WaitStatus::kReady;
  const std::uint64_t reach = tail_ + refused_bytes_;
  const std::int64_t deadline = detail::deadline_after(timeout);
  struct Context {
    const BroadcastProducer* self;
    std::uint64_t reach;
  } context{this, reach};
  const auto ready = [](const void* raw) {
    const auto* c = static_cast<const Context*>(raw);
    const detail::ConsumerSlot* slots = c->self->channel_.consumer_slots();
    std::uint64_t min_head = c->self->tail_;
    for (std::uint32_t i = 0; i < c->self->channel_.consumers_max(); ++i) {
      // Acquire (both): as in refresh_min_head().
      if (slots[i].role.pid.load(std::memory_order_acquire) == 0) continue;
      const std::uint64_t head = slots[i].head_position.load(std::memory_order_acquire);
      if (head != detail::kNoPosition && head <= c->self->tail_)
        min_head = std::min(min_head, head);
    }
    return c->reach - min_head <= c->self->capacity_;
  };
  // Sleep in slices: a consumer that dies while we sleep rings no bell; refresh_min_head detaches
  // it between slices.
  constexpr std::chrono::nanoseconds kSlice = std::chrono::milliseconds(20);
  detail::beat(header_->producer.role);
  for (;;) {
    if (refresh_min_head(reach)) return WaitStatus::kReady;
    const std::int64_t remaining = deadline - detail::monotonic_ns();
    if (remaining <= 0) return WaitStatus::kTimedOut;
    const auto slice = std::min(kSlice, std::chrono::nanoseconds(remaining));
    if (detail::sleep_on_bell(header_->space_sleepers, header_->space_seq, ready, &context,
                              slice)) {
      if (refresh_min_head(reach)) return WaitStatus::kReady;
    }
  }
}

// ---- BroadcastConsumer -----------------------------------------------------------------------

BroadcastConsumer::BroadcastConsumer(Channel&& channel) noexcept
    : channel_(std::move(channel)),
      header_(channel_.header()),
      ring_(channel_.ring()),
      mask_(channel_.capacity_bytes() - 1),
      capacity_(channel_.capacity_bytes()),
      record_bytes_max_(channel_.record_bytes_max()),
      lossy_(channel_.lossy()) {}

Result<BroadcastConsumer> BroadcastConsumer::open(std::string_view name,
                                                  const OpenOptions& options) {
  auto channel = Channel::open(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<BroadcastConsumer> BroadcastConsumer::attach(Channel&& channel) {
  if (auto ok = detail::check_attachable(channel, ChannelKind::kBroadcast, "consumer"); !ok)
    return unexpected(ok.error());
  detail::ConsumerSlot* slots = channel.consumer_slots();
  const std::uint32_t slot_count = channel.consumers_max();
  for (std::uint32_t i = 0; i < slot_count; ++i) {
    detail::ConsumerSlot& slot = slots[i];
    // Acquire: pairs with the producer's release of a detached slot.
    if (slot.role.pid.load(std::memory_order_acquire) == kDetachingPid) continue;
    if (!detail::try_take_slot(slot.role, detail::any_dead_holder)) continue;
    BroadcastConsumer consumer(std::move(channel));
    consumer.slot_ = &slot;
    consumer.slot_index_ = i;
    consumer.pid_ = slot.role.pid.load(std::memory_order_relaxed);  // Relaxed: we just wrote it.
    consumer.holds_slot_ = true;
    consumer.full_fence_ = !detail::register_ringer();
    if (consumer.lossy_) consumer.copy_ = std::make_unique<std::byte[]>(consumer.record_bytes_max_);
    detail::ChannelHeader& header = *consumer.header_;
    // A dead predecessor in this slot may have died asleep.
    detail::forget_dead_sleeper(header.data_sleepers, slot.sleeping);
    // Relaxed (all): our slot; published by the release store of head_position below.
    slot.records_consumed.store(0, std::memory_order_relaxed);
    slot.lost_records.store(0, std::memory_order_relaxed);
    slot.lost_bytes.store(0, std::memory_order_relaxed);
    slot.detached.store(0, std::memory_order_relaxed);
    // Join: hold the producer back from where its tail is now, then, behind a full fence (paired
    // with refresh_min_head's), read the tail again and start there.
    // Acquire (both tail loads): pair with the producer's release store of tail_position.
    const std::uint64_t first = header.producer.tail_position.load(std::memory_order_acquire);
    // Release: pairs with the producer's acquire of our head in refresh_min_head().
    slot.head_position.store(first, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::uint64_t start = header.producer.tail_position.load(std::memory_order_acquire);
    // Relaxed: stored by the producer before its release store of tail_position that we acquired.
    std::uint64_t sequence =
        consumer.lossy_ ? 0 : consumer.seq_at(start).load(std::memory_order_relaxed);
    if (consumer.lossy_) {
      // Lossy: the producer may lap us before we read the sequence number there (and then writes
      // payload over it with plain stores): read it out of ThreadSanitizer's view, validate it
      // with lapped() behind an acquire fence, and move to a newer tail until it holds.
      for (;;) {
        sequence = detail::racy_load(consumer.ring_ + (start & consumer.mask_) + 8);
        // Acquire fence: pairs with the producer's release fence after its reserve_position
        // store, as in poll().
        std::atomic_thread_fence(std::memory_order_acquire);
        if (!consumer.lapped(start)) break;
        // Acquire: as above.
        start = header.producer.tail_position.load(std::memory_order_acquire);
      }
    }
    consumer.head_ = start;
    consumer.next_sequence_ = sequence;
    consumer.first_sequence_ = sequence;
    // Release: as above.
    slot.head_position.store(start, std::memory_order_release);
    return consumer;
  }
  return detail::fail(Errc::kBusy, 0, "attach",
                      "{}: all {} consumer slots are held by live processes: detach one, or "
                      "create the channel with a larger consumers_max",
                      channel.path(), slot_count);
}

BroadcastConsumer::BroadcastConsumer(BroadcastConsumer&& other) noexcept
    : channel_(std::move(other.channel_)),
      header_(std::exchange(other.header_, nullptr)),
      slot_(std::exchange(other.slot_, nullptr)),
      ring_(std::exchange(other.ring_, nullptr)),
      copy_(std::move(other.copy_)),
      mask_(other.mask_),
      capacity_(other.capacity_),
      record_bytes_max_(other.record_bytes_max_),
      head_(other.head_),
      tail_seen_(other.tail_seen_),
      next_sequence_(other.next_sequence_),
      first_sequence_(other.first_sequence_),
      lost_records_(other.lost_records_),
      lost_bytes_(other.lost_bytes_),
      slot_index_(other.slot_index_),
      pid_(other.pid_),
      lossy_(other.lossy_),
      corrupted_(other.corrupted_),
      full_fence_(other.full_fence_),
      holds_slot_(std::exchange(other.holds_slot_, false)),
      error_(other.error_) {}

BroadcastConsumer& BroadcastConsumer::operator=(BroadcastConsumer&& other) noexcept {
  if (this != &other) {
    this->~BroadcastConsumer();
    new (this) BroadcastConsumer(std::move(other));
  }
  return *this;
}

BroadcastConsumer::~BroadcastConsumer() {
  if (!holds_slot_ || slot_ == nullptr) return;
  // Relaxed: the slot is ours; give_back_role's release store of pid publishes it.
  if (slot_->role.pid.load(std::memory_order_relaxed) == pid_) {
    slot_->head_position.store(detail::kNoPosition, std::memory_order_relaxed);
    detail::give_back_role(slot_->role);
  }
  // Wake a producer waiting for us: it may now go on.
  detail::wake_bell(header_->space_seq);
}

bool BroadcastConsumer::resync(std::uint64_t& position, BroadcastPollResult& result) noexcept {
  constexpr int kAttemptsMax = 16;  // A producer lapping a whole ring per attempt: try later.
  for (int attempt = 0; attempt < kAttemptsMax; ++attempt) {
    // Acquire: pairs with the producer's release store; a record boundary with the next
    // sequence number stored there.
    const std::uint64_t tail = header_->producer.tail_position.load(std::memory_order_acquire);
    // Validated by lapped() behind the acquire fence below (uninstrumented: a lap later the
    // producer writes payload here with plain stores).
    const std::uint64_t sequence = detail::racy_load(ring_ + (tail & mask_) + 8);
    // Acquire fence: pairs with the producer's release fence after its reserve_position store.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (lapped(tail)) continue;
    if (tail < position || sequence < next_sequence_ ||
        sequence - next_sequence_ > (tail - position) / detail::kBroadcastAlign) {
      record_corrupt(tail, 0, sequence);
      corrupted_ = true;
      return false;
    }
    const std::uint64_t lost_records = sequence - next_sequence_;
    const std::uint64_t lost_bytes = tail - position;
    result.lost_records += lost_records;
    result.lost_bytes += lost_bytes;
    lost_records_ += lost_records;
    lost_bytes_ += lost_bytes;
    // Relaxed (both): statistics in our own slot, published with head_position.
    slot_->lost_records.store(lost_records_, std::memory_order_relaxed);
    slot_->lost_bytes.store(lost_bytes_, std::memory_order_relaxed);
    next_sequence_ = sequence;
    first_sequence_ += lost_records;  // Lost records do not count as consumed.
    position = tail;
    return true;
  }
  return false;
}

WaitStatus BroadcastConsumer::wait(std::chrono::nanoseconds timeout) noexcept {
  const auto ready = [](const void* raw) {
    const auto* self = static_cast<const BroadcastConsumer*>(raw);
    if (self->lossy_) {
      // Acquire: as in poll(), which reads a lossy channel only below the tail.
      return self->header_->producer.tail_position.load(std::memory_order_acquire) > self->head_ ||
             self->slot_->role.pid.load(std::memory_order_relaxed) != self->pid_;
    }
    // Acquire: as in poll().
    return self->word_at(self->head_).load(std::memory_order_acquire) != 0 ||
           self->slot_->role.pid.load(std::memory_order_relaxed) != self->pid_;
  };
  if (corrupted_ || ready(this)) return WaitStatus::kReady;
  detail::beat(slot_->role);
  return detail::sleep_on_bell(header_->data_sleepers, header_->data_seq, ready, this, timeout,
                               &slot_->sleeping)
             ? WaitStatus::kReady
             : WaitStatus::kTimedOut;
}

void BroadcastConsumer::record_corrupt(std::uint64_t position, std::uint64_t word,
                                       std::uint64_t sequence) noexcept {
  error_ = detail::make_error(Errc::kCorrupted, 0, "consumer poll",
                              "{}: record at position {} (ring offset {}) is invalid: header "
                              "{:#018x}, sequence {} where {} was expected, record_bytes_max {}",
                              channel_.path(), position, position & mask_, word, sequence,
                              next_sequence_, record_bytes_max_);
}

}  // namespace weft
