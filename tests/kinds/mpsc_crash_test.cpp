// MPSC processes die: producers and consumers are killed with SIGKILL at random points (seeded;
// the seed is printed, WEFT_TEST_SEED replays it), and the channel carries on.
//
// What is asserted
//   Producer death: the consumer always continues. Every record of a surviving producer arrives,
//   in order, intact. A killed producer's records arrive as a contiguous prefix 0..k-1, intact,
//   where k is what it reported committed (or one more: it reports right after each commit). A
//   dead producer's unfinished chunk is padded within unblock_timeout (+2 s for a noisy
//   machine), and recovery.unblocks counts it.
//   Consumer death: a new consumer continues at the dead one's released position: records
//   released are never delivered again, records delivered but not released may be (at least
//   once), nothing is skipped. Per producer, the new consumer's first record s satisfies
//     released <= s <= delivered
//   where delivered is what the dead consumer handed out and released a lower bound of what it
//   gave back (it reports a release only after release() returned).
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kinds_support.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/idle.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"

namespace weft {
namespace {

using kinds_test::ChildMessage;
using kinds_test::ChildProcess;
using kinds_test::Rng;
using kinds_test::Shared;
using kinds_test::TempDir;

constexpr const char* kName = "crash";
constexpr unsigned kWatchdogSeconds = 280;
constexpr std::uint64_t kRingBytes = 1 << 16;
constexpr std::uint64_t kRecordBytesMax = 8192;
constexpr std::size_t kPayloadSmallMax = 200;
constexpr std::size_t kPayloadMax = 6000;  // Records up to a tenth of the ring: many paddings.
constexpr std::chrono::milliseconds kUnblockTimeout(100);
constexpr std::int64_t kUnblockMarginNs = 2'000'000'000;  // Generous: a noisy shared machine.
constexpr std::int64_t kHangNs = 30'000'000'000;          // No progress this long is a hang.

ChannelOptions crash_options(const TempDir& dir, std::uint32_t producers_max = 8) {
  ChannelOptions options = dir.options(ChannelKind::kMpsc, kRingBytes, kRecordBytesMax);
  options.producers_max = producers_max;
  options.unblock_timeout = kUnblockTimeout;
  return options;
}

std::size_t payload_for(std::uint64_t seed, std::uint32_t source, std::uint64_t sequence) {
  return kinds_test::payload_bytes_for(seed, source, sequence, kPayloadSmallMax, kPayloadMax);
}

std::atomic_ref<std::uint64_t> ring_word(const Channel& channel, std::uint64_t position) {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(
      channel.ring() + (position & (channel.capacity_bytes() - 1))));
}

// ---- A producer process ----------------------------------------------------------------------

struct ProducerReport {
  std::atomic<std::uint32_t> attached{0};
  std::atomic<std::uint32_t> slot{0};
  std::atomic<std::uint64_t> committed{0};  // Stored right after each commit.
  std::atomic<std::uint32_t> pid{0};
  // For a hang's message: the producer's last events, as the child saw them after each claim.
  // kChunk: its slot's chunk_start, chunk_end, given_up_start, given_up_end changed to a, b, c,
  // d. kClaim: record `d` claimed at position a with b payload bytes, under chunk_limit c.
  // kRefused: the first kFull of a run, with chunk_start, chunk_end, chunk_limit, record `d`.
  enum Event : std::uint64_t { kChunk = 1, kClaim = 2, kRefused = 3 };
  static constexpr std::uint64_t kLogEntries = 64;
  std::atomic<std::uint64_t> events{0};
  std::atomic<std::uint64_t> log[kLogEntries][5];

