// SVG charts; see svg.hpp.
#include "svg.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace shmem_bench::svg {
namespace {

constexpr double kWidth = 960;
constexpr double kHeight = 560;
constexpr double kLeft = 86;
constexpr double kRight = 238;  // Room for the legend.
constexpr double kTop = 78;
constexpr double kBottom = 70;
constexpr const char* kFont = "DejaVu Sans, Helvetica, Arial, sans-serif";

std::string escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// "1.5", "20", "300": at most three significant digits, no trailing zeros.
std::string compact(double v) {
  if (v >= 100) return fmt::format("{:.0f}", v);
  std::string s = v >= 10 ? fmt::format("{:.1f}", v) : fmt::format("{:.2f}", v);
  while (s.find('.') != std::string::npos && (s.back() == '0' || s.back() == '.')) {
    const bool dot = s.back() == '.';
    s.pop_back();
    if (dot) break;
  }
  return s;
}

std::string format_value(double v, Unit unit) {
  switch (unit) {
    case Unit::kNanoseconds:
      if (v < 1e3) return compact(v) + " ns";
      if (v < 1e6) return compact(v / 1e3) + " \u00b5s";
      if (v < 1e9) return compact(v / 1e6) + " ms";
      return compact(v / 1e9) + " s";
    case Unit::kRate:
      if (v < 1e3) return compact(v);
      if (v < 1e6) return compact(v / 1e3) + "k";
      if (v < 1e9) return compact(v / 1e6) + "M";
      return compact(v / 1e9) + "G";
    case Unit::kBytes:
      if (v < 1024) return compact(v) + " B";
      if (v < 1024.0 * 1024) return compact(v / 1024) + " KiB";
      return compact(v / 1024 / 1024) + " MiB";
    case Unit::kBytesRate:
      if (v < 1e6) return compact(v / 1e3) + " kB/s";
      if (v < 1e9) return compact(v / 1e6) + " MB/s";
      return compact(v / 1e9) + " GB/s";
    case Unit::kPercentile: {
      // v = log10(1 / (1 - p)): ticks at whole v read 0%, 90%, 99%, 99.9%, ...
      const long k = std::lround(v);
      if (k <= 0) return "0%";
      if (k == 1) return "90%";
      std::string label = "99";
      for (long nines = 0; nines < k - 2; ++nines) label += nines == 0 ? ".9" : "9";
      label += '%';
      return label;
    }
    case Unit::kPlain:
      break;
  }
  return compact(v);
}

// The range an axis shows and its ticks, in data units.
struct Scale {
  double lo = 0;
  double hi = 1;
  bool log = false;
  std::vector<double> ticks;        // Labelled, with a grid line.
  std::vector<double> minor_ticks;  // Grid line only.

