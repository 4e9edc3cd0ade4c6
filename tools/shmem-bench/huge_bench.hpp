// shmem-bench throughput --huge: the same channel backed by 4 KiB pages (tmpfs) and by 2 MiB
// pages (hugetlbfs), measured in the same run, interleaved, so that the machine's noise hits both:
// the time to create and prefault the channel, and the steady-state streaming rate between two
// pinned processes. Needs a hugetlbfs mount and enough reserved huge pages; --reserve-huge lets
// the benchmark mount a private hugetlbfs and raise vm.nr_hugepages for the run (restored after).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "env_info.hpp"

namespace shmem_bench {

struct HugeBenchConfig {
  std::uint64_t capacity_bytes = std::uint64_t{1} << 30;  // Ring bytes of both channels.
  std::uint64_t size_bytes = 65536;                       // Payload bytes per record.
  int runs = 5;
  double duration_s = 0.5;  // Measured seconds per throughput phase.
  double warmup_s = 0.1;
  int node = -1;         // --node: place both channels there.
  bool reserve = false;  // --reserve-huge
};

struct HugeVariant {
  std::vector<double> prefault_ns;  // One per run: Channel::create (allocate, map, prefault).
  std::vector<double> bytes_per_s;  // One per run.
  std::uint64_t page_bytes = 0;
  std::uint64_t file_bytes = 0;
  std::string pages_where;  // "N pages on node 0" from Channel::placement(), last run.
};

struct HugeBenchResult {
  HugeBenchConfig config;
  HugeVariant base;                    // 4 KiB pages
  HugeVariant huge;                    // 2 MiB pages
  std::vector<double> prefault_ratio;  // huge / 4k, per run (same run).
  std::vector<double> bytes_ratio;     // huge / 4k, per run.
  std::string huge_dir;
  std::string notes;  // What the benchmark changed for the run (and restored).
};

// Runs the comparison; throws RunError with what to do when huge pages are missing.
HugeBenchResult run_huge_bench(const HugeBenchConfig& config, const Placement& placement);

nlohmann::json huge_json(const HugeBenchResult& result);
void print_huge_table(const HugeBenchResult& result, const std::vector<std::string>& env_lines);

}  // namespace shmem_bench
