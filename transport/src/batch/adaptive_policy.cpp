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
//  - overlap: for flushes submitted while another was in flight, the share of their own cost the
//    device hid by running them side by side (0: the device serialises flushes; 1: fully
//    parallel).
//
// What it chooses, and why:
//  - When no flush is in flight, flush whatever waits at once. With the device idle, waiting can
//    only add latency: the records already pending wait longer, and the ones that would have
//    arrived meanwhile are served no sooner than by a flush that starts when this one ends (the
//    greedy rule is optimal for a batch server whose cost does not fall by waiting; Deb & Serfozo
//    1973). This is also the rule that never starves a lone record and never waits when nothing
//    else can arrive in time.
//  - max_in_flight: 1 on a device that serialises flushes (a second flush would wait for the
//    first anyway, with a smaller batch); up to max_in_flight_limit where overlap was measured.
//    While at 1, one flush in 16 (in 1024 after the first 8 probes) that is worth a flush of its
//    own may overlap, so that the device is measured, and one whose behaviour changes is noticed.
//  - gather_bytes: the smallest batch worth a flush of its own next to the ones in flight: the
//    batch whose cost, shared among the effective parallelism p, is covered by its own arrival
//    time at `utilisation_max`: fixed*rate/(p*u - per_byte*rate). At low load that is one record;
//    it grows with the load (under overload, see below).
//  - max_delay: how long the oldest pending record may wait for a free slot or for gather_bytes:
//    the latency target less two high flush costs (the one in flight it may wait for, and its
//    own). Past it, the policy flushes into any free slot. A target too tight to meet leaves no
//    delay at all.
//  - Overload (per_byte * rate >= p * u: the device cannot keep up at any batch size): latency
//    grows whatever the policy does, so it goes for throughput and steady progress: batches whose
//    fixed cost is 5% of the flush, every slot in use, so the device never idles and batches stay
//    bounded while a slot is free.
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
// Measured overlap below which a second flush in flight is not worth it.
constexpr double kOverlapUseful = 0.3;
// Overlap measurements needed before they are acted on.
constexpr std::uint64_t kOverlapSamplesMin = 4;
// A measurement counts only if the flush would have waited at least this share of its own cost.
constexpr double kOverlapWaitMin = 0.5;
// While at one flush in flight, one flush in this many may overlap, to measure the device; in
// the first kProbesEarly probes, one in kProbeEveryEarly (a fresh journal learns its device
// within a few hundred flushes, then probes rarely).
constexpr std::uint32_t kProbeEvery = 1024;
constexpr std::uint32_t kProbeEveryEarly = 16;
constexpr std::uint64_t kProbesEarly = 8;
// Submissions remembered to tell, at completion, whether a flush overlapped another.
constexpr std::size_t kSubmitsMax = 64;
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
    const double x = static_cast<double>(now_ns - last_ns_) / window_ns_;
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

class AdaptiveFlush final : public FlushPolicy {
 public:
  explicit AdaptiveFlush(const AdaptiveFlushOptions& options) noexcept
      : target_ns_(
            static_cast<double>(std::max<std::int64_t>(1, options.latency_target_p99.count()))),
        limit_(std::clamp<std::uint32_t>(options.max_in_flight_limit, 1, 64)),
        utilisation_(std::clamp(options.utilisation_max, 0.05, 0.99)),
        overlap_weight_(std::clamp(options.cost_weight, 1e-3, 1.0)),
        records_(static_cast<double>(std::max<std::int64_t>(1, options.rate_window.count()))),
        bytes_(static_cast<double>(std::max<std::int64_t>(1, options.rate_window.count()))),
        cost_(static_cast<double>(std::max<std::int64_t>(0, options.initial_flush_fixed.count())),
              std::max(0.0, options.initial_flush_ns_per_byte), overlap_weight_) {
    choose(0);
  }

  void on_append(std::int64_t now_ns, std::uint64_t bytes) noexcept override {
    records_.add(now_ns, 1.0);
    bytes_.add(now_ns, static_cast<double>(bytes));
  }

