// The charts; see plots.hpp.
#include "plots.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "errors.hpp"
#include "svg.hpp"

namespace shmem_bench {
namespace {

std::string color_of(const std::string& name) {
  static const std::map<std::string, std::string> kColors = {
      {"floor", "#7b8794"},     {"spsc", "#1f77b4"}, {"mpsc", "#2ca02c"},
      {"broadcast", "#9467bd"}, {"pipe", "#d62728"}, {"unix", "#ff7f0e"},
      {"mq", "#8c564b"},        {"tcp", "#e377c2"},  {"memcpy", "#17becf"}};
  const std::string key = name.substr(0, name.find(' '));
  const auto it = kColors.find(key);
  return it == kColors.end() ? std::string{} : it->second;
}

std::string file_size(std::uint64_t size) {
  std::string s = format_bytes(size);
  s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
  return s;
}

template <class Chart>
Chart with_footer(Chart chart, const PlotContext& context) {
  chart.footer = context.footer;
  return chart;
}

std::string write(const std::string& dir, const std::string& name, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw RunError(fmt::format("--plot {}: cannot create the directory: {}", dir, ec.message()));
  const std::string path = (std::filesystem::path(dir) / name).string();
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw RunError(fmt::format("cannot write {}: {}", path, errno_text(errno)));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) throw RunError(fmt::format("writing {} failed", path));
  return path;
}

// The percentile curve of a histogram: x = log10(1/(1-p)), y = nanoseconds; up to the highest
// percentile its sample count supports, then the maximum.
std::vector<std::pair<double, double>> curve(const Histogram& h, const Timebase& clock) {
  std::vector<std::pair<double, double>> points;
  if (h.count() == 0) return points;
  const double top_x = std::log10(static_cast<double>(h.count()));  // p = 1 - 1/count.
  for (double x = 0; x < top_x; x += 0.025) {
    const double percent = 100.0 * (1.0 - std::pow(10.0, -x));
    points.emplace_back(x, clock.to_ns(h.value_at_percentile(percent)));
  }
  points.emplace_back(top_x, clock.to_ns(h.max()));
  return points;
}

svg::Series latency_series(const std::string& name, const Histogram& h, const Timebase& clock,
                           bool dashed = false) {
  svg::Series s;
  s.name = name;
  s.color = color_of(name);
  s.points = curve(h, clock);
  s.dashed = dashed;
  s.step = true;
  s.markers = false;
  return s;
}

svg::LineChart latency_chart(const std::string& title, const std::string& subtitle,
                             const std::string& y_label) {
  svg::LineChart chart;
  chart.title = title;
  chart.subtitle = subtitle;
  chart.x.label = "percentile (log scale of 1 / (1 - p))";
  chart.x.unit = svg::Unit::kPercentile;
  chart.x.log = false;
  chart.y.label = y_label;
  chart.y.unit = svg::Unit::kNanoseconds;
  chart.y.log = true;
  return chart;
}

Histogram merged(const std::vector<LatencyRun>& runs, Histogram LatencyRun::*member) {
  Histogram h;
  for (const LatencyRun& r : runs) h.add(r.*member);
  return h;
}

std::string kind_name(const EndpointSpec& spec) { return describe(spec); }

}  // namespace

std::vector<std::string> plot(const LatencyResult& result, const PlotContext& context) {
  const std::string& dir = context.dir;
  const Timebase& clock = *context.clock;
  const EndpointSpec& spec = result.config.spec;
  svg::LineChart chart = latency_chart(
      fmt::format("Round-trip latency, {} {} payload", kind_name(spec),
                  format_bytes(spec.size_bytes)),
      fmt::format("ping-pong between two pinned processes, all {} runs merged; floor = one cache "
                  "line bounced between the same processes",
                  result.config.runs),
      "round-trip time");
  chart.series.push_back(
      latency_series("floor (cache line)", merged(result.runs, &LatencyRun::floor), clock, true));
  if (spec.transport != Transport::kSpsc) {
    chart.series.push_back(
        latency_series("spsc (same run)", merged(result.runs, &LatencyRun::spsc), clock));
  }
  chart.series.push_back(
      latency_series(kind_name(spec), merged(result.runs, &LatencyRun::weft), clock));
  return {write(dir, fmt::format("latency_{}.svg", file_size(spec.size_bytes)),
                svg::render(with_footer(chart, context)))};
}

