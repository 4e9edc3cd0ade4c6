// The adaptive flush policy: the whole of the batcher's rule, in one file.
//
// What it estimates (all from events the journal reports; nothing is configured per device):
//  - arrival rate, records/s and bytes/s: a time-decayed count over `rate_window` (an EMA in
//    time, not per event, so that it also falls while nothing arrives);
//  - flush cost: latency(b) = fixed + per_byte * b, an exponentially weighted least-squares fit
//    of flushes submitted while no other flush was in flight (their latency is the device's);
//  - spread: EMA of |observed - fitted| cost; cost_high(b) = fit(b) + 4 * spread is the cost the
//    policy plans with when it protects the latency target (4 mean absolute deviations cover the
//    one-sided 99th percentile of a Laplace-shaped noise);
//  - what more slots buy, end to end: in trials, blocks of flushes alternate between one flush in
//    flight (narrow) and max_in_flight_limit (wide), in the order wide, narrow, narrow, wide, ...
//    (a drift through the trial favours neither side), and the policy measures the mean
//    append-to-durable latency of the records appended in each block, and the records made
//    durable per second while each block ran. A block counts only from the moment the flushes
//    of the block before it are durable: a narrow block's records must not wait behind the wide
//    block's queue, nor be credited with its completions. Not the latency a second flush hid for
//    itself: on a device that shares its bandwidth (or a host that shares its CPUs) a flush beside
//    another finishes early because it slows the other, and durability is a prefix, so its records
//    gain nothing.
//
// What it chooses, and why:
//  - When no flush is in flight, flush whatever waits at once. With the device idle, waiting can
//    only add latency: the records already pending wait longer, and the ones that would have
//    arrived meanwhile are served no sooner than by a flush that starts when this one ends (the
//    greedy rule is optimal for a batch server whose cost does not fall by waiting; Deb & Serfozo
//    1973). This is also the rule that never starves a lone record and never waits when nothing
//    else can arrive in time.
//  - max_in_flight: what the last trial chose. The wide count wins only when its records were
//    durable at least 10% sooner on average, in the sum and in two block pairs of three; or, past
//    what one slot can take (where latency grows on the narrow side whatever happens), when 5%
//    more records per second were made durable with it; and in either case only if records did
//    not arrive clearly slower in its blocks (where the appending thread is the bottleneck, the
//    extra flushes cost it the records it appends, and the journal's own view, which starts at
//    the append, hides the sender's growing backlog). Otherwise one flush in flight: natural
//    batching while the device is busy. The first trial starts with the first flush (4 block
//    pairs; a block is 8 submissions or completions, 5 ms at most, once it counts); later ones
//    (3 pairs) come after 2^16 submissions, doubling to 2^22 while the verdict holds, or once the
//    arrival rate has moved 2x from the verdict's (after 1024 submissions at least). A trial that
//    moves to the wide count is tried again after 1024 submissions, and the wide count stays only
//    if that trial agrees. Until a wide verdict, the journal's io-wq pool is capped at io_workers
//    (2), the trials' wide blocks included: the workers a wide block would start outlive it by
//    seconds, and a larger pool was slower.
//  - gather_bytes: the smallest batch worth a flush of its own next to the ones in flight: the
//    batch whose cost, shared among the p = max_in_flight slots, is covered by its own arrival
//    time at `utilisation_max`: fixed*rate/(p*u - per_byte*rate). At low load that is one record;
//    it grows with the load (under overload, see below). With one slot it is never used.
//  - Pacing: with a slot free beside the flushes in flight, the oldest pending record waits at
//    most half the cost of flushing what is pending before it gets a flush of its own, even short
//    of gather_bytes; once the rate estimate has settled, and while one slot could keep up (past
//    that, the extra slots are there for throughput, and pacing would split the load). A measured
//    compromise, not a derived one: flushing into a free slot at once splits the load into
//    one-record flushes that queue behind each other (on an SSD, no better than one slot), and
//    waiting a whole flush's cost was worse than half (docs/batcher.md).
//  - max_delay: how long the oldest pending record may wait for a free slot or for gather_bytes:
//    the latency target less two high flush costs (the one in flight it may wait for, and its
//    own). Past it, the policy flushes into any free slot. A target too tight to meet leaves no
//    delay at all.
//  - Overload (per_byte * rate >= p * u: the device cannot keep up at any batch size): latency
//    grows whatever the policy does, so it goes for throughput and steady progress. With one slot
//    that is natural batching; with several, the extra slots take only batches whose fixed cost
//    is 5% of the flush.
// Every decision with records pending either flushes or names a finite time to ask again.
//
// docs/batcher.md has the long form, with the measurements.
#include "weft/adaptive_policy.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>

#include "error_util.hpp"