  void add(Event event, std::uint64_t a, std::uint64_t b, std::uint64_t c, std::uint64_t d) {
    // Relaxed (all): read by the parent only after it saw the hang; a torn entry is harmless.
    const std::uint64_t n = events.load(std::memory_order_relaxed);
    auto& entry = log[n % kLogEntries];
    const std::uint64_t values[5] = {event, a, b, c, d};
    for (int i = 0; i < 5; ++i) entry[i].store(values[i], std::memory_order_relaxed);
    events.store(n + 1, std::memory_order_relaxed);
  }
  std::string describe() const {
    const auto position = [](std::uint64_t value) {
      return value == detail::kNoPosition ? std::string("-") : std::to_string(value);
    };
    const std::uint64_t n = events.load();
    std::string out = "pid " + std::to_string(pid.load()) + " slot " + std::to_string(slot.load()) +
                      " attached " + std::to_string(attached.load()) + " committed " +
                      std::to_string(committed.load()) + ", last events:";
    for (std::uint64_t i = n > kLogEntries ? n - kLogEntries : 0; i < n; ++i) {
      const auto& e = log[i % kLogEntries];
      switch (e[0].load()) {
        case kChunk:
          out += "\n    chunk [" + position(e[1].load()) + ", " + position(e[2].load()) +
                 ") given up [" + position(e[3].load()) + ", " + position(e[4].load()) + ")";
          break;
        case kClaim:
          out += "\n    record " + std::to_string(e[4].load()) + " claimed at " +
                 std::to_string(e[1].load()) + ", " + std::to_string(e[2].load()) +
                 " bytes, limit " + position(e[3].load());
          break;
        default:
          out += "\n    record " + std::to_string(e[4].load()) + " refused (full), chunk [" +
                 position(e[1].load()) + ", " + position(e[2].load()) + ") limit " +
                 position(e[3].load());
          break;
      }
    }
    return out;
  }
};

struct ProducerPlan {
  std::uint32_t source = 0;
  std::uint64_t count = 0;
  bool spin_before_commit = false;  // Sometimes spins between claim and commit.
  std::uint64_t seed = 0;
};

int run_producer(const TempDir& dir, const ProducerPlan& plan, ProducerReport& report,
                 ChildMessage& message, const std::atomic<std::uint32_t>* stop = nullptr) {
  auto producer = MpscProducer::open(kName, dir.open_options());
  if (!producer) {
    message.set("producer " + std::to_string(plan.source) + ": " + producer.error().message());
    return 2;
  }
  // Relaxed + release: the parent acquires `attached` before reading the slot.
  report.slot.store(producer->slot_index(), std::memory_order_relaxed);
  report.pid.store(static_cast<std::uint32_t>(getpid()), std::memory_order_relaxed);
  report.attached.store(1, std::memory_order_release);
  // For the hang message (see ProducerReport): our slot's chunk fields, as they change.
  const detail::ProducerSlot& my_slot =
      producer->channel().producer_slots()[producer->slot_index()];
  std::uint64_t seen[3] = {1, 1, 1};  // No position: the first look always logs.
  const auto note_chunk = [&] {
    const std::uint64_t now[3] = {my_slot.chunk_start.load(), my_slot.chunk_end.load(),
                                  my_slot.given_up_end.load()};
    if (now[0] == seen[0] && now[1] == seen[1] && now[2] == seen[2]) return;
    std::copy(now, now + 3, seen);
    report.add(ProducerReport::kChunk, now[0], now[1], my_slot.given_up_start.load(), now[2]);
  };
  note_chunk();
  bool refused = false;
  Rng rng(plan.seed ^ plan.source);
  std::uint32_t idle = 0;
  for (std::uint64_t sequence = 0; sequence < plan.count;) {
    // Relaxed: a request to finish; lateness costs a record or two.
    if (stop != nullptr && stop->load(std::memory_order_relaxed) != 0) break;
    const std::size_t payload = payload_for(plan.seed, plan.source, sequence);
    const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + payload);
    note_chunk();
    if (claim.status == ClaimStatus::kOk) {
      // The record's position: its chunk's start plus its offset in the chunk (which never
      // crosses the ring's end).
      const std::uint64_t mask = producer->capacity_bytes() - 1;
      const auto offset =
          static_cast<std::uint64_t>(claim.bytes.data() - producer->channel().ring()) -
          detail::kRecordHeaderBytes;
      const std::uint64_t chunk_start = my_slot.chunk_start.load();
      report.add(ProducerReport::kClaim, chunk_start + ((offset - (chunk_start & mask)) & mask),
                 claim.bytes.size(), my_slot.chunk_limit.load(), sequence);
      refused = false;
    } else if (claim.status == ClaimStatus::kFull && !refused) {
      report.add(ProducerReport::kRefused, my_slot.chunk_start.load(), my_slot.chunk_end.load(),
                 my_slot.chunk_limit.load(), sequence);
      refused = true;
    }
    if (claim.status == ClaimStatus::kFull) {
      if (++idle % 64 == 0) (void)producer->wait(std::chrono::milliseconds(5));
      continue;
    }
    if (claim.status != ClaimStatus::kOk) {
      message.set("producer " + std::to_string(plan.source) + ": claim refused as too large");
      return 3;
    }
    kinds_test::write_record(claim.bytes, plan.source, sequence);
    if (plan.spin_before_commit && rng.one_in(16)) {
      kinds_test::spin_for_ns(static_cast<std::int64_t>(rng.below(300'000)));
    }
    producer->commit();
    ++sequence;
    // Release: the parent reads it after the child died.
    report.committed.store(sequence, std::memory_order_release);
  }
  return 0;
}

// ---- The consumer in the test process --------------------------------------------------------

// Checks every record per source: intact, the right length, sequence numbers 0, 1, 2, ...
struct Checker {
  explicit Checker(std::uint64_t run_seed, std::size_t sources)
      : seed(run_seed), next(sources, 0) {}
  std::uint64_t seed;
  std::vector<std::uint64_t> next;
  std::uint64_t problems = 0;
  std::string first_problem;

  void operator()(std::span<const std::byte> record) {
    const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
    std::string problem = kinds_test::check_record(record);
    if (problem.empty() && stamp.source >= next.size()) {
      problem = "unknown source " + std::to_string(stamp.source);
    }
    if (problem.empty() && stamp.payload_bytes != payload_for(seed, stamp.source, stamp.sequence)) {
      problem = "record " + std::to_string(stamp.source) + "/" + std::to_string(stamp.sequence) +
                " has the wrong length";
    }
    if (problem.empty() && stamp.sequence != next[stamp.source]) {
      problem = "producer " + std::to_string(stamp.source) + ": sequence " +
                std::to_string(stamp.sequence) + " where " + std::to_string(next[stamp.source]) +
                " was expected (" +
                (stamp.sequence < next[stamp.source] ? "duplicate" : "gap: records lost") + ")";
    }
    if (!problem.empty()) {
      if (problems++ == 0) first_problem = problem;
      return;
    }
    next[stamp.source] = stamp.sequence + 1;
  }
};

// Whether the dead producer in `slot` left a chunk whose rest the consumer (at `head`) must pad:
// its chunk is not taken back and holds an uncommitted word before its end.
bool chunk_needs_padding(const Channel& channel, const detail::ProducerSlot& slot,
                         std::uint64_t head) {
  const std::uint64_t start = slot.chunk_start.load();
  const std::uint64_t end = slot.chunk_end.load();
  if (start == detail::kNoPosition || end == detail::kNoPosition) return false;
  if (slot.chunk_limit.load() != end || head >= end) return false;
  std::uint64_t position = std::max(start, head);
  while (position < end) {
    const std::uint64_t word = ring_word(channel, position).load();
    if (word == 0) return true;
    const std::uint32_t type = detail::record_word_type(word);
    const std::uint64_t length = detail::record_word_length(word);
    if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding)) return false;
    position += detail::record_span_bytes(length);
  }
  return false;
}

// ---- Producers killed at random points -------------------------------------------------------

// Each iteration starts two or three producer processes together and kills all but one after a
// random delay (`concurrent`), or starts one, kills it, and then starts the survivor; then it
// checks everything above once the survivor is done.
void run_killed_producers(bool concurrent) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  const std::uint64_t iterations = kinds_test::scaled(200, 40);
  const std::size_t sources = static_cast<std::size_t>(iterations) * 3;
  auto channel = Channel::create(kName, crash_options(dir));
  ASSERT_TRUE(channel) << channel.error().message();
  auto consumer_result = MpscConsumer::attach(std::move(*channel));
  ASSERT_TRUE(consumer_result) << consumer_result.error().message();
  MpscConsumer& consumer = *consumer_result;
  const Channel& ch = consumer.channel();
  const detail::ChannelHeader& header = *ch.header();
  Shared<ProducerReport> reports(sources);
  Shared<ChildMessage> message;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the killed-producers crash test");

