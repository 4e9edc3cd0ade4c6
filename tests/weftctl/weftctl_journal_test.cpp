// weftctl with a journal attached: show, ls and metrics report the recorder, the durable position
// and lag, and the batcher's figures; journal ls|verify|dump read the journal without changing it;
// a dead recorder with records not yet durable makes the channel stuck; a corrupt record fails
// verify.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_support.hpp"
#include "weft/adaptive_policy.hpp"
#include "weft/journal.hpp"
#include "weft/recorder.hpp"
#include "weft/spsc.hpp"
#include "weftctl_test_support.hpp"

namespace weft::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

std::string hex_of(std::string_view text) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (const char c : text) {
    const auto b = static_cast<unsigned char>(c);
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

class WeftctlJournalTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string root_ = dir_.path() + "/journals";

  RecorderOptions recorder_options() const {
    RecorderOptions options;
    options.shm_dir = dir_.path();
    options.journal.segment_bytes = 256 * 1024;
    options.journal.buffer_bytes = 64 * 1024;
    options.journal.buffers = 4;
    options.journal.spare_segments = 0;
    options.idle_sleep = std::chrono::milliseconds(5);
    return options;
  }
  Ran ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--dir", dir_.path()});
    return run_weftctl(args);
  }
  json ctl_json(std::vector<std::string> args, int expected_exit = 0) {
    const Ran ran = ctl(args);
    EXPECT_EQ(ran.exit_code, expected_exit) << ran.describe();
    try {
      return json::parse(ran.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not JSON: " << e.what() << "\n" << ran.describe();
      return json();
    }
  }
};

TEST_F(WeftctlJournalTest, ShowLsAndMetricsReportTheRecorder) {
  auto producer = SpscProducer::create("orders", dir_.channel_options(1 << 16));
  ASSERT_TRUE(producer) << producer.error().message();
  // The adaptive batcher, whose choices include an io-wq cap (two workers until a trial shows
  // that more flushes in flight pay).
  RecorderOptions options = recorder_options();
  options.journal.policy = make_adaptive_flush(AdaptiveFlushOptions{});
  auto recorder = Recorder::open("orders", root_ + "/orders", std::move(options));
  ASSERT_TRUE(recorder) << recorder.error().message();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(producer->try_send(bytes_of("record " + std::to_string(i))), SendStatus::kOk);
  }
  ASSERT_TRUE(recorder->step());
  ASSERT_TRUE(recorder->sync());
  const std::uint64_t durable_at = producer->position();
  // Five more that the recorder has not seen: durable lag.
  for (int i = 10; i < 15; ++i) {
    ASSERT_EQ(producer->try_send(bytes_of("record " + std::to_string(i))), SendStatus::kOk);
  }
  const json show = ctl_json({"show", "orders", "--json"});
  ASSERT_TRUE(show["journal"].is_object()) << show.dump(2);
  const json& j = show["journal"];
  EXPECT_EQ(j["durable_position"], durable_at);
  EXPECT_EQ(j["durable_sequence"], 10);
  EXPECT_EQ(j["durable_lag_bytes"], producer->position() - durable_at);
  EXPECT_EQ(j["records_appended"], 10);
  EXPECT_EQ(j["recorder"]["pid"], getpid());
  EXPECT_EQ(j["recorder"]["liveness"], "alive");
  EXPECT_GE(j["flushes"].get<std::uint64_t>(), 1U);
  EXPECT_EQ(j["records_durable"], 10);
  EXPECT_TRUE(j["batcher"]["gather_bytes"].is_number());
  EXPECT_TRUE(j["batcher"]["max_in_flight"].is_number());
  EXPECT_EQ(j["batcher"]["max_io_workers"], 2);
  const Ran text = ctl({"show", "orders"});
  EXPECT_NE(text.out.find("batcher:"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("durable position " + std::to_string(durable_at)), std::string::npos)
      << text.out;

  const json ls = ctl_json({"ls", "--json", "--interval", "0"});
  ASSERT_EQ(ls["channels"].size(), 1U);
  EXPECT_EQ(ls["channels"][0]["durable_lag_bytes"], producer->position() - durable_at);

  const Ran metrics = ctl({"metrics", "--journal-root", root_});
  EXPECT_EQ(metrics.exit_code, 0) << metrics.describe();
  for (const std::string& line : {
           "weft_channel_durable_bytes_total{channel=\"orders\"} " + std::to_string(durable_at),
           "weft_channel_durable_lag_bytes{channel=\"orders\"} " +
               std::to_string(producer->position() - durable_at),
           std::string("weft_recorder_up{channel=\"orders\"} 1"),
           std::string("weft_journal_durable_records_total{channel=\"orders\"} 10"),
           std::string("weft_batcher_gather_bytes{channel=\"orders\"}"),
           std::string("weft_batcher_max_io_workers{channel=\"orders\"} 2"),
           "weft_journal_last_sequence{journal=\"" + root_ + "/orders\"} 10",
           "weft_journal_segments{journal=\"" + root_ + "/orders\"} ",
       }) {
    EXPECT_NE(metrics.out.find(line), std::string::npos) << "missing " << line << "\n"
                                                         << metrics.out;
  }
  if (access("/usr/bin/promtool", X_OK) == 0) {
    const std::string file = dir_.path() + "/metrics.txt";
    std::ofstream(file) << metrics.out;
    const Ran check = run_program({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + file});
    EXPECT_EQ(check.exit_code, 0) << check.describe();
  }
}