namespace weft {

namespace {

constexpr double kNsPerS = 1e9;
// Mean absolute deviations added to the fitted cost to plan for the p99 of a flush.
constexpr double kSpreadToP99 = 4.0;
// Slot trials: a block (the wide slot count or one slot, alternating) ends after this many
// submissions or completions (the journal's own submissions, when a staging buffer fills, show
// only as completions)...
constexpr std::uint32_t kBlockSubmits = 8;
// ...or in any case at its first submission or completion this long after it began (eight 1 MiB
// flushes would leave the narrow side of an overload behind for tens of milliseconds).
constexpr std::int64_t kBlockNsMax = 5'000'000;
// Block pairs in the first trial and in later ones. Short: a trial costs what the worse side
// costs its records.
constexpr std::uint32_t kFirstTrialPairs = 4;
constexpr std::uint32_t kTrialPairs = 3;
// Records each side of a trial needs before the wide side may win.
constexpr double kTrialRecordsMin = 16;
// The wide slot count wins when its records are durable this much sooner on average...
constexpr double kWideLatencyShare = 0.9;
// ...or, overloaded, when this many more records per second are made durable with it.
constexpr double kWideGain = 1.05;
// ...and in any case only if records kept arriving at this share of the narrow side's rate at
// least. An open-loop load arrives at the same rate whatever the policy does; where the thread
// that appends is itself the bottleneck (a sender behind its schedule), the CPU each flush costs
// it (the submission, the device's notification, the completion) is taken from the records it
// appends, and a slot count that flushes more often lowers the rate at which they arrive. The
// journal sees only the records it is given, durable sooner: the sender's backlog, which grows,
// is invisible to it, and past saturation four slots made records durable sooner in the journal's
// view while the appending thread fell further behind (docs/batcher.md).
constexpr double kArrivalShareMin = 0.97;
// The arrival deficit must also exceed this many standard deviations of a Poisson count, so that
// chance alone (a few records per block at low rates) does not veto the wide count.
constexpr double kArrivalDeficitSigmas = 3.0;
// Submissions between trials: doubling from the first while the verdict stays the same. Rare:
// a trial costs the records of its worse side (and, with io_workers = 0, the io-wq workers its
// wide blocks start, which the kernel keeps for about 5 s; on a 2-vCPU VM they made flushes
// 40-90 us slower at the median: docs/batcher.md, "Measured"). At 5k flushes/s: after 13 s,
// then 26 s, ... up to every 14 minutes.
constexpr std::uint64_t kRetrialEveryMin = std::uint64_t{1} << 16;
constexpr std::uint64_t kRetrialEveryMax = std::uint64_t{1} << 22;
// A trial also follows a change of the arrival rate by this factor since the last verdict, once
// this many submissions have passed since it.
constexpr double kRateChange = 2.0;
constexpr std::uint64_t kRetrialOnRateChange = 1024;
// A trial that moves to the wide count is confirmed by another this many submissions later. A
// wide count kept by chance costs every record after it (past saturation on an SSD, where a
// block is a few large flushes and the one a narrow block leaves in flight completes in the wide
// block after it, four slots won one or two runs in six and lost 15-25% of the throughput), and
// two chance wins in a row are much rarer than one.
constexpr std::uint64_t kConfirmWideAfter = 1024;
// Rate windows after the first append before the rate estimate is taken as settled.
constexpr std::int64_t kRateSettleWindows = 3;
// Chunks (submissions) remembered until durable: more than the journal keeps in flight.
constexpr std::size_t kChunksMax = 128;
// The size spread the cost fit needs before it separates the per-byte part from the fixed part:
// the standard deviation of flush sizes as a share of their mean.
constexpr double kSizeSpreadToFit = 0.1;
// Flushes the cost fit takes as they come before it starts to clip outliers.
constexpr std::uint64_t kFitWarmup = 8;
// Standard deviation over mean absolute deviation for normal noise (sqrt(pi/2)).
constexpr double kSpreadToSigma = 1.2533;
// Deviations beyond this many spreads are clipped before they enter the fit.
constexpr double kOutlierSpreads = 3.0;
// gather_bytes when the device's cost is unknown or free of a per-byte part.
constexpr double kGatherUnbounded = 1e15;
// Overloaded, the policy sizes batches so that the fixed cost is this share of a flush.
constexpr double kOverloadFixedShare = 0.05;
// Pacing (see the opening comment): the share of the cost of flushing what is pending that the
// oldest pending record waits, beside the flushes in flight, before it gets a flush of its own.
// Only once the rate estimate has settled: paced from the first flush, the first trial's wide
// blocks split an overload (whose rate the estimate had not yet seen) into small flushes.
constexpr double kPaceShare = 0.5;
// Between completions, the choices are recomputed at most this often.
constexpr std::int64_t kChooseEveryNs = 20'000;
// The soonest the policy asks to be consulted again while every slot is taken.
constexpr std::int64_t kRecheckMinNs = 10'000;

// A rate as a time-decayed count: mass decays by e^(-dt/window), so mass/window tracks the rate
// over the last few windows, and falls while nothing arrives.
class DecayedRate {
 public:
  explicit DecayedRate(double window_ns) noexcept : window_ns_(window_ns) {}

  void add(std::int64_t now_ns, double amount) noexcept {
    mass_ = mass_at(now_ns) + amount;
    last_ns_ = std::max(last_ns_, now_ns);
  }
  [[nodiscard]] double per_s(std::int64_t now_ns) const noexcept {
    return mass_at(now_ns) / window_ns_ * kNsPerS;
  }