  Checker checker(seed, sources);
  std::uint64_t unblocks_seen = header.recovery.unblocks.load();
  std::vector<std::int64_t> unblock_times;
  std::uint32_t empty_polls = 0;
  const auto poll_once = [&] {
    const PollResult result = consumer.poll(checker);
    if (result.status == PollStatus::kCorrupted) {
      ADD_FAILURE() << kinds_test::describe_channel(ch) << "\nconsumer at " << consumer.position()
                    << ", ring words before it:"
                    << kinds_test::dump_ring(ch, consumer.position(), 256, 64);
      return false;
    }
    const std::uint64_t unblocks = header.recovery.unblocks.load();
    if (unblocks != unblocks_seen) {
      unblock_times.insert(unblock_times.end(), unblocks - unblocks_seen,
                           kinds_test::monotonic_ns());
      unblocks_seen = unblocks;
    }
    if (result.count == 0 && ++empty_polls % 64 == 0) sched_yield();
    return true;
  };

  std::uint32_t next_source = 0;
  std::uint64_t kills = 0;
  std::uint64_t padded_needed = 0;
  for (std::uint64_t iteration = 0; iteration < iterations; ++iteration) {
    SCOPED_TRACE("iteration " + std::to_string(iteration) +
                 " (WEFT_TEST_SEED=" + std::to_string(seed) + ")");
    const std::uint64_t unblocks_before = header.recovery.unblocks.load();
    const std::size_t times_before = unblock_times.size();
    // Sequential: one producer alive at a time (one victim, then one survivor).
    const auto count = static_cast<std::uint32_t>(concurrent ? rng.between(2, 3) : 2);
    const auto victims = static_cast<std::uint32_t>(concurrent ? rng.between(1, count - 1) : 1);
    std::vector<ProducerPlan> plans(count);
    for (std::uint32_t k = 0; k < count; ++k) {
      plans[k].source = next_source++;
      plans[k].count = k < victims ? 1'000'000 : rng.between(100, 2000);
      plans[k].spin_before_commit = rng.one_in(2);
      plans[k].seed = seed;
    }
    const auto start = [&](const ProducerPlan& plan) {
      return std::make_unique<ChildProcess>(
          [&, plan] { return run_producer(dir, plan, reports[plan.source], *message); });
    };
    std::vector<std::unique_ptr<ChildProcess>> children(count);
    for (std::uint32_t k = 0; k < count; ++k) {
      if (concurrent || k < victims) children[k] = start(plans[k]);
    }
    // Delays short enough to land in attach or in the first record, and long enough to land
    // mid-stream, with the ring full, or between a claim and its commit.
    std::int64_t delay_ns = 0;
    switch (rng.below(4)) {
      case 0:
        delay_ns = 0;
        break;
      case 1:
        delay_ns = static_cast<std::int64_t>(rng.below(200'000));
        break;
      case 2:
        delay_ns = static_cast<std::int64_t>(rng.below(2'000'000));
        break;
      default:
        delay_ns = static_cast<std::int64_t>(rng.below(10'000'000));
        break;
    }
    const std::int64_t kill_at = kinds_test::monotonic_ns() + delay_ns;
    while (kinds_test::monotonic_ns() < kill_at) {
      ASSERT_TRUE(poll_once()) << consumer.last_error().message();
    }
    for (std::uint32_t k = 0; k < victims; ++k) children[k]->kill_now();
    for (std::uint32_t k = 0; k < victims; ++k) {
      const kinds_test::ChildStatus status = children[k]->wait();
      ASSERT_TRUE(status.signal == SIGKILL || status.ok())
          << "victim " << status.describe() << ": " << message->get();
    }
    const std::int64_t killed_at = kinds_test::monotonic_ns();
    kills += victims;
    // Which dead producers left a chunk that only an unblock can finish?
    std::uint64_t needed = 0;
    for (std::uint32_t k = 0; k < victims; ++k) {
      const ProducerReport& report = reports[plans[k].source];
      if (report.attached.load(std::memory_order_acquire) == 0) continue;
      const detail::ProducerSlot& slot = ch.producer_slots()[report.slot.load()];
      if (slot.role.pid.load() != static_cast<std::uint32_t>(children[k]->pid())) continue;
      if (chunk_needs_padding(ch, slot, consumer.position())) ++needed;
    }
    padded_needed += needed;
    if (!concurrent) {
      for (std::uint32_t k = victims; k < count; ++k) children[k] = start(plans[k]);
    }

    // The survivors finish; the consumer reads everything that was claimed.
    std::int64_t last_progress = kinds_test::monotonic_ns();
    std::uint64_t last_position = consumer.position();
    for (;;) {
      ASSERT_TRUE(poll_once()) << consumer.last_error().message();
      bool survivors_done = true;
      for (std::uint32_t k = victims; k < count; ++k) {
        survivors_done = children[k]->poll_exited() && survivors_done;
      }
      if (survivors_done &&
          consumer.position() == header.producer.tail_position.load(std::memory_order_acquire)) {
        break;
      }
      const std::int64_t now = kinds_test::monotonic_ns();
      if (consumer.position() != last_position) {
        last_position = consumer.position();
        last_progress = now;
      }
      ASSERT_LT(now - last_progress, kHangNs)
          << "the consumer stopped making progress at " << consumer.position() << ": "
          << kinds_test::describe_channel(ch)
          << "\nring words around it:" << kinds_test::dump_ring(ch, consumer.position(), 2048, 512)
          << "\nchildren:" << [&] {
               std::string out;
               for (std::uint32_t k = 0; k < count; ++k) {
                 out += "\n  child " + std::to_string(k) + (k < victims ? " victim" : " survivor") +
                        " pid " + std::to_string(children[k]->pid()) +
                        (children[k]->poll_exited() ? " ended: " : " running: ") +
                        reports[plans[k].source].describe();
               }
               return out;
             }();
    }
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(poll_once());

    ASSERT_EQ(checker.problems, 0U) << checker.first_problem;
    for (std::uint32_t k = 0; k < count; ++k) {
      const ProducerPlan& plan = plans[k];
      const std::uint64_t received = checker.next[plan.source];
      const std::uint64_t committed = reports[plan.source].committed.load();
      if (k < victims) {
        // Every record it committed arrived (the last one maybe before it could report it).
        EXPECT_GE(received, committed) << "killed producer " << plan.source;
        EXPECT_LE(received, committed + 1) << "killed producer " << plan.source;
      } else {
        EXPECT_TRUE(children[k]->status().ok())
            << "survivor " << children[k]->status().describe() << ": " << message->get();
        EXPECT_EQ(received, plan.count) << "survivor " << plan.source;
      }
    }
    // Unblocks: one for each dead producer whose chunk had to be padded, at most one per victim,
    // each within the timeout (plus a generous margin) of the kill.
    const std::uint64_t unblocks = header.recovery.unblocks.load() - unblocks_before;
    EXPECT_GE(unblocks, needed) << kinds_test::describe_channel(ch);
    EXPECT_LE(unblocks, victims);
    const std::int64_t timeout_ns = kUnblockTimeout.count() * 1'000'000;
    for (std::size_t i = times_before; i < unblock_times.size(); ++i) {
      const auto nth = static_cast<std::int64_t>(i - times_before + 1);
      EXPECT_LE(unblock_times[i] - killed_at, nth * timeout_ns + kUnblockMarginNs)
          << "unblock " << nth << " came late";
    }
    ASSERT_TRUE(message->empty()) << message->get();
    if (::testing::Test::HasFailure()) return;
  }
  const std::uint64_t total_unblocks = header.recovery.unblocks.load();
  std::printf(
      "[   INFO   ] %llu iterations, %llu producers killed, %llu chunks needing an "
      "unblock, %llu unblocks (%llu bytes)\n",
      static_cast<unsigned long long>(iterations), static_cast<unsigned long long>(kills),
      static_cast<unsigned long long>(padded_needed),
      static_cast<unsigned long long>(total_unblocks),
      static_cast<unsigned long long>(header.recovery.unblocked_bytes.load()));
  EXPECT_GE(total_unblocks, padded_needed);
}

TEST(MpscCrashTest, KilledProducersNeverBlockTheConsumer) { run_killed_producers(true); }

// The same with one producer alive at a time: no live producer is ever replaced in a slot while
// another contends for it, and the consumer never takes a chunk back (so this runs even with the
// slot takeover bug).
TEST(MpscCrashTest, KilledProducersThenASurvivor) { run_killed_producers(false); }

// ---- Deterministic deaths --------------------------------------------------------------------

struct Handshake {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint64_t> position{0};
  ChildMessage message;
};

void wait_ready(const Handshake& handshake, ChildProcess& child) {
  while (handshake.ready.load(std::memory_order_acquire) == 0) {
    if (child.poll_exited()) {
      FAIL() << "child " << child.status().describe() << ": " << handshake.message.get();
    }
    usleep(100);
  }
}

struct Collector {
  std::vector<std::vector<std::byte>> records;
  void operator()(std::span<const std::byte> record) {
    records.emplace_back(record.begin(), record.end());
  }
};

TEST(MpscCrashTest, DeadProducersOpenChunkIsPaddedAfterTheTimeout) {
  TempDir dir;
  auto producer_b = MpscProducer::create(kName, crash_options(dir, 2));
  ASSERT_TRUE(producer_b) << producer_b.error().message();
  auto consumer = MpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer);
  Shared<Handshake> handshake;
  // a commits one record and stops, holding the rest of its chunk.
  ChildProcess a([&] {
    auto producer = MpscProducer::open(kName, dir.open_options());
    if (!producer) {
      handshake->message.set(producer.error().message());
      return 2;
    }
    const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + 8);
    if (claim.status != ClaimStatus::kOk) return 3;
    kinds_test::write_record(claim.bytes, 0, 0);
    producer->commit();
    handshake->ready.store(1, std::memory_order_release);
    for (;;) pause();
  });
  wait_ready(*handshake, a);
  for (std::uint64_t i = 0; i < 5; ++i) {
    const ClaimResult claim = producer_b->try_claim(kinds_test::kStampBytes + 100);
    ASSERT_EQ(claim.status, ClaimStatus::kOk);
    kinds_test::write_record(claim.bytes, 1, i);
    producer_b->commit();
  }
  // While a's dead slot still holds an unresolved chunk, it cannot be reused.
  a.kill_and_wait();
  const std::int64_t killed_at = kinds_test::monotonic_ns();
  EXPECT_EQ(consumer->producers().dead, 1U);
  auto third = MpscProducer::open(kName, dir.open_options());
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, Errc::kBusy);

  Collector out;
  const detail::ChannelHeader& header = *consumer->channel().header();
  while (out.records.size() < 6 && kinds_test::monotonic_ns() - killed_at < kHangNs) {
    ASSERT_NE(consumer->poll(out).status, PollStatus::kCorrupted);
  }
  const std::int64_t elapsed_ns = kinds_test::monotonic_ns() - killed_at;
  ASSERT_EQ(out.records.size(), 6U) << kinds_test::describe_channel(consumer->channel());
  EXPECT_LE(elapsed_ns, kUnblockTimeout.count() * 1'000'000 + kUnblockMarginNs);
  EXPECT_EQ(header.recovery.unblocks.load(), 1U);
  // Padded: the chunk's rest after a's one record.
  const std::uint64_t chunk_bytes = std::min<std::uint64_t>(kRingBytes / 16, 4096);
  EXPECT_EQ(header.recovery.unblocked_bytes.load(),
            chunk_bytes - detail::record_span_bytes(kinds_test::kStampBytes + 8));
  std::vector<std::uint64_t> next(2, 0);
  for (const auto& record : out.records) {
    EXPECT_EQ(kinds_test::check_record(record), "");
    const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
    ASSERT_LT(stamp.source, 2U);
    EXPECT_EQ(stamp.sequence, next[stamp.source]++);
  }
  // Resolved now: the dead slot is free for a new producer.
  consumer->release();
  auto replacement = MpscProducer::open(kName, dir.open_options());
  ASSERT_TRUE(replacement) << replacement.error().message();
}

