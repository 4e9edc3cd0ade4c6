// `sweep`; see sweep.hpp.
#include "sweep.hpp"

#include <memory>

#include <fmt/format.h>

#include "floor.hpp"

namespace shmem_bench {
namespace {

std::string rate_cell(double rate) { return rate > 0 ? rate_text(rate) : "max"; }

const char* kind_of(std::uint32_t producers) { return producers > 1 ? "mpsc" : "spsc"; }

}  // namespace

std::uint64_t sweep_phases(const SweepConfig& config) noexcept {
  return static_cast<std::uint64_t>(config.runs) * config.producers.size() * config.sizes.size() *
         (1 + config.rates.size());
}

SweepResult run_sweep(const SweepConfig& config, BenchContext& context, Progress& progress) {
  SweepResult result;
  result.config = config;
  struct Group {
    std::uint32_t producers;
    std::uint64_t size;
    std::unique_ptr<Endpoint> endpoint;
    std::size_t first_cell;
  };
  std::vector<Group> groups;
  for (const std::uint32_t p : config.producers) {
    bool placed = false;
    for (const std::uint64_t size : config.sizes) {
      EndpointSpec spec;
      spec.transport = p > 1 ? Transport::kMpsc : Transport::kSpsc;
      spec.producers = p;
      spec.size_bytes = size;
      spec.capacity_bytes = config.capacity_bytes;
      Group g{p, size, open_endpoint(spec, EndpointMode::kStream, context), result.cells.size()};
      if (!placed) {
        result.placements.push_back(g.endpoint->processes());
        placed = true;
      }
      for (const double rate : config.rates) {
        SweepCell cell;
        cell.producers = p;
        cell.rate = rate;
        cell.size = size;
        result.cells.push_back(std::move(cell));
      }
      groups.push_back(std::move(g));
    }
  }
  for (int run = 0; run < config.runs; ++run) {
    for (Group& g : groups) {
      const std::string what =
          fmt::format("{} x{} {}", kind_of(g.producers), g.producers, format_bytes(g.size));
      progress.phase(fmt::format("sweep {}: floor  run {}/{}", what, run + 1, config.runs));
      const Histogram floor = measure_floor(context.peer(), context.clock(), config.floor_limits);
      const double floor_ns = context.clock().to_ns(floor.value_at_percentile(50));
      for (std::size_t r = 0; r < config.rates.size(); ++r) {
        SweepCell& cell = result.cells[g.first_cell + r];
        progress.phase(fmt::format("sweep {} at {}  run {}/{}", what, rate_cell(cell.rate), run + 1,
                                   config.runs));
        OpenLoopLimits limits = config.limits;
        limits.rate_per_s = cell.rate;
        cell.runs.push_back(g.endpoint->open_loop(limits));
        cell.floor_rtt_ns.push_back(floor_ns);
      }
    }
  }
  return result;
}

SweepFigures figures_of(const SweepCell& cell, const Timebase& clock) {
  SweepFigures f;
  std::vector<double> p50, p95, p99, p999, achieved;
  for (const OpenLoopRun& r : cell.runs) {
    p50.push_back(clock.to_ns(r.latency.value_at_percentile(50)));
    p95.push_back(clock.to_ns(r.latency.value_at_percentile(95)));
    p99.push_back(clock.to_ns(r.latency.value_at_percentile(99)));
    p999.push_back(clock.to_ns(r.latency.value_at_percentile(99.9)));
    achieved.push_back(r.achieved_per_s);
    f.max_ns = std::max(f.max_ns, clock.to_ns(r.latency.max()));
    f.claims_refused += r.claims_refused;
    f.late += r.late_messages;
    f.messages += r.messages;
  }
  f.p50 = spread_of(p50);
  f.p95 = spread_of(p95);
  f.p99 = spread_of(p99);
  f.p999 = spread_of(p999);
  f.achieved = spread_of(achieved);
  f.floor = spread_of(cell.floor_rtt_ns);
  return f;
}

nlohmann::json to_json(const SweepResult& result, const ReportContext& context) {
  const SweepConfig& c = result.config;
  nlohmann::json j;
  j["benchmark"] = "sweep";
  j["units"] =
      "latency_*_ns: one way, from each message's intended send time to its receipt; rate and "
      "msgs_per_s: messages per second, all producers together (rate 0: closed loop, as fast as "
      "possible); claims_refused: claims the channel refused for lack of space, all runs";
  j["runs"] = c.runs;
  j["capacity"] = c.capacity_bytes;
  j["duration_s"] = c.limits.duration_s;
  nlohmann::json cells = nlohmann::json::array();
  for (const SweepCell& cell : result.cells) {
    const SweepFigures f = figures_of(cell, *context.clock);
    cells.push_back({{"producers", cell.producers},
                     {"kind", kind_of(cell.producers)},
                     {"rate", cell.rate},
                     {"size", cell.size},
                     {"msgs_per_s", f.achieved.median},
                     {"latency_p50_ns", f.p50.median},
                     {"latency_p95_ns", f.p95.median},
                     {"latency_p99_ns", f.p99.median},
                     {"latency_p999_ns", f.p999.median},
                     {"latency_max_ns", f.max_ns},
                     {"claims_refused", f.claims_refused},
                     {"late_messages", f.late},
                     {"messages", f.messages},
                     {"floor_rtt_ns", f.floor.median},
                     {"spread",
                      {{"latency_p50_ns", spread_json(f.p50)},
                       {"latency_p99_ns", spread_json(f.p99)},
                       {"msgs_per_s", spread_json(f.achieved)}}}});
  }
  j["cells"] = cells;
  nlohmann::json placements = nlohmann::json::array();
  for (const auto& p : result.placements) placements.push_back(processes_json(p));
  j["placements"] = placements;
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

std::string to_csv(const SweepResult& result, const Timebase& clock) {
  std::string out =
      "producers,kind,size,rate,msgs_per_s,latency_p50_ns,latency_p95_ns,latency_p99_ns,"
      "latency_p999_ns,latency_max_ns,claims_refused,late_messages,messages,floor_rtt_ns,runs\n";
  for (const SweepCell& cell : result.cells) {
    const SweepFigures f = figures_of(cell, clock);
    out += fmt::format(
        "{},{},{},{:.0f},{:.0f},{:.0f},{:.0f},{:.0f},{:.0f},{:.0f},{},{},{},{:.0f},{}\n",
        cell.producers, kind_of(cell.producers), cell.size, cell.rate, f.achieved.median,
        f.p50.median, f.p95.median, f.p99.median, f.p999.median, f.max_ns, f.claims_refused, f.late,
        f.messages, f.floor.median, cell.runs.size());
  }
  return out;
}

void print_table(std::FILE* out, const SweepResult& result, const ReportContext& context) {
  const SweepConfig& c = result.config;
  fmt::print(out,
             "shmem-bench sweep: producers x offered rate x size, open loop, {} ring, {} runs\n",
             format_bytes(c.capacity_bytes), c.runs);
  print_environment(out, context);
  for (const auto& p : result.placements) print_processes(out, p);
  fmt::print(out,
             "\nOne-way latency (ns) from each message's intended send time to its receipt; "
             "medians over runs. rate = offered\n(max: closed loop, as fast as the producers can "
             "go); achieved = received per second; refused = claims refused\n(ring full, all "
             "runs); late = messages sent more than 1 us after their intended time; floor = cache-"
             "line RTT\nright before each group. 1 producer = SPSC, more = MPSC.\n\n");
  fmt::print(out,
             "{:>4} {:>5} {:>7} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>6}\n",
             "prod", "kind", "size", "rate", "achieved", "p50", "p95", "p99", "p99.9", "max",
             "refused", "late", "floor");
  for (const SweepCell& cell : result.cells) {
    const SweepFigures f = figures_of(cell, *context.clock);
    fmt::print(out,
               "{:>4} {:>5} {:>7} {:>11} {:>11} {:>9.0f} {:>9.0f} {:>9.0f} {:>9.0f} {:>10.0f} "
               "{:>9} {:>9} {:>6.0f}\n",
               cell.producers, kind_of(cell.producers), format_bytes(cell.size),
               rate_cell(cell.rate), rate_text(f.achieved.median), f.p50.median, f.p95.median,
               f.p99.median, f.p999.median, f.max_ns, f.claims_refused, f.late, f.floor.median);
  }
}

}  // namespace shmem_bench