TEST_F(WeftctlJournalTest, JournalLsVerifyDump) {
  auto producer = SpscProducer::create("trades", dir_.channel_options(1 << 16));
  ASSERT_TRUE(producer);
  {
    auto recorder = Recorder::open("trades", root_ + "/trades", recorder_options());
    ASSERT_TRUE(recorder) << recorder.error().message();
    for (int i = 0; i < 40; ++i) {
      ASSERT_EQ(producer->try_send(bytes_of("trade " + std::to_string(i))), SendStatus::kOk);
      if (i % 10 == 9) {
        ASSERT_TRUE(recorder->step());
      }
    }
    ASSERT_TRUE(recorder->sync());
  }
  const json ls = ctl_json({"journal", "ls", root_, "--json"});
  ASSERT_EQ(ls["journals"].size(), 1U) << ls.dump(2);
  const json& j = ls["journals"][0];
  EXPECT_EQ(j["channel"], "trades");
  EXPECT_EQ(j["first_sequence"], 1);
  EXPECT_EQ(j["last_sequence"], 40);
  EXPECT_EQ(j["records"], 40);
  EXPECT_EQ(j["durable_sequence"], 40);  // Published in the channel header.
  EXPECT_GE(j["segments"].size(), 1U);
  // The journal directory itself works too.
  EXPECT_EQ(ctl_json({"journal", "ls", root_ + "/trades", "--json"})["journals"].size(), 1U);

  const json verify = ctl_json({"journal", "verify", root_, "--json"});
  EXPECT_EQ(verify["ok"], true) << verify.dump(2);
  EXPECT_EQ(verify["journals"][0]["records"], 40);

  const json dump =
      ctl_json({"journal", "dump", root_ + "/trades", "--from", "5", "--count", "3", "--json"});
  ASSERT_EQ(dump["records"].size(), 3U) << dump.dump(2);
  EXPECT_EQ(dump["records"][0]["sequence"], 5);
  EXPECT_EQ(dump["records"][0]["payload_hex"], hex_of("trade 4"));
  EXPECT_EQ(dump["records"][2]["sequence"], 7);
  const Ran text = ctl({"journal", "dump", root_ + "/trades", "--count", "2"});
  EXPECT_EQ(text.exit_code, 0) << text.describe();
  EXPECT_NE(text.out.find("\"trade 0\""), std::string::npos) << text.out;

  // Flip a byte in the middle of the first segment: the records after it make it corruption.
  const json segments = j["segments"];
  const std::string segment = segments[0]["path"].get<std::string>();
  const std::uint64_t middle = 4096 + segments[0]["bytes"].get<std::uint64_t>() / 2;
  std::fstream file(segment, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(static_cast<std::streamoff>(middle));
  char c = 0;
  file.get(c);
  file.seekp(static_cast<std::streamoff>(middle));
  file.put(static_cast<char>(c ^ 0x5a));
  file.close();
  const json bad = ctl_json({"journal", "verify", root_, "--json"}, 1);
  EXPECT_EQ(bad["ok"], false) << bad.dump(2);
  EXPECT_GE(bad["journals"][0]["issues"].size(), 1U) << bad.dump(2);
  EXPECT_EQ(ctl({"journal", "verify", root_}).exit_code, 1);

  // Usage and missing directories.
  EXPECT_EQ(ctl({"journal"}).exit_code, 2);
  EXPECT_EQ(ctl({"journal", "ls"}).exit_code, 2);
  EXPECT_EQ(ctl({"journal", "ls", dir_.path() + "/nowhere"}).exit_code, 1);
  EXPECT_EQ(ctl({"journal", "dump", dir_.path() + "/nowhere"}).exit_code, 1);
}

TEST_F(WeftctlJournalTest, ADeadRecorderWithRecordsNotDurableIsStuck) {
  auto producer = SpscProducer::create("audit", dir_.channel_options(1 << 16));
  ASSERT_TRUE(producer);
  SharedBlock<std::atomic<int>> recorded;
  ChildProcess child([&] {
    auto recorder = Recorder::open("audit", root_ + "/audit", recorder_options());
    if (!recorder) return 1;
    while (recorder->stats().durable_position == 0) {
      if (!recorder->step() || !recorder->sync()) return 2;
    }
    recorded->store(1);
    pause();
    return 0;
  });
  ASSERT_EQ(producer->try_send(bytes_of("first")), SendStatus::kOk);
  while (recorded->load() == 0) {
    ASSERT_FALSE(child.poll_exited()) << child.status().describe();
    usleep(1000);
  }
  child.kill_and_wait();
  ASSERT_EQ(producer->try_send(bytes_of("never durable")), SendStatus::kOk);
  const json ls = ctl_json({"ls", "--json", "--interval", "10"}, 1);
  ASSERT_EQ(ls["channels"].size(), 1U);
  EXPECT_EQ(ls["channels"][0]["status"], "stuck") << ls.dump(2);
  EXPECT_NE(ls["channels"][0]["reason"].get<std::string>().find("recorder"), std::string::npos);
  const json show = ctl_json({"show", "audit", "--json"}, 1);
  EXPECT_EQ(show["journal"]["recorder"]["liveness"], "dead");
}

}  // namespace
}  // namespace weft::test
