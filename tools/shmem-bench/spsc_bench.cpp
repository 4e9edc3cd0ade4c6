// SPSC latency and throughput between two processes; see spsc_bench.hpp.
//
// Latency: side A commits a ping into channel A->B (try_claim, write in place, commit) and polls
// channel B->A for the pong; side B polls A->B and, inside its handler, claims a record in B->A,
// copies the ping into it and commits it. Both busy-spin. One time stamp per round trip, taken
// when the pong is seen; a round trip's sample is recorded into the histogram after the next ping
// is sent, while it is in flight.
//
// Throughput: side A (producer) streams records into A->B; side B (consumer) polls in batches,
// checks every record's sequence number and reads its payload. The consumer times the window
// from the record that ends the warm-up to the last record of the run, reading the clock once per
// ~256 KiB of records, never per record.
#include "spsc_bench.hpp"

#include <optional>
#include <span>
#include <utility>

#include <fmt/format.h>

#include "errors.hpp"
#include "payload.hpp"
#include "weft/channel.hpp"
#include "weft/idle.hpp"
#include "weft/spsc.hpp"

namespace shmem_bench {
namespace {

constexpr std::uint32_t kOpenConsumerAb = 1;  // Child consumes channel A->B.
constexpr std::uint32_t kOpenProducerBa = 2;  // Child produces into channel B->A.
constexpr std::uint32_t kTouchAll = 4;        // Consumer reads whole payloads.

// Channels the child holds between kSpscOpen and kSpscClose. The child is its own process, so
// this state is the child's alone.
struct ChildChannels {
  std::optional<weft::SpscConsumer> ab;
  std::optional<weft::SpscProducer> ba;
};
ChildChannels& child_channels() {
  static ChildChannels channels;
  return channels;
}

template <class T>
T take(weft::Result<T>&& result, const char* what) {
  if (!result) throw RunError(fmt::format("{}: {}", what, result.error().message()));
  return std::move(*result);
}

void check_poll(const weft::PollResult& r, const weft::SpscConsumer& consumer) {
  if (r.status == weft::PollStatus::kCorrupted) [[unlikely]] {
    throw RunError(consumer.last_error().message());
  }
}

struct ChannelNames {
  std::string ab;
  std::string ba;
};

// Parent side: create the channels, let the child open its ends, then unlink the names so that
// nothing is left in the scratch directory even if this process is killed.
void open_in_child(Peer& peer, const ScratchDir& dir, const ChannelNames& names,
                   std::uint32_t flags, double timeout_s) {
  CommandParams& params = peer.control().params;
  copy_text(params.dir, dir.path());
  copy_text(params.name_ab, names.ab);
  copy_text(params.name_ba, names.ba);
  params.flags = flags;
  peer.call(Command::kSpscOpen, timeout_s);
  (void)weft::Channel::unlink(names.ab, dir.path());
  if ((flags & kOpenProducerBa) != 0) (void)weft::Channel::unlink(names.ba, dir.path());
}

weft::ChannelOptions channel_options(const ScratchDir& dir, std::uint64_t capacity_bytes) {
  weft::ChannelOptions options;
  options.capacity_bytes = capacity_bytes;
  options.dir = dir.path();
  return options;
}

// ---- latency ---------------------------------------------------------------------------------

Histogram weft_ping(weft::SpscProducer& ab, weft::SpscConsumer& ba, Peer& peer,
                    const Timebase& clock, const PhaseLimits& limits, std::size_t size,
                    std::uint64_t& sequence_errors) {
  peer.control().params.size_bytes = size;
  peer.post(Command::kSpscEcho);
  Histogram histogram;
  StallGuard guard(peer, limits.timeout_s);
  const std::uint64_t total =
      limits.messages == 0 ? ~std::uint64_t{0} : limits.warmup + limits.messages;
  std::uint64_t previous = clock.now();
  std::uint64_t end_ticks =
      limits.warmup == 0 ? previous + limits.duration_ticks : ~std::uint64_t{0};
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
      const weft::PollResult r = ba.poll(
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
    have_pending = seq > limits.warmup;
    if (seq == limits.warmup) end_ticks = now + limits.duration_ticks;
    if (limits.messages == 0 && now >= end_ticks) break;
  }
  if (have_pending) histogram.record(pending);
  // Relaxed: the child polls it in its wait loop; it is set only after the last pong arrived.
  peer.control().stop.value.store(1, std::memory_order_relaxed);
  peer.wait_done(limits.timeout_s);
  sequence_errors += errors;
  return histogram;
}

void child_echo(Control& control) {
  ChildChannels& channels = child_channels();
  if (!channels.ab || !channels.ba) throw RunError("echo: the channels are not open");
  weft::SpscConsumer& ab = *channels.ab;
  weft::SpscProducer& ba = *channels.ba;
  std::atomic<std::uint64_t>& stop = control.stop.value;
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
    const weft::PollResult r = ab.poll(echo, 1);
    if (r.count == 0) {
      check_poll(r, ab);
      // Relaxed: the parent sets stop only after its last pong arrived; nothing is in flight.
      if (stop.load(std::memory_order_relaxed) != 0) return;
    }
  }
}

// ---- throughput ------------------------------------------------------------------------------

constexpr std::uint64_t kSourceSlots = 64;

template <bool kCopy>
std::uint64_t produce(weft::SpscProducer& ab, Peer& peer, const PhaseLimits& limits,
                      std::uint64_t warmup, std::size_t size, std::byte* source) {
  std::atomic<std::uint64_t>& consumer_stop = peer.control().consumer_stop.value;
  StallGuard guard(peer, limits.timeout_s);
  const std::uint64_t total = limits.messages == 0 ? ~std::uint64_t{0} : warmup + limits.messages;
  // Copy mode sends from kSourceSlots prepared messages in turn. The slot for `seq` got its
  // sequence number kSourceSlots sends earlier: a message written just before try_send reads it
  // would stall the copy on store forwarding (an 8-byte store under a 32-byte load) until every
  // earlier store, ring stores included, reached the cache; a benchmark artefact.
  const std::size_t slot_stride = (size + 63) / 64 * 64;
  if constexpr (kCopy) {
    for (std::uint64_t i = 0; i < kSourceSlots; ++i)
      write_payload(source + i * slot_stride, size, i);
  }
  std::uint64_t seq = 0;
  while (seq != total) {
    if constexpr (kCopy) {
      std::byte* const message = source + (seq % kSourceSlots) * slot_stride;
      weft::SendStatus status = ab.try_send(std::span<const std::byte>(message, size));
      if (status != weft::SendStatus::kOk) [[unlikely]] {
        if (status == weft::SendStatus::kTooLarge) throw RunError("record larger than the ring");
        // Relaxed: a flag with nothing to publish; the consumer drains whatever was sent.
        if (consumer_stop.load(std::memory_order_relaxed) != 0) break;
        guard.tick();
        weft::cpu_relax();
        continue;
      }
      write_payload(message, std::min<std::size_t>(size, 8), seq + kSourceSlots);
    } else {
      weft::ClaimResult claim = ab.try_claim(size);
      if (!claim) [[unlikely]] {
        if (claim.status == weft::ClaimStatus::kTooLarge) {
          throw RunError("record larger than the ring");
        }
        // Relaxed: as above.
        if (consumer_stop.load(std::memory_order_relaxed) != 0) break;
        guard.tick();
        weft::cpu_relax();
        continue;
      }
      write_payload(claim.bytes.data(), size, seq);
      ab.commit();
    }
    ++seq;
    // Relaxed: as above. Checked once per 1024 records: one L1 hit, the line is not written.
    if ((seq & 1023) == 0 && consumer_stop.load(std::memory_order_relaxed) != 0) break;
  }
  return seq;
}

template <bool kTouchAllBytes>
void consume(weft::SpscConsumer& ab, Control& control, const Timebase& clock) {
  const CommandParams& params = control.params;
  ChildReport& report = control.report;
  const std::size_t size = params.size_bytes;
  const std::uint64_t warmup = params.warmup_messages;
  const std::uint64_t total =
      params.messages == 0 ? ~std::uint64_t{0} : params.warmup_messages + params.messages;
  const std::uint64_t span_bytes = weft::detail::record_span_bytes(size);
  const std::uint64_t check_interval = std::max<std::uint64_t>(64, (256 * 1024) / span_bytes);
  std::atomic<std::uint64_t>& produced = control.produced.value;

  std::uint64_t seq = 0;  // Next expected sequence number.
  std::uint64_t errors = 0;
  std::uint64_t sum = 0;
  const auto handler = [&](std::span<const std::byte> record) noexcept {
    const std::uint64_t first = read_first_word(record);
    errors += first != expected_first_word(seq, size) ? 1U : 0U;
    ++seq;
    if constexpr (kTouchAllBytes) {
      sum += sum_payload(record);
    } else {
      sum += first;
    }
  };

  bool started = false;
  bool finished = false;
  std::uint64_t start_ticks = 0;
  std::uint64_t start_count = 0;
  std::uint64_t next_check = 0;
  const std::size_t batch = params.batch;
  for (;;) {
    const weft::PollResult r = ab.poll(handler, batch);
    if (r.count == 0) [[unlikely]] {
      check_poll(r, ab);
      if (finished) {
        // Acquire: pairs with the parent's release store after its last commit.
        const std::uint64_t p = produced.load(std::memory_order_acquire);
        if (p != 0 && seq == p - 1) break;
      }
      weft::cpu_relax();
      continue;
    }
    if (finished) continue;
    if (!started) {
      if (seq < warmup) continue;
      start_ticks = clock.now();
      start_count = seq;
      started = true;
      next_check = seq + check_interval;
    }
    if (seq >= total) {
      report.measured_ticks = clock.now() - start_ticks;
      report.measured_messages = seq - start_count;
      finished = true;
    } else if (params.messages == 0 && seq >= next_check) {
      const std::uint64_t now = clock.now();
      next_check = seq + check_interval;
      if (now - start_ticks >= params.duration_ticks) {
        report.measured_ticks = now - start_ticks;
        report.measured_messages = seq - start_count;
        finished = true;
        // Relaxed: a flag; the records are handed over through the ring itself.
        control.consumer_stop.value.store(1, std::memory_order_relaxed);
      }
    }
  }
  report.consumed_messages = seq;
  report.sequence_errors = errors;
  report.checksum = sum;
}

}  // namespace