 private:
  [[nodiscard]] double mass_at(std::int64_t now_ns) const noexcept {
    if (now_ns <= last_ns_) return mass_;
    const auto x = static_cast<double>(now_ns - last_ns_) / window_ns_;
    // At high rates appends are microseconds apart: x is tiny, and three terms of the series are
    // exact to 1e-10 at a fraction of the cost of exp (this runs on every append).
    if (x < 1e-3) return mass_ * (1.0 - x + 0.5 * x * x);
    return mass_ * std::exp(-x);
  }

  double window_ns_;
  double mass_ = 0;
  std::int64_t last_ns_ = 0;
};

// latency(b) = fixed + per_byte * b, fitted by exponentially weighted least squares.
class CostFit {
 public:
  CostFit(double fixed_ns, double ns_per_byte, double weight) noexcept
      : weight_(weight), fixed_ns_(fixed_ns), ns_per_byte_(ns_per_byte) {}

  [[nodiscard]] double predict_ns(double bytes) const noexcept {
    return fixed_ns_ + ns_per_byte_ * bytes;
  }
  [[nodiscard]] double fixed_ns() const noexcept { return fixed_ns_; }
  [[nodiscard]] double ns_per_byte() const noexcept { return ns_per_byte_; }
  [[nodiscard]] double spread_ns() const noexcept { return spread_ns_; }

  void add(double bytes, double latency_ns) noexcept {
    if (!std::isfinite(latency_ns) || latency_ns < 0) return;
    // The spread is measured against the fit as it stood, before this flush moves it.
    const double deviation = std::fabs(latency_ns - predict_ns(bytes));
    spread_ns_ = samples_ == 0 ? deviation : spread_ns_ + weight_ * (deviation - spread_ns_);
    ++samples_;
    // An outlier (a stall of the device) moves the spread, but the fit only as far as a
    // deviation of kOutlierSpreads spreads would (a Huber-style clip): one slow flush must not
    // make the disk look slow per byte.
    if (samples_ > kFitWarmup && deviation > kOutlierSpreads * spread_ns_) {
      const double predicted = predict_ns(bytes);
      latency_ns = latency_ns > predicted ? predicted + kOutlierSpreads * spread_ns_
                                          : predicted - kOutlierSpreads * spread_ns_;
    }
    const double keep = 1.0 - weight_;
    s_ = keep * s_ + weight_;
    sb_ = keep * sb_ + weight_ * bytes;
    sbb_ = keep * sbb_ + weight_ * bytes * bytes;
    sl_ = keep * sl_ + weight_ * latency_ns;
    sbl_ = keep * sbl_ + weight_ * bytes * latency_ns;
    const double mean_b = sb_ / s_;
    const double mean_l = sl_ / s_;
    const double var_b = sbb_ / s_ - mean_b * mean_b;
    if (var_b > kSizeSpreadToFit * kSizeSpreadToFit * mean_b * mean_b && var_b > 1.0) {
      // Take the fitted slope only where it stands out of the noise: beyond two standard errors
      // (the spread, over the square root of the ~2/weight flushes the fit remembers, over the
      // size spread). On a disk whose fixed cost is noisy and dominant, a slope fitted from
      // noise would make it look slow per byte, and overloaded.
      const double slope = (sbl_ / s_ - mean_b * mean_l) / var_b;
      const double remembered = std::min(static_cast<double>(samples_), 2.0 / weight_);
      const double standard_error = kSpreadToSigma * spread_ns_ / std::sqrt(remembered * var_b);
      if (std::fabs(slope - ns_per_byte_) > 2.0 * standard_error) {
        ns_per_byte_ = std::max(0.0, slope);
      }
    }
    // Without spread in sizes the split cannot be fitted: keep the per-byte part, fit the rest.
    fixed_ns_ = mean_l - ns_per_byte_ * mean_b;
    if (fixed_ns_ < 0) {
      fixed_ns_ = 0;
      ns_per_byte_ = mean_b > 0 ? mean_l / mean_b : ns_per_byte_;
    }
  }

 private:
  double weight_;
  double fixed_ns_;
  double ns_per_byte_;
  double spread_ns_ = 0;
  std::uint64_t samples_ = 0;
  double s_ = 0, sb_ = 0, sbb_ = 0, sl_ = 0, sbl_ = 0;
};

// One block of a trial (blocks alternate between the wide and the narrow slot count).
struct BlockTally {
  double records = 0;      // Records appended in the block, once durable...
  double latency_ns = 0;   // ...and the sum of their append-to-durable latencies.
  double durable = 0;      // Records reported durable while the block ran...
  double duration_ns = 0;  // ...and how long it ran.
};

class AdaptiveFlush final : public FlushPolicy {
 public:
  explicit AdaptiveFlush(const AdaptiveFlushOptions& options) noexcept
      : target_ns_(
            static_cast<double>(std::max<std::int64_t>(1, options.latency_target_p99.count()))),
        limit_(std::clamp<std::uint32_t>(options.max_in_flight_limit, 1, 64)),
        io_workers_(std::min<std::uint32_t>(options.io_workers, 64)),
        utilisation_(std::clamp(options.utilisation_max, 0.05, 0.99)),
        window_ns_(std::max<std::int64_t>(1, options.rate_window.count())),
        records_(static_cast<double>(window_ns_)),
        bytes_(static_cast<double>(window_ns_)),
        cost_(static_cast<double>(std::max<std::int64_t>(0, options.initial_flush_fixed.count())),
              std::max(0.0, options.initial_flush_ns_per_byte),
              std::clamp(options.cost_weight, 1e-3, 1.0)) {
    trial_due_ = limit_ > 1;
    choose(0);
  }