  [[nodiscard]] double unit(double v) const {  // 0..1 along the axis.
    if (log) return (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    return (v - lo) / (hi - lo);
  }
};

Scale make_scale(const Axis& axis, double data_lo, double data_hi) {
  Scale s;
  s.log = axis.log && axis.unit != Unit::kPercentile;
  double lo = axis.min != 0 || axis.max != 0 ? axis.min : data_lo;
  double hi = axis.min != 0 || axis.max != 0 ? axis.max : data_hi;
  if (!(hi > lo)) {
    hi = lo > 0 ? lo * 2 : lo + 1;
    if (s.log) lo = lo / 2;
  }
  if (axis.unit == Unit::kPercentile) {
    s.lo = 0;
    s.hi = std::max(2.0, std::ceil(hi - 1e-9));
    for (int k = 0; k <= static_cast<int>(s.hi); ++k) s.ticks.push_back(k);
    return s;
  }
  if (s.log) {
    lo = std::max(lo, std::numeric_limits<double>::min());
    if (axis.base2) {
      s.lo = lo / 1.4;
      s.hi = hi * 1.4;
      const int first = static_cast<int>(std::ceil(std::log2(s.lo)));
      const int last = static_cast<int>(std::floor(std::log2(s.hi)));
      const int step = last - first > 12 ? 2 : 1;
      for (int e = first; e <= last; e += step) s.ticks.push_back(std::ldexp(1.0, e));
      return s;
    }
    // Pad by a fifth of a decade each side, then ticks at 1, 2, 5 x 10^k (or 10^k only when the
    // range spans many decades).
    s.lo = lo / std::pow(10.0, 0.2);
    s.hi = hi * std::pow(10.0, 0.2);
    const int first = static_cast<int>(std::floor(std::log10(s.lo)));
    const int last = static_cast<int>(std::ceil(std::log10(s.hi)));
    const bool dense = last - first <= 3;
    for (int e = first; e <= last; ++e) {
      const double decade = std::pow(10.0, e);
      for (const double m : {1.0, 2.0, 5.0}) {
        const double v = m * decade;
        if (v < s.lo || v > s.hi) continue;
        if (m == 1.0 || dense) {
          s.ticks.push_back(v);
        } else {
          s.minor_ticks.push_back(v);
        }
      }
    }
    if (s.ticks.size() < 2) {  // A narrow range: label the minor ticks as well.
      s.ticks.insert(s.ticks.end(), s.minor_ticks.begin(), s.minor_ticks.end());
      s.minor_ticks.clear();
      std::sort(s.ticks.begin(), s.ticks.end());
    }
    return s;
  }
  // Linear: 1, 2, 5 steps, about six ticks, from zero when the data is positive.
  if (lo > 0 && axis.min == 0 && axis.max == 0) lo = 0;
  const double raw = (hi - lo) / 6;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  }
  s.lo = std::floor(lo / step) * step;
  s.hi = std::ceil(hi * 1.05 / step) * step;
  for (double v = s.lo; v <= s.hi + step / 2; v += step) s.ticks.push_back(v);
  return s;
}

struct Frame {
  double x0 = kLeft;
  double x1 = kWidth - kRight;
  double y0 = kHeight - kBottom;  // Bottom.
  double y1 = kTop;               // Top.
};

std::string header(const std::string& title, const std::string& subtitle) {
  std::string out = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} "
      "{1}\" font-family=\"{2}\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
      "<text x=\"{3}\" y=\"32\" font-size=\"19\" font-weight=\"bold\" "
      "fill=\"#1f2933\">{4}</text>\n",
      kWidth, kHeight, kFont, kLeft, escape(title));
  if (!subtitle.empty()) {
    out += fmt::format("<text x=\"{}\" y=\"54\" font-size=\"12.5\" fill=\"#52606d\">{}</text>\n",
                       kLeft, escape(subtitle));
  }
  return out;
}

std::string footer(const std::string& text) {
  if (text.empty()) return {};
  return fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10.5\" fill=\"#7b8794\">{}</text>\n", kLeft,
      kHeight - 8, escape(text));
}

std::string y_axis(const Scale& y, const Axis& axis, const Frame& f) {
  std::string out;
  for (const double v : y.minor_ticks) {
    const double py = f.y0 - y.unit(v) * (f.y0 - f.y1);
    out += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#eef1f4\"/>\n",
        f.x0, py, f.x1, py);
  }
  for (const double v : y.ticks) {
    const double py = f.y0 - y.unit(v) * (f.y0 - f.y1);
    out += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#dde2e7\"/>\n"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" fill=\"#3e4c59\" "
        "text-anchor=\"end\">{}</text>\n",
        f.x0, py, f.x1, py, f.x0 - 8, py + 4, escape(format_value(v, axis.unit)));
  }
  out += fmt::format(
      "<text transform=\"translate(22 {:.1f}) rotate(-90)\" font-size=\"13\" fill=\"#1f2933\" "
      "text-anchor=\"middle\">{}</text>\n",
      (f.y0 + f.y1) / 2, escape(axis.label));
  return out;
}

std::string frame_box(const Frame& f) {
  return fmt::format(
      "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" "
      "stroke=\"#9aa5b1\"/>\n",
      f.x0, f.y1, f.x1 - f.x0, f.y0 - f.y1);
}

