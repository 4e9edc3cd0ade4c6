// Collects the environment block; see env_info.hpp.
#include "env_info.hpp"

#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#ifndef WEFT_VERSION_STRING
#define WEFT_VERSION_STRING "unknown"
#endif
#ifndef WEFT_BUILD_TYPE
#define WEFT_BUILD_TYPE "unknown"
#endif

namespace shmem_bench {
namespace {

std::string trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t");
  const auto end = s.find_last_not_of(" \t\r\n");
  return begin == std::string::npos ? std::string{} : s.substr(begin, end - begin + 1);
}

}  // namespace

int numa_node_of(int cpu) {
  if (cpu < 0) return -1;
  std::error_code ec;
  const std::filesystem::path dir = fmt::format("/sys/devices/system/cpu/cpu{}", cpu);
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.rfind("node", 0) == 0 &&
        name.find_first_not_of("0123456789", 4) == std::string::npos) {
      return std::stoi(name.substr(4));
    }
  }
  return -1;
}

EnvInfo EnvInfo::collect() {
  EnvInfo env;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon));
    if (key == "model name" && env.cpu_model.empty()) env.cpu_model = trim(line.substr(colon + 1));
    if (key == "flags" && !env.hypervisor) {
      std::istringstream words(line.substr(colon + 1));
      std::string word;
      while (words >> word) env.hypervisor = env.hypervisor || word == "hypervisor";
    }
  }
  if (env.cpu_model.empty()) env.cpu_model = "unknown";
  env.cpus_online = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) env.cpus_allowed = CPU_COUNT(&set);
  utsname uts{};
  if (uname(&uts) == 0) {
    env.kernel = uts.release;
    env.arch = uts.machine;
  }
#if defined(__clang__)
  env.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  env.compiler = std::string("g++ ") + __VERSION__;
#else
  env.compiler = __VERSION__;
#endif
  env.build_type = WEFT_BUILD_TYPE;
#ifdef NDEBUG
  env.ndebug = true;
#endif
  env.weft_version = WEFT_VERSION_STRING;
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &utc);
  env.date_utc = date;
  return env;
}

nlohmann::json env_json(const EnvInfo& env, const Placement& placement, const Timebase& clock) {
  nlohmann::json j;
  j["machine"] = {{"cpu_model", env.cpu_model},
                  {"cpus_online", env.cpus_online},
                  {"cpus_allowed", env.cpus_allowed},
                  {"hypervisor", env.hypervisor},
                  {"arch", env.arch}};
  j["placement"] = {{"pinned", placement.pinned},
                    {"cpu_a", placement.cpu_a},
                    {"cpu_b", placement.cpu_b},
                    {"numa_node_a", placement.node_a},
                    {"numa_node_b", placement.node_b},
                    {"side_a", "parent: ping initiator / producer / memcpy baseline"},
                    {"side_b", "child: echo / consumer"}};
  if (!placement.note.empty()) j["placement"]["note"] = placement.note;
  j["kernel"] = env.kernel;
  j["build"] = {{"compiler", env.compiler},
                {"build_type", env.build_type},
                {"ndebug", env.ndebug},
                {"weft_version", env.weft_version}};
  j["clock"] = {{"source", clock.kind == ClockKind::kTsc ? "tsc" : "clock_monotonic"},
                {"tsc_hz", clock.tsc_hz},
                {"calibration_ms", clock.calibration_ms},
                {"read_ns", clock.read_ns()},
                {"clock_gettime_ns", clock.monotonic_read_ns}};
  j["date_utc"] = env.date_utc;
  return j;
}

std::string env_summary(const EnvInfo& env, const Placement& placement) {
  return fmt::format("{}, {} CPUs{}; {}; kernel {}; {} {}{}, weft {}; {}", env.cpu_model,
                     env.cpus_online, env.hypervisor ? " (VM)" : "",
                     placement.pinned ? fmt::format("side A CPU {}, side B CPU {}", placement.cpu_a,
                                                    placement.cpu_b)
                                      : std::string("not pinned"),
                     env.kernel, env.compiler.substr(0, env.compiler.find(' ', 5)), env.build_type,
                     env.ndebug ? "" : " (assertions on)", env.weft_version, env.date_utc);
}

std::vector<std::string> env_lines(const EnvInfo& env, const Placement& placement,
                                   const Timebase& clock) {
  std::vector<std::string> lines;
  lines.push_back(fmt::format("machine:   {} ({}), {} CPUs online, {} allowed{}", env.cpu_model,
                              env.arch, env.cpus_online, env.cpus_allowed,
                              env.hypervisor ? ", virtual machine" : ""));
  if (placement.pinned) {
    lines.push_back(fmt::format(
        "placement: side A (parent: initiator/producer/memcpy) pinned to CPU {} (node {}), side B "
        "(child: echo/consumer) pinned to CPU {} (node {})",
        placement.cpu_a, placement.node_a, placement.cpu_b, placement.node_b));
  } else {
    lines.push_back(fmt::format("placement: not pinned ({})", placement.note));
  }
  lines.push_back(fmt::format("kernel:    {}", env.kernel));
  lines.push_back(fmt::format("build:     {}, {}{}, weft {}", env.compiler, env.build_type,
                              env.ndebug ? " (NDEBUG)" : " (assertions on)", env.weft_version));
  lines.push_back(fmt::format("clock:     {}", clock.describe()));
  lines.push_back(fmt::format("date:      {}", env.date_utc));
  return lines;
}

}  // namespace shmem_bench
