// The default suite; see suite.hpp.
#include "suite.hpp"

#include <algorithm>
#include <memory>

#include <fmt/format.h>

#include "errors.hpp"
#include "floor.hpp"
#include "weft/detail/layout.hpp"

namespace shmem_bench {
namespace {

EndpointSpec kind_spec(Transport t, std::uint64_t size, std::uint64_t capacity) {
  EndpointSpec spec;
  spec.transport = t;
  spec.size_bytes = size;
  spec.capacity_bytes = capacity;
  return spec;
}

// An endpoint under test and where its figures go.
struct Subject {
  Transport transport;
  std::unique_ptr<Endpoint> ping;
  std::unique_ptr<Endpoint> stream;
  std::size_t kind_index = 0;     // Into the size's latency/throughput results (weft kinds).
  CompareEntry* entry = nullptr;  // Compare entry (weft SPSC and IPC).
};

std::string kind_label(const EndpointSpec& spec) {
  return spec.transport == Transport::kSpsc ? "spsc" : describe(spec);
}

}  // namespace

std::uint64_t suite_phases(const SuiteConfig& config) noexcept {
  const std::uint64_t subjects = config.kinds.size() + config.ipc.size();
  return static_cast<std::uint64_t>(config.runs) * config.sizes.size() * (2 + 2 * subjects);
}

SuiteResult run_suite(const SuiteConfig& config, BenchContext& context, Progress& progress) {
  const std::uint64_t start_ns = monotonic_ns();
  SuiteResult result;
  result.config = config;
  result.compare.config.runs = config.runs;
  result.compare.config.sizes = config.sizes;
  result.compare.config.transports = {Transport::kSpsc};
  result.compare.config.transports.insert(result.compare.config.transports.end(),
                                          config.ipc.begin(), config.ipc.end());
  // Compare entries are kept by pointer below: reserve so the vector never moves them.
  result.compare.entries.reserve(config.sizes.size() * (1 + config.ipc.size()));
  const Timebase& clock = context.clock();
  for (const std::uint64_t size : config.sizes) {
    const std::uint64_t ping_ring =
        config.capacity_bytes != 0 ? config.capacity_bytes : ping_ring_bytes(size);
    const std::uint64_t stream_ring =
        config.capacity_bytes != 0 ? config.capacity_bytes : stream_ring_bytes(size);
    const std::size_t first_kind = result.latency.size();
    std::vector<Subject> subjects;
    for (const Transport t : config.kinds) {
      Subject s{t, open_endpoint(kind_spec(t, size, ping_ring), EndpointMode::kPingPong, context),
                open_endpoint(kind_spec(t, size, stream_ring), EndpointMode::kStream, context),
                result.latency.size(), nullptr};
      LatencyResult lat;
      lat.config.spec = kind_spec(t, size, ping_ring);
      lat.config.runs = config.runs;
      lat.config.limits = config.ping_limits;
      lat.processes = s.ping->processes();
      result.latency.push_back(std::move(lat));
      ThroughputResult tput;
      tput.config.spec = kind_spec(t, size, stream_ring);
      tput.config.runs = config.runs;
      tput.config.limits = config.stream_limits;
      tput.processes = s.stream->processes();
      result.throughput.push_back(std::move(tput));
      if (t == Transport::kSpsc) {
        CompareEntry entry;
        entry.transport = t;
        entry.size = size;
        result.compare.entries.push_back(std::move(entry));
        s.entry = &result.compare.entries.back();
      }
      subjects.push_back(std::move(s));
    }
    for (const Transport t : config.ipc) {
      CompareEntry entry;
      entry.transport = t;
      entry.size = size;
      result.compare.entries.push_back(std::move(entry));
      CompareEntry* e = &result.compare.entries.back();
      try {
        Subject s{t, open_endpoint(kind_spec(t, size, 0), EndpointMode::kPingPong, context),
                  open_endpoint(kind_spec(t, size, 0), EndpointMode::kStream, context), 0, e};
        e->note = endpoint_note(*s.ping);
        subjects.push_back(std::move(s));
      } catch (const UnsupportedError& error) {
        e->skipped = error.what();
      }
    }
    const std::uint64_t span_bytes = weft::detail::record_span_bytes(size);
    MemcpyBaseline memcpy_baseline(size, stream_ring, span_bytes);
    for (int run = 0; run < config.runs; ++run) {
      const std::string tag =
          fmt::format("{}  run {}/{}", format_bytes(size), run + 1, config.runs);
      progress.phase(fmt::format("floor {}", tag));
      const Histogram floor = measure_floor(context.peer(), clock, config.floor_limits);
      result.compare.floor_rtt_ns.push_back(clock.to_ns(floor.value_at_percentile(50)));
      // Ping-pong phases, in an order that rotates from run to run.
      std::vector<std::size_t> order(subjects.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::rotate(
          order.begin(),
          order.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(run) % order.size()),
          order.end());
      std::vector<Histogram> pings(subjects.size());
      for (const std::size_t i : order) {
        const Subject& s = subjects[i];
        progress.phase(fmt::format("latency {} {}", transport_name(s.transport), tag));
        pings[i] = s.ping->ping(config.ping_limits);
        if (s.entry != nullptr) {
          s.entry->rtt_p50_ns.push_back(clock.to_ns(pings[i].value_at_percentile(50)));
          s.entry->rtt_p99_ns.push_back(clock.to_ns(pings[i].value_at_percentile(99)));
          s.entry->rtt.add(pings[i]);
        }
      }
      progress.phase(fmt::format("memcpy {}", tag));
      const double memcpy_bps = memcpy_baseline.measure(clock, config.memcpy_limits).bytes_per_s;
      std::vector<StreamRun> streams(subjects.size());
      for (const std::size_t i : order) {
        const Subject& s = subjects[i];
        progress.phase(fmt::format("throughput {} {}", transport_name(s.transport), tag));
        streams[i] = s.stream->stream(config.stream_limits);
        if (s.entry != nullptr) s.entry->msgs_per_s.push_back(streams[i].msgs_per_s);
      }
      // The weft kinds' runs, each with the floor, memcpy and SPSC of this run.
      const Histogram* spsc_ping = nullptr;
      const StreamRun* spsc_stream = nullptr;
      for (std::size_t i = 0; i < subjects.size(); ++i) {
        if (subjects[i].transport == Transport::kSpsc && subjects[i].entry != nullptr) {
          spsc_ping = &pings[i];
          spsc_stream = &streams[i];
        }
      }
      for (std::size_t i = 0; i < config.kinds.size(); ++i) {
        const Subject& s = subjects[i];
        LatencyRun lr;
        lr.floor = floor;
        lr.weft = pings[i];
        if (s.transport != Transport::kSpsc && spsc_ping != nullptr) lr.spsc = *spsc_ping;
        result.latency[s.kind_index].runs.push_back(std::move(lr));
        ThroughputRun tr;
        tr.msgs_per_s = streams[i].msgs_per_s;
        tr.bytes_per_s = streams[i].bytes_per_s;
        tr.memcpy_bytes_per_s = memcpy_bps;
        tr.messages = streams[i].messages;
        tr.seconds = streams[i].seconds;
        tr.claims_refused = streams[i].claims_refused;
        tr.consumers = streams[i].consumers;
        if (s.transport != Transport::kSpsc && spsc_stream != nullptr) {
          tr.spsc_msgs_per_s = spsc_stream->msgs_per_s;
        }
        result.throughput[s.kind_index].runs.push_back(std::move(tr));
      }
    }
    (void)first_kind;
  }
  result.wall_s = static_cast<double>(monotonic_ns() - start_ns) / 1e9;
  return result;
}

void print_suite_table(std::FILE* out, const SuiteResult& result, const ReportContext& context) {
  const Timebase& clock = *context.clock;
  fmt::print(out,
             "shmem-bench: default suite (weft SPSC, MPSC x1, broadcast x1 and kernel IPC; two "
             "processes; {} runs)\n",
             result.config.runs);
  print_environment(out, context);
  if (!result.latency.empty()) print_processes(out, result.latency.front().processes);
  fmt::print(
      out,
      "\nEach figure is the median over runs; within a run every phase of a size is "
      "interleaved with its baselines:\nlatency = ping-pong round trip (RTT) vs the "
      "cache-line floor; throughput = consumer-side rate vs single-thread memcpy;\nx spsc "
      "= ratio to weft SPSC in the same run (latency: above 1 is slower; throughput: below 1 "
      "is slower);\nIPC rows: ratio to weft SPSC at the same size. Mmsg/s = 10^6 msgs/s, GB/s "
      "= 10^9 payload bytes/s.\n\n");
  fmt::print(out, "{:<28} {:>36} {:>20} {:>20} {:>8}\n", "benchmark", "figure (median)",
             "same-run baseline", "ratio [min..max]", "x spsc");
  std::uint64_t size = 0;
  for (const LatencyResult& r : result.latency) {
    if (r.config.spec.size_bytes != size && size != 0) fmt::print(out, "\n");
    size = r.config.spec.size_bytes;
    const LatencySummary s = summarize(r, clock);
    fmt::print(out, "{:<28} {:>36} {:>20} {:>20} {:>8}\n",
               fmt::format("latency {} {}", kind_label(r.config.spec), format_bytes(size)),
               fmt::format("RTT p50 {:.0f} p99 {:.0f} p99.9 {:.0f} ns", s.p50.median, s.p99.median,
                           s.p999.median),
               fmt::format("floor {:.0f} ns", s.floor.median), ratio_text(s.ratio_spread),
               s.has_spsc ? fmt::format("{:.2f}", s.ratio_to_spsc_spread.median) : "-");
  }
  fmt::print(out, "\n");
  size = 0;
  for (const ThroughputResult& r : result.throughput) {
    if (r.config.spec.size_bytes != size && size != 0) fmt::print(out, "\n");
    size = r.config.spec.size_bytes;
    const ThroughputSummary s = summarize(r);
    fmt::print(out, "{:<28} {:>36} {:>20} {:>20} {:>8}\n",
               fmt::format("throughput {} {}", kind_label(r.config.spec), format_bytes(size)),
               fmt::format("{} {:.2f} GB/s", rate_text(s.msgs.median), s.bytes.median / 1e9),
               fmt::format("memcpy {:.2f} GB/s", s.memcpy_bytes.median / 1e9),
               ratio_text(s.ratio_spread),
               s.has_spsc ? fmt::format("{:.2f}", s.ratio_to_spsc_spread.median) : "-");
  }
  fmt::print(out, "\n{:<28} {:>12} {:>14} {:>14} {:>14} {:>12} {:>10}\n", "kernel IPC (compare)",
             "RTT p50", "msgs/s", "weft RTT p50", "weft msgs/s", "RTT x weft", "rate x weft");
  size = 0;
  std::vector<std::string> notes;
  for (const CompareEntry& e : result.compare.entries) {
    if (e.transport == Transport::kSpsc) continue;
    if (e.size != size && size != 0) fmt::print(out, "\n");
    size = e.size;
    const std::string name =
        fmt::format("{} {}", transport_name(e.transport), format_bytes(e.size));
    if (!e.skipped.empty()) {
      fmt::print(out, "{:<28} skipped: {}\n", name, e.skipped);
      continue;
    }
    const CompareFigures f = figures_of(result.compare, e, clock);
    double weft_rtt = 0;
    double weft_rate = 0;
    for (const CompareEntry& w : result.compare.entries) {
      if (w.transport == Transport::kSpsc && w.size == e.size) {
        weft_rtt = spread_of(w.rtt_p50_ns).median;
        weft_rate = spread_of(w.msgs_per_s).median;
      }
    }
    fmt::print(out, "{:<28} {:>9.1f} us {:>14} {:>11.2f} us {:>14} {:>12.1f} {:>10.3f}\n", name,
               f.rtt_p50.median / 1e3, rate_text(f.msgs.median), weft_rtt / 1e3,
               rate_text(weft_rate), f.rtt_ratio_to_weft, f.msgs_ratio_to_weft);
    if (!e.note.empty()) {
      notes.push_back(
          fmt::format("{} {}: {}", transport_name(e.transport), format_bytes(e.size), e.note));
    }
  }
  for (const std::string& note : notes) fmt::print(out, "note: {}\n", note);
  fmt::print(out, "\nsuite wall time {:.1f} s\n", result.wall_s);
}

nlohmann::json suite_json(const SuiteResult& result, const ReportContext& context) {
  nlohmann::json j;
  j["suite"] = "default";
  j["wall_s"] = result.wall_s;
  j["env"] = env_json(*context.env, *context.placement, *context.clock);
  nlohmann::json list = nlohmann::json::array();
  for (const LatencyResult& r : result.latency) {
    list.push_back(to_json(r, context));
  }
  for (const ThroughputResult& r : result.throughput) {
    list.push_back(to_json(r, context));
  }
  j["results"] = list;
  j["compare"] = compare_json(result.compare, *context.clock);
  j["floor_rtt_ns"] = spread_of(result.compare.floor_rtt_ns).median;
  return j;
}

}  // namespace shmem_bench
