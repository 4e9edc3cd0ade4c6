// Hand-written SVG charts: line charts (linear or logarithmic axes, including the HDR-style
// percentile axis) and grouped bar charts. No external tool runs at run time; the output is a
// self-contained SVG 1.1 document any browser renders.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace shmem_bench::svg {

// How an axis's tick labels read.
enum class Unit {
  kPlain,        // 10, 100, 1000
  kNanoseconds,  // 100 ns, 1 us, 10 ms
  kRate,         // 10k, 1M  (per second)
  kBytes,        // 64 B, 1 KiB
  kBytesRate,    // 1 GB/s
  kPercentile,   // x = log10(1 / (1 - p)): 0%, 90%, 99%, 99.9%, ...
};

struct Axis {
  std::string label;
  Unit unit = Unit::kPlain;
  bool log = true;
  double min = 0;  // 0 and 0: from the data.
  double max = 0;
  bool base2 = false;  // Log axis ticks at powers of two (message sizes).
};

struct Series {
  std::string name;
  std::string color;  // CSS colour; empty: from the palette.
  std::vector<std::pair<double, double>>
      points;  // (x, y); non-positive values skipped on log axes.
  bool dashed = false;
  bool markers = true;
  bool step = false;    // Percentile curves: draw as given, no markers.
  bool line = true;     // false: markers only.
  bool hollow = false;  // Hollow markers (white fill).
};

struct LineChart {
  std::string title;
  std::string subtitle;
  std::string footer;  // Machine, placement, kernel, build: small print at the bottom.
  Axis x;
  Axis y;
  std::vector<Series> series;
};

struct BarChart {
  std::string title;
  std::string subtitle;
  std::string footer;
  std::vector<std::string> groups;          // One cluster per group (message size).
  std::vector<std::string> series_names;    // One bar per series in each cluster.
  std::vector<std::string> colors;          // Per series; empty: from the palette.
  std::vector<std::vector<double>> values;  // [series][group]; <= 0: missing (no bar, "n/a").
  Axis y;
};

std::string render(const LineChart& chart);
std::string render(const BarChart& chart);

// The colour the palette gives series `index`.
std::string palette(std::size_t index);

// x coordinate of percentile `percent` on a Unit::kPercentile axis.
double percentile_x(double percent);

}  // namespace shmem_bench::svg