std::vector<std::string> plot(const ThroughputResult& result, const PlotContext& context) {
  const std::string& dir = context.dir;
  const EndpointSpec& spec = result.config.spec;
  const ThroughputSummary s = summarize(result);
  svg::BarChart chart;
  chart.title =
      fmt::format("Throughput, {} {} payload", kind_name(spec), format_bytes(spec.size_bytes));
  chart.subtitle = fmt::format(
      "messages per second, median of {} runs, each reference measured in the same run; memcpy "
      "shown as messages of that size",
      result.config.runs);
  chart.groups = {format_bytes(spec.size_bytes)};
  chart.y.label = "messages per second";
  chart.y.unit = svg::Unit::kRate;
  chart.series_names.push_back(kind_name(spec));
  chart.colors.push_back(color_of(kind_name(spec)));
  chart.values.push_back({s.msgs.median});
  if (s.has_spsc) {
    chart.series_names.push_back("spsc (same run)");
    chart.colors.push_back(color_of("spsc"));
    chart.values.push_back({s.spsc_msgs.median});
  }
  if (s.has_one_producer) {
    chart.series_names.push_back("mpsc x1 (same run)");
    chart.colors.push_back("#98df8a");
    chart.values.push_back({s.one_producer_msgs.median});
  }
  chart.series_names.push_back("memcpy (same run)");
  chart.colors.push_back(color_of("memcpy"));
  chart.values.push_back({s.memcpy_bytes.median / static_cast<double>(spec.size_bytes)});
  return {write(dir, "throughput.svg", svg::render(with_footer(chart, context)))};
}

std::vector<std::string> plot(const OpenLoopResult& result, const PlotContext& context) {
  const std::string& dir = context.dir;
  const Timebase& clock = *context.clock;
  const EndpointSpec& spec = result.config.spec;
  const double rate = result.config.limits.rate_per_s;
  svg::LineChart chart = latency_chart(
      fmt::format("One-way latency, {} {} payload, {}", kind_name(spec),
                  format_bytes(spec.size_bytes),
                  rate > 0 ? fmt::format("{} offered", rate_text(rate)) : "closed loop"),
      fmt::format("from each message's intended send time (open loop, no coordinated omission); "
                  "all {} runs merged",
                  result.config.runs),
      "one-way latency");
  Histogram floor;
  Histogram weft;
  Histogram spsc;
  for (const OpenLoopRunResult& r : result.runs) {
    floor.add(r.floor);
    weft.add(r.weft.latency);
    spsc.add(r.spsc.latency);
  }
  chart.series.push_back(latency_series("floor (cache-line RTT)", floor, clock, true));
  if (spec.transport != Transport::kSpsc) {
    chart.series.push_back(latency_series("spsc (same run)", spsc, clock));
  }
  chart.series.push_back(latency_series(kind_name(spec), weft, clock));
  return {write(dir, fmt::format("latency_{}.svg", file_size(spec.size_bytes)),
                svg::render(with_footer(chart, context)))};
}

namespace {

std::vector<std::string> compare_plots(const CompareResult& result, const PlotContext& context,
                                       const std::vector<const LatencyResult*>& kinds) {
  const std::string& dir = context.dir;
  const Timebase& clock = *context.clock;
  std::vector<std::string> written;
  // Percentile curves per size: floor, the weft kinds measured in the same runs, the transports.
  for (const std::uint64_t size : result.config.sizes) {
    svg::LineChart chart = latency_chart(
        fmt::format("Round-trip latency, {} payload", format_bytes(size)),
        fmt::format("ping-pong between the same two pinned processes, every transport in the same "
                    "{} runs (merged)",
                    result.config.runs),
        "round-trip time");
    bool have_floor = false;
    for (const LatencyResult* k : kinds) {
      if (k->config.spec.size_bytes != size) continue;
      if (!have_floor) {
        chart.series.push_back(
            latency_series("floor (cache line)", merged(k->runs, &LatencyRun::floor), clock, true));
        have_floor = true;
      }
      chart.series.push_back(latency_series(
          k->config.spec.transport == Transport::kSpsc ? "spsc" : kind_name(k->config.spec),
          merged(k->runs, &LatencyRun::weft), clock));
    }
    for (const CompareEntry& e : result.entries) {
      if (e.size != size || !e.skipped.empty()) continue;
      if (e.transport == Transport::kSpsc && !kinds.empty()) continue;  // Already there.
      chart.series.push_back(latency_series(
          e.transport == Transport::kSpsc ? "spsc" : transport_name(e.transport), e.rtt, clock));
    }
    written.push_back(write(dir, fmt::format("latency_{}.svg", file_size(size)),
                            svg::render(with_footer(chart, context))));
  }
  // Bars: RTT p50 and msgs/s, per size and transport.
  svg::BarChart rtt;
  rtt.title = "Round-trip time p50 by transport";
  rtt.subtitle = fmt::format(
      "ping-pong, median of {} runs; weft busy-polls, the kernel transports block in the kernel",
      result.config.runs);
  rtt.y.label = "round-trip time p50";
  rtt.y.unit = svg::Unit::kNanoseconds;
  svg::BarChart rate = rtt;
  rate.title = "Throughput by transport";
  rate.subtitle =
      fmt::format("one producer streaming, messages received per second, median of {} runs",
                  result.config.runs);
  rate.y.label = "messages per second";
  rate.y.unit = svg::Unit::kRate;
  for (const std::uint64_t size : result.config.sizes) {
    rtt.groups.push_back(format_bytes(size));
    rate.groups.push_back(format_bytes(size));
  }
  for (const Transport t : result.config.transports) {
    const std::string name = t == Transport::kSpsc ? "weft spsc" : transport_name(t);
    rtt.series_names.push_back(name);
    rate.series_names.push_back(name);
    rtt.colors.push_back(color_of(transport_name(t)));
    rate.colors.push_back(color_of(transport_name(t)));
    std::vector<double> rtt_values;
    std::vector<double> rate_values;
    for (const std::uint64_t size : result.config.sizes) {
      double r = 0;
      double m = 0;
      for (const CompareEntry& e : result.entries) {
        if (e.transport != t || e.size != size || !e.skipped.empty()) continue;
        const CompareFigures f = figures_of(result, e, clock);
        r = f.rtt_p50.median;
        m = f.msgs.median;
      }
      rtt_values.push_back(r);
      rate_values.push_back(m);
    }
    rtt.values.push_back(rtt_values);
    rate.values.push_back(rate_values);
  }
  written.push_back(write(dir, "compare_rtt.svg", svg::render(with_footer(rtt, context))));
  written.push_back(write(dir, "compare_throughput.svg", svg::render(with_footer(rate, context))));
  return written;
}

}  // namespace

