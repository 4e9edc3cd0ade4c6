// weftctl against live channels of every kind, a stale channel and corrupt ones: every command,
// its --json output parsed back, its exit status (0 all well, 1 a problem, 2 a usage error), and
// the promise that reading a channel never changes a byte of it.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_support.hpp"
#include "weft/broadcast.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/inspect.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"
#include "weftctl_test_support.hpp"

namespace weft::test {
namespace {

using nlohmann::json;

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

std::string hex_of(std::string_view text) {
  std::string out;
  for (const char c : text) {
    char buffer[3];
    std::snprintf(buffer, sizeof buffer, "%02x", static_cast<unsigned char>(c));
    out += buffer;
  }
  return out;
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

class WeftctlTest : public ::testing::Test {
 protected:
  TempDir dir_;

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
  ChannelOptions options(ChannelKind kind, std::uint64_t capacity = 1 << 16) {
    ChannelOptions o = dir_.channel_options(capacity);
    o.kind = kind;
    o.producers_max = 4;
    o.consumers_max = 4;
    return o;
  }
};

// ---- ls, show, dump, verify on live channels of every kind -----------------------------------

TEST_F(WeftctlTest, LsListsLiveChannelsOfEveryKind) {
  auto spsc = SpscProducer::create("a-spsc", options(ChannelKind::kSpsc));
  ASSERT_TRUE(spsc) << spsc.error().message();
  auto spsc_c = SpscConsumer::open("a-spsc", dir_.open_options());
  ASSERT_TRUE(spsc_c) << spsc_c.error().message();
  auto mpsc = MpscProducer::create("b-mpsc", options(ChannelKind::kMpsc));
  ASSERT_TRUE(mpsc) << mpsc.error().message();
  auto mpsc_c = MpscConsumer::open("b-mpsc", dir_.open_options());
  ASSERT_TRUE(mpsc_c) << mpsc_c.error().message();
  auto bc = BroadcastProducer::create("c-bcast", options(ChannelKind::kBroadcast));
  ASSERT_TRUE(bc) << bc.error().message();
  auto bc_c1 = BroadcastConsumer::open("c-bcast", dir_.open_options());
  auto bc_c2 = BroadcastConsumer::open("c-bcast", dir_.open_options());
  ASSERT_TRUE(bc_c1 && bc_c2);
  ChannelOptions lossy_options = options(ChannelKind::kBroadcast);
  lossy_options.lossy = true;
  auto lossy = BroadcastProducer::create("d-lossy", lossy_options);
  ASSERT_TRUE(lossy) << lossy.error().message();

  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(spsc->try_send(bytes_of("0123456789abcdef")), SendStatus::kOk);
    ASSERT_EQ(mpsc->try_send(bytes_of("0123456789abcdef")), SendStatus::kOk);
    ASSERT_EQ(bc->try_send(bytes_of("0123456789abcdef")), SendStatus::kOk);
    ASSERT_EQ(lossy->try_send(bytes_of("0123456789abcdef")), SendStatus::kOk);
  }
  // One consumer of the broadcast reads one record: the other lags by three.
  ASSERT_EQ(bc_c1->poll([](std::span<const std::byte>) {}, 1).count, 1U);

  const json doc = ctl_json({"ls", "--json", "--interval", "20"});
  ASSERT_EQ(doc["channels"].size(), 4U) << doc.dump(2);
  const json& a = doc["channels"][0];
  EXPECT_EQ(a["name"], "a-spsc");
  EXPECT_EQ(a["kind"], "spsc");
  EXPECT_EQ(a["producers_alive"], 1);
  EXPECT_EQ(a["consumers_alive"], 1);
  EXPECT_EQ(a["lag_records"], 3);
  EXPECT_EQ(a["lag_bytes"], 3 * detail::record_span_bytes(16));
  EXPECT_EQ(a["used_bytes"], 3 * detail::record_span_bytes(16));
  EXPECT_EQ(a["capacity_bytes"], 1 << 16);
  EXPECT_EQ(a["status"], "ok");
  EXPECT_TRUE(a["messages_per_s"].is_number());
  const json& b = doc["channels"][1];
  EXPECT_EQ(b["kind"], "mpsc");
  EXPECT_EQ(b["lag_records"], 3);
  EXPECT_EQ(b["producers_alive"], 1);
  const json& c = doc["channels"][2];
  EXPECT_EQ(c["kind"], "broadcast");
  EXPECT_EQ(c["lossy"], false);
  EXPECT_EQ(c["consumers_alive"], 2);
  EXPECT_EQ(c["lag_records"], 3);  // The slowest consumer.
  EXPECT_EQ(c["lag_bytes"], 3 * detail::broadcast_span_bytes(16));
  const json& d = doc["channels"][3];
  EXPECT_EQ(d["lossy"], true);
  EXPECT_EQ(d["consumers_alive"], 0);
  EXPECT_EQ(doc["problems"], false);

  // The table names every channel and its status.
  const Ran table = ctl({"ls"});
  EXPECT_EQ(table.exit_code, 0) << table.describe();
  for (const char* name : {"a-spsc", "b-mpsc", "c-bcast", "d-lossy", "broadcast-lossy", "ok"}) {
    EXPECT_NE(table.out.find(name), std::string::npos) << name << "\n" << table.out;
  }
}

TEST_F(WeftctlTest, ShowDecodesTheWholeHeader) {
  auto producer = MpscProducer::create("m", options(ChannelKind::kMpsc));
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = MpscConsumer::open("m", dir_.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(producer->try_send(bytes_of("hello")), SendStatus::kOk);
  int seen = 0;
  ASSERT_EQ(consumer->poll([&](std::span<const std::byte>) { ++seen; }, 2).count, 2U);
  consumer->release();

  const json doc = ctl_json({"show", "m", "--json"});
  EXPECT_EQ(doc["kind"], "mpsc");
  EXPECT_EQ(doc["layout"]["capacity_bytes"], 1 << 16);
  EXPECT_EQ(doc["layout"]["producers_max"], 4);
  EXPECT_EQ(doc["layout"]["header_bytes"], detail::header_bytes_for(4, 0));
  EXPECT_EQ(doc["layout"]["creator_pid"], getpid());
  EXPECT_EQ(doc["layout"]["header_name"], "m");
  EXPECT_EQ(doc["counters"]["records_committed"], 5);
  EXPECT_EQ(doc["counters"]["records_consumed"], 2);
  EXPECT_EQ(doc["cursors"]["head_position"], consumer->position());
  EXPECT_EQ(doc["cursors"]["head_position"], 2 * detail::record_span_bytes(5));
  ASSERT_EQ(doc["producers"].size(), 1U);
  EXPECT_EQ(doc["producers"][0]["role"]["pid"], getpid());
  EXPECT_EQ(doc["producers"][0]["role"]["liveness"], "alive");
  EXPECT_EQ(doc["producers"][0]["slot"], producer->slot_index());
  EXPECT_EQ(doc["producers"][0]["records_committed"], 5);
  EXPECT_TRUE(doc["producers"][0]["chunk_start"].is_number());
  ASSERT_EQ(doc["consumers"].size(), 1U);
  EXPECT_EQ(doc["consumers"][0]["lag_records"], 3);
  EXPECT_EQ(doc["status"], "ok");
  EXPECT_TRUE(doc.contains("journal"));
  // Placement (issue 8): 4 KiB pages, no node asked for, every present page on node 0 (the only
  // node here) as the kernel reports it.
  ASSERT_TRUE(doc.contains("placement")) << doc.dump(2);
  EXPECT_EQ(doc["placement"]["page_bytes"], 4096);
  EXPECT_TRUE(doc["placement"]["node_requested"].is_null());
  EXPECT_EQ(doc["placement"]["mlock"], false);
  if (doc["placement"]["pages_known"] == true) {
    ASSERT_GE(doc["placement"]["pages_on_node"].size(), 1U);
    EXPECT_GT(doc["placement"]["pages_on_node"][0].get<std::uint64_t>(), 0U) << doc.dump(2);
  }

  const Ran text = ctl({"show", "m"});
  EXPECT_EQ(text.exit_code, 0) << text.describe();
  EXPECT_NE(text.out.find("records committed 5"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("placement:"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("pages of 4 KiB"), std::string::npos) << text.out;
}

TEST_F(WeftctlTest, DumpShowsPendingRecordsWithoutConsumingThem) {
  auto spsc = SpscProducer::create("s", options(ChannelKind::kSpsc));
  auto mpsc = MpscProducer::create("m", options(ChannelKind::kMpsc));
  auto bc = BroadcastProducer::create("b", options(ChannelKind::kBroadcast));
  ASSERT_TRUE(spsc && mpsc && bc);
  auto spsc_c = SpscConsumer::open("s", dir_.open_options());
  auto mpsc_c = MpscConsumer::open("m", dir_.open_options());
  auto bc_c = BroadcastConsumer::open("b", dir_.open_options());
  ASSERT_TRUE(spsc_c && mpsc_c && bc_c);
  const std::vector<std::string> words = {"alpha", "beta", std::string("g\0mma", 5)};
  for (const std::string& w : words) {
    ASSERT_EQ(spsc->try_send(bytes_of(w)), SendStatus::kOk);
    ASSERT_EQ(mpsc->try_send(bytes_of(w)), SendStatus::kOk);
    ASSERT_EQ(bc->try_send(bytes_of(w)), SendStatus::kOk);
  }
  for (const char* name : {"s", "m", "b"}) {
    SCOPED_TRACE(name);
    const std::string before = read_file_bytes(dir_.file(name));
    const json doc = ctl_json({"dump", name, "--json"});
    ASSERT_EQ(doc["records"].size(), 3U) << doc.dump(2);
    EXPECT_EQ(doc["complete"], true);
    for (std::size_t i = 0; i < words.size(); ++i) {
      EXPECT_EQ(doc["records"][i]["type"], "data");
      EXPECT_EQ(doc["records"][i]["length"], words[i].size());
      EXPECT_EQ(doc["records"][i]["payload_hex"], hex_of(words[i]));
      if (std::string(name) == "b") {
        EXPECT_EQ(doc["records"][i]["sequence"], i);
      }
    }
    const json limited = ctl_json({"dump", name, "--json", "--count", "2"});
    EXPECT_EQ(limited["records"].size(), 2U);
    EXPECT_EQ(limited["complete"], false);
    const Ran hex = ctl({"dump", name, "--hex"});
    EXPECT_EQ(hex.exit_code, 0) << hex.describe();
    EXPECT_NE(hex.out.find("61 6c 70 68 61"), std::string::npos) << hex.out;  // "alpha"
    const Ran text = ctl({"dump", name});
    EXPECT_NE(text.out.find("\"g\\x00mma\""), std::string::npos) << text.out;
    // Not a byte of the channel changed.
    EXPECT_EQ(read_file_bytes(dir_.file(name)), before);
  }
  // Everything is still there for the real consumers.
  std::vector<std::string> got;
  const auto collect = [&](std::span<const std::byte> r) {
    got.emplace_back(reinterpret_cast<const char*>(r.data()), r.size());
  };
  EXPECT_EQ(spsc_c->poll(collect).count, 3U);
  EXPECT_EQ(mpsc_c->poll(collect).count, 3U);
  EXPECT_EQ(bc_c->poll(collect).count, 3U);
  EXPECT_EQ(got.size(), 9U);
  EXPECT_EQ(got[2], words[2]);
  // After consumption the dump is empty.
  EXPECT_EQ(ctl_json({"dump", "s", "--json"})["records"].size(), 0U);
  // --consumer names a broadcast slot; on other kinds it is a usage error.
  EXPECT_EQ(ctl({"dump", "s", "--consumer", "0"}).exit_code, 2);
  EXPECT_EQ(ctl({"dump", "b", "--consumer", "3"}).exit_code, 1);  // A free slot.
}

TEST_F(WeftctlTest, ReadingNeverChangesTheChannel) {
  auto producer = SpscProducer::create("quiet", options(ChannelKind::kSpsc));
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = SpscConsumer::open("quiet", dir_.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  for (int i = 0; i < 10; ++i) ASSERT_EQ(producer->try_send(bytes_of("payload")), SendStatus::kOk);
  const std::string before = read_file_bytes(dir_.file("quiet"));
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"ls", "--json"},
           {"show", "quiet", "--json"},
           {"dump", "quiet", "--json"},
           {"verify", "quiet", "--json"},
           {"metrics"},
           {"watch", "quiet", "--iterations", "2", "--interval", "0.05", "--json"}}) {
    const Ran ran = ctl(args);
    EXPECT_EQ(ran.exit_code, 0) << ran.describe();
  }
  EXPECT_EQ(read_file_bytes(dir_.file("quiet")), before);
  int seen = 0;
  EXPECT_EQ(consumer->poll([&](std::span<const std::byte>) { ++seen; }).count, 10U);
}

TEST_F(WeftctlTest, VerifyPassesLiveChannelsAndReportsEachViolation) {
  auto spsc = SpscProducer::create("s", options(ChannelKind::kSpsc, 4096));
  auto bc = BroadcastProducer::create("b", options(ChannelKind::kBroadcast, 4096));
  auto mpsc = MpscProducer::create("m", options(ChannelKind::kMpsc, 4096));
  ASSERT_TRUE(spsc && bc && mpsc);
  auto spsc_c = SpscConsumer::open("s", dir_.open_options());
  auto bc_c = BroadcastConsumer::open("b", dir_.open_options());
  auto mpsc_c = MpscConsumer::open("m", dir_.open_options());
  ASSERT_TRUE(spsc_c && bc_c && mpsc_c);
  // Wrap the rings a few times so that padding records are walked too.
  for (int i = 0; i < 200; ++i) {
    const std::string payload(static_cast<std::size_t>(i % 61), 'x');
    ASSERT_EQ(spsc->try_send(bytes_of(payload)), SendStatus::kOk);
    ASSERT_EQ(bc->try_send(bytes_of(payload)), SendStatus::kOk);
    ASSERT_EQ(mpsc->try_send(bytes_of(payload)), SendStatus::kOk);
    if (i % 3 != 2) continue;
    (void)spsc_c->poll([](std::span<const std::byte>) {}, 2);
    (void)bc_c->poll([](std::span<const std::byte>) {}, 2);
    (void)mpsc_c->poll([](std::span<const std::byte>) {}, 2);
    mpsc_c->release();
  }
  for (const char* name : {"s", "b", "m"}) {
    const json doc = ctl_json({"verify", name, "--json"});
    EXPECT_EQ(doc["ok"], true) << name << ": " << doc.dump(2);
    EXPECT_EQ(doc["violations"].size(), 0U);
  }
  // Corrupt the record at the SPSC consumer's head: an unknown type.
  const std::uint64_t head = spsc_c->position();
  const std::uint64_t garbage = 0x1234567800000010ULL;
  pwrite_value(dir_.file("s"), detail::kHeaderBytes + (head & 4095), garbage);
  const json bad = ctl_json({"verify", "s", "--json"}, 1);
  EXPECT_EQ(bad["ok"], false);
  ASSERT_GE(bad["violations"].size(), 1U) << bad.dump(2);
  EXPECT_EQ(bad["violations"][0]["field"], "ring");
  EXPECT_NE(bad["violations"][0]["message"].get<std::string>().find("unknown type"),
            std::string::npos)
      << bad.dump(2);
  // Counters that claim more pending records than the ring holds (quiet channel "b" untouched;
  // use a fresh SPSC channel so the ring itself is fine).
  {
    auto quiet = SpscProducer::create("counts", options(ChannelKind::kSpsc, 4096));
    ASSERT_TRUE(quiet) << quiet.error().message();
    ASSERT_EQ(quiet->try_send(bytes_of("one")), SendStatus::kOk);
    EXPECT_EQ(ctl_json({"verify", "counts", "--json"})["ok"], true);
    pwrite_value(dir_.file("counts"), 128 + 32, std::uint64_t{1000});  // records_committed
    const json counts = ctl_json({"verify", "counts", "--json"}, 1);
    ASSERT_GE(counts["violations"].size(), 1U) << counts.dump(2);
    EXPECT_EQ(counts["violations"][0]["field"], "producer.records_committed") << counts.dump(2);
  }
  // A slot with an impossible pid and a sleepers count no channel can have.
  pwrite_value(dir_.file("m"), 384, std::uint32_t{999});  // data_sleepers
  const json bad_m = ctl_json({"verify", "m", "--json"}, 1);
  bool sleepers = false;
  for (const json& v : bad_m["violations"])
    sleepers = sleepers || v["field"] == "data_sleepers.sleepers";
  EXPECT_TRUE(sleepers) << bad_m.dump(2);
  const Ran text = ctl({"verify", "m"});
  EXPECT_EQ(text.exit_code, 1);
  EXPECT_NE(text.out.find("FAILED"), std::string::npos) << text.out;
}

// ---- corrupt and stale channels ---------------------------------------------------------------

TEST_F(WeftctlTest, CorruptHeaderGivesAClearErrorAndExitStatus1) {
  { ASSERT_TRUE(Channel::create("good", options(ChannelKind::kSpsc))); }
  { ASSERT_TRUE(Channel::create("bad", options(ChannelKind::kSpsc))); }
  { ASSERT_TRUE(Channel::create("short", options(ChannelKind::kSpsc))); }
  pwrite_value(dir_.file("bad"), 0, std::uint64_t{0x0123456789abcdefULL});  // magic
  ASSERT_EQ(truncate(dir_.file("short").c_str(), 100), 0);
  // A file that is not a channel at all.
  { std::ofstream(dir_.file("junk")) << "not a channel"; }

  const json doc = ctl_json({"ls", "--json"}, 1);
  ASSERT_EQ(doc["channels"].size(), 4U);
  EXPECT_EQ(doc["channels"][0]["name"], "bad");
  EXPECT_EQ(doc["channels"][0]["status"], "error");
  EXPECT_NE(doc["channels"][0]["error"].get<std::string>().find("magic"), std::string::npos);
  EXPECT_EQ(doc["channels"][1]["name"], "good");
  EXPECT_EQ(doc["channels"][2]["status"], "error");  // junk
  EXPECT_EQ(doc["channels"][3]["status"], "error");  // short

  for (const char* cmd : {"show", "dump", "verify", "unblock"}) {
    const Ran ran = ctl({cmd, "bad"});
    EXPECT_EQ(ran.exit_code, 1) << ran.describe();
    EXPECT_NE((ran.out + ran.err).find("magic"), std::string::npos) << ran.describe();
  }
  const Ran missing = ctl({"show", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("does not exist"), std::string::npos) << missing.describe();
  // Metrics still export the good channel and mark the bad ones down.
  const Ran metrics = ctl({"metrics"});
  EXPECT_EQ(metrics.exit_code, 1);
  EXPECT_NE(metrics.out.find("weft_channel_up{channel=\"bad\"} 0"), std::string::npos);
  EXPECT_NE(metrics.out.find("weft_channel_up{channel=\"good\"} 1"), std::string::npos);
}

TEST_F(WeftctlTest, HostileSlotValuesNeverCrashAReader) {
  {
    auto producer = MpscProducer::create("m", options(ChannelKind::kMpsc, 4096));
    ASSERT_TRUE(producer) << producer.error().message();
    ASSERT_EQ(producer->try_send(bytes_of("x")), SendStatus::kOk);
  }
  // Producer slot 0: chunk and intent ranges pointing anywhere, a pid above the kernel's limit.
  const std::uint64_t slot = detail::kSlotsOffset;
  pwrite_value(dir_.file("m"), slot + 0, std::uint32_t{0x7fffffff});
  for (std::uint64_t field = 24; field < 72; field += 8) {
    pwrite_value(dir_.file("m"), slot + field, std::uint64_t{0xfffffffffffffff0ULL - field});
  }
  // The record word at the head: length far beyond the ring.
  pwrite_value(dir_.file("m"), detail::header_bytes_for(4, 0),
               detail::make_record_word(detail::RecordType::kData, 0xfffffff0U));
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"show", "m", "--json"}, {"dump", "m", "--json"}, {"verify", "m", "--json"}}) {
    const Ran ran = ctl(args);
    EXPECT_TRUE(ran.exit_code == 0 || ran.exit_code == 1) << ran.describe();
    EXPECT_EQ(ran.signal, 0) << ran.describe();
  }
  EXPECT_EQ(ctl({"verify", "m"}).exit_code, 1);
  const Ran dump = ctl({"dump", "m"});
  EXPECT_EQ(dump.exit_code, 1);
  EXPECT_NE(dump.err.find("invalid"), std::string::npos) << dump.describe();
}

TEST_F(WeftctlTest, StaleChannelIsReportedAndCollectedButLiveOnesNeverAre) {
  // "stale": created by a child that was killed. "held": kept open by a live child process.
  // "mine": kept open by this process.
  {
    SharedBlock<std::atomic<int>> created;
    ChildProcess child([&] {
      auto p = SpscProducer::create("stale", options(ChannelKind::kSpsc));
      if (!p) return 1;
      (void)p->try_send(bytes_of("left behind"));
      created->store(1);
      pause();
      return 0;
    });
    while (created->load() == 0) {
      ASSERT_FALSE(child.poll_exited()) << child.status().describe();
      usleep(1000);
    }
    child.kill_and_wait();
  }
  SharedBlock<std::atomic<int>> ready;
  ChildProcess holder([&] {
    auto c = Channel::create("held", options(ChannelKind::kSpsc));
    if (!c) return 1;
    ready->store(1);
    pause();
    return 0;
  });
  while (ready->load() == 0) usleep(1000);
  auto mine = MpscProducer::create("mine", options(ChannelKind::kMpsc));
  ASSERT_TRUE(mine) << mine.error().message();

  const json doc = ctl_json({"ls", "--json", "--interval", "0"}, 1);
  ASSERT_EQ(doc["channels"].size(), 3U);
  EXPECT_EQ(doc["channels"][0]["name"], "held");
  EXPECT_EQ(doc["channels"][0]["status"], "ok");
  EXPECT_EQ(doc["channels"][2]["name"], "stale");
  EXPECT_EQ(doc["channels"][2]["status"], "stale");
  EXPECT_EQ(doc["channels"][2]["producers_dead"], 1);
  EXPECT_TRUE(doc["channels"][2]["messages_per_s"].is_null());  // --interval 0: no sampling.
  EXPECT_EQ(ctl({"show", "stale"}).exit_code, 1);

  const json dry = ctl_json({"gc", "--dry-run", "--json"});
  ASSERT_EQ(dry["removed"].size(), 1U);
  EXPECT_EQ(dry["removed"][0]["name"], "stale");
  EXPECT_TRUE(std::filesystem::exists(dir_.file("stale")));

  const json gc = ctl_json({"gc", "--json"});
  ASSERT_EQ(gc["removed"].size(), 1U) << gc.dump(2);
  EXPECT_EQ(gc["removed"][0]["name"], "stale");
  EXPECT_EQ(gc["kept"].size(), 2U);
  EXPECT_FALSE(std::filesystem::exists(dir_.file("stale")));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("held")));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("mine")));
  // Now every channel is healthy.
  EXPECT_EQ(ctl({"ls"}).exit_code, 0);

  // Once the holder dies, its channel goes too.
  holder.kill_and_wait();
  const json gc2 = ctl_json({"gc", "--json"});
  ASSERT_EQ(gc2["removed"].size(), 1U) << gc2.dump(2);
  EXPECT_EQ(gc2["removed"][0]["name"], "held");
  EXPECT_TRUE(std::filesystem::exists(dir_.file("mine")));
}

