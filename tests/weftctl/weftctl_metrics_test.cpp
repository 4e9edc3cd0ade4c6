// weftctl metrics and serve: promtool accepts the exposition, and a real Prometheus server
// (Debian's prometheus package) scrapes `weftctl serve` on loopback and answers a query for a
// weft metric with the channel's true value.
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_support.hpp"
#include "weft/broadcast.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"
#include "weftctl_test_support.hpp"

namespace weft::test {
namespace {

using nlohmann::json;

constexpr const char* kPromtool = "/usr/bin/promtool";
constexpr const char* kPrometheus = "/usr/bin/prometheus";

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

class WeftctlMetricsTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::optional<SpscProducer> spsc_;
  std::optional<SpscConsumer> spsc_consumer_;
  std::optional<MpscProducer> mpsc_;
  std::optional<BroadcastProducer> lossy_;
  std::optional<BroadcastConsumer> lossy_consumer_;

  void SetUp() override {
    ChannelOptions o = dir_.channel_options(1 << 16);
    auto spsc = SpscProducer::create("prom", o);
    ASSERT_TRUE(spsc) << spsc.error().message();
    spsc_.emplace(std::move(*spsc));
    auto consumer = SpscConsumer::open("prom", dir_.open_options());
    ASSERT_TRUE(consumer);
    spsc_consumer_.emplace(std::move(*consumer));
    for (int i = 0; i < 7; ++i) ASSERT_EQ(spsc_->try_send(bytes_of("metric")), SendStatus::kOk);
    ASSERT_EQ(spsc_consumer_->poll([](std::span<const std::byte>) {}, 2).count, 2U);
    o.kind = ChannelKind::kMpsc;
    o.producers_max = 2;
    auto mpsc = MpscProducer::create("many", o);
    ASSERT_TRUE(mpsc);
    mpsc_.emplace(std::move(*mpsc));
    ASSERT_EQ(mpsc_->try_send(bytes_of("x")), SendStatus::kOk);
    o.kind = ChannelKind::kBroadcast;
    o.consumers_max = 2;
    o.lossy = true;
    auto lossy = BroadcastProducer::create("fan", o);
    ASSERT_TRUE(lossy);
    lossy_.emplace(std::move(*lossy));
    auto lossy_consumer = BroadcastConsumer::open("fan", dir_.open_options());
    ASSERT_TRUE(lossy_consumer);
    lossy_consumer_.emplace(std::move(*lossy_consumer));
    ASSERT_EQ(lossy_->try_send(bytes_of("y")), SendStatus::kOk);
  }
};

TEST_F(WeftctlMetricsTest, ExpositionCarriesTheChannelsFigures) {
  const Ran ran = run_weftctl({"--dir", dir_.path(), "metrics"});
  ASSERT_EQ(ran.exit_code, 0) << ran.describe();
  const std::string& m = ran.out;
  for (const char* line : {
           "# TYPE weft_channel_records_committed_total counter",
           "weft_channel_records_committed_total{channel=\"prom\"} 7",
           "weft_channel_records_consumed_total{channel=\"prom\",consumer=\"0\"} 2",
           "weft_channel_lag_records{channel=\"prom\",consumer=\"0\"} 5",
           "weft_channel_capacity_bytes{channel=\"prom\"} 65536",
           "weft_channel_info{channel=\"many\",kind=\"mpsc\",lossy=\"0\"} 1",
           "weft_channel_info{channel=\"fan\",kind=\"broadcast\",lossy=\"1\"} 1",
           "weft_channel_lost_records_total{channel=\"fan\",consumer=\"0\"} 0",
           "weft_channel_unblocks_total{channel=\"many\"} 0",
           "weft_channel_status{channel=\"prom\",status=\"ok\"} 1",
           "weft_channel_producers{channel=\"prom\",state=\"alive\"} 1",
           "weft_channels{",
       }) {
    EXPECT_NE(m.find(line), std::string::npos) << "missing: " << line << "\n" << m;
  }
}

TEST_F(WeftctlMetricsTest, PromtoolAcceptsTheExposition) {
  if (access(kPromtool, X_OK) != 0) {
    GTEST_SKIP() << kPromtool << " is missing: install Debian's prometheus package "
                 << "(scripts/setup.sh does) to check the exposition with promtool";
  }
  const std::string file = dir_.path() + "/metrics.txt";
  const Ran ran = run_weftctl({"--dir", dir_.path(), "metrics"});
  ASSERT_EQ(ran.exit_code, 0) << ran.describe();
  {
    std::ofstream out(dir_.path() + "/metrics.txt");
    out << ran.out;
  }
  const Ran check =
      run_program({"/bin/sh", "-c", std::string(kPromtool) + " check metrics < " + file});
  EXPECT_EQ(check.exit_code, 0) << check.describe();
  EXPECT_EQ(check.out + check.err, "") << check.describe();
  // promtool is not a rubber stamp: a counter without _total is reported.
  {
    std::ofstream out(file);
    out << "# HELP weft_bad A counter named wrong\n# TYPE weft_bad counter\nweft_bad 1\n";
  }
  const Ran bad =
      run_program({"/bin/sh", "-c", std::string(kPromtool) + " check metrics < " + file});
  EXPECT_NE(bad.out + bad.err, "") << bad.describe();
}

TEST_F(WeftctlMetricsTest, ServeAnswersOnMetrics) {
  const int port = free_loopback_port();
  ASSERT_GT(port, 0);
  Background serve({weftctl_path(), "--dir", dir_.path(), "serve", "--listen",
                    "127.0.0.1:" + std::to_string(port), "--max-seconds", "120"});
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(1);
  httplib::Result response = client.Get("/metrics");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!response && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(serve.running()) << serve.output();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    response = client.Get("/metrics");
  }
  ASSERT_TRUE(response) << "no answer from weftctl serve: " << serve.output();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(response->body.find("weft_channel_records_committed_total{channel=\"prom\"} 7"),
            std::string::npos);
  // Every scrape reads the channels afresh.
  ASSERT_EQ(spsc_->try_send(bytes_of("one more")), SendStatus::kOk);
  auto again = client.Get("/metrics");
  ASSERT_TRUE(again);
  EXPECT_NE(again->body.find("weft_channel_records_committed_total{channel=\"prom\"} 8"),
            std::string::npos);
  EXPECT_EQ(client.Get("/nothing-here")->status, 404);
  EXPECT_EQ(serve.stop(), 0) << serve.output();
  // A port already in use is a clear failure.
  const int taken = free_loopback_port();
  Background first({weftctl_path(), "--dir", dir_.path(), "serve", "--listen",
                    "127.0.0.1:" + std::to_string(taken), "--max-seconds", "60"});
  httplib::Client probe("127.0.0.1", taken);
  for (int i = 0; i < 1500 && !probe.Get("/metrics"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const Ran second = run_weftctl(
      {"--dir", dir_.path(), "serve", "--listen", "127.0.0.1:" + std::to_string(taken)});
  EXPECT_EQ(second.exit_code, 1) << second.describe();
  EXPECT_NE(second.err.find("cannot listen"), std::string::npos) << second.describe();
}

TEST_F(WeftctlMetricsTest, PrometheusScrapesServeAndAnswersAQuery) {
  if (access(kPrometheus, X_OK) != 0) {
    GTEST_SKIP() << kPrometheus << " is missing: install Debian's prometheus package "
                 << "(scripts/setup.sh does) to run the end-to-end scrape test";
  }
  const int port = free_loopback_port();
  const int prom_port = free_loopback_port();
  ASSERT_GT(port, 0);
  ASSERT_GT(prom_port, 0);
  ASSERT_NE(port, prom_port);
  Background serve({weftctl_path(), "--dir", dir_.path(), "serve", "--listen",
                    "127.0.0.1:" + std::to_string(port), "--max-seconds", "170"});
  const std::string config = dir_.path() + "/prometheus.yml";
  {
    std::ofstream out(config);
    out << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: weft\n    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << port << "']\n";
  }
  Background prometheus(
      {kPrometheus, "--config.file=" + config, "--storage.tsdb.path=" + dir_.path() + "/tsdb",
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"});
  httplib::Client client("127.0.0.1", prom_port);
  client.set_connection_timeout(1);
  client.set_read_timeout(5);
  const std::string query =
      "/api/v1/query?query=" +
      httplib::detail::encode_query_param("weft_channel_records_committed_total{channel=\"prom\"}");
  std::string last;
  bool found = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && !found) {
    ASSERT_TRUE(prometheus.running()) << "prometheus exited:\n" << prometheus.output();
    ASSERT_TRUE(serve.running()) << "weftctl serve exited:\n" << serve.output();
    if (auto response = client.Get(query.c_str()); response && response->status == 200) {
      last = response->body;
      const json doc = json::parse(response->body);
      const json& result = doc["data"]["result"];
      if (doc["status"] == "success" && !result.empty()) {
        EXPECT_EQ(result[0]["metric"]["channel"], "prom");
        EXPECT_EQ(result[0]["metric"]["job"], "weft");
        EXPECT_EQ(result[0]["value"][1], "7") << response->body;
        found = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(found) << "Prometheus never returned the metric; last answer: " << last << "\n"
                     << prometheus.output();
  // Prometheus saw the target up.
  const std::string up_query =
      "/api/v1/query?query=" + httplib::detail::encode_query_param("up{job=\"weft\"}");
  if (auto response = client.Get(up_query.c_str()); response && response->status == 200) {
    const json doc = json::parse(response->body);
    ASSERT_FALSE(doc["data"]["result"].empty()) << response->body;
    EXPECT_EQ(doc["data"]["result"][0]["value"][1], "1") << response->body;
  } else {
    ADD_FAILURE() << "no answer to the up query";
  }
  prometheus.stop();
  serve.stop();
}

}  // namespace
}  // namespace weft::test
