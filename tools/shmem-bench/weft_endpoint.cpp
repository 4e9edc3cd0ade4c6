// weft endpoints: SPSC, MPSC and broadcast channels between the benchmark's processes, parent
// and child sides; the loops themselves are in weft_loops.hpp.
#include <sched.h>

#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "endpoint.hpp"
#include "errors.hpp"
#include "weft/broadcast.hpp"
#include "weft/channel.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"
#include "weft_loops.hpp"

namespace shmem_bench {
namespace {

constexpr std::uint32_t kRoleEcho = 1;      // Consumer of A->B and producer of B->A.
constexpr std::uint32_t kRoleConsumer = 2;  // Consumer of A->B.
constexpr std::uint32_t kRoleProducer = 3;  // An extra producer of A->B (MPSC).

constexpr std::uint32_t kFlagTouchAll = 1;
constexpr std::uint32_t kFlagCopy = 2;
constexpr std::uint32_t kFlagLossy = 4;

template <class T>
T take(weft::Result<T>&& result, const char* what) {
  if (!result) throw RunError(fmt::format("{}: {}", what, result.error().message()));
  return std::move(*result);
}

// The three kinds, seen through the same names.
template <Transport kTransport>
struct Kind;

template <>
struct Kind<Transport::kSpsc> {
  using Producer = weft::SpscProducer;
  using Consumer = weft::SpscConsumer;
  static constexpr weft::ChannelKind kChannelKind = weft::ChannelKind::kSpsc;
  static std::uint64_t claims_refused(const weft::Channel& channel) noexcept {
    // Relaxed: a statistic; exactness at the edges of a phase does not matter.
    return channel.header()->producer.claims_refused.load(std::memory_order_relaxed);
  }
};

template <>
struct Kind<Transport::kMpsc> {
  using Producer = weft::MpscProducer;
  using Consumer = weft::MpscConsumer;
  static constexpr weft::ChannelKind kChannelKind = weft::ChannelKind::kMpsc;
  static std::uint64_t claims_refused(const weft::Channel& channel) noexcept {
    std::uint64_t sum = 0;
    const weft::detail::ProducerSlot* slots = channel.producer_slots();
    for (std::uint32_t i = 0; i < channel.producers_max(); ++i) {
      // Relaxed: as above.
      sum += slots[i].claims_refused.load(std::memory_order_relaxed);
    }
    return sum;
  }
};

template <>
struct Kind<Transport::kBroadcast> {
  using Producer = weft::BroadcastProducer;
  using Consumer = weft::BroadcastConsumer;
  static constexpr weft::ChannelKind kChannelKind = weft::ChannelKind::kBroadcast;
  static std::uint64_t claims_refused(const weft::Channel& channel) noexcept {
    // Relaxed: as above.
    return channel.header()->producer.claims_refused.load(std::memory_order_relaxed);
  }
};

weft::ChannelOptions channel_options(const EndpointSpec& spec, const std::string& dir,
                                     weft::ChannelKind kind) {
  weft::ChannelOptions options;
  options.kind = kind;
  options.capacity_bytes = spec.capacity_bytes;
  options.dir = dir;
  options.producers_max = spec.slots_max != 0 ? spec.slots_max : spec.producers;
  options.consumers_max = spec.slots_max != 0 ? spec.slots_max : spec.consumers;
  options.lossy = spec.lossy;
  options.numa_node = spec.numa_node;
  return options;
}

template <Transport kTransport>
typename Kind<kTransport>::Producer create_producer(const std::string& name,
                                                    const weft::ChannelOptions& options) {
  using P = typename Kind<kTransport>::Producer;
  return take(P::attach(take(weft::Channel::create(name, options), "create channel")),
              "attach producer");
}

template <Transport kTransport>
typename Kind<kTransport>::Consumer create_consumer(const std::string& name,
                                                    const weft::ChannelOptions& options) {
  using C = typename Kind<kTransport>::Consumer;
  return take(C::attach(take(weft::Channel::create(name, options), "create channel")),
              "attach consumer");
}

// ---- parent side -----------------------------------------------------------------------------

template <Transport kTransport>
class WeftEndpoint final : public Endpoint {
  using K = Kind<kTransport>;
  using Producer = typename K::Producer;
  using Consumer = typename K::Consumer;