  // Runs for every record: counts only. The rates take these counts when the choices are next
  // recomputed (within kChooseEveryNs), and the open chunk remembers the append times (only a
  // trial's are read, but the sum costs less than a branch that skips it).
  void on_append(std::int64_t now_ns, std::uint64_t bytes) noexcept override {
    if (first_append_ns_ < 0) first_append_ns_ = now_ns;
    unfolded_records_ += 1;
    unfolded_bytes_ += static_cast<double>(bytes);
    if (open_.records == 0) {
      // A chunk belongs to the trial block its first record arrived in.
      open_.first_ns = now_ns;
      open_.block = trial_running_ && !draining_ ? static_cast<std::int32_t>(block_) : -1;
      if (open_.block >= 0) ++trial_chunks_;
    }
    ++open_.records;
    open_.offset_sum_ns += static_cast<double>(now_ns - open_.first_ns);
  }

  void on_flush_complete(const FlushCompletion& completion) noexcept override {
    const auto latency_ns = static_cast<double>(completion.complete_ns - completion.submit_ns);
    const auto bytes = static_cast<double>(completion.bytes);
    // The journal reports flushes in submission order, each once it is durable with every one
    // before it: a flush submitted before the previous report was in flight beside another, and
    // its latency is not the device's cost for it alone.
    const bool overlapped = completion.submit_ns < last_complete_ns_;
    if (!overlapped) cost_.add(bytes, latency_ns);
    settle(completion.records, completion.complete_ns);
    last_complete_ns_ = std::max(last_complete_ns_, completion.complete_ns);
    last_complete_submit_ns_ = std::max(last_complete_submit_ns_, completion.submit_ns);
    if (trial_running_ && draining_) {
      // Completions come in submission order: this one says every flush of the block before is
      // durable, and the block in progress starts to count.
      if (completion.submit_ns >= drain_submit_ns_) begin_block(completion.complete_ns);
    } else if (trial_running_) {
      blocks_[block_].durable += static_cast<double>(completion.records);
      if (block_done(completion.complete_ns, ++block_completions_)) {
        next_block(completion.complete_ns);
      }
    }
    if (awaiting_verdict_ && trial_chunks_ == 0) conclude_trial();
    choose(completion.complete_ns);
  }

  FlushDecision decide(const FlushState& state) noexcept override {
    // The choices move with the estimates, which move slowly: recompute them at most every
    // kChooseEveryNs between completions (decide runs on every append).
    if (state.now_ns - chosen_ns_ >= kChooseEveryNs || state.now_ns < chosen_ns_) {
      choose(state.now_ns);
    }
    FlushDecision decision;
    decision.max_in_flight = max_in_flight_;
    decision.max_io_workers = io_workers();
    if (state.pending_records == 0 && state.pending_bytes == 0) return decision;
    // The device is idle: waiting cannot help anyone (see the opening comment).
    if (state.in_flight == 0) {
      flush(state.now_ns, &decision);
      return decision;
    }
    const auto pending = static_cast<double>(state.pending_bytes);
    const double high_ns = cost_high_ns(pending);
    if (state.in_flight >= max_in_flight_) {
      // No slot: the completion of a flush in flight brings the next decision. The deadline is
      // only a safety net, far enough not to spin.
      decision.recheck_at_ns =
          state.now_ns + std::max<std::int64_t>(kRecheckMinNs, static_cast<std::int64_t>(high_ns));
      return decision;
    }
    // A slot is free beside the flushes in flight. The latest submission that still meets the
    // target for the oldest record when it may wait for one flush in flight and then for its own:
    const std::int64_t oldest_ns = std::min(state.oldest_pending_ns, state.now_ns);
    const double slack_ns = std::max(0.0, target_ns_ - 2.0 * high_ns);
    const std::int64_t deadline_ns = oldest_ns + static_cast<std::int64_t>(slack_ns);
    // One more flush is worth it when the batch has reached gather_bytes, when the oldest record
    // is out of slack or has waited half of what its flush costs (pacing), or when nothing more is
    // expected before then. Overloaded, the target cannot be met anyway: only a full batch is
    // worth a flush.
    const std::int64_t paced_ns =
        oldest_ns + static_cast<std::int64_t>(kPaceShare * cost_.predict_ns(pending));
    const bool worth_a_flush =
        pending >= gather_bytes_ ||
        (!overloaded_ && (state.now_ns >= deadline_ns || (pacing_ && state.now_ns >= paced_ns) ||
                          !next_arrival_before(state.now_ns, deadline_ns)));
    if (worth_a_flush) {
      flush(state.now_ns, &decision);
      return decision;
    }
    // Ask again when the oldest record runs out of slack or pacing lets it go, or when
    // gather_bytes should be there.
    std::int64_t recheck_ns =
        overloaded_ || !pacing_ ? deadline_ns : std::min(deadline_ns, paced_ns);
    if (bytes_per_s_ > 0) {
      const double fill_ns = (gather_bytes_ - pending) / bytes_per_s_ * kNsPerS;
      if (fill_ns < static_cast<double>(recheck_ns - state.now_ns)) {
        recheck_ns = state.now_ns + static_cast<std::int64_t>(fill_ns);
      }
    }
    decision.recheck_at_ns = std::max(recheck_ns, state.now_ns + 1);
    return decision;
  }

