// What a result was measured on: machine, CPU placement, kernel, build, clock and date. Every
// table and every JSON document that shmem-bench prints carries it.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "timebase.hpp"

namespace shmem_bench {

// Where the two processes ran. Side A is the parent (ping initiator, producer, memcpy baseline);
// side B is the forked child (echo, consumer).
struct Placement {
  int cpu_a = -1;  // -1: not pinned.
  int cpu_b = -1;
  int node_a = -1;  // NUMA node of cpu_a, -1 when unknown.
  int node_b = -1;
  bool pinned = false;
  std::string note;       // Why the processes are not pinned, when they are not.
  std::vector<int> cpus;  // CPUs the benchmark may use, side A's and side B's first.
};

struct EnvInfo {
  std::string cpu_model;
  int cpus_online = 0;
  int cpus_allowed = 0;  // In this process's affinity mask.
  bool hypervisor = false;
  std::string kernel;  // uname -r
  std::string arch;    // uname -m
  std::string compiler;
  std::string build_type;
  bool ndebug = false;
  std::string weft_version;
  std::string date_utc;  // ISO 8601, when the run started.

  static EnvInfo collect();
};

// The NUMA node that `cpu` belongs to, from sysfs; -1 when unknown.
int numa_node_of(int cpu);

nlohmann::json env_json(const EnvInfo& env, const Placement& placement, const Timebase& clock);
// One line: machine, CPU placement, kernel, build (chart footers, CSV headers).
std::string env_summary(const EnvInfo& env, const Placement& placement);

// Human-readable lines, each without a trailing newline.
std::vector<std::string> env_lines(const EnvInfo& env, const Placement& placement,
                                   const Timebase& clock);

}  // namespace shmem_bench