TEST(MpscCrashTest, ProducerKilledBetweenClaimAndCommit) {
  TempDir dir;
  auto producer_b = MpscProducer::create(kName, crash_options(dir, 4));
  ASSERT_TRUE(producer_b) << producer_b.error().message();
  auto consumer = MpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer);
  Shared<Handshake> handshake;
  ChildProcess a([&] {
    auto producer = MpscProducer::open(kName, dir.open_options());
    if (!producer) {
      handshake->message.set(producer.error().message());
      return 2;
    }
    for (std::uint64_t i = 0; i < 3; ++i) {
      const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + 40);
      if (claim.status != ClaimStatus::kOk) return 3;
      kinds_test::write_record(claim.bytes, 0, i);
      producer->commit();
    }
    // Half-way through a record: claimed, partly written, never committed.
    const ClaimResult claim = producer->try_claim(2000);
    if (claim.status != ClaimStatus::kOk) return 4;
    std::memset(claim.bytes.data(), 0xee, 1000);
    handshake->ready.store(1, std::memory_order_release);
    for (;;) cpu_relax();
  });
  wait_ready(*handshake, a);
  for (std::uint64_t i = 0; i < 5; ++i) {
    const ClaimResult claim = producer_b->try_claim(kinds_test::kStampBytes + 100);
    ASSERT_EQ(claim.status, ClaimStatus::kOk);
    kinds_test::write_record(claim.bytes, 1, i);
    producer_b->commit();
  }
  a.kill_and_wait();
  const std::int64_t killed_at = kinds_test::monotonic_ns();
  Collector out;
  while (out.records.size() < 8 && kinds_test::monotonic_ns() - killed_at < kHangNs) {
    ASSERT_NE(consumer->poll(out).status, PollStatus::kCorrupted)
        << consumer->last_error().message();
  }
  ASSERT_EQ(out.records.size(), 8U) << kinds_test::describe_channel(consumer->channel());
  EXPECT_LE(kinds_test::monotonic_ns() - killed_at,
            kUnblockTimeout.count() * 1'000'000 + kUnblockMarginNs);
  std::vector<std::uint64_t> next(2, 0);
  for (const auto& record : out.records) {
    EXPECT_EQ(kinds_test::check_record(record), "");
    const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
    ASSERT_LT(stamp.source, 2U);
    EXPECT_EQ(stamp.sequence, next[stamp.source]++);
  }
  EXPECT_EQ(consumer->channel().header()->recovery.unblocks.load(), 1U);
  // Nothing more, and once released the ring holds no trace of the half-written record.
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(consumer->poll(out).status, PollStatus::kEmpty);
  consumer->release();
  const std::byte* ring = consumer->channel().ring();
  EXPECT_TRUE(std::all_of(ring, ring + kRingBytes, [](std::byte b) { return b == std::byte{0}; }));
  // The channel goes on.
  const ClaimResult claim = producer_b->try_claim(kinds_test::kStampBytes);
  ASSERT_EQ(claim.status, ClaimStatus::kOk);
  kinds_test::write_record(claim.bytes, 1, 5);
  producer_b->commit();
  while (out.records.size() < 9 && kinds_test::monotonic_ns() - killed_at < kHangNs) {
    ASSERT_NE(consumer->poll(out).status, PollStatus::kCorrupted);
  }
  ASSERT_EQ(out.records.size(), 9U);
}

