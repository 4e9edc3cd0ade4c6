// shmem-bench durable: producer -> channel -> recorder -> journal on disk, measured beside the
// disk's own floor in the same run: the latency of one 4 KiB write + fdatasync at queue depth 1,
// and the best durable sequential bandwidth.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "weft/journal.hpp"

namespace shmem_bench {

struct DurableConfig {
  std::string dir = "/tmp";         // Where the journal and the floor's files go.
  std::uint64_t size_bytes = 4096;  // Payload bytes per record.
  int runs = 3;
  std::uint64_t latency_samples = 2000;  // Records sent one at a time, per run and sync mode.
  double throughput_s = 2.0;             // Saturating phase, per run.
  std::string sync = "both";             // fdatasync, direct or both.
  std::string recorder_idle = "spin";    // spin (spin-yield) or sleep.
  std::string producer_wait = "spin";    // spin or sleep (wait_durable).
  std::string policy = "natural";        // The recorders' flush policy (see policy_spec.hpp).
  std::vector<unsigned> shards;          // Shard counts of the saturating phase; empty: 1.
  bool json = false;
};

// Adds the `durable` subcommand to `app`, filling `config`.
CLI::App* add_durable_subcommand(CLI::App& app, DurableConfig& config);

// The mode JournalSync::kAuto takes in `dir`, asked of the library itself: a small journal opened
// there with the default sync option, then removed. Throws RunError when it cannot be opened.
weft::JournalSync default_sync_mode(const std::string& dir);

// Runs it; returns the exit status (0, 1 run error; usage errors throw UsageError).
int run_durable(const DurableConfig& config);

}  // namespace shmem_bench