std::vector<std::string> plot(const CompareResult& result, const PlotContext& context) {
  return compare_plots(result, context, {});
}

std::vector<std::string> plot(const SweepResult& result, const PlotContext& context) {
  const std::string& dir = context.dir;
  const Timebase& clock = *context.clock;
  svg::LineChart latency;
  latency.title = "Open-loop latency against offered rate";
  latency.subtitle = fmt::format(
      "one way, from the intended send time; solid p99, dashed p50, median of {} runs; hollow: "
      "closed-loop p99",
      result.config.runs);
  latency.x.label = "offered rate (messages per second, all producers; closed loop: achieved)";
  latency.x.unit = svg::Unit::kRate;
  latency.y.label = "one-way latency";
  latency.y.unit = svg::Unit::kNanoseconds;
  svg::LineChart rate;
  rate.title = "Achieved against offered rate";
  rate.subtitle =
      fmt::format("messages received per second, median of {} runs; hollow marks: closed loop",
                  result.config.runs);
  rate.x = latency.x;
  rate.y.label = "achieved rate (messages per second)";
  rate.y.unit = svg::Unit::kRate;
  double lo = 0;
  double hi = 0;
  std::size_t line = 0;
  for (const std::uint32_t p : result.config.producers) {
    for (const std::uint64_t size : result.config.sizes) {
      const std::string name =
          fmt::format("{} x{} {}", p > 1 ? "mpsc" : "spsc", p, format_bytes(size));
      const std::string color = svg::palette(line);
      svg::Series p99{name + " p99", color, {}, false, true, false};
      svg::Series p50{name + " p50", color, {}, true, true, false};
      svg::Series achieved{name, color, {}, false, true, false};
      svg::Series closed{name + " closed loop p99", color, {}, false, true, false, false, true};
      svg::Series closed_rate{name + " closed loop", color, {}, false, true, false, false, true};
      for (const SweepCell& cell : result.cells) {
        if (cell.producers != p || cell.size != size) continue;
        const SweepFigures f = figures_of(cell, clock);
        if (cell.rate <= 0) {
          closed.points.emplace_back(f.achieved.median, f.p99.median);
          closed_rate.points.emplace_back(f.achieved.median, f.achieved.median);
          continue;
        }
        p99.points.emplace_back(cell.rate, f.p99.median);
        p50.points.emplace_back(cell.rate, f.p50.median);
        achieved.points.emplace_back(cell.rate, f.achieved.median);
        lo = lo == 0 ? cell.rate : std::min(lo, cell.rate);
        hi = std::max(hi, cell.rate);
      }
      latency.series.push_back(std::move(p99));
      latency.series.push_back(std::move(p50));
      rate.series.push_back(std::move(achieved));
      if (!closed.points.empty()) {
        latency.series.push_back(std::move(closed));
        rate.series.push_back(std::move(closed_rate));
      }
      ++line;
    }
  }
  if (hi > 0) {
    svg::Series diagonal{"achieved = offered", "#9aa5b1", {{lo, lo}, {hi, hi}}, true, false, false};
    rate.series.push_back(std::move(diagonal));
  }
  return {write(dir, "sweep_latency.svg", svg::render(with_footer(latency, context))),
          write(dir, "sweep_throughput.svg", svg::render(with_footer(rate, context)))};
}