// A producer killed between its compare-and-swap of the tail and publishing its chunk leaves only
// its intent. The slot is written here by hand, exactly as such a producer leaves it, under the
// pid of a process that has ended (a zombie until the end of the test).
TEST(MpscCrashTest, DeadProducersIntentIsPadded) {
  TempDir dir;
  auto producer = MpscProducer::create(kName, crash_options(dir, 2));
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = MpscConsumer::open(kName, dir.open_options());
  ASSERT_TRUE(consumer);
  ChildProcess dead([] { return 0; });
  while (kill(dead.pid(), 0) == 0) {
    // Wait for it to become a zombie: /proc says 'Z'.
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(dead.pid()));
    std::FILE* file = std::fopen(path, "re");
    if (file == nullptr) break;
    char buffer[512] = {};
    const std::size_t length = std::fread(buffer, 1, sizeof buffer - 1, file);
    std::fclose(file);
    const char* close = std::strrchr(buffer, ')');
    if (length != 0 && close != nullptr && close[1] == ' ' && close[2] == 'Z') break;
    usleep(100);
  }

  const Channel& ch = consumer->channel();
  detail::ChannelHeader& header = *ch.header();
  ASSERT_EQ(producer->slot_index(), 0U);
  detail::ProducerSlot& slot = ch.producer_slots()[1];
  constexpr std::uint64_t kIntentBytes = 512;
  const std::uint64_t tail = header.producer.tail_position.load();
  ASSERT_EQ(tail, 0U);
  slot.role.pid.store(static_cast<std::uint32_t>(dead.pid()));
  slot.role.start_ticks.store(1);  // Any value: the process is a zombie.
  slot.intent.store(tail);
  slot.intent_end.store(tail + kIntentBytes);
  header.producer.tail_position.store(tail + kIntentBytes);

  for (std::uint64_t i = 0; i < 3; ++i) {
    const ClaimResult claim = producer->try_claim(kinds_test::kStampBytes + 30);
    ASSERT_EQ(claim.status, ClaimStatus::kOk);
    kinds_test::write_record(claim.bytes, 0, i);
    producer->commit();
  }
  const std::int64_t started = kinds_test::monotonic_ns();
  Collector out;
  while (out.records.size() < 3 && kinds_test::monotonic_ns() - started < kHangNs) {
    ASSERT_NE(consumer->poll(out).status, PollStatus::kCorrupted)
        << consumer->last_error().message();
  }
  ASSERT_EQ(out.records.size(), 3U) << kinds_test::describe_channel(ch);
  EXPECT_LE(kinds_test::monotonic_ns() - started,
            kUnblockTimeout.count() * 1'000'000 + kUnblockMarginNs);
  EXPECT_EQ(header.recovery.unblocks.load(), 1U);
  EXPECT_EQ(header.recovery.unblocked_bytes.load(), kIntentBytes);
  for (std::size_t i = 0; i < out.records.size(); ++i) {
    EXPECT_EQ(kinds_test::check_record(out.records[i]), "");
    EXPECT_EQ(kinds_test::read_stamp(out.records[i]).sequence, i);
  }
  dead.wait();
}

