// The recorder: channel -> journal, the durable position, waiting for durability, durable-only
// reads, restart without duplicates, and the weft-recorder program.
#include "weft/recorder.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "journal_test_support.hpp"
#include "support/test_support.hpp"
#include "weft/broadcast.hpp"
#include "weft/journal.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"

namespace weft::test {
namespace {

RecorderOptions recorder_options(const TempDir& shm) {
  RecorderOptions options;
  options.shm_dir = shm.path();
  options.journal.segment_bytes = 256 * 1024;
  options.journal.buffer_bytes = 64 * 1024;
  options.journal.buffers = 4;
  options.journal.spare_segments = 0;
  options.idle_sleep = std::chrono::milliseconds(5);
  return options;
}

// Runs a recorder on its own thread until stopped.
class RecorderThread {
 public:
  explicit RecorderThread(Recorder&& recorder) : recorder_(std::move(recorder)) {
    thread_ = std::thread([this] { result_ = recorder_.run(stop_); });
  }
  ~RecorderThread() { stop(); }
  RecorderThread(const RecorderThread&) = delete;
  RecorderThread& operator=(const RecorderThread&) = delete;
  void stop() {
    stop_.store(true, std::memory_order_relaxed);  // Relaxed: a request; see Recorder::run.
    if (thread_.joinable()) thread_.join();
  }
  Recorder& recorder() { return recorder_; }
  const Result<void>& result() const { return result_; }

 private:
  Recorder recorder_;
  std::atomic<bool> stop_{false};
  Result<void> result_;
  std::thread thread_;
};

TEST(RecorderTest, RecordsAChannelAndPublishesTheDurablePosition) {
  TempDir shm;
  const std::uint64_t seed = test_seed();
  auto producer = SpscProducer::create("rec", shm.channel_options(1 << 16));
  ASSERT_TRUE(producer) << producer.error().message();
  EXPECT_EQ(durable_position(producer->channel()), 0u);
  const std::string dir = shm.path() + "/journal";
  auto recorder = Recorder::open("rec", dir, recorder_options(shm));
  ASSERT_TRUE(recorder) << recorder.error().message();
  RecorderThread running(std::move(*recorder));
  const std::uint64_t count = scaled(3000, 300);
  std::vector<std::byte> payload;
  for (std::uint64_t sequence = 1; sequence <= count; ++sequence) {
    payload_for(seed, sequence, payload);
    while (producer->try_send(payload) != SendStatus::kOk) std::this_thread::yield();
    if (sequence % 500 == 0) {
      // Every record so far becomes durable; the producer can wait for it.
      ASSERT_EQ(wait_durable(producer->channel(), producer->position(), std::chrono::seconds(30)),
                WaitStatus::kReady);
      EXPECT_GE(durable_position(producer->channel()), producer->position());
    }
  }
  ASSERT_EQ(wait_durable(producer->channel(), producer->position(), std::chrono::seconds(30),
                         DurableWait::kSpin),
            WaitStatus::kReady);
  const RecorderStatus status = recorder_status(producer->channel());
  EXPECT_EQ(status.state, PeerState::kAlive);
  EXPECT_EQ(status.durable_position, producer->position());
  EXPECT_EQ(status.durable_sequence, count);
  running.stop();
  ASSERT_TRUE(running.result()) << running.result().error().message();
  const RecorderStatus after = recorder_status(producer->channel());
  EXPECT_EQ(after.records_durable, count);
  EXPECT_GE(after.flushes, 1u);
  EXPECT_EQ(after.errors, 0u);
  EXPECT_EQ(after.sync, JournalSync::kNone) << "tmpfs: no fsync";
  expect_replay(dir, 1, count, seed);
  // Journal records carry each record's channel end position, ascending.
  auto reader = JournalReader::open(dir, 1);
  ASSERT_TRUE(reader);
  JournalRecord record;
  std::uint64_t last = 0;
  while (reader->next(record) == ReadStatus::kRecord) {
    EXPECT_GT(record.source_position, last);
    EXPECT_GT(record.timestamp_ns, 0);
    last = record.source_position;
  }
  EXPECT_EQ(last, producer->position());
}

TEST(RecorderTest, RestartSkipsWhatTheJournalHolds) {
  TempDir shm;
  const std::uint64_t seed = test_seed();
  auto producer = SpscProducer::create("rec", shm.channel_options(1 << 16));
  ASSERT_TRUE(producer);
  const std::string dir = shm.path() + "/journal";
  std::vector<std::byte> payload;
  std::uint64_t sequence = 0;
  for (int round = 0; round < 3; ++round) {
    auto recorder = Recorder::open("rec", dir, recorder_options(shm));
    ASSERT_TRUE(recorder) << recorder.error().message();
    for (int i = 0; i < 100; ++i) {
      payload_for(seed, ++sequence, payload);
      ASSERT_EQ(producer->try_send(payload), SendStatus::kOk);
      ASSERT_TRUE(recorder->step());
    }
    ASSERT_TRUE(recorder->sync());
    EXPECT_EQ(durable_position(producer->channel()), producer->position());
  }
  expect_replay(dir, 1, sequence, seed);
}

TEST(RecorderTest, ProducerWaitTimesOutWithoutARecorder) {
  TempDir shm;
  auto producer = SpscProducer::create("rec", shm.channel_options());
  ASSERT_TRUE(producer);
  std::vector<std::byte> payload(10);
  ASSERT_EQ(producer->try_send(payload), SendStatus::kOk);
  EXPECT_EQ(wait_durable(producer->channel(), producer->position(), std::chrono::milliseconds(20)),
            WaitStatus::kTimedOut);
  EXPECT_EQ(wait_durable(producer->channel(), producer->position(), std::chrono::milliseconds(5),
                         DurableWait::kSpin),
            WaitStatus::kTimedOut);
  EXPECT_EQ(recorder_status(producer->channel()).state, PeerState::kNone);
}

TEST(RecorderTest, ClearErrors) {
  TempDir shm;
  auto missing = Recorder::open("no-such-channel", shm.path() + "/j", recorder_options(shm));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  EXPECT_NE(missing.error().message().find("no-such-channel"), std::string::npos);
  auto producer = SpscProducer::create("rec", shm.channel_options());
  ASSERT_TRUE(producer);
  auto first = Recorder::open("rec", shm.path() + "/j", recorder_options(shm));
  ASSERT_TRUE(first) << first.error().message();
  auto second = Recorder::open("rec", shm.path() + "/j2", recorder_options(shm));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kBusy);
  EXPECT_NE(second.error().message().find("recorder"), std::string::npos)
      << second.error().message();
}

TEST(RecorderTest, MpscChannelIsRecorded) {
  TempDir shm;
  ChannelOptions options = shm.channel_options(1 << 16);
  options.kind = ChannelKind::kMpsc;
  auto producer = MpscProducer::create("m", options);
  ASSERT_TRUE(producer) << producer.error().message();
  auto recorder = Recorder::open("m", shm.path() + "/j", recorder_options(shm));
  ASSERT_TRUE(recorder) << recorder.error().message();
  std::vector<std::byte> payload;
  for (std::uint64_t sequence = 1; sequence <= 200; ++sequence) {
    payload_for(9, sequence, payload);
    while (producer->try_send(payload) != SendStatus::kOk) ASSERT_TRUE(recorder->step());
  }
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(recorder->step());
  ASSERT_TRUE(recorder->sync());
  EXPECT_EQ(recorder->stats().records, 200u);
  expect_replay(shm.path() + "/j", 1, 200, 9);
}

TEST(RecorderTest, BroadcastConsumerCanReadOnlyDurableRecords) {
  TempDir shm;
  ChannelOptions options = shm.channel_options(1 << 16);
  options.kind = ChannelKind::kBroadcast;
  auto producer = BroadcastProducer::create("b", options);
  ASSERT_TRUE(producer) << producer.error().message();
  auto recorder = Recorder::open("b", shm.path() + "/j", recorder_options(shm));
  ASSERT_TRUE(recorder) << recorder.error().message();
  auto reader = BroadcastConsumer::open("b", shm.open_options());
  ASSERT_TRUE(reader) << reader.error().message();
  std::vector<std::byte> payload(32);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(producer->try_send(payload), SendStatus::kOk);
  std::size_t seen = 0;
  const auto count = [&seen](std::span<const std::byte>) { ++seen; };
  EXPECT_EQ(poll_durable(*reader, count), 0u) << "nothing is durable before the recorder runs";
  ASSERT_TRUE(recorder->step());
  ASSERT_TRUE(recorder->sync());
  EXPECT_EQ(poll_durable(*reader, count), 10u);
  EXPECT_EQ(seen, 10u);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(producer->try_send(payload), SendStatus::kOk);
  EXPECT_EQ(poll_durable(*reader, count), 0u) << "committed, not durable yet";
  ASSERT_TRUE(recorder->step());
  ASSERT_TRUE(recorder->sync());
  EXPECT_EQ(poll_durable(*reader, count), 5u);
}

#ifdef WEFT_RECORDER_PROGRAM
// Runs weft-recorder with `args`; returns its exit status (or -signal).
int run_program(const std::vector<std::string>& args, pid_t* pid_out = nullptr,
                bool wait_for_it = true) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    std::string program = WEFT_RECORDER_PROGRAM;
    argv.push_back(program.data());
    std::vector<std::string> copies = args;
    for (std::string& arg : copies) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(program.c_str(), argv.data());
    _exit(127);
  }
  if (pid_out != nullptr) *pid_out = pid;
  if (!wait_for_it) return 0;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

