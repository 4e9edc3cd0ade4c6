// A log-linear (HDR-style) histogram of non-negative integer samples, for latency distributions.
//
// Values below 128 have a bucket each; above, every power of two is split into 64 linear
// sub-buckets, so a reported value is within 1/64 (1.6 %) of every sample in its bucket. Values
// up to 2^40 - 1 are kept (2^40 TSC ticks is more than five minutes at 3 GHz); larger ones land
// in the top bucket, and the exact minimum and maximum are kept beside the buckets. Recording is
// a count-leading-zeros, two shifts and an increment: cheap enough to do inside a timed loop,
// between sending a ping and seeing its pong.
//
// Debian 12 ships no C or C++ HdrHistogram package (only Go and Java ones), hence this one.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace shmem_bench {

class Histogram {
 public:
  static constexpr unsigned kSubBucketBits = 7;
  static constexpr std::uint64_t kSubBucketCount = std::uint64_t{1} << kSubBucketBits;  // 128
  static constexpr std::uint64_t kHalfCount = kSubBucketCount / 2;                      // 64
  static constexpr unsigned kValueBitsMax = 40;
  static constexpr std::uint64_t kValueMax = (std::uint64_t{1} << kValueBitsMax) - 1;
  static constexpr std::size_t kBucketCount =
      kSubBucketCount + (kValueBitsMax - kSubBucketBits) * kHalfCount;

  void record(std::uint64_t value) noexcept {
    ++counts_[index_of(value)];
    ++total_count_;
    if (value > max_) max_ = value;
    if (value < min_) min_ = value;
  }

  void add(const Histogram& other) noexcept {
    for (std::size_t i = 0; i < kBucketCount; ++i) counts_[i] += other.counts_[i];
    total_count_ += other.total_count_;
    max_ = std::max(max_, other.max_);
    min_ = std::min(min_, other.min_);
  }

  void reset() noexcept { *this = Histogram{}; }

  [[nodiscard]] std::uint64_t count() const noexcept { return total_count_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }
  [[nodiscard]] std::uint64_t min() const noexcept { return total_count_ == 0 ? 0 : min_; }

  // The smallest value v such that at least `percent` % of the samples are <= v, reported as the
  // highest value of v's bucket (as HdrHistogram does), never above the exact maximum.
  // Returns 0 for an empty histogram.
  [[nodiscard]] std::uint64_t value_at_percentile(double percent) const noexcept {
    if (total_count_ == 0) return 0;
    const double fraction = std::clamp(percent, 0.0, 100.0) / 100.0;
    auto wanted =
        static_cast<std::uint64_t>(std::ceil(fraction * static_cast<double>(total_count_)));
    wanted = std::clamp<std::uint64_t>(wanted, 1, total_count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBucketCount; ++i) {
      seen += counts_[i];
      if (seen >= wanted) return std::min(highest_equivalent(i), max_);
    }
    return max_;
  }

  [[nodiscard]] static constexpr std::size_t index_of(std::uint64_t value) noexcept {
    value = std::min(value, kValueMax);
    if (value < kSubBucketCount) return static_cast<std::size_t>(value);
    const auto msb = static_cast<unsigned>(63 - std::countl_zero(value));  // >= kSubBucketBits
    const unsigned shift = msb - (kSubBucketBits - 1);                     // >= 1
    const std::uint64_t top = value >> shift;                              // [64, 127]
    return static_cast<std::size_t>(kSubBucketCount + (shift - 1) * kHalfCount +
                                    (top - kHalfCount));
  }

  [[nodiscard]] static constexpr std::uint64_t lowest_equivalent(std::size_t index) noexcept {
    if (index < kSubBucketCount) return index;
    const std::uint64_t k = index - kSubBucketCount;
    const std::uint64_t shift = k / kHalfCount + 1;
    return (k % kHalfCount + kHalfCount) << shift;
  }

  [[nodiscard]] static constexpr std::uint64_t highest_equivalent(std::size_t index) noexcept {
    if (index < kSubBucketCount) return index;
    const std::uint64_t shift = (index - kSubBucketCount) / kHalfCount + 1;
    return lowest_equivalent(index) + (std::uint64_t{1} << shift) - 1;
  }

 private:
  std::array<std::uint64_t, kBucketCount> counts_{};
  std::uint64_t total_count_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
};

static_assert(Histogram::index_of(127) == 127, "values below 128 are exact");
static_assert(Histogram::index_of(128) == 128, "the first log bucket follows the linear ones");
static_assert(Histogram::index_of(255) == 191 && Histogram::index_of(256) == 192,
              "log buckets are contiguous across a power of two");
static_assert(Histogram::index_of(Histogram::kValueMax) == Histogram::kBucketCount - 1,
              "the largest kept value lands in the last bucket");
static_assert(Histogram::highest_equivalent(Histogram::index_of(1000)) >= 1000 &&
                  Histogram::lowest_equivalent(Histogram::index_of(1000)) <= 1000,
              "a value lies inside its own bucket");

}  // namespace shmem_bench
