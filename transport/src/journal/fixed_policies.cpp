// The simple flush policies: every record, fixed size-or-delay, and natural batching (group
// commit). The adaptive policy lives in its own file.
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <memory>

#include "weft/flush_policy.hpp"

namespace weft {
namespace {

// Flush as soon as anything is pending, with one flush in flight: while a flush is in flight the
// records appended meanwhile gather and go together when it completes.
class FlushEveryRecord final : public FlushPolicy {
 public:
  void on_append(std::int64_t /*now_ns*/, std::uint64_t /*bytes*/) noexcept override {}
  void on_flush_complete(const FlushCompletion& /*completion*/) noexcept override {}
  FlushDecision decide(const FlushState& state) noexcept override {
    return {state.pending_records > 0, 0, 1};
  }
  [[nodiscard]] FlushPolicyStats stats() const noexcept override {
    FlushPolicyStats out;
    out.max_in_flight = 1;
    return out;
  }
  [[nodiscard]] const char* name() const noexcept override { return "every"; }
};

// Flush when `bytes` are pending or the oldest pending record has waited `delay`.
class FixedFlush final : public FlushPolicy {
 public:
  FixedFlush(std::uint64_t bytes, std::chrono::nanoseconds delay, std::uint32_t max_in_flight)
      : bytes_(bytes == 0 ? 1 : bytes),
        delay_ns_(delay.count() < 0 ? 0 : delay.count()),
        max_in_flight_(max_in_flight == 0 ? 1 : max_in_flight) {
    // "fixed-64KiB-200us": whole KiB and microseconds read best in reports.
    std::snprintf(name_, sizeof name_, "fixed-%" PRIu64 "KiB-%" PRId64 "us", bytes_ / 1024,
                  delay_ns_ / 1000);
  }
  void on_append(std::int64_t /*now_ns*/, std::uint64_t /*bytes*/) noexcept override {}
  void on_flush_complete(const FlushCompletion& /*completion*/) noexcept override {}
  FlushDecision decide(const FlushState& state) noexcept override {
    if (state.pending_records == 0) return {false, 0, max_in_flight_};
    const std::int64_t due_ns = state.oldest_pending_ns + delay_ns_;
    const bool flush = state.pending_bytes >= bytes_ || state.now_ns >= due_ns;
    // Still due later: ask again when the oldest record's wait is over. Once due, a flush that
    // cannot start (in_flight at the limit) is retried on the next completion, and at the latest
    // one delay from now.
    return {flush, flush ? state.now_ns + (delay_ns_ > 0 ? delay_ns_ : 1'000'000) : due_ns,
            max_in_flight_};
  }
  [[nodiscard]] FlushPolicyStats stats() const noexcept override {
    FlushPolicyStats out;
    out.gather_bytes = bytes_;
    out.max_delay_ns = delay_ns_;
    out.max_in_flight = max_in_flight_;
    return out;
  }
  [[nodiscard]] const char* name() const noexcept override { return name_; }

 private:
  std::uint64_t bytes_;
  std::int64_t delay_ns_;
  std::uint32_t max_in_flight_;
  char name_[64]{};
};

// Group commit: whatever waits goes in the next flush, which starts as soon as none is in flight.
class NaturalFlush final : public FlushPolicy {
 public:
  void on_append(std::int64_t /*now_ns*/, std::uint64_t /*bytes*/) noexcept override {}
  void on_flush_complete(const FlushCompletion& /*completion*/) noexcept override {}
  FlushDecision decide(const FlushState& state) noexcept override {
    return {state.pending_records > 0, 0, 1};
  }
  [[nodiscard]] FlushPolicyStats stats() const noexcept override {
    FlushPolicyStats out;
    out.max_in_flight = 1;
    return out;
  }
  [[nodiscard]] const char* name() const noexcept override { return "natural"; }
};

}  // namespace

std::unique_ptr<FlushPolicy> make_flush_every_record() {
  return std::make_unique<FlushEveryRecord>();
}

std::unique_ptr<FlushPolicy> make_fixed_flush(std::uint64_t bytes, std::chrono::nanoseconds delay,
                                              std::uint32_t max_in_flight) {
  return std::make_unique<FixedFlush>(bytes, delay, max_in_flight);
}

std::unique_ptr<FlushPolicy> make_natural_flush() { return std::make_unique<NaturalFlush>(); }

}  // namespace weft
