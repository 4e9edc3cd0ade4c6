// A deterministic simulator that drives any weft::FlushPolicy the way the journal does, with a
// simulated clock, a seeded open-loop arrival process and a simulated disk.
//
// The journal it imitates: records are appended at their arrival time, or once the appending
// thread is free if it has a cost of its own (Load::sender_record_ns, sender_flush_ns); the policy
// is consulted after every flush completion, after every append while fewer flushes are in flight
// than it last allowed (with every slot taken an append cannot start one) and at the recheck time
// it last asked for; when it says flush_now and fewer than max_in_flight flushes are in flight,
// everything pending is submitted as one flush. A record is durable when its flush and every flush
// submitted before it are complete (durability is a prefix, as the journal publishes it), and the
// policy hears of completions as the journal reports them: in submission order, each at the time it
// became part of the durable prefix.
//
// The disk: `servers` flushes are served at once (1: a device that serialises flushes); the
// others queue in submission order. A flush of b bytes takes (fixed + per_byte * b) times a noise
// factor drawn uniformly from [1 - noise, 1 + noise], and with probability spike_probability
// times spike_factor as well. A `sharing` disk instead serves every flush in flight at once, each
// at 1/n of its speed when n are in flight (processor sharing): a flush submitted beside another
// finishes sooner than it would have behind it, but only because it slows the other down; the
// device's throughput is that of a serialising one.
//
// Everything is driven by seeded SplitMix64 streams and integer nanoseconds: the same inputs give
// the same run on every machine.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <queue>
#include <vector>

#include "weft/flush_policy.hpp"

namespace weft::sim {

class Random {
 public:
  explicit Random(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Exponential with the given mean.
  double exponential(double mean) noexcept { return -mean * std::log1p(-uniform()); }

 private:
  std::uint64_t state_;
};

// Offered load: from start_ns on, records arrive at records_per_s (Poisson), until the next
// phase or end_ns.
struct Phase {
  std::int64_t start_ns = 0;
  double records_per_s = 0;
};

struct Load {
  std::vector<Phase> phases;
  std::int64_t end_ns = 1'000'000'000;
  std::uint64_t record_bytes_min = 256;
  std::uint64_t record_bytes_max = 256;
  // Extra records appended at exactly these times (lone records, bursts).
  std::vector<std::int64_t> extra_arrivals_ns;
  // The appending thread's own time (the journal runs on it): per record appended, and per flush
  // submitted (the submission, the device's notification, the completion's reaping). While it is
  // busy nothing else happens, and records due meanwhile are appended late (their latency still
  // counts from their arrival). 0 and 0: a thread that is never behind.
  std::int64_t sender_record_ns = 0;
  std::int64_t sender_flush_ns = 0;
};

struct Disk {
  double fixed_ns = 100'000;
  double ns_per_byte = 1.0;
  double noise = 0.0;
  double spike_probability = 0.0;
  double spike_factor = 1.0;
  std::uint32_t servers = 1;
  bool sharing = false;  // Processor sharing among the flushes in flight (servers is ignored).
};

// The journal's staging buffer: a record that would not fit in the pending bytes' buffer forces
// them out first, whatever the policy says (as Journal::append does when it switches buffers).
inline constexpr std::uint64_t kBufferBytes = std::uint64_t{1} << 20;

struct Record {
  std::int64_t arrival_ns = 0;   // When it was due (latency counts from here)...
  std::int64_t appended_ns = 0;  // ...and when the appending thread got to it.
  std::int64_t durable_ns = -1;  // -1: never became durable.
};

struct Snapshot {
  std::int64_t at_ns = 0;
  FlushPolicyStats stats;
};

struct Result {
  std::vector<Record> records;
  std::vector<Snapshot> snapshots;
  std::uint64_t flushes = 0;
  std::uint32_t in_flight_max = 0;
  // Decisions that left records pending with no flush in flight and no time to ask again: a
  // policy that does this can starve a record forever.
  std::uint64_t starving_decisions = 0;
  std::int64_t end_ns = 0;