  [[nodiscard]] FlushPolicyStats stats() const noexcept override {
    FlushPolicyStats s;
    s.arrival_records_per_s = records_per_s_;
    s.arrival_bytes_per_s = bytes_per_s_;
    s.flush_fixed_ns = cost_.fixed_ns();
    s.flush_ns_per_byte = cost_.ns_per_byte();
    s.flush_cost_spread_ns = cost_.spread_ns();
    s.gather_bytes = gather_bytes_ >= kGatherUnbounded
                         ? std::numeric_limits<std::uint64_t>::max()
                         : static_cast<std::uint64_t>(std::ceil(gather_bytes_));
    s.max_delay_ns = max_delay_ns_;
    // The slot count the last trial chose (a trial in progress tries both).
    s.max_in_flight = slots(verdict_wide_);
    s.max_io_workers = io_workers();
    return s;
  }

  [[nodiscard]] const char* name() const noexcept override { return "adaptive"; }

 private:
  // Records appended between two submissions (or block changes), in append order, until they are
  // reported durable.
  struct Chunk {
    std::uint64_t records = 0;
    std::int64_t first_ns = 0;  // Append time of the first record.
    double offset_sum_ns = 0;   // Sum of (append time - first_ns) over the records.
    std::int32_t block = -1;    // Trial block its first record was appended in; -1: none.
  };

  [[nodiscard]] std::uint32_t slots(bool wide) const noexcept { return wide ? limit_ : 1; }
  // The io-wq cap (options.io_workers) until a trial keeps the wide slot count; none without
  // trials. One flush in flight needs a worker for its write and one for its fdatasync; without
  // the cap a wide block starts a worker per flush, which the kernel keeps for about 5 s.
  [[nodiscard]] std::uint32_t io_workers() const noexcept {
    return limit_ > 1 && !verdict_wide_ ? io_workers_ : 0;
  }

  [[nodiscard]] double cost_high_ns(double bytes) const noexcept {
    return cost_.predict_ns(bytes) + kSpreadToP99 * cost_.spread_ns();
  }

  // True when the arrival rate says another record should come before deadline_ns.
  [[nodiscard]] bool next_arrival_before(std::int64_t now_ns, std::int64_t deadline_ns) const {
    if (records_per_s_ <= 0) return false;
    return kNsPerS / records_per_s_ < static_cast<double>(deadline_ns - now_ns);
  }

  // Whether the trial block in progress is over at now_ns, after `count` submissions (or
  // completions).
  [[nodiscard]] bool block_done(std::int64_t now_ns, std::uint32_t count) const noexcept {
    return count >= kBlockSubmits || now_ns - block_start_ns_ >= kBlockNsMax;
  }

  // Says flush now in `decision`. The submission may move a trial to its next block, with the
  // other slot count: the journal consults the policy after an append only while a slot is free
  // by the last decision, so the decision carries the larger of the two counts (the flush is
  // allowed by the old one; a wide block that starts here must not wait for a completion to use
  // its slots).
  void flush(std::int64_t now_ns, FlushDecision* decision) noexcept {
    decision->flush_now = true;
    on_submit(now_ns);
    decision->max_in_flight = std::max(decision->max_in_flight, max_in_flight_);
  }

  // The records pending were just submitted as one flush: they become a chunk of the trial block
  // in progress (if any), and the trial moves on.
  void on_submit(std::int64_t now_ns) noexcept {
    close_chunk();
    last_submit_ns_ = now_ns;
    if (trial_running_) {
      if (!draining_ && block_done(now_ns, ++block_submits_)) {
        next_block(now_ns);
      }
      return;
    }
    ++submits_since_trial_;
    if (limit_ > 1 && !awaiting_verdict_ &&
        (trial_due_ || submits_since_trial_ >= retrial_every_)) {
      start_trial(now_ns);
    }
  }

  // The records appended since the last submission (or block change) become a chunk.
  void close_chunk() noexcept {
    if (open_.records == 0) return;
    if (chunks_count_ == kChunksMax) {
      // More chunks than flushes the journal keeps in flight: fold into the newest.
      Chunk& last = chunks_[(chunks_head_ + chunks_count_ - 1) % kChunksMax];
      last.offset_sum_ns +=
          open_.offset_sum_ns +
          static_cast<double>(open_.records) * static_cast<double>(open_.first_ns - last.first_ns);
      last.records += open_.records;
      if (open_.block >= 0) --trial_chunks_;
    } else {
      chunks_[(chunks_head_ + chunks_count_) % kChunksMax] = open_;
      ++chunks_count_;
    }
    open_ = Chunk{};
  }