 public:
  WeftEndpoint(const EndpointSpec& spec, EndpointMode mode, BenchContext& context)
      : Endpoint(spec, context), mode_(mode) {
    id_ = context.next_id();
    const std::string tag = fmt::format("{}-{}", transport_name(kTransport), id_);
    name_ab_ = "ab-" + tag;
    name_ba_ = "ba-" + tag;
    const weft::ChannelOptions options = channel_options(spec, context.dir(), K::kChannelKind);
    ab_.emplace(create_producer<kTransport>(name_ab_, options));
    if (spec.size_bytes > ab_->record_bytes_max()) {
      throw UsageError(fmt::format("--size {} exceeds the channel's record_bytes_max {}",
                                   spec.size_bytes, ab_->record_bytes_max()));
    }
    Peer& peer = context.peer();
    if (mode == EndpointMode::kPingPong) {
      ba_.emplace(create_consumer<kTransport>(name_ba_, options));
      processes_ = {{"ping (parent)", -1, context.placement().cpu_a, false, true, 0},
                    {"echo (child)", 0, context.placement().cpu_b, false, false, 0}};
      open_in(0, kRoleEcho, 0);
      (void)weft::Channel::unlink(name_ba_, context.dir());
    } else {
      processes_ = context.plan(spec.producers, spec.consumers);
      for (const ProcessSlot& p : processes_) {
        if (p.peer_index < 0) continue;
        open_in(p.peer_index, p.is_producer ? kRoleProducer : kRoleConsumer, p.rank);
      }
    }
    (void)weft::Channel::unlink(name_ab_, context.dir());
    (void)peer;
  }

  ~WeftEndpoint() override {
    for (const ProcessSlot& p : processes_) {
      if (p.peer_index < 0) continue;
      try {
        CommandParams& params = context_.peer().control(p.peer_index).params;
        params.endpoint_id = id_;
        context_.peer().call(p.peer_index, Command::kEndpointClose, 10);
      } catch (const std::exception&) {
        // The child died or hung: the Peer's destructor kills it; nothing to undo here.
      }
    }
  }

  [[nodiscard]] std::uint64_t size_max() const noexcept override { return ab_->record_bytes_max(); }

  Histogram ping(const PhaseLimits& limits) override {
    if (mode_ != EndpointMode::kPingPong) throw RunError("ping on a stream endpoint");
    Peer& peer = context_.peer();
    CommandParams& params = peer.control(0).params;
    params.endpoint_id = id_;
    params.size_bytes = spec_.size_bytes;
    peer.post(0, Command::kEndpointEcho);
    std::uint64_t errors = 0;
    Histogram h;
    try {
      h = weft_ping(*ab_, *ba_, peer, context_.clock(), limits, spec_.size_bytes, errors);
    } catch (...) {
      // Relaxed: ends the echo loop; nothing is published with it.
      peer.control(0).stop.value.store(1, std::memory_order_relaxed);
      throw;
    }
    // Relaxed: the child polls it in its wait loop; it is set only after the last pong arrived.
    peer.control(0).stop.value.store(1, std::memory_order_relaxed);
    peer.wait_done(0, limits.timeout_s);
    if (errors != 0)
      throw RunError(fmt::format("{} pongs carried the wrong sequence number", errors));
    return h;
  }