  // Durable latencies (ns) of records that arrived in [from_ns, to_ns); a record never made
  // durable counts as infinitely late.
  [[nodiscard]] std::vector<double> latencies(std::int64_t from_ns, std::int64_t to_ns) const {
    std::vector<double> out;
    for (const Record& r : records) {
      if (r.arrival_ns < from_ns || r.arrival_ns >= to_ns) continue;
      out.push_back(r.durable_ns < 0 ? std::numeric_limits<double>::infinity()
                                     : static_cast<double>(r.durable_ns - r.arrival_ns));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  // Records made durable in [from_ns, to_ns), per second.
  [[nodiscard]] double durable_per_s(std::int64_t from_ns, std::int64_t to_ns) const {
    std::uint64_t count = 0;
    for (const Record& r : records) {
      if (r.durable_ns >= from_ns && r.durable_ns < to_ns) ++count;
    }
    return static_cast<double>(count) * 1e9 / static_cast<double>(to_ns - from_ns);
  }
};

// The q-quantile (0..1) of sorted values, nearest rank.
inline double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// Runs `policy` against `load` and `disk`. The run ends when the load has ended and everything
// appended is durable (or at drain_limit_ns past the end). A snapshot of the policy's stats is
// taken every snapshot_every_ns (0: none).
inline Result run(FlushPolicy& policy, const Load& load, const Disk& disk, std::uint64_t seed,
                  std::int64_t snapshot_every_ns = 0,
                  std::int64_t drain_limit_ns = 10'000'000'000) {
  constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();
  // Arrivals and sizes come from one stream and the disk's noise from another, so that every
  // policy sees the same arrivals, and a policy's choices do not shift them.
  Random random(seed);
  Random disk_random(seed ^ 0x5DEECE66Dull);
  Result result;

  struct Flush {
    std::int64_t submit_ns;
    std::int64_t complete_ns;
    std::uint64_t bytes;
    std::size_t first_record;
    std::size_t end_record;
    std::uint64_t index;
    double work_ns;  // Sharing disk: service still owed, at full speed.
  };
  struct Later {
    bool operator()(const Flush& a, const Flush& b) const {
      return a.complete_ns != b.complete_ns ? a.complete_ns > b.complete_ns : a.index > b.index;
    }
  };
  // Serving disk: completion times are fixed at submission. Sharing disk: `shared` holds the
  // flushes in flight, their owed work falling by (elapsed / n) each, as of shared_at_ns.
  std::priority_queue<Flush, std::vector<Flush>, Later> in_flight;
  std::vector<Flush> shared;
  std::int64_t shared_at_ns = 0;
  const auto flights = [&] { return disk.sharing ? shared.size() : in_flight.size(); };
  const auto advance_shared = [&](std::int64_t to_ns) {
    if (!shared.empty() && to_ns > shared_at_ns) {
      const double done =
          static_cast<double>(to_ns - shared_at_ns) / static_cast<double>(shared.size());
      for (Flush& f : shared) f.work_ns -= done;
    }
    shared_at_ns = std::max(shared_at_ns, to_ns);
  };
  // The next completion on the disk (kNever: none in flight).
  const auto next_completion_ns = [&]() -> std::int64_t {
    if (!disk.sharing) return in_flight.empty() ? kNever : in_flight.top().complete_ns;
    if (shared.empty()) return kNever;
    double least = shared.front().work_ns;
    for (const Flush& f : shared) least = std::min(least, f.work_ns);
    return shared_at_ns + std::max<std::int64_t>(
                              0, static_cast<std::int64_t>(std::ceil(
                                     std::max(0.0, least) * static_cast<double>(shared.size()))));
  };
  // Takes the flush that completes at now_ns off the disk.
  const auto take_completed = [&](std::int64_t now_ns) -> Flush {
    if (!disk.sharing) {
      Flush f = in_flight.top();
      in_flight.pop();
      return f;
    }
    advance_shared(now_ns);
    auto least = std::min_element(shared.begin(), shared.end(), [](const Flush& a, const Flush& b) {
      return a.work_ns != b.work_ns ? a.work_ns < b.work_ns : a.index < b.index;
    });
    Flush f = *least;
    shared.erase(least);
    f.complete_ns = now_ns;
    return f;
  };
  std::vector<std::int64_t> server_free_ns(std::max<std::uint32_t>(1, disk.servers), 0);
  // Completion time of each flush by index, for the durable prefix.
  std::vector<std::int64_t> flush_complete_ns;
  std::vector<Flush> flushes;
  std::uint64_t durable_flushes = 0;  // Flushes [0, durable_flushes) are complete.

  std::size_t pending_first = 0;  // Records [pending_first, records.size()) are pending.
  std::uint64_t pending_bytes = 0;
  std::int64_t recheck_ns = kNever;
  std::uint32_t max_in_flight = 1;  // As the policy last allowed.
  std::int64_t sender_free_ns = 0;  // The appending thread is busy until then.
  std::int64_t next_snapshot_ns = snapshot_every_ns > 0 ? 0 : kNever;

  // Arrivals: Poisson within each phase, then the extra ones, merged in time order.
  std::vector<std::int64_t> arrivals;
  for (std::size_t p = 0; p < load.phases.size(); ++p) {
    const double rate = load.phases[p].records_per_s;
    const std::int64_t end = p + 1 < load.phases.size() ? load.phases[p + 1].start_ns : load.end_ns;
    if (rate <= 0) continue;
    auto t = static_cast<double>(load.phases[p].start_ns);
    for (;;) {
      t += random.exponential(1e9 / rate);
      if (t >= static_cast<double>(end)) break;
      arrivals.push_back(static_cast<std::int64_t>(t));
    }
  }
  arrivals.insert(arrivals.end(), load.extra_arrivals_ns.begin(), load.extra_arrivals_ns.end());
  std::sort(arrivals.begin(), arrivals.end());
  result.records.reserve(arrivals.size());
  std::vector<std::uint64_t> sizes(arrivals.size());
  const std::uint64_t span = load.record_bytes_max - load.record_bytes_min + 1;
  for (auto& size : sizes) size = load.record_bytes_min + random.next() % span;
  std::size_t next_arrival = 0;

  auto submit = [&](std::int64_t now) {
    Flush f{};
    f.submit_ns = now;
    f.bytes = pending_bytes;
    f.first_record = pending_first;
    f.end_record = result.records.size();
    f.index = result.flushes++;
    double service = disk.fixed_ns + disk.ns_per_byte * static_cast<double>(f.bytes);
    service *= 1.0 + disk.noise * (2.0 * disk_random.uniform() - 1.0);
    if (disk_random.uniform() < disk.spike_probability) service *= disk.spike_factor;
    service = std::max(1.0, std::floor(service));
    if (disk.sharing) {
      advance_shared(now);
      f.work_ns = service;
      shared.push_back(f);
    } else {
      auto server = std::min_element(server_free_ns.begin(), server_free_ns.end());
      const std::int64_t start = std::max(now, *server);
      f.complete_ns = start + static_cast<std::int64_t>(service);
      *server = f.complete_ns;
      in_flight.push(f);
    }
    flush_complete_ns.push_back(-1);
    flushes.push_back(f);
    result.in_flight_max = std::max(result.in_flight_max, static_cast<std::uint32_t>(flights()));
    pending_first = result.records.size();
    pending_bytes = 0;
    recheck_ns = kNever;
    sender_free_ns = std::max(sender_free_ns, now) + load.sender_flush_ns;
  };

  auto consult = [&](std::int64_t now) {
    FlushState state;
    state.now_ns = now;
    state.pending_bytes = pending_bytes;
    state.pending_records = result.records.size() - pending_first;
    state.oldest_pending_ns =
        state.pending_records > 0 ? result.records[pending_first].appended_ns : 0;
    state.in_flight = static_cast<std::uint32_t>(flights());
    const FlushDecision decision = policy.decide(state);
    recheck_ns = decision.recheck_at_ns > 0 ? decision.recheck_at_ns : kNever;
    max_in_flight = std::max<std::uint32_t>(1, decision.max_in_flight);
    if (state.pending_records == 0) return;
    if (decision.flush_now && state.in_flight < decision.max_in_flight) {
      submit(now);
    } else if (recheck_ns == kNever && state.in_flight == 0) {
      ++result.starving_decisions;
    }
  };

  std::int64_t now = 0;
  for (;;) {
    const std::int64_t arrival_ns =
        next_arrival < arrivals.size() ? arrivals[next_arrival] : kNever;
    const std::int64_t complete_ns = next_completion_ns();
    // The journal acts on an event once its thread is free: a completion is reaped, a record due
    // appended and a recheck made when the thread gets to them, in that order.
    const auto when = [&](std::int64_t t) {
      return t == kNever ? kNever : std::max(t, sender_free_ns);
    };
    const std::int64_t next_ns =
        std::min({when(arrival_ns), when(complete_ns), when(recheck_ns), next_snapshot_ns});
    if (next_ns == kNever) break;
    if (next_ns > load.end_ns + drain_limit_ns) break;
    if (next_snapshot_ns == next_ns && arrival_ns == kNever && flights() == 0 &&
        pending_first == result.records.size()) {
      break;  // Only snapshots left: the run is over.
    }
    now = std::max(now, next_ns);
    if (when(complete_ns) == next_ns) {
      const Flush done = take_completed(complete_ns);
      flush_complete_ns[done.index] = done.complete_ns;
      // The journal reports flushes as they join the durable prefix, in order, at that time.
      while (durable_flushes < flush_complete_ns.size() &&
             flush_complete_ns[durable_flushes] >= 0) {
        const Flush& f = flushes[durable_flushes];
        for (std::size_t i = f.first_record; i < f.end_record; ++i) {
          result.records[i].durable_ns = now;
        }
        policy.on_flush_complete(
            FlushCompletion{f.submit_ns, now, f.bytes, f.end_record - f.first_record});
        ++durable_flushes;
      }
      consult(now);
    } else if (when(arrival_ns) == next_ns) {
      const std::uint64_t bytes = sizes[next_arrival++];
      if (pending_bytes + bytes > kBufferBytes && pending_bytes > 0) submit(now);
      result.records.push_back(Record{arrivals[next_arrival - 1], now, -1});
      sender_free_ns = std::max(sender_free_ns, now) + load.sender_record_ns;
      pending_bytes += bytes;
      policy.on_append(now, bytes);
      if (flights() < max_in_flight || now >= recheck_ns) consult(now);
    } else if (when(recheck_ns) == next_ns) {
      recheck_ns = kNever;
      consult(now);
    } else {
      result.snapshots.push_back(Snapshot{now, policy.stats()});
      next_snapshot_ns = now + snapshot_every_ns;
    }
  }
  result.end_ns = now;
  return result;
}

// ---- Reference policies, as flush_policy.hpp describes the journal's own ----------------------

// Flush as soon as anything is pending, `in_flight` flushes at most. With in_flight 1 this is
// both "every record" and natural batching: what arrives during a flush goes into the next.
class Greedy final : public FlushPolicy {
 public:
  explicit Greedy(const char* name, std::uint32_t in_flight = 1) : name_(name), max_(in_flight) {}
  void on_append(std::int64_t, std::uint64_t) noexcept override {}
  void on_flush_complete(const FlushCompletion&) noexcept override {}
  FlushDecision decide(const FlushState& state) noexcept override {
    return FlushDecision{state.pending_records > 0, 0, max_};
  }
  [[nodiscard]] FlushPolicyStats stats() const noexcept override { return {}; }
  [[nodiscard]] const char* name() const noexcept override { return name_; }

 private:
  const char* name_;
  std::uint32_t max_;
};

// Flush when `bytes` are pending or the oldest pending record has waited `delay_ns`.
class Fixed final : public FlushPolicy {
 public:
  Fixed(std::uint64_t bytes, std::int64_t delay_ns, std::uint32_t in_flight = 1)
      : bytes_(bytes), delay_ns_(delay_ns), max_(in_flight) {}
  void on_append(std::int64_t, std::uint64_t) noexcept override {}
  void on_flush_complete(const FlushCompletion&) noexcept override {}
  FlushDecision decide(const FlushState& state) noexcept override {
    FlushDecision d;
    d.max_in_flight = max_;
    if (state.pending_records == 0) return d;
    d.flush_now =
        state.pending_bytes >= bytes_ || state.now_ns >= state.oldest_pending_ns + delay_ns_;
    d.recheck_at_ns = d.flush_now ? 0 : state.oldest_pending_ns + delay_ns_;
    return d;
  }
  [[nodiscard]] FlushPolicyStats stats() const noexcept override { return {}; }
  [[nodiscard]] const char* name() const noexcept override { return "fixed"; }

 private:
  std::uint64_t bytes_;
  std::int64_t delay_ns_;
  std::uint32_t max_;
};

}  // namespace weft::sim
