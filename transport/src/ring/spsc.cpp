// The control-plane half of the SPSC ring: attaching, recovery after a dead peer, blocking waits
// and error reports. The protocol itself is in weft/spsc.hpp.
#include "weft/spsc.hpp"

#include <utility>

#include "error_util.hpp"
#include "ring/role.hpp"

namespace weft {
namespace {

constexpr const char* kProducerRole = "producer";
constexpr const char* kConsumerRole = "consumer";

}  // namespace

// ---- SpscProducer ----------------------------------------------------------------------------

SpscProducer::SpscProducer(Channel&& channel) noexcept
    : channel_(std::move(channel)),
      header_(channel_.header()),
      ring_(channel_.ring()),
      mask_(channel_.capacity_bytes() - 1),
      capacity_(channel_.capacity_bytes()),
      record_bytes_max_(channel_.record_bytes_max()) {}

Result<SpscProducer> SpscProducer::create(std::string_view name, const ChannelOptions& options) {
  auto channel = Channel::create(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<SpscProducer> SpscProducer::open(std::string_view name, const OpenOptions& options) {
  auto channel = Channel::open(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<SpscProducer> SpscProducer::attach(Channel&& channel) {
  if (auto ok = detail::check_attachable(channel, ChannelKind::kSpsc, kProducerRole); !ok)
    return unexpected(ok.error());
  detail::ChannelHeader& header = *channel.header();
  if (auto ok = detail::take_role(header.producer.role, channel.path(), kProducerRole); !ok) {
    return unexpected(ok.error());
  }
  SpscProducer producer(std::move(channel));
  producer.holds_role_ = true;
  producer.full_fence_ = !detail::register_ringer();
  // The role is exclusive: a producer still counted asleep is a dead one (killed in wait()).
  // Relaxed: a stale count only costs spare wake-ups, which this clears.
  header.space_sleepers.sleepers.store(0, std::memory_order_relaxed);

  // Acquire (both): pairs with the release stores of the previous holders; we continue after
  // everything they published.
  const std::uint64_t head = header.consumer.head_position.load(std::memory_order_acquire);
  std::uint64_t tail = header.producer.tail_position.load(std::memory_order_acquire);
  // A producer killed between storing a record header and storing tail_position left committed
  // records past tail_position: walk over them so that none is overwritten. The header word at the
  // true tail is always 0 (each commit zeroes the next one first).
  const std::uint64_t walk_bytes_max = producer.capacity_;
  const std::uint64_t start = tail;
  std::uint64_t walked_records = 0;
  while (tail - start <= walk_bytes_max) {
    // Acquire: pairs with the dead producer's release store of this header word.
    const std::uint64_t word = producer.word_at(tail).load(std::memory_order_acquire);
    if (word == 0) break;
    const std::uint32_t type = detail::record_word_type(word);
    const std::uint64_t length = detail::record_word_length(word);
    const std::uint64_t slot = tail & producer.mask_;
    std::uint64_t span = 0;
    if (type == static_cast<std::uint32_t>(detail::RecordType::kData) &&
        length <= producer.record_bytes_max_ &&
        slot + detail::record_span_bytes(length) <= producer.capacity_) {
      span = detail::record_span_bytes(length);
    } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding) && slot != 0 &&
               length + detail::kRecordHeaderBytes == producer.capacity_ - slot) {
      span = producer.capacity_ - slot;
    } else {
      return detail::fail(Errc::kCorrupted, 0, "attach",
                          "{}: record header {:#018x} at position {} (ring offset {}) after "
                          "tail_position {} is invalid",
                          producer.channel_.path(), word, tail, slot, start);
    }
    if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) ++walked_records;
    tail += span;
  }
  if (tail - head > producer.capacity_ && head <= tail) {
    return detail::fail(Errc::kCorrupted, 0, "attach",
                        "{}: tail {} and head {} are more than a ring apart",
                        producer.channel_.path(), tail, head);
  }
  // Relaxed (both): statistics written only by the producer role, which we now hold; the
  // acquire of the role's pid ordered the previous holder's stores before these loads.
  producer.records_committed_ =
      header.producer.records_committed.load(std::memory_order_relaxed) + walked_records;
  producer.claims_refused_ = header.producer.claims_refused.load(std::memory_order_relaxed);
  if (tail != start) {
    // Relaxed: published by the release store of tail_position below.
    header.producer.records_committed.store(producer.records_committed_, std::memory_order_relaxed);
    // Release: publishes the recovered tail to observers.
    header.producer.tail_position.store(tail, std::memory_order_release);
  }
  producer.tail_ = tail;
  producer.head_cache_ = head;
  return producer;
}

SpscProducer::SpscProducer(SpscProducer&& other) noexcept
    : channel_(std::move(other.channel_)),
      header_(std::exchange(other.header_, nullptr)),
      ring_(std::exchange(other.ring_, nullptr)),
      mask_(other.mask_),
      capacity_(other.capacity_),
      record_bytes_max_(other.record_bytes_max_),
      tail_(other.tail_),
      head_cache_(other.head_cache_),
      claim_span_(other.claim_span_),
      claim_bytes_(other.claim_bytes_),
      refused_bytes_(other.refused_bytes_),
      records_committed_(other.records_committed_),
      claims_refused_(other.claims_refused_),
      full_fence_(other.full_fence_),
      holds_role_(std::exchange(other.holds_role_, false)) {}

SpscProducer& SpscProducer::operator=(SpscProducer&& other) noexcept {
  if (this != &other) {
    this->~SpscProducer();
    new (this) SpscProducer(std::move(other));
  }
  return *this;
}

SpscProducer::~SpscProducer() {
  if (holds_role_ && header_ != nullptr) detail::give_back_role(header_->producer.role);
}

WaitStatus SpscProducer::wait(std::chrono::nanoseconds timeout) noexcept {
  struct Context {
    const SpscProducer* self;
    std::uint64_t needed;
  } context{this, refused_bytes_};
  const auto ready = [](const void* raw) {
    const auto* c = static_cast<const Context*>(raw);
    // Acquire: pairs with the consumer's release store of head_position in publish_head().
    const std::uint64_t head =
        c->self->header_->consumer.head_position.load(std::memory_order_acquire);
    return c->self->tail_ + c->needed - head <= c->self->capacity_;
  };
  if (ready(&context)) return WaitStatus::kReady;
  detail::beat(header_->producer.role);
  return detail::sleep_on_bell(header_->space_sleepers, header_->space_seq, ready, &context,
                               timeout)
             ? WaitStatus::kReady
             : WaitStatus::kTimedOut;
}

// ---- SpscConsumer ----------------------------------------------------------------------------

SpscConsumer::SpscConsumer(Channel&& channel) noexcept
    : channel_(std::move(channel)),
      header_(channel_.header()),
      ring_(channel_.ring()),
      mask_(channel_.capacity_bytes() - 1),
      capacity_(channel_.capacity_bytes()),
      record_bytes_max_(channel_.record_bytes_max()),
      release_interval_(channel_.capacity_bytes() / 4) {}

Result<SpscConsumer> SpscConsumer::open(std::string_view name, const OpenOptions& options) {
  auto channel = Channel::open(name, options);
  if (!channel) return unexpected(channel.error());
  return attach(std::move(*channel));
}

Result<SpscConsumer> SpscConsumer::attach(Channel&& channel) {
  if (auto ok = detail::check_attachable(channel, ChannelKind::kSpsc, kConsumerRole); !ok)
    return unexpected(ok.error());
  detail::ChannelHeader& header = *channel.header();
  if (auto ok = detail::take_role(header.consumer.role, channel.path(), kConsumerRole); !ok) {
    return unexpected(ok.error());
  }
  SpscConsumer consumer(std::move(channel));
  consumer.holds_role_ = true;
  consumer.full_fence_ = !detail::register_ringer();
  // The role is exclusive: a consumer still counted asleep is a dead one (killed in wait()).
  // Relaxed: a stale count only costs spare wake-ups, which this clears.
  header.data_sleepers.sleepers.store(0, std::memory_order_relaxed);
  // Acquire: pairs with the previous consumer's release store; resume where it left off.
  const std::uint64_t head = header.consumer.head_position.load(std::memory_order_acquire);
  consumer.head_ = head;
  consumer.published_head_ = head;
  consumer.released_ = head;
  // Relaxed: written only by the consumer role, which we now hold.
  consumer.records_consumed_ = header.consumer.records_consumed.load(std::memory_order_relaxed);
  return consumer;
}

SpscConsumer::SpscConsumer(SpscConsumer&& other) noexcept
    : channel_(std::move(other.channel_)),
      header_(std::exchange(other.header_, nullptr)),
      ring_(std::exchange(other.ring_, nullptr)),
      mask_(other.mask_),
      capacity_(other.capacity_),
      record_bytes_max_(other.record_bytes_max_),
      head_(other.head_),
      published_head_(other.published_head_),
      released_(other.released_),
      release_limit_(other.release_limit_),
      release_interval_(other.release_interval_),
      peeked_span_(other.peeked_span_),
      records_consumed_(other.records_consumed_),
      corrupted_(other.corrupted_),
      full_fence_(other.full_fence_),
      holds_role_(std::exchange(other.holds_role_, false)),
      error_(other.error_) {}

SpscConsumer& SpscConsumer::operator=(SpscConsumer&& other) noexcept {
  if (this != &other) {
    this->~SpscConsumer();
    new (this) SpscConsumer(std::move(other));
  }
  return *this;
}

SpscConsumer::~SpscConsumer() {
  if (header_ == nullptr) return;
  // Padding skipped by peek() is not yet published; publish it so the producer gets the space.
  if (head_ != published_head_ && !corrupted_) publish_head();
  if (holds_role_) detail::give_back_role(header_->consumer.role);
}

WaitStatus SpscConsumer::wait(std::chrono::nanoseconds timeout) noexcept {
  const auto ready = [](const void* raw) {
    return static_cast<const SpscConsumer*>(raw)->has_data();
  };
  if (corrupted_ || has_data()) return WaitStatus::kReady;
  detail::beat(header_->consumer.role);
  return detail::sleep_on_bell(header_->data_sleepers, header_->data_seq, ready, this, timeout)
             ? WaitStatus::kReady
             : WaitStatus::kTimedOut;
}

void SpscConsumer::fail_runaway(std::uint64_t position, std::uint64_t tail) noexcept {
  corrupted_ = true;
  error_ = detail::make_error(Errc::kCorrupted, 0, "consumer poll",
                              "{}: read up to position {}, more than a ring past tail_position {}: "
                              "the ring holds records that the producer never committed",
                              channel_.path(), position, tail);
}

void SpscConsumer::fail_corrupt(std::uint64_t position, std::uint64_t word) noexcept {
  corrupted_ = true;
  const std::uint32_t type = detail::record_word_type(word);
  const std::uint64_t length = detail::record_word_length(word);
  const std::uint64_t slot = position & mask_;
  if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) {
    error_ = detail::make_error(
        Errc::kCorrupted, 0, "consumer poll",
        "{}: record at position {} (ring offset {}) has length {}, above record_bytes_max {} or "
        "past the ring end ({} bytes)",
        channel_.path(), position, slot, length, record_bytes_max_, capacity_);
  } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding)) {
    error_ = detail::make_error(
        Errc::kCorrupted, 0, "consumer poll",
        "{}: padding at position {} (ring offset {}) has length {}, expected {} (to the ring end)",
        channel_.path(), position, slot, length, capacity_ - slot - detail::kRecordHeaderBytes);
  } else {
    error_ = detail::make_error(Errc::kCorrupted, 0, "consumer poll",
                                "{}: record header at position {} (ring offset {}) has type "
                                "{:#010x}, not data or padding (word {:#018x})",
                                channel_.path(), position, slot, type, word);
  }
}

}  // namespace weft
