// The timed loops over weft channels, written once for every kind: SpscProducer/SpscConsumer,
// MpscProducer/MpscConsumer and BroadcastProducer/BroadcastConsumer have the same data-path calls
// (try_claim, commit, try_send; poll with a handler).
//
// Ping-pong: side A commits a ping (try_claim, write in place, commit) and polls for the pong;
// side B polls and, inside its handler, claims a record in the other channel, copies the ping into
// it and commits it. One time stamp per round trip, taken when the pong is seen; a sample is
// recorded into the histogram after the next ping is sent, while it is in flight.
//
// Stream: producers write records back to back; the consumer polls in batches, checks every
// record's sequence number (per producer) and reads its payload. The timing side reads the clock
// once per ~256 KiB of records, never per record. SPSC and MPSC are timed by the consumer (the rate
// at which records arrive); broadcast by the producer (the rate at which it can publish to every
// consumer), each consumer reporting what it received and lost.
//
// Open loop: each producer sends on a fixed schedule (its share of the offered rate), writing the
// message's intended send time into the payload; each consumer stamps the receipt and records
// receipt - intended, so waiting for space or for the CPU counts against the latency.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "errors.hpp"
#include "floor.hpp"
#include "histogram.hpp"
#include "payload.hpp"
#include "peer.hpp"
#include "timebase.hpp"
#include "weft/idle.hpp"
#include "weft/spsc.hpp"

namespace shmem_bench {

// What a process does when it cannot make progress: busy-spin when it has its CPU to itself,
// spin a little then sched_yield when it shares its CPU with another process of the benchmark.
// A streaming consumer (closed-loop throughput) pauses longer after an empty poll
// (weft::StreamingIdle), so that the producer gets a few lines ahead instead of having the line
// it fills pulled away after every record; latency loops never use it.
class Idler {
 public:
  explicit Idler(bool yields, std::uint32_t stream_pauses = 0) noexcept
      : yields_(yields), stream_pauses_(stream_pauses) {
    spin_yield_.spin_count = 100;
    streaming_.pause_count = stream_pauses;
  }
  void idle() noexcept {
    if (yields_) {
      spin_yield_.idle(0);
    } else if (stream_pauses_ != 0) {
      streaming_.idle(0);
    } else {
      weft::cpu_relax();
    }
  }
  void reset() noexcept { spin_yield_.reset(); }