  // The block in progress ends (kBlockSubmits, kBlockNsMax); after the last one, the trial waits
  // for its records to be durable.
  void next_block(std::int64_t now_ns) noexcept {
    close_chunk();  // Records appended from here on belong to the next block.
    blocks_[block_].duration_ns = static_cast<double>(now_ns - block_start_ns_);
    ++block_;
    if (block_ >= 2 * trial_pairs_) {
      // Every block run: back to the standing choice until the trial's records are durable and
      // judged.
      trial_running_ = false;
      awaiting_verdict_ = true;
      wide_ = verdict_wide_;
    } else {
      wide_ = block_is_wide(block_);
      drain(now_ns);
    }
    choose(now_ns);
  }

  // Blocks run wide, narrow, narrow, wide, wide, ...: each pair in the other order from the one
  // before, so that a load (or a device) drifting through a trial favours neither side.
  [[nodiscard]] static bool block_is_wide(std::uint32_t block) noexcept {
    return block % 4 == 0 || block % 4 == 3;
  }

  // The block in progress counts nothing until the flushes submitted before it are durable:
  // otherwise a narrow block's records would wait behind the wide block's flushes (and a wide
  // block's behind the narrow one's), and each block would be charged for the one before it.
  void drain(std::int64_t now_ns) noexcept {
    draining_ = last_submit_ns_ > last_complete_submit_ns_;
    drain_submit_ns_ = last_submit_ns_;
    if (!draining_) begin_block(now_ns);
  }

  // The block in progress starts to count at now_ns.
  void begin_block(std::int64_t now_ns) noexcept {
    close_chunk();  // Records appended while draining belong to no block.
    draining_ = false;
    block_submits_ = block_completions_ = 0;
    block_start_ns_ = now_ns;
  }

  void start_trial(std::int64_t now_ns) noexcept {
    close_chunk();
    trial_due_ = false;
    trial_running_ = true;
    block_ = 0;
    trial_pairs_ = trials_ == 0 ? kFirstTrialPairs : kTrialPairs;
    blocks_ = {};
    wide_ = true;
    drain(now_ns);
    choose(now_ns);
  }

  // A flush of `records` became durable at complete_ns: their latencies go to the trial blocks
  // they were appended in.
  void settle(std::uint64_t records, std::int64_t complete_ns) noexcept {
    while (records != 0) {
      Chunk& chunk = chunks_count_ != 0 ? chunks_[chunks_head_] : open_;
      if (chunk.records == 0) break;  // The journal reported more than we saw appended.
      const std::uint64_t take = std::min(records, chunk.records);
      const double mean_offset_ns = chunk.offset_sum_ns / static_cast<double>(chunk.records);
      if (chunk.block >= 0) {
        BlockTally& tally = blocks_[static_cast<std::size_t>(chunk.block)];
        tally.records += static_cast<double>(take);
        tally.latency_ns += static_cast<double>(take) *
                            (static_cast<double>(complete_ns - chunk.first_ns) - mean_offset_ns);
      }
      chunk.records -= take;
      chunk.offset_sum_ns -= static_cast<double>(take) * mean_offset_ns;
      records -= take;
      if (chunk.records == 0) {
        if (chunk.block >= 0) --trial_chunks_;
        if (&chunk == &open_) {
          open_ = Chunk{};
        } else {
          chunks_head_ = (chunks_head_ + 1) % kChunksMax;
          --chunks_count_;
        }
      }
    }
  }

  // Every record of the trial is durable: the wide slot count stays only if it made the records
  // durable sooner (or, overloaded, the device faster), in the sum and in most block pairs.
  void conclude_trial() noexcept {
    awaiting_verdict_ = false;
    ++trials_;
    // Judged against one slot: past what one flush in flight can take, latency grows on the narrow
    // side whatever happens, and only the rate tells the two apart.
    const bool overloaded = cost_.ns_per_byte() * bytes_per_s_ / kNsPerS >= utilisation_;
    BlockTally wide, narrow;
    std::uint32_t pairs = 0, wide_won = 0;
    for (std::uint32_t pair = 0; pair < trial_pairs_; ++pair) {
      const std::size_t first = std::size_t{2} * pair;
      const bool wide_first = block_is_wide(static_cast<std::uint32_t>(first));
      const BlockTally& w = blocks_[wide_first ? first : first + 1];
      const BlockTally& n = blocks_[wide_first ? first + 1 : first];
      wide.records += w.records, wide.latency_ns += w.latency_ns;
      wide.durable += w.durable, wide.duration_ns += w.duration_ns;
      narrow.records += n.records, narrow.latency_ns += n.latency_ns;
      narrow.durable += n.durable, narrow.duration_ns += n.duration_ns;
      if (w.records == 0 || n.records == 0) continue;
      ++pairs;
      if (better(w, n, overloaded)) ++wide_won;
    }
    // Overloaded, the records made durable per second over all blocks decide (a block of a few
    // large flushes says little alone). Otherwise the mean latency, which one stall can sway,
    // must also be better in two pairs of three.
    const bool wide_wins = wide.records >= kTrialRecordsMin && narrow.records >= kTrialRecordsMin &&
                           better(wide, narrow, overloaded) &&
                           (overloaded || 3 * wide_won >= 2 * pairs) &&
                           !slows_arrivals(wide, narrow);
    if (wide_wins && !verdict_wide_) {
      retrial_every_ = kConfirmWideAfter;  // A move to the wide count is tried again soon.
    } else if (wide_wins == verdict_wide_) {
      retrial_every_ = confirming_ ? kRetrialEveryMin
                                   : std::min<std::uint64_t>(2 * retrial_every_, kRetrialEveryMax);
    } else {
      retrial_every_ = kRetrialEveryMin;
    }
    confirming_ = wide_wins && !verdict_wide_;
    verdict_wide_ = wide_wins;
    wide_ = wide_wins;
    verdict_rate_ = records_per_s_;
    submits_since_trial_ = 0;
  }