LatencyResult run_spsc_latency(const LatencyConfig& config, Peer& peer, const ScratchDir& dir,
                               const Timebase& clock, const std::string& name_tag) {
  const ChannelNames names{"lat-ab-" + name_tag, "lat-ba-" + name_tag};
  const weft::ChannelOptions options = channel_options(dir, config.capacity_bytes);
  weft::SpscProducer ab = take(weft::SpscProducer::create(names.ab, options), "create channel");
  weft::SpscConsumer ba = take(
      weft::SpscConsumer::attach(take(weft::Channel::create(names.ba, options), "create channel")),
      "attach consumer");
  if (config.size_bytes > ab.record_bytes_max()) {
    throw UsageError(fmt::format("--size {} exceeds the channel's record_bytes_max {}",
                                 config.size_bytes, ab.record_bytes_max()));
  }
  open_in_child(peer, dir, names, kOpenConsumerAb | kOpenProducerBa, config.limits.timeout_s);

  LatencyResult result;
  result.config = config;
  for (int run = 0; run < config.runs; ++run) {
    LatencyRun r;
    r.floor = measure_floor(peer, clock, config.limits);
    r.weft =
        weft_ping(ab, ba, peer, clock, config.limits, config.size_bytes, result.sequence_errors);
    result.runs.push_back(r);
  }
  peer.call(Command::kSpscClose, config.limits.timeout_s);
  if (result.sequence_errors != 0) {
    throw RunError(
        fmt::format("{} pongs carried the wrong sequence number", result.sequence_errors));
  }
  return result;
}

