// `recovery`: how long a dead MPSC producer blocks the consumer. A producer process is SIGKILLed
// while it holds a claim (between try_claim and commit) or in the middle of a stream, while a
// second, live producer keeps sending; the consumer measures the time from the kill to the moment
// it delivers records from behind the dead producer's chunk (the channel pads the chunk once it
// has blocked the head for the channel's unblock_timeout). The bar: within the timeout
// plus 100 ms.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "endpoint.hpp"
#include "progress.hpp"
#include "report.hpp"

namespace shmem_bench {

enum class RecoveryScenario { kClaim, kStream };
enum class ConsumerIdle { kSpin, kBlock };

struct RecoveryConfig {
  std::uint64_t timeout_ns = 200'000'000;  // The channel's unblock_timeout.
  int runs = 5;
  std::uint64_t size_bytes = 64;
  std::uint64_t capacity_bytes = std::uint64_t{1} << 20;
  double live_rate_per_s = 200'000;  // The live producer's (and the streaming victim's) rate.
  std::vector<RecoveryScenario> scenarios{RecoveryScenario::kClaim, RecoveryScenario::kStream};
  std::vector<ConsumerIdle> idles{ConsumerIdle::kSpin, ConsumerIdle::kBlock};
};

struct RecoveryCase {
  RecoveryScenario scenario;
  ConsumerIdle idle;
  std::vector<double> unblock_ns;  // Kill to the first record delivered from behind the chunk.
  int not_blocked = 0;  // Runs where the victim held nothing ahead of the head when killed.
  int stuck = 0;        // Runs where the head never got past the victim (a channel failure).
};

struct RecoveryResult {
  RecoveryConfig config;
  std::vector<RecoveryCase> cases;
  std::vector<ProcessSlot> processes;
};

RecoveryResult run_recovery(const RecoveryConfig& config, BenchContext& context,
                            Progress& progress);
std::uint64_t recovery_phases(const RecoveryConfig& config) noexcept;

nlohmann::json to_json(const RecoveryResult& result, const ReportContext& context);
void print_table(std::FILE* out, const RecoveryResult& result, const ReportContext& context);

// Child side of Command::kRecoveryProduce.
void recovery_child(ChildContext& context, const Timebase& clock);

}  // namespace shmem_bench