std::vector<std::string> plot(const RecoveryResult& result, const PlotContext& context) {
  const std::string& dir = context.dir;
  const double timeout_ms = static_cast<double>(result.config.timeout_ns) / 1e6;
  svg::LineChart chart;
  chart.title = "Dead-producer unblock time";
  chart.subtitle = fmt::format(
      "from SIGKILL to the first record delivered from behind the dead producer's chunk; "
      "unblock_timeout {:.0f} ms, bar = timeout + 100 ms",
      timeout_ms);
  chart.x.label = "run";
  chart.x.log = false;
  chart.y.label = "unblock time (ms)";
  chart.y.log = false;
  std::size_t runs = 1;
  for (std::size_t i = 0; i < result.cases.size(); ++i) {
    const RecoveryCase& c = result.cases[i];
    svg::Series s;
    s.name =
        fmt::format("{}, {} consumer", c.scenario == RecoveryScenario::kClaim ? "claim" : "stream",
                    c.idle == ConsumerIdle::kSpin ? "spinning" : "blocking");
    s.color = svg::palette(i);
    s.line = false;
    for (std::size_t r = 0; r < c.unblock_ns.size(); ++r) {
      s.points.emplace_back(static_cast<double>(r + 1), c.unblock_ns[r] / 1e6);
    }
    runs = std::max(runs, c.unblock_ns.size());
    chart.series.push_back(std::move(s));
  }
  const double right = static_cast<double>(runs) + 1;
  chart.series.push_back(
      {"timeout", "#52606d", {{0, timeout_ms}, {right, timeout_ms}}, true, false, false});
  chart.series.push_back({"bar (timeout + 100 ms)",
                          "#d62728",
                          {{0, timeout_ms + 100}, {right, timeout_ms + 100}},
                          true,
                          false,
                          false});
  chart.x.min = 0;
  chart.x.max = right;
  chart.y.min = timeout_ms * 0.9;
  chart.y.max = timeout_ms + 120;
  return {write(dir, "recovery.svg", svg::render(with_footer(chart, context)))};
}

std::vector<std::string> plot(const SuiteResult& result, const PlotContext& context) {
  const std::string& dir = context.dir;
  const Timebase& clock = *context.clock;
  std::vector<const LatencyResult*> kinds;
  for (const LatencyResult& r : result.latency) kinds.push_back(&r);
  std::vector<std::string> written = compare_plots(result.compare, context, kinds);
  // Payload bytes per second against message size: every weft kind, every transport, memcpy.
  svg::LineChart chart;
  chart.title = "Throughput against message size";
  chart.subtitle = fmt::format(
      "payload bytes per second received, one producer, median of {} runs; memcpy = one thread "
      "copying the same blocks (same run)",
      result.config.runs);
  chart.x.label = "message size";
  chart.x.unit = svg::Unit::kBytes;
  chart.x.base2 = true;
  chart.y.label = "payload throughput";
  chart.y.unit = svg::Unit::kBytesRate;
  std::map<std::string, svg::Series> lines;
  std::vector<std::string> order;
  const auto add = [&](const std::string& name, double x, double y, bool dashed) {
    if (!lines.count(name)) {
      lines[name] = svg::Series{name, color_of(name), {}, dashed, true, false};
      order.push_back(name);
    }
    lines[name].points.emplace_back(x, y);
  };
  for (const ThroughputResult& r : result.throughput) {
    const ThroughputSummary s = summarize(r);
    const auto size = static_cast<double>(r.config.spec.size_bytes);
    add(r.config.spec.transport == Transport::kSpsc ? "spsc" : kind_name(r.config.spec), size,
        s.bytes.median, false);
    if (r.config.spec.transport == Transport::kSpsc)
      add("memcpy", size, s.memcpy_bytes.median, true);
  }
  for (const CompareEntry& e : result.compare.entries) {
    if (e.transport == Transport::kSpsc || !e.skipped.empty()) continue;
    const CompareFigures f = figures_of(result.compare, e, clock);
    add(transport_name(e.transport), static_cast<double>(e.size),
        f.msgs.median * static_cast<double>(e.size), false);
  }
  for (const std::string& name : order) chart.series.push_back(lines[name]);
  written.push_back(write(dir, "throughput_vs_size.svg", svg::render(with_footer(chart, context))));
  return written;
}

}  // namespace shmem_bench
