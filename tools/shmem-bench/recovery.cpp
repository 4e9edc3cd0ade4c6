// `recovery`; see recovery.hpp.
//
// Processes: the parent is the consumer (side A's CPU); the live producer is child 0 (side B's
// CPU); each run forks a fresh victim on side B's CPU too, since it is killed. Both producers
// send on a fixed schedule (live_rate_per_s each), yielding when the ring is full, so they share
// their CPU without starving each other. The consumer either busy-polls (spin) or polls and then
// blocks in MpscConsumer::wait (block), which is how a real consumer idles.
#include "recovery.hpp"

#include <unistd.h>

#include <array>
#include <ctime>
#include <optional>

#include <fmt/format.h>

#include "errors.hpp"
#include "payload.hpp"
#include "weft/channel.hpp"
#include "weft/mpsc.hpp"
#include "weft_loops.hpp"

namespace shmem_bench {
namespace {

constexpr std::uint32_t kRoleLive = 1;
constexpr std::uint32_t kRoleVictimClaim = 2;
constexpr std::uint32_t kRoleVictimStream = 3;

constexpr std::uint64_t kProgressOpen = 1;     // The producer is attached and sending.
constexpr std::uint64_t kProgressClaimed = 2;  // The victim holds a claim it will never commit.

const char* scenario_name(RecoveryScenario s) {
  return s == RecoveryScenario::kClaim ? "claim" : "stream";
}
const char* idle_name(ConsumerIdle i) { return i == ConsumerIdle::kSpin ? "spin" : "block"; }
const char* scenario_text(RecoveryScenario s) {
  return s == RecoveryScenario::kClaim ? "killed between try_claim and commit"
                                       : "killed mid-stream";
}
const char* idle_text(ConsumerIdle i) {
  return i == ConsumerIdle::kSpin ? "busy-polling consumer" : "consumer blocking in wait()";
}

template <class T>
T take(weft::Result<T>&& result, const char* what) {
  if (!result) throw RunError(fmt::format("{}: {}", what, result.error().message()));
  return std::move(*result);
}

// A small deterministic generator for kill times (the run number seeds it).
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The end of everything producer slot `slot` claimed (its chunk, or a claim in flight); 0 when it
// holds nothing. Read after the holder's death, when the slot no longer changes.
std::uint64_t claimed_end(const weft::detail::ProducerSlot& slot) {
  // Acquire (both): the holder is dead; its stores are complete.
  const std::uint64_t chunk_end = slot.chunk_end.load(std::memory_order_acquire);
  const std::uint64_t intent_end = slot.intent_end.load(std::memory_order_acquire);
  std::uint64_t end = 0;
  if (chunk_end != weft::detail::kNoPosition) end = std::max(end, chunk_end);
  if (intent_end != weft::detail::kNoPosition) end = std::max(end, intent_end);
  return end;
}

struct Measured {
  std::optional<double> unblock_ns;  // Empty: see `stuck`.
  bool stuck = false;  // The head never got past the victim's claims (give_up_ns passed).
};

Measured measure_one(const RecoveryConfig& config, RecoveryScenario scenario, ConsumerIdle idle,
                     int run, BenchContext& context, int victim_cpu) {
  Peer& peer = context.peer();
  const Timebase& clock = context.clock();
  const std::string name = fmt::format("recovery-{}", context.next_id());
  weft::ChannelOptions options;
  options.kind = weft::ChannelKind::kMpsc;
  options.capacity_bytes = config.capacity_bytes;
  options.dir = context.dir();
  options.producers_max = 2;
  options.unblock_timeout = std::chrono::nanoseconds(config.timeout_ns);
  weft::MpscConsumer consumer =
      take(weft::MpscConsumer::attach(take(weft::Channel::create(name, options), "create channel")),
           "attach consumer");

  Board& board = peer.board();
  // Relaxed (all): published by the release store of each child's command.
  board.stop.value.store(0, std::memory_order_relaxed);
  const std::uint64_t period_ticks = clock.ticks_from_ns(1e9 / config.live_rate_per_s);
  const auto start_producer = [&](int index, std::uint32_t role, std::uint32_t producer_index,
                                  std::uint64_t period) {
    Control& control = peer.control(index);
    // Relaxed: the child is idle; the release store of the command publishes it.
    control.progress.value.store(0, std::memory_order_relaxed);
    CommandParams& params = control.params;
    copy_text(params.dir, context.dir());
    copy_text(params.name_ab, name);
    params.role = role;
    params.producer_index = producer_index;
    params.size_bytes = config.size_bytes;
    params.period_ticks = period;
    peer.post(index, Command::kRecoveryProduce);
  };
  start_producer(0, kRoleLive, 0, period_ticks);
  const int victim = peer.spawn(victim_cpu);
  start_producer(victim,
                 scenario == RecoveryScenario::kClaim ? kRoleVictimClaim : kRoleVictimStream, 1,
                 period_ticks);

  std::array<std::uint64_t, 2> expected{};
  std::uint64_t errors = 0;
  const auto handler = [&](std::span<const std::byte> record) noexcept {
    const std::uint64_t word = read_first_word(record);
    std::uint64_t& next = expected[(word >> kProducerShift) & 1];
    errors += (word & kSequenceMask) != next ? 1U : 0U;
    next = (word & kSequenceMask) + 1;
  };
  Measured out;
  const std::uint64_t begin_ns = monotonic_ns();
  const std::uint64_t kill_after_ns =
      10'000'000 + mix(static_cast<std::uint64_t>(run)) % 30'000'000;
  std::uint64_t streaming_since_ns = 0;
  std::uint64_t kill_ns = 0;
  std::uint64_t victim_end = 0;  // The head is past the victim once it reaches this.
  bool unlinked = false;
  // A consumer that would never get past the dead producer's chunk: give up after this.
  const std::uint64_t give_up_ns = config.timeout_ns * 3 + 1'000'000'000;
  try {
    for (;;) {
      const weft::PollResult r = consumer.poll(handler, 256);
      check_poll(r, consumer);
      const std::uint64_t now = monotonic_ns();
      if (kill_ns == 0) {
        // Acquire: pairs with the victim's release store after it attached (and claimed).
        const std::uint64_t state =
            peer.control(victim).progress.value.load(std::memory_order_acquire);
        if (!unlinked && state != 0 &&
            peer.control(0).progress.value.load(std::memory_order_acquire) != 0) {
          (void)weft::Channel::unlink(name, context.dir());
          unlinked = true;
        }
        if ((state & 0xff) == kProgressOpen && streaming_since_ns == 0) streaming_since_ns = now;
        const bool ready =
            scenario == RecoveryScenario::kClaim
                ? (state & 0xff) == kProgressClaimed
                : streaming_since_ns != 0 && now - streaming_since_ns >= kill_after_ns;
        if (ready) {
          kill_ns = peer.kill_child(victim);
          victim_end = claimed_end(consumer.channel().producer_slots()[(state >> 8) & 1]);
          // Nothing the victim claimed lies ahead of the head: there is nothing to unblock.
          if (victim_end <= consumer.position()) break;
        } else if (now - begin_ns > 10'000'000'000ULL) {
          peer.check_alive();
          throw RunError("recovery: the victim producer did not get going within 10 s");
        }
      } else {
        // Past the dead producer's chunk (padded by the channel), and delivering again.
        if (r.count != 0 && consumer.position() >= victim_end) {
          out.unblock_ns = static_cast<double>(now - kill_ns);
          break;
        }
        if (now - kill_ns > give_up_ns) {
          out.stuck = true;
          break;
        }
      }
      if (r.count == 0) {
        if (idle == ConsumerIdle::kBlock) {
          // Before the kill, short waits (the victim's signal must be seen at once); after it,
          // one long wait: how soon it returns is up to the channel, which must notice the dead
          // producer by itself, not to this loop.
          const std::uint64_t wait_ns =
              kill_ns == 0 ? 1'000'000 : give_up_ns - std::min(give_up_ns, now - kill_ns);
          (void)consumer.wait(
              std::chrono::nanoseconds(std::max<std::uint64_t>(wait_ns, 1'000'000)));
        } else {
          weft::cpu_relax();
        }
      }
    }
  } catch (...) {
    // Relaxed: ends the live producer's loop; nothing is published with it.
    board.stop.value.store(1, std::memory_order_relaxed);
    if (kill_ns == 0) peer.kill_child(victim);
    throw;
  }
  // Relaxed: as above.
  board.stop.value.store(1, std::memory_order_relaxed);
  peer.wait_done(0, 30);
  if (errors != 0) {
    throw RunError(fmt::format("recovery: {} records arrived out of order or were lost", errors));
  }
  return out;
}

double percentile_of(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto index = static_cast<std::size_t>(p / 100 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(index, v.size() - 1)];
}

nlohmann::json case_json(const RecoveryCase& c, double timeout_ns) {
  const Spread s = spread_of(c.unblock_ns);
  nlohmann::json j;
  j["scenario"] = scenario_name(c.scenario);
  j["consumer"] = idle_name(c.idle);
  j["runs"] = c.unblock_ns.size();
  j["not_blocked"] = c.not_blocked;
  j["stuck"] = c.stuck;
  j["unblock_p50_ns"] = s.median;
  j["unblock_min_ns"] = s.min;
  j["unblock_max_ns"] = s.max;
  j["excess_p50_ns"] = s.median - timeout_ns;
  j["excess_max_ns"] = s.max - timeout_ns;
  j["per_run_unblock_ns"] = c.unblock_ns;
  return j;
}

}  // namespace

std::uint64_t recovery_phases(const RecoveryConfig& config) noexcept {
  return static_cast<std::uint64_t>(config.runs) * config.scenarios.size() * config.idles.size();
}

RecoveryResult run_recovery(const RecoveryConfig& config, BenchContext& context,
                            Progress& progress) {
  RecoveryResult result;
  result.config = config;
  const Placement& placement = context.placement();
  const int victim_cpu = placement.pinned ? placement.cpu_b : -1;
  result.processes = {
      {"consumer (parent)", -1, placement.cpu_a, false, false, 0},
      {"live producer (child)", 0, placement.cpu_b, true, true, 0},
      {"victim producer (a fresh child per run, SIGKILLed)", -2, victim_cpu, true, true, 1}};
  for (const RecoveryScenario s : config.scenarios) {
    for (const ConsumerIdle i : config.idles) result.cases.push_back({s, i, {}, 0, 0});
  }
  for (int run = 0; run < config.runs; ++run) {
    for (RecoveryCase& c : result.cases) {
      progress.phase(fmt::format("recovery: victim {}, {}  run {}/{}", scenario_text(c.scenario),
                                 idle_text(c.idle), run + 1, config.runs));
      const Measured m = measure_one(config, c.scenario, c.idle, run, context, victim_cpu);
      if (m.unblock_ns) {
        c.unblock_ns.push_back(*m.unblock_ns);
      } else if (m.stuck) {
        ++c.stuck;
      } else {
        ++c.not_blocked;
      }
    }
  }
  return result;
}

nlohmann::json to_json(const RecoveryResult& result, const ReportContext& context) {
  const RecoveryConfig& c = result.config;
  const auto timeout_ns = static_cast<double>(c.timeout_ns);
  std::vector<double> all;
  for (const RecoveryCase& k : result.cases)
    all.insert(all.end(), k.unblock_ns.begin(), k.unblock_ns.end());
  const Spread s = spread_of(all);
  nlohmann::json j;
  j["benchmark"] = "recovery";
  j["units"] =
      "nanoseconds from SIGKILL of a producer holding part of the ring to the consumer's first "
      "record delivered from behind it; excess = unblock - timeout";
  j["timeout_ns"] = c.timeout_ns;
  j["runs"] = all.size();
  j["unblock_p50_ns"] = s.median;
  j["unblock_p90_ns"] = percentile_of(all, 90);
  j["unblock_min_ns"] = s.min;
  j["unblock_max_ns"] = s.max;
  j["excess_p50_ns"] = s.median - timeout_ns;
  j["excess_max_ns"] = s.max - timeout_ns;
  j["bar_ns"] = timeout_ns + 100e6;
  int stuck = 0;
  for (const RecoveryCase& k : result.cases) stuck += k.stuck;
  j["stuck"] = stuck;
  j["within_bar"] = !all.empty() && stuck == 0 && s.max <= timeout_ns + 100e6;
  nlohmann::json cases = nlohmann::json::array();
  for (const RecoveryCase& k : result.cases) cases.push_back(case_json(k, timeout_ns));
  j["scenarios"] = cases;
  j["live_rate_per_s"] = c.live_rate_per_s;
  j["size"] = c.size_bytes;
  j["capacity"] = c.capacity_bytes;
  j["processes"] = processes_json(result.processes);
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

void print_table(std::FILE* out, const RecoveryResult& result, const ReportContext& context) {
  const RecoveryConfig& c = result.config;
  const auto timeout_ns = static_cast<double>(c.timeout_ns);
  fmt::print(out,
             "shmem-bench recovery: a dead MPSC producer, unblock_timeout {:.0f} ms, {} runs per "
             "case\n",
             timeout_ns / 1e6, c.runs);
  print_environment(out, context);
  print_processes(out, result.processes);
  fmt::print(out,
             "\nA producer is SIGKILLed while it holds part of the ring, while a live producer "
             "keeps sending ({}, {} records).\nunblock = from the kill to the consumer's first "
             "record delivered from behind everything the dead producer\nhad claimed; excess = "
             "unblock - timeout. Bar: unblock <= timeout + 100 ms.\n\n",
             rate_text(c.live_rate_per_s), format_bytes(c.size_bytes));
  fmt::print(out, "{:<38} {:<28} {:>5} {:>9} {:>9} {:>9} {:>11} {:>11}\n", "victim", "consumer",
             "runs", "min ms", "p50 ms", "max ms", "excess p50", "excess max");
  std::vector<double> all;
  int stuck = 0;
  for (const RecoveryCase& k : result.cases) {
    all.insert(all.end(), k.unblock_ns.begin(), k.unblock_ns.end());
    stuck += k.stuck;
    std::string note;
    if (k.not_blocked != 0) {
      note += fmt::format("  (+{} with nothing ahead of the head)", k.not_blocked);
    }
    if (k.stuck != 0) note += fmt::format("  ({} STUCK)", k.stuck);
    if (k.unblock_ns.empty()) {
      fmt::print(out, "{:<38} {:<28} {:>5} {:>9} {:>9} {:>9} {:>11} {:>11}{}\n",
                 scenario_text(k.scenario), idle_text(k.idle), 0, "-", "-", "-", "-", "-", note);
      continue;
    }
    const Spread s = spread_of(k.unblock_ns);
    fmt::print(out, "{:<38} {:<28} {:>5} {:>9.1f} {:>9.1f} {:>9.1f} {:>8.1f} ms {:>8.1f} ms{}\n",
               scenario_text(k.scenario), idle_text(k.idle), k.unblock_ns.size(), s.min / 1e6,
               s.median / 1e6, s.max / 1e6, (s.median - timeout_ns) / 1e6,
               (s.max - timeout_ns) / 1e6, note);
  }
  if (stuck != 0) {
    fmt::print(out,
               "\n{} run(s) STUCK: the consumer never got past the dead producer's claims within "
               "3 x timeout + 1 s.\n",
               stuck);
  }
  const Spread s = spread_of(all);
  const bool within = !all.empty() && stuck == 0 && s.max <= timeout_ns + 100e6;
  fmt::print(out,
             "\nall runs: unblock p50 {:.1f} ms, max {:.1f} ms = timeout {:+.1f} ms (p50) / "
             "{:+.1f} ms (max): {} the bar (timeout + 100 ms).\n",
             s.median / 1e6, s.max / 1e6, (s.median - timeout_ns) / 1e6, (s.max - timeout_ns) / 1e6,
             within ? "within" : "NOT within");
}

// ---- child side ------------------------------------------------------------------------------

void recovery_child(ChildContext& context, const Timebase& clock) {
  const CommandParams& params = context.control.params;
  weft::OpenOptions options;
  options.dir = params.dir;
  weft::MpscProducer producer =
      take(weft::MpscProducer::open(params.name_ab, options), "open producer");
  const std::size_t size = params.size_bytes;
  const std::uint64_t tag = params.producer_index;
  const std::atomic<std::uint64_t>& stop = context.board.stop.value;
  Idler idler(true);
  std::uint64_t seq = 0;
  const auto send_one = [&]() -> bool {
    for (;;) {
      const weft::ClaimResult claim = producer.try_claim(size);
      if (claim) {
        write_payload(claim.bytes.data(), size, tagged(tag, seq++));
        producer.commit();
        idler.reset();
        return true;
      }
      // Relaxed: a flag with nothing to publish.
      if (stop.load(std::memory_order_relaxed) != 0) return false;
      idler.idle();
    }
  };
  // The state word: the state in the low byte, our slot above it (the consumer reads the slot
  // after our death). Release: the consumer may unlink the name once both producers attached.
  const std::uint64_t slot_bits = std::uint64_t{producer.slot_index()} << 8;
  context.control.progress.value.store(kProgressOpen | slot_bits, std::memory_order_release);
  if (params.role == kRoleVictimClaim) {
    for (int i = 0; i < 10; ++i) {
      if (!send_one()) return;
    }
    weft::ClaimResult claim = producer.try_claim(size);
    while (!claim) {
      // Relaxed: as above.
      if (stop.load(std::memory_order_relaxed) != 0) return;
      idler.idle();
      claim = producer.try_claim(size);
    }
    write_payload(claim.bytes.data(), size / 2,
                  tagged(tag, seq));  // Half written, never committed.
    // Release: the parent kills us once it sees this; the claim is in place.
    context.control.progress.value.store(kProgressClaimed | slot_bits, std::memory_order_release);
    for (;;) pause();  // SIGKILL ends it (or PR_SET_PDEATHSIG, if the parent dies).
  }
  // Live producer, or a victim streaming until it is killed: a fixed schedule.
  std::uint64_t next = clock.now();
  for (;;) {
    // Relaxed: as above.
    if (stop.load(std::memory_order_relaxed) != 0) return;
    const std::uint64_t now = clock.now();
    if (now < next) {
      // Both producers share a CPU: yield while waiting for the next send time, so that neither
      // is descheduled for a whole time slice (the consumer would take its chunk back).
      idler.idle();
      continue;
    }
    next += params.period_ticks;
    if (next < now) next = now;  // Behind (the ring was full): do not burst to catch up.
    if (!send_one()) return;
  }
}

}  // namespace shmem_bench