  StreamRun stream(const PhaseLimits& limits) override {
    if (mode_ != EndpointMode::kStream) throw RunError("stream on a ping-pong endpoint");
    Peer& peer = context_.peer();
    const Timebase& clock = context_.clock();
    const std::size_t size = spec_.size_bytes;
    const std::uint64_t span_bytes = weft::detail::record_span_bytes(size);
    // Warm-up: two laps of the ring, and at least a thousand records.
    const std::uint64_t warmup =
        std::max<std::uint64_t>({limits.warmup, 2 * spec_.capacity_bytes / span_bytes, 1000});
    const bool broadcast = kTransport == Transport::kBroadcast;
    reset_board();
    const std::uint64_t refused_before = K::claims_refused(ab_->channel());
    for (const ProcessSlot& p : processes_) {
      if (p.peer_index < 0) continue;
      CommandParams& params = fill_params(p);
      params.warmup_messages = warmup;
      params.messages = limits.messages;
      params.duration_ticks = limits.duration_ticks;
      params.batch = spec_.batch;
      peer.post(p.peer_index,
                p.is_producer ? Command::kEndpointProduce : Command::kEndpointConsume);
    }
    Board& board = peer.board();
    StallGuard guard(peer, limits.timeout_s);
    Idler idler(processes_.front().yields);
    ProduceLimits produce_limits;
    if (broadcast) {
      produce_limits.self_timed = true;
      produce_limits.warmup = warmup;
      produce_limits.duration_ticks = limits.duration_ticks;
      if (limits.messages != 0) produce_limits.total = warmup + limits.messages;
    }
    source_.resize(kSourceSlots * ((size + 63) / 64 * 64));
    Produced produced;
    try {
      produced = spec_.copy ? weft_produce<true>(*ab_, board.consumer_stop.value, guard, idler,
                                                 clock, produce_limits, size, 0, source_.data())
                            : weft_produce<false>(*ab_, board.consumer_stop.value, guard, idler,
                                                  clock, produce_limits, size, 0, source_.data());
    } catch (...) {
      // Relaxed: lets the other producers stop; the phase failed.
      board.consumer_stop.value.store(1, std::memory_order_relaxed);
      throw;
    }
    // Relaxed: published by the release fetch_add below.
    board.produced_total.value.fetch_add(produced.sent, std::memory_order_relaxed);
    // Release: pairs with the consumers' acquire load; the count above is visible with it.
    board.producers_done.value.fetch_add(1, std::memory_order_release);

    StreamRun run;
    std::uint64_t sent_total = produced.sent;
    std::uint64_t errors = 0;
    for (const ProcessSlot& p : processes_) {
      if (p.peer_index < 0) continue;
      const ChildReport& report = peer.wait_done(p.peer_index, limits.timeout_s);
      errors += report.sequence_errors;
      if (p.is_producer) {
        sent_total += report.consumed_messages;
        continue;
      }
      ConsumerCount count;
      count.received = report.consumed_messages;
      count.lost = report.lost_records;
      count.msgs_per_s = report.measured_ticks == 0
                             ? 0
                             : static_cast<double>(report.measured_messages) /
                                   (clock.to_ns(report.measured_ticks) / 1e9);
      run.consumers.push_back(count);
      if (!broadcast) {
        run.messages = report.measured_messages;
        run.seconds = clock.to_ns(report.measured_ticks) / 1e9;
      }
    }
    if (errors != 0) {
      throw RunError(fmt::format("{} records carried the wrong sequence number", errors));
    }
    for (const ConsumerCount& c : run.consumers) {
      if (c.received + c.lost != sent_total) {
        throw RunError(fmt::format("a consumer saw {} records (and lost {}), the producers sent {}",
                                   c.received, c.lost, sent_total));
      }
    }
    if (broadcast) {
      run.messages = produced.measured_messages;
      run.seconds = clock.to_ns(produced.measured_ticks) / 1e9;
    }
    if (run.messages == 0 || run.seconds <= 0) {
      throw RunError("the timed window was empty: raise --messages or --duration");
    }
    run.msgs_per_s = static_cast<double>(run.messages) / run.seconds;
    run.bytes_per_s = run.msgs_per_s * static_cast<double>(size);
    run.claims_refused = K::claims_refused(ab_->channel()) - refused_before;
    return run;
  }