  // Whether `wide` did better than `narrow` by a clear margin: durable sooner by kWideLatencyShare
  // on average or, overloaded (latency grows in both), more records made durable per second by
  // kWideGain. A rate of records, not of bytes through the device: where the host's CPUs are the
  // limit, more flushes in flight take CPU from the thread that appends.
  [[nodiscard]] static bool better(const BlockTally& wide, const BlockTally& narrow,
                                   bool overloaded) noexcept {
    if (overloaded) {
      return wide.duration_ns > 0 && narrow.duration_ns > 0 &&
             wide.durable / wide.duration_ns >= kWideGain * (narrow.durable / narrow.duration_ns);
    }
    return wide.records > 0 && narrow.records > 0 &&
           wide.latency_ns / wide.records <= kWideLatencyShare * narrow.latency_ns / narrow.records;
  }

  // Whether records arrived clearly slower in the `wide` blocks than in the `narrow` ones: below
  // kArrivalShareMin of the narrow rate, by more than kArrivalDeficitSigmas standard deviations of
  // Poisson counts (the appending thread paid for the extra flushes).
  [[nodiscard]] static bool slows_arrivals(const BlockTally& wide,
                                           const BlockTally& narrow) noexcept {
    if (wide.duration_ns <= 0 || narrow.duration_ns <= 0) return false;
    const double wide_rate = wide.records / wide.duration_ns;
    const double narrow_rate = narrow.records / narrow.duration_ns;
    const double sigma = std::sqrt(wide.records / (wide.duration_ns * wide.duration_ns) +
                                   narrow.records / (narrow.duration_ns * narrow.duration_ns));
    return wide_rate < kArrivalShareMin * narrow_rate &&
           narrow_rate - wide_rate > kArrivalDeficitSigmas * sigma;
  }

  // Recomputes the published choices from the estimates as they stand at now_ns.
  void choose(std::int64_t now_ns) noexcept {
    chosen_ns_ = now_ns;
    records_.add(now_ns, unfolded_records_);
    bytes_.add(now_ns, unfolded_bytes_);
    unfolded_records_ = unfolded_bytes_ = 0;
    records_per_s_ = records_.per_s(now_ns);
    bytes_per_s_ = bytes_.per_s(now_ns);
    // The rate estimate starts from nothing and takes a few windows to reach the load: a verdict
    // reached before then is filed under the rate it settles at, not under the ramp.
    if (!verdict_rate_settled_ && first_append_ns_ >= 0 &&
        now_ns - first_append_ns_ >= kRateSettleWindows * window_ns_) {
      verdict_rate_settled_ = true;
      if (trials_ != 0) verdict_rate_ = records_per_s_;
    }
    // A load far from the one the last verdict was reached at may want the other slot count.
    if (trials_ != 0 && verdict_rate_settled_ && limit_ > 1 && !trial_running_ &&
        !awaiting_verdict_ && submits_since_trial_ >= kRetrialOnRateChange &&
        (records_per_s_ > kRateChange * verdict_rate_ ||
         records_per_s_ * kRateChange < verdict_rate_)) {
      trial_due_ = true;
    }
    max_in_flight_ = slots(wide_);
    // Planned as if every slot served a flush of its own; the trials check that it pays.
    const auto parallelism = static_cast<double>(max_in_flight_);
    const double bytes_per_ns = bytes_per_s_ / kNsPerS;
    const double room = parallelism * utilisation_ - cost_.ns_per_byte() * bytes_per_ns;
    overloaded_ = room <= 0;
    pacing_ = verdict_rate_settled_ && cost_.ns_per_byte() * bytes_per_ns < utilisation_;
    if (!overloaded_) {
      gather_bytes_ = std::min(kGatherUnbounded, cost_.fixed_ns() * bytes_per_ns / room);
    } else {
      // More arrives than the device can take at utilisation_max, whatever the batch size:
      // latency grows regardless, so the policy goes for throughput and steady progress. With one
      // slot that is natural batching (everything pending, as soon as the slot frees). With
      // several, the extra slots take only batches large enough that the fixed cost is a small
      // share: flushing everything pending into each free slot would split the load into many
      // small flushes.
      gather_bytes_ =
          cost_.ns_per_byte() > 0
              ? std::min(kGatherUnbounded, cost_.fixed_ns() / cost_.ns_per_byte() *
                                               (1 - kOverloadFixedShare) / kOverloadFixedShare)
              : kGatherUnbounded;
    }
    const double gather_high_ns =
        cost_high_ns(std::min(gather_bytes_, bytes_per_ns * target_ns_ + 1.0));
    max_delay_ns_ = static_cast<std::int64_t>(std::max(0.0, target_ns_ - 2.0 * gather_high_ns));
  }