// ---- Dead producers' slots taken over --------------------------------------------------------

// Regression test for the fourth bug found with issue 3 (it corrupted the killed-producers test
// once the take-back stall was fixed). try_take_slot() swaps its pid into a dead holder's slot and
// only then stores its own start time (read from /proc, so the window lasts microseconds); a
// second contender looking then sees a live pid with the dead holder's start time, concludes that
// the new holder is dead (as it would for a recycled pid) and takes the slot too. Two producers
// then share one slot, each reading the other's chunk_limit, and write over each other's records
// (and across the ring's end). Here several processes race for the slots of dead producers, over
// and over; no slot may end up with two of them.
TEST(MpscCrashTest, DeadSlotsAreTakenOverByOneProducerEach) {
  TempDir dir;
  const std::uint64_t rounds = kinds_test::scaled(100, 20);
  constexpr std::uint32_t kSlots = 2;
  constexpr std::uint32_t kContenders = 6;
  auto channel = Channel::create(kName, crash_options(dir, kSlots));
  ASSERT_TRUE(channel) << channel.error().message();
  struct Race {
    std::atomic<std::uint32_t> go{0};
    std::atomic<std::uint32_t> reported{0};
    std::atomic<std::int32_t> slot[kContenders] = {};
  };
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the slot takeover test");
  // First holders: attach and die without giving the slots back.
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    ChildProcess holder([&] {
      auto producer = MpscProducer::open(kName, dir.open_options());
      if (!producer) return 2;
      _exit(0);
    });
    ASSERT_TRUE(holder.wait().ok());
  }
  for (std::uint64_t round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_EQ(channel->producer_slots()[0].role.pid.load() != 0, true);
    Shared<Race> race;
    std::vector<std::unique_ptr<ChildProcess>> contenders;
    for (std::uint32_t k = 0; k < kContenders; ++k) {
      race->slot[k].store(-3);
      contenders.push_back(std::make_unique<ChildProcess>([&, k]() -> int {
        while (race->go.load(std::memory_order_acquire) == 0) cpu_relax();
        auto producer = MpscProducer::open(kName, dir.open_options());
        race->slot[k].store(producer ? static_cast<std::int32_t>(producer->slot_index()) : -1);
        race->reported.fetch_add(1, std::memory_order_acq_rel);
        for (;;) pause();  // Alive, holding its slot, until killed.
      }));
    }
    race->go.store(1, std::memory_order_release);
    while (race->reported.load(std::memory_order_acquire) < kContenders) usleep(100);
    std::vector<std::uint32_t> holders(kSlots, 0);
    std::uint32_t winners = 0;
    for (std::uint32_t k = 0; k < kContenders; ++k) {
      const std::int32_t slot = race->slot[k].load();
      ASSERT_GE(slot, -1);
      if (slot < 0) continue;
      ++winners;
      ++holders[static_cast<std::size_t>(slot)];
    }
    EXPECT_GE(winners, 1U);
    for (std::uint32_t i = 0; i < kSlots; ++i) {
      EXPECT_LE(holders[i], 1U) << "slot " << i << " was taken by " << holders[i]
                                << " live producers at once";
    }
    // They die holding their slots: the next round's contenders take them over.
    for (auto& contender : contenders) contender->kill_and_wait();
    if (::testing::Test::HasFailure()) return;
  }
}