  OpenLoopRun open_loop(const OpenLoopLimits& limits) override {
    if (mode_ != EndpointMode::kStream) throw RunError("open loop on a ping-pong endpoint");
    Peer& peer = context_.peer();
    const Timebase& clock = context_.clock();
    const std::uint32_t producers = spec_.producers;
    OpenLoopSchedule schedule;
    // The schedule starts a few milliseconds from now, once every process has its command.
    schedule.start_ticks = clock.now() + clock.ticks_from_ns(5e6);
    const std::uint64_t window_start =
        schedule.start_ticks + clock.ticks_from_ns(limits.warmup_s * 1e9);
    schedule.end_ticks = window_start + clock.ticks_from_ns(limits.duration_s * 1e9);
    const double ns_per_message = limits.rate_per_s > 0 ? 1e9 / limits.rate_per_s : 0;
    schedule.period_ticks = clock.ticks_from_ns(ns_per_message * producers);
    if (limits.rate_per_s > 0 && schedule.period_ticks == 0) {
      throw UsageError(
          fmt::format("--rate {:.0f}: faster than the clock can schedule", limits.rate_per_s));
    }
    reset_board();
    for (const ProcessSlot& p : processes_) {
      if (p.peer_index < 0) continue;
      const std::uint32_t index = p.is_producer ? p.rank : 0;
      CommandParams& params = fill_params(p);
      params.start_ticks = schedule.start_ticks;
      params.period_ticks = schedule.period_ticks;
      params.offset_ticks = clock.ticks_from_ns(ns_per_message * index);
      params.end_ticks = schedule.end_ticks;
      params.window_start_ticks = window_start;
      params.duration_ticks = schedule.end_ticks - window_start;
      params.batch = spec_.batch;
      peer.post(p.peer_index,
                p.is_producer ? Command::kOpenLoopProduce : Command::kOpenLoopConsume);
    }
    Board& board = peer.board();
    Idler idler(processes_.front().yields);
    OpenLoopSent sent;
    try {
      sent = weft_open_loop_produce(*ab_, board.stop.value, idler, clock, schedule,
                                    spec_.size_bytes, 0);
    } catch (...) {
      // Relaxed: lets the other producers stop; the phase failed.
      board.stop.value.store(1, std::memory_order_relaxed);
      throw;
    }
    // Relaxed: published by the release fetch_add below.
    board.produced_total.value.fetch_add(sent.sent, std::memory_order_relaxed);
    // Release: pairs with the consumers' acquire load.
    board.producers_done.value.fetch_add(1, std::memory_order_release);

    OpenLoopRun run;
    run.offered_per_s = limits.rate_per_s;
    run.claims_refused = sent.claims_refused;
    run.late_messages = sent.late;
    run.messages = sent.sent;
    double achieved_min = -1;
    std::uint64_t errors = 0;
    for (const ProcessSlot& p : processes_) {
      if (p.peer_index < 0) continue;
      const ChildReport& report = peer.wait_done(p.peer_index, limits.timeout_s + 10);
      errors += report.sequence_errors;
      if (p.is_producer) {
        run.claims_refused += report.claims_refused;
        run.late_messages += report.late_messages;
        run.messages += report.consumed_messages;
        continue;
      }
      run.latency.add(peer.histogram(p.peer_index));
      run.lost_records += report.lost_records;
      run.clock_negative += report.checksum;
      const double achieved = static_cast<double>(report.measured_messages) / limits.duration_s;
      achieved_min = achieved_min < 0 ? achieved : std::min(achieved_min, achieved);
    }
    if (errors != 0) {
      throw RunError(fmt::format("{} records carried the wrong sequence number", errors));
    }
    run.achieved_per_s = std::max(0.0, achieved_min);
    return run;
  }

 private:
  void reset_board() {
    Board& board = context_.peer().board();
    // Relaxed (all): the release store of each child's command publishes them.
    board.consumer_stop.value.store(0, std::memory_order_relaxed);
    board.producers_done.value.store(0, std::memory_order_relaxed);
    board.produced_total.value.store(0, std::memory_order_relaxed);
    board.consumers_done.value.store(0, std::memory_order_relaxed);
    board.stop.value.store(0, std::memory_order_relaxed);
  }

  CommandParams& fill_params(const ProcessSlot& p) {
    CommandParams& params = context_.peer().control(p.peer_index).params;
    params.endpoint_id = id_;
    params.size_bytes = spec_.size_bytes;
    params.producers = spec_.producers;
    params.idle = p.yields ? 1 : 0;
    params.flags = (spec_.touch_all ? kFlagTouchAll : 0) | (spec_.copy ? kFlagCopy : 0) |
                   (spec_.lossy ? kFlagLossy : 0);
    params.producer_index = p.is_producer ? p.rank : 0;
    // A stream that makes no progress for 10 s is stuck (the parent waits longer, so the
    // child's message, which says where it stands, is the one reported).
    params.timeout_ms = 10'000;
    return params;
  }

  void open_in(int peer_index, std::uint32_t role, std::uint32_t producer_index) {
    CommandParams& params = context_.peer().control(peer_index).params;
    params.endpoint_id = id_;
    params.transport = static_cast<std::uint32_t>(kTransport);
    params.role = role;
    params.producer_index = producer_index;
    params.size_bytes = spec_.size_bytes;
    copy_text(params.dir, context_.dir());
    copy_text(params.name_ab, name_ab_);
    copy_text(params.name_ba, name_ba_);
    context_.peer().call(peer_index, Command::kEndpointOpen, 30);
  }

  EndpointMode mode_;
  std::string name_ab_;
  std::string name_ba_;
  std::optional<Producer> ab_;
  std::optional<Consumer> ba_;
  std::vector<std::byte> source_;
};

// ---- child side ------------------------------------------------------------------------------

template <Transport kTransport>
class WeftChildEnd final : public ChildEnd {
  using K = Kind<kTransport>;
  using Producer = typename K::Producer;
  using Consumer = typename K::Consumer;