  // Options.
  double target_ns_;
  std::uint32_t limit_;
  std::uint32_t io_workers_;  // The io-wq cap while one slot is the verdict.
  double utilisation_;
  std::int64_t window_ns_;
  // Estimates.
  DecayedRate records_;
  DecayedRate bytes_;
  double unfolded_records_ = 0;  // Appended since the rates last took them.
  double unfolded_bytes_ = 0;
  CostFit cost_;
  std::int64_t last_complete_ns_ = std::numeric_limits<std::int64_t>::min();
  // Records on their way to durable, for the trials' latencies.
  Chunk open_;  // Appended, not yet submitted.
  std::array<Chunk, kChunksMax> chunks_{};
  std::size_t chunks_head_ = 0;
  std::size_t chunks_count_ = 0;
  // Slot trials.
  bool wide_ = false;          // The slot count in effect: limit_ (wide) or 1 (narrow).
  bool verdict_wide_ = false;  // The last trial's choice.
  bool trial_due_ = false;
  bool trial_running_ = false;
  bool awaiting_verdict_ = false;
  bool confirming_ = false;  // The last trial moved to the wide count: the next one confirms it.
  std::uint32_t trial_pairs_ = kFirstTrialPairs;
  std::uint32_t block_ = 0;
  std::uint32_t block_submits_ = 0;
  std::uint32_t block_completions_ = 0;
  std::int64_t block_start_ns_ = 0;
  bool draining_ = false;  // The block waits for the flushes submitted before it.
  std::int64_t drain_submit_ns_ = 0;
  std::int64_t last_submit_ns_ = std::numeric_limits<std::int64_t>::min();
  std::int64_t last_complete_submit_ns_ = std::numeric_limits<std::int64_t>::min();
  std::array<BlockTally, std::size_t{2} * kFirstTrialPairs> blocks_{};
  std::uint64_t trial_chunks_ = 0;  // Chunks of the trial not yet durable.
  std::uint64_t trials_ = 0;
  std::uint64_t submits_since_trial_ = 0;
  std::uint64_t retrial_every_ = kRetrialEveryMin;
  double verdict_rate_ = 0;
  bool verdict_rate_settled_ = false;
  std::int64_t first_append_ns_ = -1;
  // Choices, as last computed.
  double records_per_s_ = 0;
  double bytes_per_s_ = 0;
  double gather_bytes_ = 0;
  std::int64_t max_delay_ns_ = 0;
  std::uint32_t max_in_flight_ = 1;
  bool overloaded_ = false;
  bool pacing_ = false;  // Settled, and one slot could keep up: the extra slots are paced.
  std::int64_t chosen_ns_ = 0;
};

}  // namespace

Result<void> check_adaptive_flush_options(const AdaptiveFlushOptions& options) noexcept {
  constexpr const char* kWhere = "adaptive flush options";
  if (options.latency_target_p99.count() <= 0) {
    return detail::fail(Errc::kInvalidArgument, 0, kWhere,
                        "latency_target_p99 is {} ns: give a positive commit-to-durable target",
                        options.latency_target_p99.count());
  }
  if (options.rate_window.count() <= 0) {
    return detail::fail(Errc::kInvalidArgument, 0, kWhere,
                        "rate_window is {} ns: give a positive averaging window",
                        options.rate_window.count());
  }
  if (!(options.cost_weight > 0 && options.cost_weight <= 1)) {
    return detail::fail(Errc::kInvalidArgument, 0, kWhere,
                        "cost_weight is {}: give a weight in (0, 1]", options.cost_weight);
  }
  if (options.initial_flush_fixed.count() < 0 || !(options.initial_flush_ns_per_byte >= 0) ||
      !std::isfinite(options.initial_flush_ns_per_byte)) {
    return detail::fail(Errc::kInvalidArgument, 0, kWhere,
                        "initial flush cost {} ns + {} ns/byte: give non-negative finite values",
                        options.initial_flush_fixed.count(), options.initial_flush_ns_per_byte);
  }
  if (options.max_in_flight_limit < 1 || options.max_in_flight_limit > 64) {
    return detail::fail(Errc::kInvalidArgument, 0, kWhere,
                        "max_in_flight_limit is {}: give 1 to 64", options.max_in_flight_limit);
  }
  if (options.io_workers > 64) {
    return detail::fail(Errc::kInvalidArgument, 0, kWhere,
                        "io_workers is {}: give 0 (no cap) to 64", options.io_workers);
  }
  if (!(options.utilisation_max > 0 && options.utilisation_max < 1)) {
    return detail::fail(Errc::kInvalidArgument, 0, kWhere,
                        "utilisation_max is {}: give a share in (0, 1)", options.utilisation_max);
  }
  return {};
}

std::unique_ptr<FlushPolicy> make_adaptive_flush(const AdaptiveFlushOptions& options) {
  return std::make_unique<AdaptiveFlush>(options);
}

}  // namespace weft
