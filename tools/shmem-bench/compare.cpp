// `compare`; see compare.hpp.
#include "compare.hpp"

#include <algorithm>
#include <bit>
#include <memory>

#include <fmt/format.h>

#include "errors.hpp"
#include "floor.hpp"

namespace shmem_bench {
namespace {

const char* long_name(Transport t) {
  switch (t) {
    case Transport::kSpsc:
      return "weft SPSC";
    case Transport::kPipe:
      return "pipe";
    case Transport::kUnix:
      return "Unix socket (SOCK_SEQPACKET)";
    case Transport::kMq:
      return "POSIX mq";
    case Transport::kTcp:
      return "TCP 127.0.0.1 (TCP_NODELAY)";
    default:
      return transport_name(t);
  }
}

const CompareEntry* weft_entry(const CompareResult& result, std::uint64_t size) {
  for (const CompareEntry& e : result.entries) {
    if (e.size == size && e.transport == Transport::kSpsc && e.skipped.empty()) return &e;
  }
  return nullptr;
}

}  // namespace

std::uint64_t ping_ring_bytes(std::uint64_t size) noexcept {
  return std::max<std::uint64_t>(std::uint64_t{1} << 16, std::bit_ceil(4 * size));
}

std::uint64_t stream_ring_bytes(std::uint64_t size) noexcept {
  return std::max<std::uint64_t>(std::uint64_t{4} << 20, std::bit_ceil(4 * size));
}

std::uint64_t compare_phases(const CompareConfig& config) noexcept {
  return static_cast<std::uint64_t>(config.runs) * config.sizes.size() *
         (1 + 2 * config.transports.size());
}

CompareResult run_compare(const CompareConfig& config, BenchContext& context, Progress& progress) {
  CompareResult result;
  result.config = config;
  for (const std::uint64_t size : config.sizes) {
    // Open every transport's two endpoints for this size; a transport this machine cannot offer
    // at this size (a message-queue limit) is reported as skipped.
    std::vector<std::unique_ptr<Endpoint>> pings;
    std::vector<std::unique_ptr<Endpoint>> streams;
    const std::size_t first = result.entries.size();
    for (const Transport t : config.transports) {
      CompareEntry entry;
      entry.transport = t;
      entry.size = size;
      EndpointSpec spec;
      spec.transport = t;
      spec.size_bytes = size;
      try {
        spec.capacity_bytes = ping_ring_bytes(size);
        pings.push_back(open_endpoint(spec, EndpointMode::kPingPong, context));
        spec.capacity_bytes = stream_ring_bytes(size);
        streams.push_back(open_endpoint(spec, EndpointMode::kStream, context));
        entry.note = endpoint_note(*pings.back());
      } catch (const UnsupportedError& e) {
        entry.skipped = e.what();
        if (pings.size() > streams.size()) pings.pop_back();
        pings.push_back(nullptr);
        streams.push_back(nullptr);
      }
      result.entries.push_back(std::move(entry));
    }
    for (int run = 0; run < config.runs; ++run) {
      progress.phase(
          fmt::format("compare {}: floor  run {}/{}", format_bytes(size), run + 1, config.runs));
      const Histogram floor = measure_floor(context.peer(), context.clock(), config.floor_limits);
      result.floor_rtt_ns.push_back(context.clock().to_ns(floor.value_at_percentile(50)));
      // Rotate the order from run to run, so no transport always runs first.
      std::vector<std::size_t> order(config.transports.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::rotate(
          order.begin(),
          order.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(run) % order.size()),
          order.end());
      for (const std::size_t i : order) {
        CompareEntry& entry = result.entries[first + i];
        if (!entry.skipped.empty()) continue;
        progress.phase(fmt::format("compare {}: {} ping-pong  run {}/{}", format_bytes(size),
                                   transport_name(entry.transport), run + 1, config.runs));
        const Histogram rtt = pings[i]->ping(config.ping_limits);
        entry.rtt_p50_ns.push_back(context.clock().to_ns(rtt.value_at_percentile(50)));
        entry.rtt_p99_ns.push_back(context.clock().to_ns(rtt.value_at_percentile(99)));
        entry.rtt.add(rtt);
        progress.phase(fmt::format("compare {}: {} stream  run {}/{}", format_bytes(size),
                                   transport_name(entry.transport), run + 1, config.runs));
        entry.msgs_per_s.push_back(streams[i]->stream(config.stream_limits).msgs_per_s);
      }
    }
  }
  return result;
}

CompareFigures figures_of(const CompareResult& result, const CompareEntry& entry,
                          const Timebase& clock) {
  (void)clock;
  CompareFigures f;
  f.rtt_p50 = spread_of(entry.rtt_p50_ns);
  f.rtt_p99 = spread_of(entry.rtt_p99_ns);
  f.msgs = spread_of(entry.msgs_per_s);
  if (const CompareEntry* weft = weft_entry(result, entry.size)) {
    // Per run, then the median: each ratio compares phases measured seconds apart.
    std::vector<double> rtt_ratio;
    std::vector<double> msgs_ratio;
    for (std::size_t i = 0; i < entry.rtt_p50_ns.size() && i < weft->rtt_p50_ns.size(); ++i) {
      if (weft->rtt_p50_ns[i] > 0) rtt_ratio.push_back(entry.rtt_p50_ns[i] / weft->rtt_p50_ns[i]);
      if (weft->msgs_per_s[i] > 0) msgs_ratio.push_back(entry.msgs_per_s[i] / weft->msgs_per_s[i]);
    }
    f.rtt_ratio_to_weft = spread_of(rtt_ratio).median;
    f.msgs_ratio_to_weft = spread_of(msgs_ratio).median;
  }
  return f;
}

nlohmann::json compare_json(const CompareResult& result, const Timebase& clock) {
  nlohmann::json list = nlohmann::json::array();
  for (const CompareEntry& e : result.entries) {
    nlohmann::json j;
    j["transport"] = e.transport == Transport::kSpsc ? "weft_spsc" : transport_name(e.transport);
    j["size"] = e.size;
    if (!e.skipped.empty()) {
      j["skipped"] = e.skipped;
      j["rtt_p50_ns"] = nullptr;
      j["rtt_p99_ns"] = nullptr;
      j["msgs_per_s"] = nullptr;
      list.push_back(j);
      continue;
    }
    const CompareFigures f = figures_of(result, e, clock);
    j["rtt_p50_ns"] = f.rtt_p50.median;
    j["rtt_p99_ns"] = f.rtt_p99.median;
    j["msgs_per_s"] = f.msgs.median;
    j["bytes_per_s"] = f.msgs.median * static_cast<double>(e.size);
    j["rtt_ratio_to_weft"] = f.rtt_ratio_to_weft;
    j["msgs_ratio_to_weft"] = f.msgs_ratio_to_weft;
    j["spread"] = {{"rtt_p50_ns", spread_json(f.rtt_p50)},
                   {"rtt_p99_ns", spread_json(f.rtt_p99)},
                   {"msgs_per_s", spread_json(f.msgs)}};
    if (!e.note.empty()) j["note"] = e.note;
    list.push_back(j);
  }
  return list;
}

nlohmann::json to_json(const CompareResult& result, const ReportContext& context) {
  nlohmann::json j;
  j["benchmark"] = "compare";
  j["units"] =
      "rtt_*_ns: ping-pong round trip, nanoseconds; msgs_per_s: messages received per second, "
      "one producer streaming; ratios to weft SPSC at the same size, per run, median";
  j["runs"] = result.config.runs;
  j["floor_rtt_ns"] = spread_of(result.floor_rtt_ns).median;
  j["results"] = compare_json(result, *context.clock);
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  return j;
}

void print_table(std::FILE* out, const CompareResult& result, const ReportContext& context,
                 bool with_environment) {
  if (with_environment) {
    fmt::print(out, "shmem-bench compare: weft SPSC beside kernel IPC, {} runs\n",
               result.config.runs);
    print_environment(out, context);
    fmt::print(out,
               "\nSame two processes and CPUs for every transport, interleaved in each run. RTT = "
               "ping-pong round trip\n(weft busy-spins; the others block in the kernel, as they "
               "are normally used). msgs/s = one producer\nstreaming, counted by the consumer; x "
               "weft = ratio to weft SPSC at the same size (per run, median).\n"
               "floor (cache-line round trip, same run): {:.0f} ns.\n",
               spread_of(result.floor_rtt_ns).median);
  }
  fmt::print(out, "\n{:<30} {:>7} {:>10} {:>10} {:>9} {:>14} {:>9}\n", "transport", "size",
             "RTT p50", "RTT p99", "x weft", "msgs/s", "x weft");
  std::uint64_t size = 0;
  std::vector<std::string> notes;
  for (const CompareEntry& e : result.entries) {
    if (e.size != size && size != 0) fmt::print(out, "\n");
    size = e.size;
    if (!e.skipped.empty()) {
      fmt::print(out, "{:<30} {:>7} skipped: {}\n", long_name(e.transport), format_bytes(e.size),
                 e.skipped);
      continue;
    }
    const CompareFigures f = figures_of(result, e, *context.clock);
    const bool weft = e.transport == Transport::kSpsc;
    fmt::print(out, "{:<30} {:>7} {:>8.0f}ns {:>8.0f}ns {:>9} {:>14} {:>9}\n",
               long_name(e.transport), format_bytes(e.size), f.rtt_p50.median, f.rtt_p99.median,
               weft ? "1" : fmt::format("{:.1f}", f.rtt_ratio_to_weft), rate_text(f.msgs.median),
               weft ? "1" : fmt::format("{:.3f}", f.msgs_ratio_to_weft));
    if (!e.note.empty()) {
      const std::string note = fmt::format("{}: {}", long_name(e.transport), e.note);
      if (std::find(notes.begin(), notes.end(), note) == notes.end()) notes.push_back(note);
    }
  }
  for (const std::string& note : notes) fmt::print(out, "note: {}\n", note);
}

}  // namespace shmem_bench