 public:
  explicit WeftChildEnd(const CommandParams& params) : role_(params.role) {
    weft::OpenOptions options;
    options.dir = params.dir;
    if (role_ == kRoleEcho || role_ == kRoleConsumer) {
      ab_.emplace(take(Consumer::open(params.name_ab, options), "open consumer"));
    }
    if (role_ == kRoleEcho) {
      ba_.emplace(take(Producer::open(params.name_ba, options), "open producer"));
    }
    if (role_ == kRoleProducer) {
      producer_.emplace(take(Producer::open(params.name_ab, options), "open producer"));
    }
  }

  void echo(ChildContext& context) override {
    if (!ab_ || !ba_) throw RunError("echo: this process holds no echo end");
    weft_echo(*ab_, *ba_, context.control.stop.value);
  }

  void produce(ChildContext& context, const Timebase& clock) override {
    if constexpr (kTransport == Transport::kMpsc) {
      if (!producer_) throw RunError("produce: this process holds no producer");
      const CommandParams& params = context.control.params;
      ChildStallGuard guard(params.timeout_ms / 1e3);
      Idler idler(params.idle != 0);
      const std::size_t size = params.size_bytes;
      source_.resize(kSourceSlots * ((size + 63) / 64 * 64));
      const std::atomic<std::uint64_t>& stop = context.board.consumer_stop.value;
      const Produced produced =
          (params.flags & kFlagCopy) != 0
              ? weft_produce<true>(*producer_, stop, guard, idler, clock, ProduceLimits{}, size,
                                   params.producer_index, source_.data())
              : weft_produce<false>(*producer_, stop, guard, idler, clock, ProduceLimits{}, size,
                                    params.producer_index, source_.data());
      publish_done(context.board, produced.sent);
      context.control.report.consumed_messages = produced.sent;
    } else {
      (void)context;
      (void)clock;
      throw RunError("produce: only MPSC has extra producers");
    }
  }

  void consume(ChildContext& context, const Timebase& clock) override {
    if (!ab_) throw RunError("consume: this process holds no consumer");
    const CommandParams& params = context.control.params;
    ConsumeLimits limits;
    limits.warmup = params.warmup_messages;
    limits.messages = params.messages;
    limits.duration_ticks = params.duration_ticks;
    limits.batch = params.batch;
    limits.producers = params.producers;
    limits.timed_by_consumer = kTransport != Transport::kBroadcast;
    limits.timeout_s = params.timeout_ms / 1e3;
    Idler idler(params.idle != 0, kStreamPauses);
    const bool touch_all = (params.flags & kFlagTouchAll) != 0;
    Consumed c;
    try {
      c = consume_checked(context, idler, clock, limits, params, touch_all);
    } catch (const RunError& e) {
      // Say where the consumer stands, for whoever debugs a channel that stopped moving.
      const weft::detail::ChannelHeader* header = ab_->channel().header();
      throw RunError(fmt::format(
          "{} consumer: {} (its position {}, the channel's tail_position {}, head_position {})",
          transport_name(kTransport), e.what(), ab_->position(),
          // Relaxed (both): a diagnostic snapshot.
          header->producer.tail_position.load(std::memory_order_relaxed),
          header->consumer.head_position.load(std::memory_order_relaxed)));
    }
    ChildReport& report = context.control.report;
    report.consumed_messages = c.received;
    report.lost_records = c.lost;
    report.measured_messages = c.measured_messages;
    report.measured_ticks = c.measured_ticks;
    report.sequence_errors = c.sequence_errors;
    report.checksum = c.checksum;
  }

  Consumed consume_checked(ChildContext& context, Idler& idler, const Timebase& clock,
                           const ConsumeLimits& limits, const CommandParams& params,
                           bool touch_all) {
    Consumed c;
    if constexpr (kTransport == Transport::kMpsc) {
      c = touch_all
              ? run<true, SequenceCheck::kPerProducer>(context, idler, clock, limits, params)
              : run<false, SequenceCheck::kPerProducer>(context, idler, clock, limits, params);
    } else if constexpr (kTransport == Transport::kBroadcast) {
      if ((params.flags & kFlagLossy) != 0) {
        c = touch_all ? run<true, SequenceCheck::kLossy>(context, idler, clock, limits, params)
                      : run<false, SequenceCheck::kLossy>(context, idler, clock, limits, params);
      } else {
        c = touch_all ? run<true, SequenceCheck::kSingle>(context, idler, clock, limits, params)
                      : run<false, SequenceCheck::kSingle>(context, idler, clock, limits, params);
      }
    } else {
      c = touch_all ? run<true, SequenceCheck::kSingle>(context, idler, clock, limits, params)
                    : run<false, SequenceCheck::kSingle>(context, idler, clock, limits, params);
    }
    return c;
  }