  void on_flush_complete(const FlushCompletion& completion) noexcept override {
    const double latency_ns = static_cast<double>(completion.complete_ns - completion.submit_ns);
    const double bytes = static_cast<double>(completion.bytes);
    // Find our record of this submission: the latest decision at or before the journal's submit
    // time (the journal stamps the submission after it acted on our decision).
    std::size_t match = kSubmitsMax;
    for (std::size_t i = 0; i < submits_count_; ++i) {
      if (submits_[i].decided_ns <= completion.submit_ns &&
          (match == kSubmitsMax || submits_[i].decided_ns > submits_[match].decided_ns)) {
        match = i;
      }
    }
    bool overlapped = completion.submit_ns < last_complete_ns_;
    bool earlier_still_in_flight = false;
    if (match != kSubmitsMax) {
      overlapped = overlapped || submits_[match].in_flight_before > 0;
      for (std::size_t i = 0; i < submits_count_; ++i) {
        if (submits_[i].decided_ns < submits_[match].decided_ns) earlier_still_in_flight = true;
      }
      submits_[match] = submits_[submits_count_ - 1];
      --submits_count_;
    }
    if (!overlapped) {
      cost_.add(bytes, latency_ns);
    } else {
      // Had the device served this flush after the one before it, it would have waited for that
      // one (until its completion) and then taken its own cost. The share of that wait it did
      // not pay is what overlapping bought: 0 on a device that serialises, 1 on one that runs
      // both at once. A flush that completed before an earlier one overlapped it for certain.
      const double own_ns = std::max(1.0, cost_.predict_ns(bytes));
      double gain = 1.0;
      bool informative = true;
      if (!earlier_still_in_flight) {
        const double wait_ns = static_cast<double>(last_complete_ns_ - completion.submit_ns);
        // Submitted when the other one was nearly done: the noise of its own cost would swamp
        // the little wait there was to save.
        informative = wait_ns >= kOverlapWaitMin * own_ns;
        if (informative) {
          // Noise makes it negative as often as positive on a device that serialises: keep both
          // signs so that the average is not biased upwards.
          gain = std::clamp((wait_ns + own_ns - latency_ns) / wait_ns, -1.0, 1.0);
        }
      }
      if (informative) {
        // A plain mean over the first measurements, an EMA after.
        ++overlaps_seen_;
        const double weight = std::max(overlap_weight_, 1.0 / static_cast<double>(overlaps_seen_));
        overlap_ += weight * (gain - overlap_);
      }
    }
    last_complete_ns_ = std::max(last_complete_ns_, completion.complete_ns);
    ++flushes_since_probe_;
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
    if (state.pending_records == 0 && state.pending_bytes == 0) return decision;

    const double pending = static_cast<double>(state.pending_bytes);
    const std::int64_t oldest_ns = std::min(state.oldest_pending_ns, state.now_ns);
    // The latest submission that still meets the target for the oldest record when it may wait
    // for one flush in flight and then for its own.
    const double high_ns = cost_high_ns(pending);
    const double slack_ns = std::max(0.0, target_ns_ - 2.0 * high_ns);
    const std::int64_t deadline_ns = oldest_ns + static_cast<std::int64_t>(slack_ns);

    // With a flush in flight, one more is worth it when the batch has reached gather_bytes, when
    // the oldest record is out of slack, or when nothing more is expected before then.
    // Overloaded, the target cannot be met anyway: only a full batch is worth a flush.
    const bool worth_a_flush = pending >= gather_bytes_ ||
                               (!overloaded_ && (state.now_ns >= deadline_ns ||
                                                 !next_arrival_before(state.now_ns, deadline_ns)));
    std::uint32_t allowed = max_in_flight_;
    if (state.in_flight >= allowed && state.in_flight > 0 && worth_a_flush &&
        limit_ > state.in_flight &&
        flushes_since_probe_ >= (probes_ < kProbesEarly ? kProbeEveryEarly : kProbeEvery)) {
      allowed = state.in_flight + 1;  // Probe: measure whether this device overlaps flushes.
      flushes_since_probe_ = 0;
      ++probes_;
    }
    decision.max_in_flight = allowed;
    if (state.in_flight >= allowed) {
      // No slot: the completion of a flush in flight brings the next decision. The deadline is
      // only a safety net, far enough not to spin.
      decision.recheck_at_ns =
          state.now_ns + std::max<std::int64_t>(kRecheckMinNs, static_cast<std::int64_t>(high_ns));
      return decision;
    }
    // The device is idle: waiting cannot help anyone (see the opening comment).
    if (state.in_flight == 0 || worth_a_flush) {
      decision.flush_now = true;
      remember_submit(state.now_ns, state.in_flight);
      return decision;
    }
    // Ask again when the oldest record runs out of slack, or when gather_bytes should be there.
    std::int64_t recheck_ns = deadline_ns;
    const double bytes_per_s = bytes_.per_s(state.now_ns);
    if (bytes_per_s > 0) {
      const double fill_ns = (gather_bytes_ - pending) / bytes_per_s * kNsPerS;
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
    s.max_in_flight = max_in_flight_;
    return s;
  }

  [[nodiscard]] const char* name() const noexcept override { return "adaptive"; }

 private:
  struct Submit {
    std::int64_t decided_ns;
    std::uint32_t in_flight_before;
  };

  [[nodiscard]] double cost_high_ns(double bytes) const noexcept {
    return cost_.predict_ns(bytes) + kSpreadToP99 * cost_.spread_ns();
  }

  // True when the arrival rate says another record should come before deadline_ns.
  [[nodiscard]] bool next_arrival_before(std::int64_t now_ns, std::int64_t deadline_ns) const {
    const double rate = records_.per_s(now_ns);
    if (rate <= 0) return false;
    return kNsPerS / rate < static_cast<double>(deadline_ns - now_ns);
  }

  void remember_submit(std::int64_t now_ns, std::uint32_t in_flight) noexcept {
    if (submits_count_ == kSubmitsMax) {
      // More flushes in flight than the journal allows cannot happen; forget the oldest.
      std::size_t oldest = 0;
      for (std::size_t i = 1; i < submits_count_; ++i) {
        if (submits_[i].decided_ns < submits_[oldest].decided_ns) oldest = i;
      }
      submits_[oldest] = submits_[submits_count_ - 1];
      --submits_count_;
    }
    submits_[submits_count_++] = Submit{now_ns, in_flight};
  }

  // Recomputes the published choices from the estimates as they stand at now_ns.
  void choose(std::int64_t now_ns) noexcept {
    chosen_ns_ = now_ns;
    records_per_s_ = records_.per_s(now_ns);
    bytes_per_s_ = bytes_.per_s(now_ns);
    const bool parallel = overlaps_seen_ >= kOverlapSamplesMin && overlap_ >= kOverlapUseful;
    max_in_flight_ =
        parallel ? std::clamp<std::uint32_t>(
                       static_cast<std::uint32_t>(std::lround(overlap_ * limit_)), 2, limit_)
                 : 1;
    const double parallelism = 1.0 + (parallel ? overlap_ : 0.0) * (max_in_flight_ - 1);
    const double bytes_per_ns = bytes_per_s_ / kNsPerS;
    const double room = parallelism * utilisation_ - cost_.ns_per_byte() * bytes_per_ns;
    overloaded_ = room <= 0;
    if (!overloaded_) {
      gather_bytes_ = std::min(kGatherUnbounded, cost_.fixed_ns() * bytes_per_ns / room);
    } else {
      // More arrives than the device can take at utilisation_max, whatever the batch size:
      // latency grows regardless, so the policy goes for throughput and steady progress. Batches
      // large enough that the fixed cost is a small share, queued behind the one running so that
      // the device never idles. Flushing everything pending instead would let batches, and the wait
      // behind each, grow geometrically. Every slot is used: on a device that serialises flushes
      // the extra ones queue there at no cost in throughput, since each is large.
      gather_bytes_ =
          cost_.ns_per_byte() > 0
              ? std::min(kGatherUnbounded, cost_.fixed_ns() / cost_.ns_per_byte() *
                                               (1 - kOverloadFixedShare) / kOverloadFixedShare)
              : kGatherUnbounded;
      max_in_flight_ = limit_;
    }
    const double gather_high_ns =
        cost_high_ns(std::min(gather_bytes_, bytes_per_ns * target_ns_ + 1.0));
    max_delay_ns_ = static_cast<std::int64_t>(std::max(0.0, target_ns_ - 2.0 * gather_high_ns));
  }

  // Options.
  double target_ns_;
  std::uint32_t limit_;
  double utilisation_;
  double overlap_weight_;
  // Estimates.
  DecayedRate records_;
  DecayedRate bytes_;
  CostFit cost_;
  double overlap_ = 0;
  std::uint64_t overlaps_seen_ = 0;
  std::int64_t last_complete_ns_ = std::numeric_limits<std::int64_t>::min();
  std::array<Submit, kSubmitsMax> submits_{};
  std::size_t submits_count_ = 0;
  std::uint32_t flushes_since_probe_ = 0;
  std::uint64_t probes_ = 0;
  // Choices, as last computed.
  double records_per_s_ = 0;
  double bytes_per_s_ = 0;
  double gather_bytes_ = 0;
  std::int64_t max_delay_ns_ = 0;
  std::uint32_t max_in_flight_ = 1;
  bool overloaded_ = false;
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