 private:
  bool yields_;
  std::uint32_t stream_pauses_;
  weft::SpinYieldIdle spin_yield_;
  weft::StreamingIdle streaming_;
};

// Pauses of the streaming consumer after an empty poll (about 64 x 12 ns here).
inline constexpr std::uint32_t kStreamPauses = 64;

// The sequence word of record `seq` from producer `producer` (MPSC tags records with their
// producer in the top byte).
inline constexpr unsigned kProducerShift = 56;
inline constexpr std::uint64_t kSequenceMask = (std::uint64_t{1} << kProducerShift) - 1;
inline std::uint64_t tagged(std::uint64_t producer, std::uint64_t seq) noexcept {
  return (producer << kProducerShift) | seq;
}

template <class Consumer, class PollResultT>
void check_poll(const PollResultT& r, const Consumer& consumer) {
  if (r.status == weft::PollStatus::kCorrupted) [[unlikely]] {
    throw RunError(consumer.last_error().message());
  }
  if (r.status == weft::PollStatus::kDetached) [[unlikely]] {
    throw RunError("the producer detached this consumer (it looked dead)");
  }
}

// ---- ping-pong -------------------------------------------------------------------------------

// Side A: `limits.warmup` round trips (or fewer, when limits.warmup_ticks_max passes first), then
// the measured ones. The caller has posted the echo command.
template <class Producer, class Consumer>
Histogram weft_ping(Producer& ab, Consumer& ba, Peer& peer, const Timebase& clock,
                    const PhaseLimits& limits, std::size_t size, std::uint64_t& sequence_errors) {
  Histogram histogram;
  StallGuard guard(peer, limits.timeout_s);
  const std::uint64_t total =
      limits.messages == 0 ? ~std::uint64_t{0} : limits.warmup + limits.messages;
  const std::uint64_t begin = clock.now();
  std::uint64_t previous = begin;
  bool warm = limits.warmup == 0;
  std::uint64_t end_ticks = warm ? previous + limits.duration_ticks : ~std::uint64_t{0};
  std::uint64_t pending = 0;
  bool have_pending = false;
  std::uint64_t errors = 0;
  for (std::uint64_t seq = 1; seq <= total; ++seq) {
    weft::ClaimResult claim = ab.try_claim(size);
    while (!claim) [[unlikely]] {
        if (claim.status == weft::ClaimStatus::kTooLarge)
          throw RunError("ping larger than the ring");
        guard.tick();
        claim = ab.try_claim(size);
      }
    write_payload(claim.bytes.data(), size, seq);
    ab.commit();
    if (have_pending) histogram.record(pending);
    const std::uint64_t expected = expected_first_word(seq, size);
    for (;;) {
      const auto r = ba.poll(
          [&](std::span<const std::byte> pong) noexcept {
            errors += read_first_word(pong) != expected ? 1U : 0U;
          },
          1);
      if (r.count != 0) break;
      check_poll(r, ba);
      guard.tick();
    }
    guard.progress();
    const std::uint64_t now = clock.now();
    pending = now - previous;
    previous = now;
    have_pending = warm;
    if (!warm && (seq == limits.warmup || (limits.messages == 0 && limits.warmup_ticks_max != 0 &&
                                           now - begin >= limits.warmup_ticks_max))) {
      warm = true;
      end_ticks = now + limits.duration_ticks;
    }
    if (limits.messages == 0 && now >= end_ticks) break;
  }
  if (have_pending) histogram.record(pending);
  sequence_errors += errors;
  return histogram;
}

// Side B: echoes every ping until `stop` (set by the parent after its last pong arrived).
template <class Consumer, class Producer>
void weft_echo(Consumer& ab, Producer& ba, const std::atomic<std::uint64_t>& stop) {
  const auto echo = [&](std::span<const std::byte> ping) noexcept {
    weft::ClaimResult claim = ba.try_claim(ping.size());
    while (!claim) [[unlikely]] {
        weft::cpu_relax();
        claim = ba.try_claim(ping.size());
      }
    std::memcpy(claim.bytes.data(), ping.data(), ping.size());
    ba.commit();
  };
  for (;;) {
    const auto r = ab.poll(echo, 1);
    if (r.count == 0) {
      check_poll(r, ab);
      // Relaxed: the parent sets stop only after its last pong arrived; nothing is in flight.
      if (stop.load(std::memory_order_relaxed) != 0) return;
    }
  }
}

// ---- stream ----------------------------------------------------------------------------------

inline constexpr std::uint64_t kSourceSlots = 64;

struct ProduceLimits {
  std::uint64_t total = ~std::uint64_t{0};  // Records at most (warm-up included).
  // Self-timed (broadcast): after `warmup` records, time `duration_ticks` and stop by itself.
  bool self_timed = false;
  std::uint64_t warmup = 0;
  std::uint64_t duration_ticks = 0;
};

struct Produced {
  std::uint64_t sent = 0;
  std::uint64_t measured_messages = 0;  // Self-timed only.
  std::uint64_t measured_ticks = 0;
};

// Streams records until `stop` (or the limits). `source` holds kSourceSlots message slots for
// copy mode. Records carry tagged(producer, seq) in every word.
template <bool kCopy, class Producer, class Guard>
Produced weft_produce(Producer& producer, const std::atomic<std::uint64_t>& stop, Guard& guard,
                      Idler& idler, const Timebase& clock, const ProduceLimits& limits,
                      std::size_t size, std::uint64_t producer_index, std::byte* source) {
  // Copy mode sends from kSourceSlots prepared messages in turn. The slot for `seq` got its
  // sequence number kSourceSlots sends earlier: a message written just before try_send reads it
  // would stall the copy on store forwarding (an 8-byte store under a 32-byte load) until every
  // earlier store, ring stores included, reached the cache; a benchmark artefact.
  const std::size_t slot_stride = (size + 63) / 64 * 64;
  if constexpr (kCopy) {
    for (std::uint64_t i = 0; i < kSourceSlots; ++i)
      write_payload(source + i * slot_stride, size, tagged(producer_index, i));
  }
  const std::uint64_t span_bytes = weft::detail::record_span_bytes(size);
  const std::uint64_t check_interval = std::max<std::uint64_t>(64, (256 * 1024) / span_bytes);
  Produced out;
  std::uint64_t seq = 0;
  std::uint64_t start_ticks = 0;
  std::uint64_t start_count = 0;
  std::uint64_t next_check = limits.self_timed ? limits.warmup : ~std::uint64_t{0};
  while (seq != limits.total) {
    if constexpr (kCopy) {
      std::byte* const message = source + (seq % kSourceSlots) * slot_stride;
      const weft::SendStatus status = producer.try_send(std::span<const std::byte>(message, size));
      if (status != weft::SendStatus::kOk) [[unlikely]] {
        if (status == weft::SendStatus::kTooLarge) throw RunError("record larger than the ring");
        // Relaxed: a flag with nothing to publish; the consumer drains whatever was sent.
        if (stop.load(std::memory_order_relaxed) != 0) break;
        guard.tick();
        idler.idle();
        continue;
      }
      write_payload(message, std::min<std::size_t>(size, 8),
                    tagged(producer_index, seq + kSourceSlots));
    } else {
      const weft::ClaimResult claim = producer.try_claim(size);
      if (!claim) [[unlikely]] {
        if (claim.status == weft::ClaimStatus::kTooLarge) {
          throw RunError("record larger than the ring");
        }
        // Relaxed: as above.
        if (stop.load(std::memory_order_relaxed) != 0) break;
        guard.tick();
        idler.idle();
        continue;
      }
      write_payload(claim.bytes.data(), size, tagged(producer_index, seq));
      producer.commit();
    }
    ++seq;
    idler.reset();
    if (seq >= next_check) [[unlikely]] {
      const std::uint64_t now = clock.now();
      if (start_ticks == 0) {
        start_ticks = now;
        start_count = seq;
      } else if (now - start_ticks >= limits.duration_ticks) {
        out.measured_ticks = now - start_ticks;
        out.measured_messages = seq - start_count;
        out.sent = seq;
        return out;
      }
      next_check = seq + check_interval;
    }
    // Relaxed: as above. Checked once per 1024 records: one L1 hit, the line is not written.
    if ((seq & 1023) == 0 && stop.load(std::memory_order_relaxed) != 0) break;
  }
  if (limits.self_timed) {
    out.measured_ticks = start_ticks == 0 ? 0 : clock.now() - start_ticks;
    out.measured_messages = start_ticks == 0 ? 0 : seq - start_count;
  }
  out.sent = seq;
  return out;
}

enum class SequenceCheck { kSingle, kPerProducer, kLossy };

struct ConsumeLimits {
  std::uint64_t warmup = 0;
  std::uint64_t messages = 0;  // 0: time duration_ticks instead.
  std::uint64_t duration_ticks = 0;
  std::uint64_t batch = 256;
  std::uint32_t producers = 1;
  bool timed_by_consumer = true;  // SPSC/MPSC: it ends the window and sets board.consumer_stop.
  double timeout_s = 60;
};

struct Consumed {
  std::uint64_t received = 0;
  std::uint64_t lost = 0;
  std::uint64_t measured_messages = 0;
  std::uint64_t measured_ticks = 0;
  std::uint64_t sequence_errors = 0;
  std::uint64_t checksum = 0;
};

template <class Consumer>
std::uint64_t lost_so_far(const Consumer& consumer) noexcept {
  if constexpr (requires { consumer.lost_records_total(); }) {
    return consumer.lost_records_total();
  } else {
    return 0;
  }
}

// Consumes one stream phase: until the window is timed and then every record the producers
// report having sent (board.producers_done == producers, received + lost == produced_total).
template <bool kTouchAll, SequenceCheck kCheck, class Consumer>
Consumed weft_consume(Consumer& consumer, Board& board, Idler& idler, const Timebase& clock,
                      const ConsumeLimits& limits, std::size_t size) {
  const std::uint64_t total =
      limits.messages == 0 ? ~std::uint64_t{0} : limits.warmup + limits.messages;
  const std::uint64_t span_bytes = weft::detail::record_span_bytes(size);
  const std::uint64_t check_interval = std::max<std::uint64_t>(64, (256 * 1024) / span_bytes);
  const std::uint64_t lost_base = lost_so_far(consumer);

  Consumed out;
  std::uint64_t seq = 0;  // Records received.
  std::uint64_t errors = 0;
  std::uint64_t sum = 0;
  std::array<std::uint64_t, 256> expected{};
  const auto handler = [&](std::span<const std::byte> record) noexcept {
    const std::uint64_t first = read_first_word(record);
    if constexpr (kCheck == SequenceCheck::kSingle) {
      errors += first != expected_first_word(seq, size) ? 1U : 0U;
    } else if constexpr (kCheck == SequenceCheck::kPerProducer) {
      if (size >= 8) {
        std::uint64_t& next = expected[(first >> kProducerShift) & 0xff];
        errors += (first & kSequenceMask) != next ? 1U : 0U;
        next = (first & kSequenceMask) + 1;
      }
    } else {
      errors +=
          first != expected_first_word(seq + lost_so_far(consumer) - lost_base, size) ? 1U : 0U;
    }
    ++seq;
    if constexpr (kTouchAll) {
      sum += sum_payload(record);
    } else {
      sum += first;
    }
  };

  ChildStallGuard guard(limits.timeout_s);
  bool started = false;
  bool finished = false;
  std::uint64_t start_ticks = 0;
  std::uint64_t start_count = 0;
  std::uint64_t next_check = 0;
  const auto finish = [&](std::uint64_t now) {
    out.measured_ticks = now - start_ticks;
    out.measured_messages = seq - start_count;
    finished = true;
  };
  for (;;) {
    const auto r = consumer.poll(handler, limits.batch);
    if (r.count == 0) [[unlikely]] {
      check_poll(r, consumer);
      // Acquire: pairs with each producer's release fetch_add after its produced_total add.
      const std::uint64_t done = board.producers_done.value.load(std::memory_order_acquire);
      if (done == limits.producers) {
        if (!finished) finish(started ? clock.now() : start_ticks);
        // Relaxed: ordered by the acquire load of producers_done above.
        const std::uint64_t produced = board.produced_total.value.load(std::memory_order_relaxed);
        if (seq + (lost_so_far(consumer) - lost_base) >= produced) break;
      }
      guard.tick();
      idler.idle();
      continue;
    }
    guard.progress();
    idler.reset();
    if (finished) continue;
    if (!started) {
      if (seq < limits.warmup) continue;
      start_ticks = clock.now();
      start_count = seq;
      started = true;
      next_check = seq + check_interval;
    }
    if (seq >= total) {
      finish(clock.now());
      if (limits.timed_by_consumer) {
        // Relaxed: a flag; the records are handed over through the ring itself.
        board.consumer_stop.value.store(1, std::memory_order_relaxed);
      }
    } else if (limits.timed_by_consumer && limits.messages == 0 && seq >= next_check) {
      const std::uint64_t now = clock.now();
      next_check = seq + check_interval;
      if (now - start_ticks >= limits.duration_ticks) {
        finish(now);
        // Relaxed: as above.
        board.consumer_stop.value.store(1, std::memory_order_relaxed);
      }
    }
  }
  out.received = seq;
  out.lost = lost_so_far(consumer) - lost_base;
  out.sequence_errors = errors;
  out.checksum = sum;
  return out;
}

// ---- open loop -------------------------------------------------------------------------------

struct OpenLoopSchedule {
  std::uint64_t start_ticks = 0;   // The schedule's origin (shared by every process).
  std::uint64_t period_ticks = 0;  // Between two messages of this producer; 0: closed loop.
  std::uint64_t offset_ticks = 0;  // This producer's first message after start.
  std::uint64_t end_ticks = 0;     // No message is scheduled at or after this.
};

struct OpenLoopSent {
  std::uint64_t sent = 0;
  std::uint64_t claims_refused = 0;
  std::uint64_t late = 0;
};

// Sends on `schedule`; word 0 of every payload is the intended send time, the other words
// tagged(producer, seq). Requires size >= 8.
template <class Producer>
OpenLoopSent weft_open_loop_produce(Producer& producer, const std::atomic<std::uint64_t>& stop,
                                    Idler& idler, const Timebase& clock,
                                    const OpenLoopSchedule& schedule, std::size_t size,
                                    std::uint64_t producer_index) {
  OpenLoopSent out;
  const std::uint64_t late_ticks = clock.ticks_from_ns(1000);
  const bool closed = schedule.period_ticks == 0;
  while (clock.now() < schedule.start_ticks) idler.idle();
  for (std::uint64_t seq = 0;; ++seq) {
    std::uint64_t intended =
        schedule.start_ticks + schedule.offset_ticks + seq * schedule.period_ticks;
    if (!closed) {
      if (intended >= schedule.end_ticks) break;
      std::uint64_t now = clock.now();
      while (now < intended) {
        // Far from the next send and sharing the CPU: let the neighbour run meanwhile.
        if (intended - now > late_ticks * 20) {
          idler.idle();
        } else {
          weft::cpu_relax();
        }
        now = clock.now();
      }
    }
    weft::ClaimResult claim = producer.try_claim(size);
    while (!claim) [[unlikely]] {
        if (claim.status == weft::ClaimStatus::kTooLarge)
          throw RunError("record larger than the ring");
        ++out.claims_refused;
        // Relaxed: a flag with nothing to publish.
        if (stop.load(std::memory_order_relaxed) != 0) return out;
        idler.idle();
        claim = producer.try_claim(size);
      }
    idler.reset();
    const std::uint64_t now = clock.now();
    if (closed) {
      if (now >= schedule.end_ticks) {
        producer.abort();
        break;
      }
      intended = now;
    } else if (now - intended > late_ticks) {
      ++out.late;
    }
    std::byte* const payload = claim.bytes.data();
    write_payload(payload, size, tagged(producer_index, seq));
    std::memcpy(payload, &intended, 8);
    producer.commit();
    ++out.sent;
  }
  return out;
}

struct OpenLoopReceived {
  std::uint64_t received = 0;
  std::uint64_t in_window = 0;  // Received between window_start and window_end.
  std::uint64_t lost = 0;
  std::uint64_t negative = 0;
  std::uint64_t sequence_errors = 0;
};

// Receives until every producer is done and everything it sent arrived (or was lost); records
// receipt - intended for every message intended at or after `window_start`.
template <class Consumer>
OpenLoopReceived weft_open_loop_consume(Consumer& consumer, Board& board, Idler& idler,
                                        const Timebase& clock, std::uint64_t window_start,
                                        std::uint64_t window_end, std::uint32_t producers,
                                        std::uint64_t batch, double timeout_s,
                                        Histogram& histogram) {
  OpenLoopReceived out;
  const std::uint64_t lost_base = lost_so_far(consumer);
  std::array<std::uint64_t, 256> expected{};
  const bool lossy = requires { consumer.lost_records_total(); };
  const auto handler = [&](std::span<const std::byte> record) noexcept {
    const std::uint64_t now = clock.now();
    std::uint64_t intended = 0;
    std::memcpy(&intended, record.data(), 8);
    if (record.size() >= 16 && !lossy) {
      std::uint64_t word = 0;
      std::memcpy(&word, record.data() + 8, 8);
      std::uint64_t& next = expected[(word >> kProducerShift) & 0xff];
      out.sequence_errors += (word & kSequenceMask) != next ? 1U : 0U;
      next = (word & kSequenceMask) + 1;
    }
    ++out.received;
    if (now >= window_start && now < window_end) ++out.in_window;
    if (intended < window_start) return;
    if (now < intended) {
      ++out.negative;
      histogram.record(0);
    } else {
      histogram.record(now - intended);
    }
  };
  ChildStallGuard guard(timeout_s);
  for (;;) {
    const auto r = consumer.poll(handler, batch);
    if (r.count != 0) {
      guard.progress();
      idler.reset();
      continue;
    }
    check_poll(r, consumer);
    // Acquire: pairs with each producer's release fetch_add after its produced_total add.
    if (board.producers_done.value.load(std::memory_order_acquire) == producers) {
      // Relaxed: ordered by the acquire load above.
      const std::uint64_t produced = board.produced_total.value.load(std::memory_order_relaxed);
      if (out.received + (lost_so_far(consumer) - lost_base) >= produced) break;
    }
    guard.tick();
    idler.idle();
  }
  out.lost = lost_so_far(consumer) - lost_base;
  return out;
}

}  // namespace shmem_bench