// ---- Consumers killed at random points -------------------------------------------------------

constexpr std::uint32_t kMaxSources = 4;

struct ConsumerShared {
  std::atomic<std::uint32_t> stop{0};
  ProducerReport producers[kMaxSources];
  // Per producer: the next sequence number after the last record a consumer delivered, and a
  // lower bound of the records released (stored after release() returned).
  std::atomic<std::uint64_t> delivered[kMaxSources] = {};
  std::atomic<std::uint64_t> released[kMaxSources] = {};
  std::atomic<std::uint64_t> generations{0};
  std::atomic<std::uint32_t> drained{0};
  ChildMessage message;
};

// One consumer generation: reads until killed (or, `final`, until the producers have stopped and
// everything is read), checking what it sees against what the dead ones reported.
int run_consumer_generation(const TempDir& dir, ConsumerShared& shared, std::uint32_t sources,
                            std::uint64_t seed, bool final) {
  auto consumer = MpscConsumer::open(kName, dir.open_options());
  if (!consumer) {
    shared.message.set("consumer: " + consumer.error().message());
    return 2;
  }
  Rng rng(seed);
  std::vector<bool> seen(sources, false);
  std::vector<std::uint64_t> next(sources, 0);
  std::string problem;
  const auto handler = [&](std::span<const std::byte> record) {
    const kinds_test::Stamp stamp = kinds_test::read_stamp(record);
    const std::string bad = kinds_test::check_record(record);
    if (!bad.empty()) {
      if (problem.empty()) problem = bad;
      return;
    }
    if (stamp.source >= sources) {
      if (problem.empty()) problem = "unknown source " + std::to_string(stamp.source);
      return;
    }
    const std::uint32_t source = stamp.source;
    if (!seen[source]) {
      seen[source] = true;
      // Relaxed (both): written by dead consumers, whose stores are all visible now.
      const std::uint64_t released = shared.released[source].load(std::memory_order_relaxed);
      const std::uint64_t delivered = shared.delivered[source].load(std::memory_order_relaxed);
      if ((stamp.sequence < released || stamp.sequence > delivered) && problem.empty()) {
        problem = "producer " + std::to_string(source) + ": a new consumer starts at " +
                  std::to_string(stamp.sequence) + ", outside [released " +
                  std::to_string(released) + ", delivered " + std::to_string(delivered) + "]";
      }
    } else if (stamp.sequence != next[source] && problem.empty()) {
      problem = "producer " + std::to_string(source) + ": sequence " +
                std::to_string(stamp.sequence) + " after " + std::to_string(next[source] - 1);
    }
    next[source] = stamp.sequence + 1;
    // Relaxed: read only by later consumer generations, after this process died.
    shared.delivered[source].store(next[source], std::memory_order_relaxed);
  };
  std::uint32_t idle = 0;
  for (;;) {
    const PollResult result = consumer->poll(handler, rng.between(1, 200));
    if (result.status == PollStatus::kCorrupted) {
      shared.message.set("consumer: " + consumer->last_error().message());
      return 3;
    }
    if (!problem.empty()) {
      shared.message.set(problem);
      return 4;
    }
    if (rng.one_in(16)) {
      consumer->release();
      for (std::uint32_t source = 0; source < sources; ++source) {
        if (seen[source]) shared.released[source].store(next[source], std::memory_order_relaxed);
      }
    }
    if (result.count != 0) {
      idle = 0;
      continue;
    }
    if (final && shared.stop.load(std::memory_order_acquire) != 0) {
      // The producers have ended: done once everything claimed has been read.
      bool complete = true;
      for (std::uint32_t source = 0; source < sources; ++source) {
        const std::uint64_t committed = shared.producers[source].committed.load();
        if (shared.delivered[source].load(std::memory_order_relaxed) != committed) {
          complete = false;
        }
      }
      if (complete) {
        shared.drained.store(1, std::memory_order_release);
        return 0;
      }
    }
    if (++idle % 64 == 0) (void)consumer->wait(std::chrono::milliseconds(1));
  }
}

