// weftctl verify and dump against channels under full load: a producer and a consumer process
// stream records (every kind) while weftctl walks the ring again and again. A walk that meets a
// record the consumer just released must not report it as a violation: every verify passes.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
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

struct Flags {
  std::atomic<int> stop{0};
  std::atomic<int> ready{0};
  std::atomic<std::uint64_t> consumed{0};
};

enum class Kind { kSpsc, kMpsc, kBroadcast, kLossy };

std::string kind_name(Kind k) {
  switch (k) {
    case Kind::kSpsc:
      return "spsc";
    case Kind::kMpsc:
      return "mpsc";
    case Kind::kBroadcast:
      return "broadcast";
    case Kind::kLossy:
      return "lossy";
  }
  return "?";
}

class WeftctlLiveTest : public ::testing::TestWithParam<Kind> {};

// Runs `consume` until told to stop, counting records.
template <class Consumer>
int consume_until_stopped(Consumer& consumer, Flags& flags) {
  std::uint64_t count = 0;
  flags.ready.fetch_add(1);
  while (flags.stop.load(std::memory_order_relaxed) == 0) {
    const auto r = consumer.poll([](std::span<const std::byte>) {}, 64);
    count += r.count;
    if (r.status == PollStatus::kCorrupted) return 3;
    flags.consumed.store(count, std::memory_order_relaxed);
  }
  return 0;
}

TEST_P(WeftctlLiveTest, VerifyAndDumpOfABusyChannelFindNothingWrong) {
  const Kind kind = GetParam();
  TempDir dir;
  ChannelOptions o = dir.channel_options(8192);  // Small: the ring wraps constantly.
  o.kind = kind == Kind::kSpsc   ? ChannelKind::kSpsc
           : kind == Kind::kMpsc ? ChannelKind::kMpsc
                                 : ChannelKind::kBroadcast;
  o.lossy = kind == Kind::kLossy;
  o.producers_max = 4;
  o.consumers_max = 4;
  { ASSERT_TRUE(Channel::create("live", o)); }
  SharedBlock<Flags> flags;
  const OpenOptions open = dir.open_options();
  const std::uint64_t seed = test_seed();
  ChildProcess consumer([&]() -> int {
    if (kind == Kind::kSpsc) {
      auto c = SpscConsumer::open("live", open);
      return c ? consume_until_stopped(*c, *flags) : 1;
    }
    if (kind == Kind::kMpsc) {
      auto c = MpscConsumer::open("live", open);
      return c ? consume_until_stopped(*c, *flags) : 1;
    }
    auto c = BroadcastConsumer::open("live", open);
    return c ? consume_until_stopped(*c, *flags) : 1;
  });
  const auto produce = [&](auto& producer) {
    Rng rng(seed);
    std::vector<std::byte> buffer(300);
    flags->ready.fetch_add(1);
    while (flags->stop.load(std::memory_order_relaxed) == 0) {
      const std::size_t n = rng.below(300);
      (void)producer.try_send(std::span<const std::byte>(buffer.data(), n));
    }
    return 0;
  };
  ChildProcess producer([&]() -> int {
    if (kind == Kind::kSpsc) {
      auto p = SpscProducer::open("live", open);
      return p ? produce(*p) : 1;
    }
    if (kind == Kind::kMpsc) {
      auto p = MpscProducer::open("live", open);
      return p ? produce(*p) : 1;
    }
    auto p = BroadcastProducer::open("live", open);
    return p ? produce(*p) : 1;
  });
  while (flags->ready.load() < 2) usleep(1000);
  const std::uint64_t rounds = scaled(60, 4);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const Ran verify = run_weftctl({"--dir", dir.path(), "verify", "live", "--json"});
    ASSERT_EQ(verify.exit_code, 0) << kind_name(kind) << " round " << i << "\n"
                                   << verify.describe();
    const Ran dump = run_weftctl({"--dir", dir.path(), "dump", "live", "--json", "--count", "20"});
    ASSERT_EQ(dump.exit_code, 0) << dump.describe();
    const json doc = json::parse(dump.out);
    EXPECT_LE(doc["records"].size(), 20U);
  }
  const std::uint64_t consumed = flags->consumed.load();
  flags->stop.store(1);
  EXPECT_TRUE(producer.wait().ok());
  EXPECT_TRUE(consumer.wait().ok());
  EXPECT_GT(consumed, 0U);
}

INSTANTIATE_TEST_SUITE_P(Kinds, WeftctlLiveTest,
                         ::testing::Values(Kind::kSpsc, Kind::kMpsc, Kind::kBroadcast,
                                           Kind::kLossy),
                         [](const ::testing::TestParamInfo<Kind>& param_info) {
                           return kind_name(param_info.param);
                         });

}  // namespace
}  // namespace weft::test
