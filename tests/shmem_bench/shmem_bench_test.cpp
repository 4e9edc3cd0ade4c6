// shmem-bench durable and batch-sweep, run end to end with tiny durations on a real disk: their
// JSON carries every figure the issues ask for, with sane values (never compared with a timing),
// shard counts and sync modes are all measured, scratch files are removed, and bad flags exit 2
// with a message that names the flag.
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "journal_test_support.hpp"
#include "weft/journal.hpp"
#include "weftctl_test_support.hpp"

namespace weft::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

Ran shmem_bench(std::vector<std::string> args) {
  args.insert(args.begin(), SHMEM_BENCH_PATH);
  return run_program(args, 240);
}

json parse(const Ran& ran) {
  EXPECT_EQ(ran.exit_code, 0) << ran.describe();
  try {
    return json::parse(ran.out);
  } catch (const json::exception& e) {
    ADD_FAILURE() << "not JSON (" << e.what() << "): " << ran.out;
    return json::object();
  }
}

double median(const json& spread) { return spread.at("median").get<double>(); }

TEST(ShmemBenchDurable, JsonHasTheFiguresForEveryModeAndShardCount) {
  DiskDir disk;
  const Ran ran = shmem_bench({"durable", "--json", "--dir", disk.path(), "--runs", "1",
                               "--samples", "20", "--duration", "0.5", "--shards", "1,2"});
  const json out = parse(ran);
  ASSERT_TRUE(out.is_object());
  for (const char* key :
       {"durable_p50_ns", "durable_p99_ns", "msgs_per_s", "bytes_per_s", "disk_sync_p50_ns",
        "disk_seq_bytes_per_s", "latency_ratio", "bandwidth_ratio"}) {
    ASSERT_TRUE(out.contains(key)) << key << " missing: " << ran.out;
    EXPECT_GT(out[key].get<double>(), 0) << key;
  }
  EXPECT_GE(out["durable_p99_ns"].get<double>(), out["durable_p50_ns"].get<double>());
  EXPECT_EQ(out["policy"], "natural");
  // The floor's four ways of writing sequentially, each measured.
  ASSERT_EQ(out["disk_seq_ways"].size(), 4u) << ran.out;
  for (const json& way : out["disk_seq_ways"]) EXPECT_GT(median(way["bytes_per_s"]), 0);
  // Both sync modes, each at one and two shards.
  ASSERT_EQ(out["modes"].size(), 2u);
  std::set<std::string> modes;
  for (const json& mode : out["modes"]) {
    modes.insert(mode["sync_mode"].get<std::string>());
    EXPECT_GT(median(mode["durable_p50_ns"]), 0);
    ASSERT_EQ(mode["shards"].size(), 2u);
    EXPECT_EQ(mode["shards"][0]["shards"], 1);
    EXPECT_EQ(mode["shards"][1]["shards"], 2);
    // Each figure beside the floor it was measured with: the write+fdatasync samples taken in
    // turn with the records, and the best way's bandwidth around each saturating phase.
    EXPECT_GT(median(mode["disk_sync_p50_ns"]), 0);
    EXPECT_GE(median(mode["disk_sync_p99_ns"]), median(mode["disk_sync_p50_ns"]));
    EXPECT_NEAR(median(mode["latency_ratio"]),
                median(mode["durable_p50_ns"]) / median(mode["disk_sync_p50_ns"]), 1e-9);
    for (const json& shard : mode["shards"]) {
      EXPECT_GT(median(shard["bytes_per_s"]), 0);
      ASSERT_GT(median(shard["disk_seq_bytes_per_s"]), 0);
      EXPECT_NEAR(median(shard["bandwidth_ratio"]),
                  median(shard["bytes_per_s"]) / median(shard["disk_seq_bytes_per_s"]), 1e-9);
    }
    EXPECT_EQ(median(mode["disk_seq_bytes_per_s"]),
              median(mode["shards"][0]["disk_seq_bytes_per_s"]));
    // The headline throughput is the one-shard figure.
    EXPECT_EQ(median(mode["bytes_per_s"]), median(mode["shards"][0]["bytes_per_s"]));
  }
  EXPECT_EQ(modes, (std::set<std::string>{"write+fdatasync", "O_DIRECT|O_DSYNC"}));
  // The headline floor is the headline mode's.
  EXPECT_EQ(out["disk_sync_p50_ns"].get<double>(), median(out["modes"][0]["disk_sync_p50_ns"]));
  EXPECT_EQ(out["disk_seq_bytes_per_s"].get<double>(),
            median(out["modes"][0]["disk_seq_bytes_per_s"]));
  EXPECT_TRUE(fs::is_empty(disk.path())) << "the journals and the floor's file are removed";
}