  void open_loop_produce(ChildContext& context, const Timebase& clock) override {
    if (!producer_) throw RunError("open loop: this process holds no producer");
    const CommandParams& params = context.control.params;
    OpenLoopSchedule schedule;
    schedule.start_ticks = params.start_ticks;
    schedule.period_ticks = params.period_ticks;
    schedule.offset_ticks = params.offset_ticks;
    schedule.end_ticks = params.end_ticks;
    Idler idler(params.idle != 0);
    const OpenLoopSent sent =
        weft_open_loop_produce(*producer_, context.board.stop.value, idler, clock, schedule,
                               params.size_bytes, params.producer_index);
    publish_done(context.board, sent.sent);
    ChildReport& report = context.control.report;
    report.consumed_messages = sent.sent;
    report.claims_refused = sent.claims_refused;
    report.late_messages = sent.late;
  }

  void open_loop_consume(ChildContext& context, const Timebase& clock) override {
    if (!ab_) throw RunError("open loop: this process holds no consumer");
    const CommandParams& params = context.control.params;
    Idler idler(params.idle != 0);
    context.histogram.reset();
    const std::uint64_t window_start = params.window_start_ticks;
    const std::uint64_t window_end = window_start + params.duration_ticks;
    const OpenLoopReceived r = weft_open_loop_consume(
        *ab_, context.board, idler, clock, window_start, window_end, params.producers, params.batch,
        params.timeout_ms / 1e3, context.histogram);
    ChildReport& report = context.control.report;
    report.consumed_messages = r.received;
    report.measured_messages = r.in_window;
    report.lost_records = r.lost;
    report.sequence_errors = r.sequence_errors;
    report.checksum = r.negative;
  }

 private:
  template <bool kTouchAll, SequenceCheck kCheck>
  Consumed run(ChildContext& context, Idler& idler, const Timebase& clock,
               const ConsumeLimits& limits, const CommandParams& params) {
    return weft_consume<kTouchAll, kCheck>(*ab_, context.board, idler, clock, limits,
                                           params.size_bytes);
  }

  static void publish_done(Board& board, std::uint64_t sent) {
    // Relaxed: published by the release fetch_add below.
    board.produced_total.value.fetch_add(sent, std::memory_order_relaxed);
    // Release: pairs with the consumers' acquire load of producers_done.
    board.producers_done.value.fetch_add(1, std::memory_order_release);
  }

  std::uint32_t role_;
  std::optional<Consumer> ab_;
  std::optional<Producer> ba_;
  std::optional<Producer> producer_;
  std::vector<std::byte> source_;
};

}  // namespace

std::unique_ptr<Endpoint> open_weft_endpoint(const EndpointSpec& spec, EndpointMode mode,
                                             BenchContext& context) {
  switch (spec.transport) {
    case Transport::kSpsc:
      return std::make_unique<WeftEndpoint<Transport::kSpsc>>(spec, mode, context);
    case Transport::kMpsc:
      return std::make_unique<WeftEndpoint<Transport::kMpsc>>(spec, mode, context);
    case Transport::kBroadcast:
      return std::make_unique<WeftEndpoint<Transport::kBroadcast>>(spec, mode, context);
    default:
      throw RunError("not a weft transport");
  }
}

std::unique_ptr<ChildEnd> open_weft_child_end(const CommandParams& params) {
  switch (static_cast<Transport>(params.transport)) {
    case Transport::kSpsc:
      return std::make_unique<WeftChildEnd<Transport::kSpsc>>(params);
    case Transport::kMpsc:
      return std::make_unique<WeftChildEnd<Transport::kMpsc>>(params);
    case Transport::kBroadcast:
      return std::make_unique<WeftChildEnd<Transport::kBroadcast>>(params);
    default:
      throw RunError("not a weft transport");
  }
}

}  // namespace shmem_bench
