// Flush policies named on the command line: adaptive[-x<in flight>][-w<io-wq workers>] | natural |
// every | fixed-<bytes>-<delay>[-x<in flight>], as in adaptive-x1, adaptive-w0, fixed-64KiB-1ms or
// fixed-256KiB-2ms-x4. A name with a tag, as natural#2, is a control: the same policy run again
// under another name, so that a sweep measures how far two runs of one policy differ.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "weft/flush_policy.hpp"

namespace shmem_bench {

struct PolicySpec {
  std::string name;  // As given, and as reported.
  bool fixed = false;
  bool adaptive = false;
  bool natural = false;
  std::uint64_t bytes = 0;
  std::int64_t delay_ns = 0;
  std::uint32_t in_flight = 1;   // Adaptive: its max_in_flight_limit (0: the policy's default).
  std::int32_t io_workers = -1;  // Adaptive: its io_workers cap (-1: the policy's default).
  std::string control_of;        // A control ("natural#2"): the policy it repeats ("natural").
};

// Parses a policy name; a bad one throws UsageError naming `flag` and the accepted forms.
PolicySpec parse_policy(const std::string& name, const std::string& flag);

// The policy `spec` names; the adaptive one gets a commit-to-durable p99 target of `target_ms`.
std::unique_ptr<weft::FlushPolicy> make_policy(const PolicySpec& spec, double target_ms);

}  // namespace shmem_bench