TEST(ShmemBenchDurable, AnyPolicyCanDriveTheRecorders) {
  DiskDir disk;
  const json out =
      parse(shmem_bench({"durable", "--json", "--dir", disk.path(), "--runs", "1", "--samples",
                         "20", "--duration", "0.4", "--sync", "direct", "--policy", "adaptive"}));
  EXPECT_EQ(out["policy"], "adaptive");
  EXPECT_EQ(out["sync_mode"], "O_DIRECT|O_DSYNC");
  EXPECT_GT(out["bytes_per_s"].get<double>(), 0);
}

// The mode a journal opened with the default options takes in `dir`.
std::string default_mode_in(const std::string& dir) {
  const std::string path = dir + "/mode-probe";
  std::string name;
  {
    auto journal = Journal::open(path, JournalOptions{});
    EXPECT_TRUE(journal.has_value()) << journal.error().message();
    if (journal) name = journal_sync_name(journal->sync_mode());
  }
  fs::remove_all(path);
  return name;
}

TEST(ShmemBenchBatchSweep, JsonHasOneObjectPerPolicyAndRate) {
  DiskDir disk;
  // Without --sync, every point runs in the mode the journal picks there by default.
  const std::string expected_sync = default_mode_in(disk.path());
  ASSERT_NE(expected_sync, "auto");
  const std::vector<std::string> policies = {"adaptive",         "adaptive-x1", "adaptive-x2-w0",
                                             "natural",          "natural#2",   "every",
                                             "fixed-16KiB-200us"};
  const json out = parse(
      shmem_bench({"batch-sweep", "--json", "--dir", disk.path(), "--rates", "1k,5k", "--policies",
                   "adaptive,adaptive-x1,adaptive-x2-w0,natural,natural#2,every,fixed-16KiB-200us",
                   "--duration", "0.4", "--warmup", "0.1", "--min-records", "200", "--runs", "2"}));
  ASSERT_TRUE(out.is_array());
  ASSERT_EQ(out.size(), policies.size() * 2);
  std::set<std::pair<std::string, double>> points;
  std::map<std::pair<std::string, double>, json> by_point;
  for (const json& point : out) {
    for (const char* key : {"policy", "offered_per_s", "achieved_per_s", "durable_p50_ns",
                            "durable_p99_ns", "durable_p99_ns_runs", "achieved_per_s_runs"}) {
      ASSERT_TRUE(point.contains(key)) << key << " missing: " << point.dump();
    }
    ASSERT_EQ(point["durable_p99_ns_runs"].size(), 2u) << point.dump();
    // Flushes run by run add up to the point's total; the adaptive policies say which slot count
    // each run ended on, within their limits.
    ASSERT_EQ(point["flushes_runs"].size(), 2u) << point.dump();
    EXPECT_EQ(point["flushes_runs"][0].get<std::uint64_t>() +
                  point["flushes_runs"][1].get<std::uint64_t>(),
              point["flushes"].get<std::uint64_t>());
    const std::string policy = point["policy"].get<std::string>();
    const std::uint32_t limit = policy == "adaptive"         ? 4
                                : policy == "adaptive-x1"    ? 1
                                : policy == "adaptive-x2-w0" ? 2
                                                             : 0;
    ASSERT_EQ(point.contains("max_in_flight_runs"), limit != 0) << point.dump();
    if (limit != 0) {
      for (const json& slots : point["max_in_flight_runs"]) {
        EXPECT_GE(slots.get<std::uint32_t>(), 1u) << point.dump();
        EXPECT_LE(slots.get<std::uint32_t>(), limit) << point.dump();
      }
    }
    EXPECT_EQ(point["sync"], expected_sync) << point.dump();
    by_point[{point["policy"].get<std::string>(), point["offered_per_s"].get<double>()}] = point;
    points.insert({point["policy"].get<std::string>(), point["offered_per_s"].get<double>()});
    EXPECT_GT(point["achieved_per_s"].get<double>(), 0);
    EXPECT_GT(point["durable_p50_ns"].get<double>(), 0);
    EXPECT_GE(point["durable_p99_ns"].get<double>(), point["durable_p50_ns"].get<double>());
  }
  EXPECT_EQ(points.size(), out.size()) << "one object per (policy, rate)";
  // The bar's ratio is taken run by run: each adaptive policy's p99 over the best fixed policy's
  // in the same run, median over the runs (two runs: their mean).
  for (const auto& [name, rate] :
       std::vector<std::pair<std::string, double>>{{"adaptive", 1'000.0},
                                                   {"adaptive", 5'000.0},
                                                   {"adaptive-x1", 5'000.0},
                                                   {"adaptive-x2-w0", 5'000.0}}) {
    const json& adaptive = by_point.at({name, rate});
    if (adaptive["best_fixed"].get<std::string>().empty()) continue;
    const json& best = by_point.at({adaptive["best_fixed"].get<std::string>(), rate});
    double sum = 0;
    for (std::size_t k = 0; k < 2; ++k) {
      sum += adaptive["durable_p99_ns_runs"][k].get<double>() /
             best["durable_p99_ns_runs"][k].get<double>();
    }
    EXPECT_NEAR(adaptive["p99_over_best_fixed_same_run"]["median"].get<double>(), sum / 2,
                1e-9 * sum)
        << adaptive.dump();
  }
  // The control (natural run again) carries its same-run p99 ratio to natural, and is never the
  // best fixed policy.
  for (const double rate : {1'000.0, 5'000.0}) {
    const json& control = by_point.at({"natural#2", rate});
    const json& natural = by_point.at({"natural", rate});
    EXPECT_EQ(control["control_of"], "natural");
    std::vector<double> ratios;
    for (std::size_t k = 0; k < 2; ++k) {
      ratios.push_back(control["durable_p99_ns_runs"][k].get<double>() /
                       natural["durable_p99_ns_runs"][k].get<double>());
    }
    EXPECT_NEAR(median(control["p99_over_control_of_same_run"]), (ratios[0] + ratios[1]) / 2,
                1e-9 * (ratios[0] + ratios[1]));
    EXPECT_EQ(control["p99_over_control_of_same_run"]["min"].get<double>(),
              std::min(ratios[0], ratios[1]));
    EXPECT_NE(by_point.at({"adaptive", rate})["best_fixed"], "natural#2");
    EXPECT_FALSE(natural.contains("control_of"));
    // The bar's test, applied to the control: against the adaptive policy's best fixed one.
    const std::string best = by_point.at({"adaptive", rate})["best_fixed"].get<std::string>();
    EXPECT_EQ(control["best_fixed"], best);
    ASSERT_EQ(control.contains("p99_over_best_fixed_same_run"), !best.empty()) << control.dump();
    if (!best.empty()) {
      const json& fixed = by_point.at({best, rate});
      std::vector<double> over_best;
      for (std::size_t k = 0; k < 2; ++k) {
        over_best.push_back(control["durable_p99_ns_runs"][k].get<double>() /
                            fixed["durable_p99_ns_runs"][k].get<double>());
      }
      const double sum = over_best[0] + over_best[1];
      EXPECT_NEAR(median(control["p99_over_best_fixed_same_run"]), sum / 2, 1e-9 * sum);
      EXPECT_EQ(control["bar_p99_met"].get<bool>(),
                control["keeps_up"].get<bool>() && sum / 2 <= 1.1)
          << control.dump();
    }
  }
  // Without trials, or told not to, the adaptive policy leaves the io-wq pool at the kernel's
  // limit.
  for (const char* name : {"adaptive-x1", "adaptive-x2-w0"}) {
    EXPECT_EQ(by_point.at({name, 5'000.0})["policy_stats"]["max_io_workers"], 0) << name;
  }
}

TEST(ShmemBench, BadFlagsAreUsageErrorsThatNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"durable", "--shards", "0"}, "--shards"},
      {{"durable", "--shards", "1,65"}, "--shards"},
      {{"durable", "--policy", "sometimes"}, "--policy"},
      {{"durable", "--sync", "maybe"}, "--sync"},
      {{"durable", "--duration", "0.1"}, "--duration"},
      {{"batch-sweep", "--policies", "fixed-64KiB"}, "--policies"},
      {{"batch-sweep", "--sync", "sometimes"}, "--sync"},
      {{"batch-sweep", "--policies", "natural,natural"}, "--policies"},
      {{"batch-sweep", "--policies", "natural,every#2"}, "--policies"},
      {{"batch-sweep", "--policies", "natural,natural#X"}, "--policies"},
      {{"batch-sweep", "--policies", "adaptive-x0"}, "--policies"},
      {{"batch-sweep", "--policies", "adaptive-x65"}, "--policies"},
      {{"batch-sweep", "--policies", "adaptive-w65"}, "--policies"},
      {{"batch-sweep", "--policies", "adaptive-w2-w3"}, "--policies"},
      {{"batch-sweep", "--policies", "adaptive-x2-"}, "--policies"},
      {{"durable", "--policy", "adaptive-2"}, "--policy"},
      {{"batch-sweep", "--rates", "-5"}, "--rates"},
  };
  for (const auto& [args, flag] : cases) {
    const Ran ran = shmem_bench(args);
    EXPECT_EQ(ran.exit_code, 2) << ran.describe();
    EXPECT_NE(ran.err.find(flag), std::string::npos) << ran.describe();
  }
}

}  // namespace
}  // namespace weft::test