ThroughputResult run_spsc_throughput(const ThroughputConfig& config, Peer& peer,
                                     const ScratchDir& dir, const Timebase& clock,
                                     const std::string& name_tag) {
  const ChannelNames names{"tput-ab-" + name_tag, ""};
  weft::SpscProducer ab =
      take(weft::SpscProducer::create(names.ab, channel_options(dir, config.capacity_bytes)),
           "create channel");
  if (config.size_bytes > ab.record_bytes_max()) {
    throw UsageError(fmt::format("--size {} exceeds the channel's record_bytes_max {}",
                                 config.size_bytes, ab.record_bytes_max()));
  }
  open_in_child(peer, dir, names, kOpenConsumerAb, config.limits.timeout_s);

  const std::size_t size = config.size_bytes;
  const std::uint64_t span_bytes = weft::detail::record_span_bytes(size);
  // Warm-up: two laps of the ring, and at least a thousand records.
  const std::uint64_t warmup =
      std::max<std::uint64_t>({config.limits.warmup, 2 * config.capacity_bytes / span_bytes, 1000});
  MemcpyBaseline memcpy_baseline(size, config.capacity_bytes, span_bytes);
  std::vector<std::byte> source(kSourceSlots * ((size + 63) / 64 * 64), std::byte{0x5a});

  ThroughputResult result;
  result.config = config;
  for (int run = 0; run < config.runs; ++run) {
    ThroughputRun r;
    const MemcpyResult m = memcpy_baseline.measure(clock, config.limits);
    r.memcpy_bytes_per_s = m.bytes_per_s;

    CommandParams& params = peer.control().params;
    params.size_bytes = size;
    params.warmup_messages = warmup;
    params.messages = config.limits.messages;
    params.duration_ticks = config.limits.duration_ticks;
    params.batch = config.batch;
    params.flags = config.touch_all ? kTouchAll : 0;
    peer.post(Command::kSpscConsume);
    const std::uint64_t sent =
        config.copy ? produce<true>(ab, peer, config.limits, warmup, size, source.data())
                    : produce<false>(ab, peer, config.limits, warmup, size, source.data());
    // Release: the consumer drains up to this count; pairs with its acquire load.
    peer.control().produced.value.store(sent + 1, std::memory_order_release);
    const ChildReport& report = peer.wait_done(config.limits.timeout_s);
    result.sequence_errors += report.sequence_errors;
    if (report.consumed_messages != sent) {
      throw RunError(fmt::format("the consumer saw {} records, the producer sent {}",
                                 report.consumed_messages, sent));
    }
    if (report.measured_messages == 0 || report.measured_ticks == 0) {
      throw RunError("the timed window was empty: raise --messages or --duration");
    }
    r.messages = report.measured_messages;
    r.seconds = clock.to_ns(report.measured_ticks) / 1e9;
    r.msgs_per_s = static_cast<double>(r.messages) / r.seconds;
    r.bytes_per_s = r.msgs_per_s * static_cast<double>(size);
    result.runs.push_back(r);
  }
  peer.call(Command::kSpscClose, config.limits.timeout_s);
  if (result.sequence_errors != 0) {
    throw RunError(
        fmt::format("{} records carried the wrong sequence number", result.sequence_errors));
  }
  return result;
}

void spsc_child(Command command, Control& control, const Timebase& clock) {
  ChildChannels& channels = child_channels();
  const CommandParams& params = control.params;
  switch (command) {
    case Command::kSpscOpen: {
      weft::OpenOptions options;
      options.dir = params.dir;
      if ((params.flags & kOpenConsumerAb) != 0) {
        channels.ab.emplace(take(weft::SpscConsumer::open(params.name_ab, options), "open"));
      }
      if ((params.flags & kOpenProducerBa) != 0) {
        channels.ba.emplace(take(weft::SpscProducer::open(params.name_ba, options), "open"));
      }
      return;
    }
    case Command::kSpscClose:
      channels.ab.reset();
      channels.ba.reset();
      return;
    case Command::kSpscEcho:
      child_echo(control);
      return;
    case Command::kSpscConsume:
      if (!channels.ab) throw RunError("consume: the channel is not open");
      if ((params.flags & kTouchAll) != 0) {
        consume<true>(*channels.ab, control, clock);
      } else {
        consume<false>(*channels.ab, control, clock);
      }
      return;
    default:
      throw RunError(fmt::format("unknown command {}", static_cast<unsigned>(command)));
  }
}

}  // namespace shmem_bench