std::string legend_entry(double x, double y, const std::string& name, const std::string& color,
                         bool dashed, bool bar) {
  std::string out;
  if (bar) {
    out += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"22\" height=\"11\" fill=\"{}\"/>\n",
                       x, y - 9, color);
  } else {
    out += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" "
        "stroke-width=\"2.5\"{}/>\n",
        x, y - 4, x + 22, y - 4, color, dashed ? " stroke-dasharray=\"6 4\"" : "");
  }
  out +=
      fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12.5\" fill=\"#1f2933\">{}</text>\n",
                  x + 30, y, escape(name));
  return out;
}

}  // namespace

std::string palette(std::size_t index) {
  static const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                        "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
  return kColors[index % (sizeof(kColors) / sizeof(kColors[0]))];
}

double percentile_x(double percent) {
  const double p = std::min(percent, 99.9999) / 100.0;
  return std::log10(1.0 / (1.0 - p));
}

std::string render(const LineChart& chart) {
  double x_lo = std::numeric_limits<double>::max();
  double x_hi = std::numeric_limits<double>::lowest();
  double y_lo = x_lo;
  double y_hi = x_hi;
  for (const Series& s : chart.series) {
    for (const auto& [x, y] : s.points) {
      if ((chart.x.log && chart.x.unit != Unit::kPercentile && x <= 0) || (chart.y.log && y <= 0) ||
          !std::isfinite(x) || !std::isfinite(y)) {
        continue;
      }
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }
  if (x_lo > x_hi) {
    x_lo = 1;
    x_hi = 10;
    y_lo = 1;
    y_hi = 10;
  }
  const Scale xs = make_scale(chart.x, x_lo, x_hi);
  const Scale ys = make_scale(chart.y, y_lo, y_hi);
  const Frame f;
  std::string out = header(chart.title, chart.subtitle);
  out += y_axis(ys, chart.y, f);
  for (const double v : xs.ticks) {
    const double px = f.x0 + xs.unit(v) * (f.x1 - f.x0);
    out += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#dde2e7\"/>\n"
        "<text x=\"{0:.1f}\" y=\"{3:.1f}\" font-size=\"12\" fill=\"#3e4c59\" "
        "text-anchor=\"middle\">{4}</text>\n",
        px, f.y0, f.y1, f.y0 + 18, escape(format_value(v, chart.x.unit)));
  }
  out += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"13\" fill=\"#1f2933\" "
      "text-anchor=\"middle\">{}</text>\n",
      (f.x0 + f.x1) / 2, f.y0 + 38, escape(chart.x.label));
  out += frame_box(f);
  // Clip the curves to the plot area.
  out += fmt::format(
      "<clipPath id=\"plot\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" "
      "height=\"{:.1f}\"/></clipPath>\n<g clip-path=\"url(#plot)\">\n",
      f.x0, f.y1 - 4, f.x1 - f.x0 + 4, f.y0 - f.y1 + 8);
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    const std::string color = s.color.empty() ? palette(i) : s.color;
    std::string points;
    std::vector<std::pair<double, double>> xy;
    for (const auto& [x, y] : s.points) {
      if ((xs.log && x <= 0) || (ys.log && y <= 0) || !std::isfinite(x) || !std::isfinite(y)) {
        continue;
      }
      const double px = f.x0 + xs.unit(x) * (f.x1 - f.x0);
      const double py = f.y0 - ys.unit(y) * (f.y0 - f.y1);
      xy.emplace_back(px, py);
      points += fmt::format("{:.1f},{:.1f} ", px, py);
    }
    if (xy.empty()) continue;
    if (s.line) {
      out += fmt::format(
          "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" "
          "stroke-linejoin=\"round\"{}/>\n",
          points, color, s.step ? 2.2 : 2.4, s.dashed ? " stroke-dasharray=\"6 4\"" : "");
    }
    if (s.markers && !s.step) {
      for (const auto& [px, py] : xy) {
        out += s.hollow ? fmt::format(
                              "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"#ffffff\" "
                              "stroke=\"{}\" stroke-width=\"2\"/>\n",
                              px, py, color)
                        : fmt::format(
                              "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.6\" fill=\"{}\" "
                              "stroke=\"#ffffff\" stroke-width=\"1\"/>\n",
                              px, py, color);
      }
    }
  }
  out += "</g>\n";
  double ly = f.y1 + 14;
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    const std::string color = s.color.empty() ? palette(i) : s.color;
    if (s.line) {
      out += legend_entry(f.x1 + 18, ly, s.name, color, s.dashed, false);
    } else {
      out += fmt::format(
          "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"{}\" stroke=\"{}\" "
          "stroke-width=\"2\"/>\n<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12.5\" "
          "fill=\"#1f2933\">{}</text>\n",
          f.x1 + 29, ly - 4, s.hollow ? "#ffffff" : color, color, f.x1 + 48, ly, escape(s.name));
    }
    ly += 21;
  }
  out += footer(chart.footer);
  out += "</svg>\n";
  return out;
}