void run_killed_consumers(std::uint32_t sources) {
  TempDir dir;
  const std::uint64_t seed = kinds_test::test_seed();
  Rng rng(seed);
  const std::uint64_t generations = kinds_test::scaled(200, 40);
  auto channel = Channel::create(kName, crash_options(dir));
  ASSERT_TRUE(channel) << channel.error().message();
  Shared<ConsumerShared> shared;
  kinds_test::Watchdog watchdog(kWatchdogSeconds, "the killed-consumers crash test");
  std::vector<std::unique_ptr<ChildProcess>> producers;
  for (std::uint32_t source = 0; source < sources; ++source) {
    ProducerPlan plan;
    plan.source = source;
    plan.count = UINT64_MAX;
    plan.spin_before_commit = true;
    plan.seed = seed;
    producers.push_back(std::make_unique<ChildProcess>([&, plan] {
      return run_producer(dir, plan, shared->producers[plan.source], shared->message,
                          &shared->stop);
    }));
  }

  // Every producer must have committed something before the end (a slow machine may start one
  // late): add generations until then.
  const auto all_committed = [&] {
    for (std::uint32_t source = 0; source < sources; ++source) {
      if (shared->producers[source].committed.load(std::memory_order_acquire) == 0) return false;
    }
    return true;
  };
  constexpr std::uint64_t kExtraGenerationsMax = 10'000;
  for (std::uint64_t generation = 0;
       generation < generations ||
       (!all_committed() && generation < generations + kExtraGenerationsMax);
       ++generation) {
    SCOPED_TRACE("generation " + std::to_string(generation));
    ChildProcess consumer([&, generation] {
      return run_consumer_generation(dir, *shared, sources, seed + generation, false);
    });
    std::int64_t delay_us = 0;
    switch (rng.below(3)) {
      case 0:
        delay_us = static_cast<std::int64_t>(rng.below(300));
        break;
      case 1:
        delay_us = static_cast<std::int64_t>(rng.below(3000));
        break;
      default:
        delay_us = static_cast<std::int64_t>(rng.below(15000));
        break;
    }
    kinds_test::spin_for_ns(delay_us * 1000 / 4);  // Sleep mostly: leave the cores to children.
    usleep(static_cast<useconds_t>(delay_us * 3 / 4));
    const kinds_test::ChildStatus status = consumer.kill_and_wait();
    ASSERT_TRUE(shared->message.empty()) << shared->message.get();
    ASSERT_TRUE(status.signal == SIGKILL) << "consumer " << status.describe();
  }
  // The producers stop; a last consumer reads everything that is left.
  shared->stop.store(1, std::memory_order_release);
  for (auto& producer : producers) {
    const kinds_test::ChildStatus status = producer->wait();
    ASSERT_TRUE(status.ok()) << "producer " << status.describe() << ": " << shared->message.get();
  }
  ChildProcess last(
      [&] { return run_consumer_generation(dir, *shared, sources, seed + generations, true); });
  // It has everything it needs: no progress for kHangNs is a stall, reported with the channel.
  std::uint64_t last_head = channel->header()->consumer.head_position.load();
  std::int64_t last_progress = kinds_test::monotonic_ns();
  while (!last.poll_exited()) {
    const std::uint64_t head = channel->header()->consumer.head_position.load();
    const std::int64_t now = kinds_test::monotonic_ns();
    if (head != last_head) {
      last_head = head;
      last_progress = now;
    }
    if (now - last_progress > kHangNs) {
      ADD_FAILURE() << "the last consumer stalls: " << kinds_test::describe_channel(*channel)
                    << "\nring words after the head:"
                    << kinds_test::dump_ring(*channel, head, 0, 256);
      last.kill_and_wait();
      return;
    }
    usleep(1000);
  }
  const kinds_test::ChildStatus status = last.wait();
  EXPECT_TRUE(status.ok()) << "last consumer " << status.describe() << ": "
                           << shared->message.get();
  EXPECT_EQ(shared->drained.load(), 1U);
  for (std::uint32_t source = 0; source < sources; ++source) {
    EXPECT_EQ(shared->delivered[source].load(), shared->producers[source].committed.load())
        << "producer " << source;
    EXPECT_GT(shared->producers[source].committed.load(), 0U);
  }
  const detail::ChannelHeader& header = *channel->header();
  EXPECT_EQ(header.consumer.head_position.load(), header.producer.tail_position.load())
      << kinds_test::describe_channel(*channel);
}

TEST(MpscCrashTest, KilledConsumerIsReplacedWithOneProducer) { run_killed_consumers(1); }

TEST(MpscCrashTest, KilledConsumerIsReplacedWithTwoProducers) { run_killed_consumers(2); }

}  // namespace
}  // namespace weft
