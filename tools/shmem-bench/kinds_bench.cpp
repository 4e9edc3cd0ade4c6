// Latency and throughput of a weft kind with its same-run references; see kinds_bench.hpp.
#include "kinds_bench.hpp"

#include <utility>

#include <fmt/format.h>

#include "report.hpp"

namespace shmem_bench {
namespace {

std::string label(const char* what, const EndpointSpec& spec, int run, int runs) {
  return fmt::format("{} {} {}  run {}/{}", what, describe(spec), format_bytes(spec.size_bytes),
                     run + 1, runs);
}

}  // namespace

std::uint64_t latency_phases(const LatencyConfig& config) noexcept {
  const bool reference = config.spec.transport != Transport::kSpsc;
  return static_cast<std::uint64_t>(config.runs) * (reference ? 3 : 2);
}

std::uint64_t throughput_phases(const ThroughputConfig& config) noexcept {
  std::uint64_t per_run = 2;
  if (config.spec.transport != Transport::kSpsc) ++per_run;
  if (config.spec.transport == Transport::kMpsc && config.spec.producers > 1) ++per_run;
  return static_cast<std::uint64_t>(config.runs) * per_run;
}

LatencyResult run_latency(const LatencyConfig& config, BenchContext& context, Progress& progress) {
  const EndpointSpec& spec = config.spec;
  std::unique_ptr<Endpoint> kind = open_endpoint(spec, EndpointMode::kPingPong, context);
  std::unique_ptr<Endpoint> spsc;
  if (spec.transport != Transport::kSpsc) {
    EndpointSpec s = spec;
    s.transport = Transport::kSpsc;
    s.lossy = false;
    spsc = open_endpoint(s, EndpointMode::kPingPong, context);
  }
  LatencyResult result;
  result.config = config;
  result.processes = kind->processes();
  for (int run = 0; run < config.runs; ++run) {
    LatencyRun r;
    progress.phase(label("latency floor for", spec, run, config.runs));
    r.floor = measure_floor(context.peer(), context.clock(), config.limits);
    // Alternate the order of the kind and its reference, so neither always runs first.
    const bool kind_first = run % 2 == 1;
    if (spsc && !kind_first) {
      progress.phase(label("latency spsc reference for", spec, run, config.runs));
      r.spsc = spsc->ping(config.limits);
    }
    progress.phase(label("latency", spec, run, config.runs));
    r.weft = kind->ping(config.limits);
    if (spsc && kind_first) {
      progress.phase(label("latency spsc reference for", spec, run, config.runs));
      r.spsc = spsc->ping(config.limits);
    }
    result.runs.push_back(std::move(r));
  }
  return result;
}

ThroughputResult run_throughput(const ThroughputConfig& config, BenchContext& context,
                                Progress& progress) {
  const EndpointSpec& spec = config.spec;
  std::unique_ptr<Endpoint> kind = open_endpoint(spec, EndpointMode::kStream, context);
  std::unique_ptr<Endpoint> spsc;
  std::unique_ptr<Endpoint> one_producer;
  if (spec.transport != Transport::kSpsc) {
    EndpointSpec s = spec;
    s.transport = Transport::kSpsc;
    s.producers = 1;
    s.consumers = 1;
    s.lossy = false;
    s.slots_max = 0;
    spsc = open_endpoint(s, EndpointMode::kStream, context);
  }
  if (spec.transport == Transport::kMpsc && spec.producers > 1) {
    EndpointSpec s = spec;
    s.producers = 1;
    one_producer = open_endpoint(s, EndpointMode::kStream, context);
  }
  const std::uint64_t span_bytes = spec.transport == Transport::kBroadcast
                                       ? (16 + spec.size_bytes + 15) / 16 * 16
                                       : (8 + spec.size_bytes + 7) / 8 * 8;
  MemcpyBaseline memcpy_baseline(spec.size_bytes, spec.capacity_bytes, span_bytes);
  ThroughputResult result;
  result.config = config;
  result.processes = kind->processes();
  for (int run = 0; run < config.runs; ++run) {
    ThroughputRun r;
    progress.phase(label("throughput memcpy for", spec, run, config.runs));
    r.memcpy_bytes_per_s = memcpy_baseline.measure(context.clock(), config.limits).bytes_per_s;
    // The references and the kind, in an order that rotates from run to run.
    std::vector<std::pair<int, Endpoint*>> order;
    order.emplace_back(0, kind.get());
    if (spsc) order.emplace_back(1, spsc.get());
    if (one_producer) order.emplace_back(2, one_producer.get());
    std::rotate(
        order.begin(),
        order.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(run) % order.size()),
        order.end());
    for (const auto& [which, endpoint] : order) {
      progress.phase(label(which == 0   ? "throughput"
                           : which == 1 ? "throughput spsc reference for"
                                        : "throughput 1-producer reference for",
                           spec, run, config.runs));
      const StreamRun s = endpoint->stream(config.limits);
      if (which == 0) {
        r.msgs_per_s = s.msgs_per_s;
        r.bytes_per_s = s.bytes_per_s;
        r.messages = s.messages;
        r.seconds = s.seconds;
        r.claims_refused = s.claims_refused;
        r.consumers = s.consumers;
      } else if (which == 1) {
        r.spsc_msgs_per_s = s.msgs_per_s;
      } else {
        r.one_producer_msgs_per_s = s.msgs_per_s;
      }
    }
    result.runs.push_back(std::move(r));
  }
  return result;
}

}  // namespace shmem_bench