TEST_F(WeftctlTest, GcRemovesCreationLeftoversOfDeadCreators) {
  ChildProcess child([] { return 0; });
  const pid_t dead = child.pid();
  child.wait();
  const std::string leftover = dir_.file(".chan." + std::to_string(dead) + ".0.tmp");
  const std::string live = dir_.file(".chan." + std::to_string(getpid()) + ".0.tmp");
  { std::ofstream(leftover) << "x"; }
  { std::ofstream(live) << "x"; }
  const json gc = ctl_json({"gc", "--json"});
  EXPECT_FALSE(std::filesystem::exists(leftover)) << gc.dump(2);
  EXPECT_TRUE(std::filesystem::exists(live));
}

TEST_F(WeftctlTest, RmRefusesAChannelInUseUnlessForced) {
  auto p = SpscProducer::create("busy", options(ChannelKind::kSpsc));
  ASSERT_TRUE(p) << p.error().message();
  { ASSERT_TRUE(Channel::create("idle", options(ChannelKind::kSpsc))); }
  const Ran refused = ctl({"rm", "busy"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("in use"), std::string::npos) << refused.describe();
  EXPECT_TRUE(std::filesystem::exists(dir_.file("busy")));
  EXPECT_EQ(ctl({"rm", "idle"}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_.file("idle")));
  EXPECT_EQ(ctl({"rm", "busy", "--force"}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_.file("busy")));
  EXPECT_EQ(ctl({"rm", "busy"}).exit_code, 1);  // Gone.
}

TEST_F(WeftctlTest, AViewNoticesAFileTruncatedUnderIt) {
  { ASSERT_TRUE(Channel::create("shrinks", options(ChannelKind::kSpsc))); }
  auto view = inspect::ChannelView::open("shrinks", dir_.path());
  ASSERT_TRUE(view) << view.error().message();
  EXPECT_TRUE(view->revalidate());
  ASSERT_EQ(truncate(dir_.file("shrinks").c_str(), 4096), 0);
  auto again = view->revalidate();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kCorrupted);
  EXPECT_NE(again.error().message().find("truncated"), std::string::npos)
      << again.error().message();
}

