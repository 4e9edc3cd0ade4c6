// shmem-bench batch-sweep: the flush policies against each other on a real journal on disk.
//
// An open-loop load at fixed offered rates (Poisson arrivals, seeded), from a few hundred
// records/s to past saturation, is appended to a weft::Journal in --dir by one thread, which also
// reaps completions, as the recorder does. A record's durable latency is measured from its
// intended send time (when the schedule said to send it, not when the sender got to it: no
// coordinated omission) to the moment the journal's durable sequence covered it. Each policy runs
// each rate on a fresh journal; the points are interleaved (every policy at one rate, then the
// next rate) so that drift in the machine's speed touches all policies alike.
//
// Output: a table of offered rate, achieved rate and durable p50/p99 per (policy, rate), medians
// of --runs runs with their spread, then the bar (adaptive against the best fixed policy
// that keeps up, and against natural batching at saturation). --json: a JSON array, one object
// per (policy, rate). --plot DIR: batch_sweep_p99.svg and batch_sweep_throughput.svg, one line
// per policy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace shmem_bench {

struct BatchSweepConfig {
  std::string dir = "/tmp";           // Where the journals go: a real disk, not tmpfs.
  std::vector<std::string> rates;     // Offered records/s; empty: the default ladder.
  std::vector<std::string> policies;  // Empty: adaptive, natural, a control, every, 4 fixed.
  double duration_s = 1.5;            // Seconds of offered load per point.
  double warmup_s = 0.3;              // Leading seconds left out of the figures.
  std::uint64_t min_records = 3000;   // Measured records per point at least (low rates run longer).
  std::uint64_t size_bytes = 256;     // Payload bytes per record.
  int runs = 3;
  double target_ms = 2.0;     // The adaptive policy's commit-to-durable p99 target.
  std::string sync = "auto";  // auto (the journal's default), fdatasync or direct.
  std::uint64_t seed = 1;
  std::string sender = "spin";  // How the appending thread waits for the next send: spin or sleep.
  bool json = false;
  std::string plot_dir;
};

// Adds the `batch-sweep` subcommand to `app`, filling `config`.
CLI::App* add_batch_sweep_subcommand(CLI::App& app, BatchSweepConfig& config);

// Runs it; returns the exit status (0; 1 run error; usage errors throw UsageError).
int run_batch_sweep(const BatchSweepConfig& config);

}  // namespace shmem_bench