std::string render(const BarChart& chart) {
  double lo = std::numeric_limits<double>::max();
  double hi = std::numeric_limits<double>::lowest();
  for (const auto& row : chart.values) {
    for (const double v : row) {
      if (v <= 0 || !std::isfinite(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  if (lo > hi) {
    lo = 1;
    hi = 10;
  }
  Axis y = chart.y;
  const Scale ys = make_scale(y, lo, hi * (y.log ? 1.6 : 1.1));  // Room for the value labels.
  const Frame f;
  std::string out = header(chart.title, chart.subtitle);
  out += y_axis(ys, y, f);
  out += frame_box(f);
  const std::size_t groups = chart.groups.size();
  const std::size_t series = chart.series_names.size();
  const double group_width = (f.x1 - f.x0) / static_cast<double>(std::max<std::size_t>(groups, 1));
  const double bar_width =
      std::min(38.0, group_width * 0.8 / static_cast<double>(std::max<std::size_t>(series, 1)));
  const double base = ys.log ? ys.lo : std::max(ys.lo, 0.0);
  for (std::size_t g = 0; g < groups; ++g) {
    const double center = f.x0 + group_width * (static_cast<double>(g) + 0.5);
    const double left = center - bar_width * static_cast<double>(series) / 2;
    for (std::size_t s = 0; s < series; ++s) {
      const double v =
          s < chart.values.size() && g < chart.values[s].size() ? chart.values[s][g] : 0;
      const double x = left + bar_width * static_cast<double>(s);
      const std::string color =
          s < chart.colors.size() && !chart.colors[s].empty() ? chart.colors[s] : palette(s);
      if (v <= 0 || !std::isfinite(v)) {
        out += fmt::format(
            "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" fill=\"#7b8794\" "
            "text-anchor=\"middle\">n/a</text>\n",
            x + bar_width / 2, f.y0 - 6);
        continue;
      }
      const double top = f.y0 - ys.unit(v) * (f.y0 - f.y1);
      const double bottom = f.y0 - ys.unit(base) * (f.y0 - f.y1);
      out += fmt::format(
          "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n",
          x + 1, top, bar_width - 2, std::max(0.0, bottom - top), color);
      out += fmt::format(
          "<text transform=\"translate({:.1f} {:.1f}) rotate(-90)\" font-size=\"10.5\" "
          "fill=\"#323f4b\">{}</text>\n",
          x + bar_width / 2 + 3.5, top - 4, escape(format_value(v, y.unit)));
    }
    out += fmt::format(
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"13\" fill=\"#1f2933\" "
        "text-anchor=\"middle\">{}</text>\n",
        center, f.y0 + 20, escape(chart.groups[g]));
  }
  double ly = f.y1 + 14;
  for (std::size_t s = 0; s < series; ++s) {
    const std::string color =
        s < chart.colors.size() && !chart.colors[s].empty() ? chart.colors[s] : palette(s);
    out += legend_entry(f.x1 + 18, ly, chart.series_names[s], color, false, true);
    ly += 21;
  }
  out += footer(chart.footer);
  out += "</svg>\n";
  return out;
}

}  // namespace shmem_bench::svg
