// Endpoints: names, validation, process placement and the child-side dispatch; see endpoint.hpp.
#include "endpoint.hpp"

#include <bit>
#include <map>
#include <utility>

#include <fmt/format.h>

#include "errors.hpp"
#include "report.hpp"

namespace shmem_bench {

const char* transport_name(Transport transport) noexcept {
  switch (transport) {
    case Transport::kSpsc:
      return "spsc";
    case Transport::kMpsc:
      return "mpsc";
    case Transport::kBroadcast:
      return "broadcast";
    case Transport::kPipe:
      return "pipe";
    case Transport::kUnix:
      return "unix";
    case Transport::kMq:
      return "mq";
    case Transport::kTcp:
      return "tcp";
  }
  return "unknown";
}

bool is_weft(Transport transport) noexcept {
  return transport == Transport::kSpsc || transport == Transport::kMpsc ||
         transport == Transport::kBroadcast;
}

std::string describe(const EndpointSpec& spec) {
  switch (spec.transport) {
    case Transport::kMpsc:
      return fmt::format("mpsc x{}", spec.producers);
    case Transport::kBroadcast:
      return fmt::format("broadcast x{}{}", spec.consumers, spec.lossy ? " lossy" : "");
    default:
      return transport_name(spec.transport);
  }
}

void validate_spec(const EndpointSpec& spec) {
  const char* name = transport_name(spec.transport);
  if (spec.producers == 0) throw UsageError("--producers 0: at least one producer is needed");
  if (spec.consumers == 0) throw UsageError("--consumers 0: at least one consumer is needed");
  if (spec.producers > 1 && spec.transport != Transport::kMpsc) {
    throw UsageError(fmt::format(
        "--producers {} with --kind {}: only MPSC channels take more than one producer (use "
        "--kind mpsc, or leave --kind out)",
        spec.producers, name));
  }
  if (spec.consumers > 1 && spec.transport != Transport::kBroadcast) {
    throw UsageError(fmt::format(
        "--consumers {} with --kind {}: only broadcast channels take more than one consumer (use "
        "--kind broadcast, or leave --kind out)",
        spec.consumers, name));
  }
  if (spec.lossy && spec.transport != Transport::kBroadcast) {
    throw UsageError(
        fmt::format("--lossy with --kind {}: only broadcast channels are lossy", name));
  }
  const std::uint32_t processes = spec.producers + spec.consumers;
  if (processes > 1 + kProcessesMax) {
    throw UsageError(fmt::format(
        "{} producer(s) and {} consumer(s): shmem-bench runs at most {} processes (the parent "
        "and {} children)",
        spec.producers, spec.consumers, 1 + kProcessesMax, kProcessesMax));
  }
  if (spec.slots_max != 0) {
    if (spec.transport == Transport::kMpsc && spec.producers > spec.slots_max) {
      throw UsageError(fmt::format(
          "--producers {} exceeds the channel's producers_max {} (--producers-max): a producer "
          "beyond the slots would be refused with kBusy",
          spec.producers, spec.slots_max));
    }
    if (spec.transport == Transport::kBroadcast && spec.consumers > spec.slots_max) {
      throw UsageError(fmt::format(
          "--consumers {} exceeds the channel's consumers_max {} (--consumers-max): a consumer "
          "beyond the slots would be refused with kBusy",
          spec.consumers, spec.slots_max));
    }
    if (spec.slots_max > 1024) {
      throw UsageError(
          fmt::format("--producers-max/--consumers-max {}: at most 1024", spec.slots_max));
    }
  }
  if (spec.size_bytes == 0) throw UsageError("--size 0: records must carry at least one byte");
  if (is_weft(spec.transport)) {
    // weft's default record_bytes_max is a quarter of the ring.
    const std::uint64_t record_max = spec.capacity_bytes / 4;
    if (spec.size_bytes > record_max) {
      throw UsageError(fmt::format(
          "--size {} exceeds the channel's record_bytes_max {} (capacity / 4 for --capacity {}): "
          "raise --capacity to at least {}",
          spec.size_bytes, record_max, spec.capacity_bytes, std::bit_ceil(spec.size_bytes * 4)));
    }
  }
}

std::vector<ProcessSlot> BenchContext::plan(std::uint32_t producers, std::uint32_t consumers) {
  const std::vector<int>& cpus = placement_.cpus;
  const std::size_t total = std::size_t{producers} + consumers;
  const bool spread = placement_.pinned && cpus.size() >= total;
  std::vector<ProcessSlot> slots;
  std::size_t next_cpu = 2;
  std::map<int, std::size_t> nth_on_cpu;
  const auto cpu_for = [&](bool producer) {
    if (!placement_.pinned) return -1;
    if (spread) return cpus[next_cpu++];
    return producer ? placement_.cpu_a : placement_.cpu_b;
  };
  slots.push_back({"producer 0 (parent)", -1, placement_.cpu_a, false, true, 0});
  for (std::uint32_t i = 1; i < producers; ++i) {
    const int cpu = cpu_for(true);
    slots.push_back({fmt::format("producer {} (worker)", i), worker_on(cpu, nth_on_cpu[cpu]++), cpu,
                     false, true, i});
  }
  slots.push_back({"consumer 0 (child)", 0, placement_.cpu_b, false, false, 0});
  for (std::uint32_t i = 1; i < consumers; ++i) {
    const int cpu = cpu_for(false);
    slots.push_back({fmt::format("consumer {} (worker)", i), worker_on(cpu, nth_on_cpu[cpu]++), cpu,
                     false, false, i});
  }
  std::map<int, int> per_cpu;
  for (const ProcessSlot& s : slots) ++per_cpu[s.cpu];
  for (ProcessSlot& s : slots) {
    s.yields = s.cpu < 0 ? total > 2 : per_cpu[s.cpu] > 1;
  }
  return slots;
}

int BenchContext::worker_on(int cpu, std::size_t nth) {
  std::size_t seen = 0;
  for (const auto& [index, worker_cpu] : workers_) {
    if (worker_cpu != cpu) continue;
    if (seen++ == nth) return index;
  }
  const int index = peer_.spawn(cpu);
  workers_.emplace_back(index, cpu);
  return index;
}

OpenLoopRun Endpoint::open_loop(const OpenLoopLimits&) {
  throw UsageError(fmt::format("--rate: open-loop runs are for weft channels, not {}",
                               transport_name(spec_.transport)));
}

std::unique_ptr<Endpoint> open_endpoint(const EndpointSpec& spec, EndpointMode mode,
                                        BenchContext& context) {
  validate_spec(spec);
  if (is_weft(spec.transport)) return open_weft_endpoint(spec, mode, context);
  return open_ipc_endpoint(spec, mode, context);
}

// ---- child side ------------------------------------------------------------------------------

void ChildEnd::produce(ChildContext&, const Timebase&) {
  throw RunError("this endpoint has no extra producers");
}
void ChildEnd::open_loop_produce(ChildContext&, const Timebase&) {
  throw RunError("this endpoint has no open-loop mode");
}
void ChildEnd::open_loop_consume(ChildContext&, const Timebase&) {
  throw RunError("this endpoint has no open-loop mode");
}

namespace {

// The child's endpoints, by id. The child is its own process, so this table is the child's alone.
std::map<std::uint32_t, std::unique_ptr<ChildEnd>>& child_ends() {
  static std::map<std::uint32_t, std::unique_ptr<ChildEnd>> ends;
  return ends;
}

ChildEnd& find_end(std::uint32_t id) {
  auto& ends = child_ends();
  const auto it = ends.find(id);
  if (it == ends.end()) throw RunError(fmt::format("endpoint {} is not open in this process", id));
  return *it->second;
}

}  // namespace

void endpoint_child(Command command, ChildContext& context, const Timebase& clock) {
  const CommandParams& params = context.control.params;
  switch (command) {
    case Command::kEndpointOpen: {
      const auto transport = static_cast<Transport>(params.transport);
      child_ends()[params.endpoint_id] =
          is_weft(transport) ? open_weft_child_end(params) : open_ipc_child_end(params, context);
      return;
    }
    case Command::kEndpointClose:
      if (params.endpoint_id == kAllEndpoints) {
        child_ends().clear();
      } else {
        child_ends().erase(params.endpoint_id);
      }
      return;
    case Command::kEndpointEcho:
      find_end(params.endpoint_id).echo(context);
      return;
    case Command::kEndpointConsume:
      find_end(params.endpoint_id).consume(context, clock);
      return;
    case Command::kEndpointProduce:
      find_end(params.endpoint_id).produce(context, clock);
      return;
    case Command::kOpenLoopProduce:
      find_end(params.endpoint_id).open_loop_produce(context, clock);
      return;
    case Command::kOpenLoopConsume:
      find_end(params.endpoint_id).open_loop_consume(context, clock);
      return;
    default:
      throw RunError(fmt::format("unknown command {}", static_cast<unsigned>(command)));
  }
}

}  // namespace shmem_bench
