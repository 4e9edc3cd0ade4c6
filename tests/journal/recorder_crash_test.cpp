// SIGKILL the recorder at random points under heavy writes, many times: after every restart each
// record whose position was reported durable is in the journal and intact, and the journal holds
// no duplicate and no corrupt record.
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "journal_test_support.hpp"
#include "support/test_support.hpp"
#include "weft/journal.hpp"
#include "weft/recorder.hpp"
#include "weft/spsc.hpp"

namespace weft::test {
namespace {

RecorderOptions crash_options(const std::string& shm_dir) {
  RecorderOptions options;
  options.shm_dir = shm_dir;
  options.journal.segment_bytes = 256 * 1024;  // Small: kills land during roll-overs too.
  options.journal.buffer_bytes = 64 * 1024;
  options.journal.buffers = 4;
  options.journal.spare_segments = 1;
  options.journal.retain_bytes = 0;
  options.idle_sleep = std::chrono::milliseconds(2);
  return options;
}

// The recorder process: runs until killed (or, with `drain_then_exit`, until it has everything
// the producer committed durable).
int recorder_main(const std::string& shm_dir, const std::string& journal_dir,
                  std::atomic<std::uint64_t>* final_position) {
  auto recorder = Recorder::open("crash", journal_dir, crash_options(shm_dir));
  if (!recorder) {
    std::fprintf(stderr, "recorder: %s\n", recorder.error().message().c_str());
    return 3;
  }
  for (;;) {
    auto moved = recorder->step();
    if (!moved) {
      std::fprintf(stderr, "recorder: %s\n", moved.error().message().c_str());
      return 4;
    }
    if (final_position != nullptr) {
      // Acquire: pairs with the parent's release store once it stopped producing.
      const std::uint64_t end = final_position->load(std::memory_order_acquire);
      if (end != 0 && recorder->stats().durable_position >= end) return 0;
      if (end != 0 && *moved == 0) {
        if (!recorder->sync()) return 5;
      }
    }
    if (*moved == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void run_crash_test(const std::string& journal_dir, const TempDir& shm, std::uint64_t iterations) {
  const std::uint64_t seed = test_seed();
  Rng rng(seed);
  auto producer = SpscProducer::create("crash", shm.channel_options(1 << 18));
  ASSERT_TRUE(producer) << producer.error().message();
  SharedBlock<std::atomic<std::uint64_t>> final_position;
  // Relaxed: initialisation before any child exists.
  final_position->store(0, std::memory_order_relaxed);

  std::vector<std::uint64_t> ends;  // ends[s - 1]: channel end position of record s.
  std::uint64_t durable_sequence_reported = 0;
  std::vector<std::byte> record;
  const auto send_for = [&](std::chrono::microseconds duration) {
    const auto until = std::chrono::steady_clock::now() + duration;
    while (std::chrono::steady_clock::now() < until) {
      for (int burst = 0; burst < 64; ++burst) {
        const std::uint64_t sequence = ends.size() + 1;
        record.resize(record_bytes_for(seed, sequence, 1000));
        write_record(record, sequence);
        if (producer->try_send(record) != SendStatus::kOk) break;
        ends.push_back(producer->position());
      }
      // What the recorder says is durable now: every record ending at or below it.
      const std::uint64_t durable = durable_position(producer->channel());
      const auto reached = std::upper_bound(ends.begin(), ends.end(), durable) - ends.begin();
      durable_sequence_reported =
          std::max(durable_sequence_reported, static_cast<std::uint64_t>(reached));
      std::this_thread::yield();
    }
  };

  for (std::uint64_t iteration = 0; iteration < iterations; ++iteration) {
    ChildProcess child([&] { return recorder_main(shm.path(), journal_dir, nullptr); });
    send_for(std::chrono::microseconds(rng.between(0, 30'000)));
    const ChildStatus status = child.kill_and_wait();
    ASSERT_TRUE(status.signal == SIGKILL || status.ok())
        << "iteration " << iteration << ": recorder " << status.describe();
  }
  // A last recorder drains the channel and exits.
  // Release: the records before it are committed; pairs with the child's acquire load.
  final_position->store(producer->position(), std::memory_order_release);
  ChildProcess last([&] { return recorder_main(shm.path(), journal_dir, &*final_position); });
  const ChildStatus status = last.wait();
  ASSERT_TRUE(status.ok()) << status.describe();
  const std::uint64_t durable_final = durable_position(producer->channel());
  EXPECT_EQ(durable_final, producer->position());

  // The journal: no corrupt record, no duplicate, every reported-durable record present, and
  // records in channel order.
  auto report = verify_journal(journal_dir);
  ASSERT_TRUE(report) << report.error().message();
  ASSERT_FALSE(report->corrupted);
  ASSERT_TRUE(report->issues.empty()) << report->issues[0].what;
  auto reader = JournalReader::open(journal_dir, 1);
  ASSERT_TRUE(reader) << reader.error().message();
  JournalRecord entry;
  std::vector<bool> present(ends.size() + 1, false);
  std::uint64_t previous = 0;
  std::uint64_t records = 0;
  while (reader->next(entry) == ReadStatus::kRecord) {
    const std::uint64_t sequence = record_sequence(entry.payload);
    ASSERT_GE(sequence, 1u);
    ASSERT_LE(sequence, ends.size());
    ASSERT_EQ(check_record(entry.payload, sequence, record_bytes_for(seed, sequence, 1000)), "");
    ASSERT_FALSE(present[sequence]) << "record " << sequence << " is in the journal twice";
    ASSERT_GT(sequence, previous) << "out of order";
    ASSERT_EQ(entry.source_position, ends[sequence - 1]);
    present[sequence] = true;
    previous = sequence;
    ++records;
  }
  for (std::uint64_t sequence = 1; sequence <= durable_sequence_reported; ++sequence) {
    ASSERT_TRUE(present[sequence]) << "record " << sequence << " was reported durable (up to "
                                   << durable_sequence_reported << ") but is missing";
  }
  // SPSC: the ring keeps what is not durable, so a new recorder journals it: nothing is lost.
  EXPECT_EQ(records, ends.size());
  std::printf(
      "[ INFO     ] %llu iterations, %zu records sent, %llu journaled, %llu reported "
      "durable before a kill\n",
      static_cast<unsigned long long>(iterations), ends.size(),
      static_cast<unsigned long long>(records),
      static_cast<unsigned long long>(durable_sequence_reported));
}

TEST(RecorderCrash, SigkillUnderHeavyWritesLosesNoDurableRecordAndDuplicatesNone) {
  TempDir shm;
  run_crash_test(shm.path() + "/journal", shm, scaled(100, 10));
}

TEST(RecorderCrash, SigkillWithRealFsync) {
  TempDir shm;
  DiskDir disk;
  run_crash_test(disk.path() + "/journal", shm, scaled(20, 5));
}

}  // namespace
}  // namespace weft::test