// ---- stuck MPSC channel and unblock -----------------------------------------------------------

TEST_F(WeftctlTest, UnblockPadsADeadProducersClaimSoTheNextConsumerGoesOn) {
  ChannelOptions o = options(ChannelKind::kMpsc);
  o.unblock_timeout = std::chrono::milliseconds(100);
  { ASSERT_TRUE(Channel::create("stuck", o)); }
  // A producer claims the first chunk and is killed before it commits.
  SharedBlock<std::atomic<int>> claimed;
  ChildProcess victim([&] {
    auto p = MpscProducer::open("stuck", dir_.open_options());
    if (!p) return 1;
    if (!p->try_claim(32)) return 2;
    claimed->store(1);
    pause();
    return 0;
  });
  while (claimed->load() == 0) usleep(1000);
  victim.kill_and_wait();
  // Another producer commits behind it.
  auto other = MpscProducer::open("stuck", dir_.open_options());
  ASSERT_TRUE(other) << other.error().message();
  ASSERT_EQ(other->try_send(bytes_of("behind the dead claim")), SendStatus::kOk);

  const json ls = ctl_json({"ls", "--json", "--interval", "10"}, 1);
  ASSERT_EQ(ls["channels"].size(), 1U);
  EXPECT_EQ(ls["channels"][0]["status"], "stuck") << ls.dump(2);
  EXPECT_EQ(ls["channels"][0]["producers_dead"], 1);
  const json show = ctl_json({"show", "stuck", "--json"}, 1);
  EXPECT_EQ(show["head_blocked_by_dead_producer"], true);
  const json dump = ctl_json({"dump", "stuck", "--json"});
  ASSERT_EQ(dump["records"].size(), 2U) << dump.dump(2);
  EXPECT_EQ(dump["records"][0]["type"], "uncommitted");
  EXPECT_EQ(dump["records"][1]["payload_hex"], hex_of("behind the dead claim"));

  const Ran unblock = ctl({"unblock", "stuck"});
  EXPECT_EQ(unblock.exit_code, 0) << unblock.describe();
  const json after = ctl_json({"show", "stuck", "--json"});
  EXPECT_EQ(after["head_blocked_by_dead_producer"], false);
  EXPECT_EQ(after["counters"]["unblocks"], 1);
  EXPECT_EQ(after["consumers"].size(), 0U);         // The role was given back.
  EXPECT_EQ(after["cursors"]["head_position"], 0);  // Nothing was consumed.
  // A consumer attaching now reads the record at once, without waiting for a timeout.
  auto consumer = MpscConsumer::open("stuck", dir_.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  std::string got;
  const PollResult r = consumer->poll([&](std::span<const std::byte> b) {
    got.assign(reinterpret_cast<const char*>(b.data()), b.size());
  });
  EXPECT_EQ(r.count, 1U);
  EXPECT_EQ(got, "behind the dead claim");
  // Nothing left to unblock.
  EXPECT_EQ(ctl({"unblock", "stuck"}).exit_code, 0);
}

// ---- watch, usage errors ------------------------------------------------------------------------

TEST_F(WeftctlTest, WatchRefreshesWithRates) {
  auto producer = SpscProducer::create("w", options(ChannelKind::kSpsc));
  ASSERT_TRUE(producer) << producer.error().message();
  auto consumer = SpscConsumer::open("w", dir_.open_options());
  ASSERT_TRUE(consumer) << consumer.error().message();
  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    while (!stop.load()) {
      (void)producer->try_send(bytes_of("tick"));
      (void)consumer->poll([](std::span<const std::byte>) {});
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  const Ran ran = ctl({"watch", "--all", "--iterations", "3", "--interval", "0.1", "--json"});
  stop.store(true);
  traffic.join();
  ASSERT_EQ(ran.exit_code, 0) << ran.describe();
  std::istringstream lines(ran.out);
  std::string line;
  std::vector<json> frames;
  while (std::getline(lines, line)) frames.push_back(json::parse(line));
  ASSERT_EQ(frames.size(), 3U) << ran.out;
  EXPECT_TRUE(frames[0]["channels"][0]["messages_per_s"].is_null());
  EXPECT_GT(frames[2]["channels"][0]["messages_per_s"].get<double>(), 0.0) << ran.out;
  const Ran text = ctl({"watch", "w", "--iterations", "2", "--interval", "0.05"});
  EXPECT_EQ(text.exit_code, 0) << text.describe();
  EXPECT_NE(text.out.find("MSG/S"), std::string::npos);
}

TEST_F(WeftctlTest, UsageErrorsExitWithStatus2) {
  EXPECT_EQ(ctl({}).exit_code, 2);
  EXPECT_EQ(ctl({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(ctl({"ls", "--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(ctl({"show"}).exit_code, 2);
  EXPECT_EQ(ctl({"watch"}).exit_code, 2);
  EXPECT_EQ(ctl({"watch", "x", "--all"}).exit_code, 2);
  EXPECT_EQ(ctl({"dump", "x", "--count", "0"}).exit_code, 2);
  EXPECT_EQ(ctl({"serve", "--listen", "nonsense"}).exit_code, 2);
  EXPECT_EQ(ctl({"ls", "--interval", "-5"}).exit_code, 2);
  EXPECT_EQ(ctl({"--help"}).exit_code, 0);
  // A name that is no channel name at all is a problem with the request, reported clearly.
  const Ran bad = ctl({"show", "../etc"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("not a channel name"), std::string::npos) << bad.describe();
  // A missing directory: ls says so and fails.
  const Ran nodir = run_weftctl({"--dir", dir_.path() + "/missing", "ls"});
  EXPECT_EQ(nodir.exit_code, 1);
  EXPECT_NE(nodir.err.find("does not exist"), std::string::npos) << nodir.describe();
}

}  // namespace
}  // namespace weft::test