TEST(RecorderProgram, UsageErrorsExitTwoAndAMissingChannelExitsOne) {
  TempDir shm;
  EXPECT_EQ(run_program({"--journal-root", shm.path()}), 2) << "--channel is required";
  EXPECT_EQ(run_program({"--channel", "x", "--journal-root", shm.path(), "--bogus"}), 2);
  EXPECT_EQ(run_program({"--channel", "missing", "--journal-root", shm.path() + "/j", "--shm-dir",
                         shm.path()}),
            1);
}

TEST(RecorderProgram, ShardsRecordAndStopCleanlyOnSigterm) {
  TempDir shm;
  auto a = SpscProducer::create("a", shm.channel_options());
  auto b = SpscProducer::create("b", shm.channel_options());
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  pid_t pid = 0;
  run_program({"--channel", "a", "--channel", "b", "--journal-root", shm.path() + "/journals",
               "--shm-dir", shm.path()},
              &pid, false);
  std::vector<std::byte> payload;
  for (std::uint64_t sequence = 1; sequence <= 100; ++sequence) {
    payload_for(5, sequence, payload);
    while (a->try_send(payload) != SendStatus::kOk) std::this_thread::yield();
    while (b->try_send(payload) != SendStatus::kOk) std::this_thread::yield();
  }
  ASSERT_EQ(wait_durable(a->channel(), a->position(), std::chrono::seconds(30)),
            WaitStatus::kReady);
  ASSERT_EQ(wait_durable(b->channel(), b->position(), std::chrono::seconds(30)),
            WaitStatus::kReady);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  expect_replay(shm.path() + "/journals/a", 1, 100, 5);
  expect_replay(shm.path() + "/journals/b", 1, 100, 5);
}
#endif

}  // namespace
}  // namespace weft::test
