#include "policy_spec.hpp"

#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "errors.hpp"
#include "weft/adaptive_policy.hpp"

namespace shmem_bench {
namespace {

// "64KiB", "16K", "1M", "4096" -> bytes.
std::optional<std::uint64_t> parse_bytes(std::string t) {
  std::uint64_t scale = 1;
  for (const auto& [suffix, s] : {std::pair<const char*, std::uint64_t>{"KiB", 1024},
                                  {"MiB", 1 << 20},
                                  {"K", 1024},
                                  {"M", 1 << 20}}) {
    const std::string sfx = suffix;
    if (t.size() > sfx.size() && t.compare(t.size() - sfx.size(), sfx.size(), sfx) == 0) {
      scale = s;
      t.resize(t.size() - sfx.size());
      break;
    }
  }
  if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 12) {
    return std::nullopt;
  }
  return std::stoull(t) * scale;
}

// "200us", "1ms", "0us" -> ns.
std::optional<std::int64_t> parse_delay(std::string t) {
  std::int64_t scale = 0;
  for (const auto& [suffix, s] :
       {std::pair<const char*, std::int64_t>{"ns", 1}, {"us", 1'000}, {"ms", 1'000'000}}) {
    const std::string sfx = suffix;
    if (t.size() > sfx.size() && t.compare(t.size() - sfx.size(), sfx.size(), sfx) == 0) {
      scale = s;
      t.resize(t.size() - sfx.size());
      break;
    }
  }
  if (scale == 0 || t.empty() || t.find_first_not_of("0123456789") != std::string::npos ||
      t.size() > 9) {
    return std::nullopt;
  }
  return std::stoll(t) * scale;
}

// The dash-separated parts of name from `from` on: "64KiB-1ms-x4" -> {"64KiB", "1ms", "x4"}.
std::vector<std::string> split_dashes(const std::string& name, std::size_t from) {
  std::vector<std::string> parts;
  while (from <= name.size()) {
    const std::size_t dash = std::min(name.find('-', from), name.size());
    parts.push_back(name.substr(from, dash - from));
    from = dash + 1;
  }
  return parts;
}

}  // namespace

PolicySpec parse_policy(const std::string& name, const std::string& flag) {
  if (const auto hash = name.find('#'); hash != std::string::npos) {
    const std::string base = name.substr(0, hash);
    const std::string tag = name.substr(hash + 1);
    if (base.empty() || tag.empty() || tag.size() > 8 ||
        tag.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyz") != std::string::npos) {
      throw UsageError(fmt::format(
          "{} '{}': a control is a policy's name, '#' and a tag of 1 to 8 lowercase letters or "
          "digits, as in natural#2",
          flag, name));
    }
    PolicySpec spec = parse_policy(base, flag);
    spec.name = name;
    spec.control_of = base;
    return spec;
  }
  PolicySpec spec;
  spec.name = name;
  if (name == "adaptive") {
    spec.adaptive = true;
    spec.in_flight = 0;  // The policy's own limit.
    return spec;
  }
  if (name == "natural") {
    spec.natural = true;
    return spec;
  }
  if (name == "every") {
    spec.fixed = true;
    return spec;
  }
  const auto bad = [&] {
    return UsageError(fmt::format(
        "{} '{}': expected adaptive[-x<n>][-w<m>], natural, every or "
        "fixed-<bytes>-<delay>[-x<n>], as in adaptive-x1, adaptive-w0, fixed-64KiB-1ms or "
        "fixed-256KiB-2ms-x4 (n: flushes in flight at most, 1 to 64; m: the adaptive policy's "
        "io-wq worker cap, 0 for none, to 64)",
        flag, name));
  };
  // "<letter><n>" with n in [least, 64]: "x4" (flushes in flight), "w0" (io-wq workers).
  const auto count = [&](const std::string& part, char letter, std::uint32_t least) {
    if (part.size() < 2 || part.size() > 3 || part[0] != letter ||
        part.find_first_not_of("0123456789", 1) != std::string::npos) {
      throw bad();
    }
    const auto n = static_cast<std::uint32_t>(std::stoul(part.substr(1)));
    if (n < least || n > 64) throw bad();
    return n;
  };
  if (name.rfind("adaptive-", 0) == 0) {
    spec.adaptive = true;
    spec.in_flight = 0;
    for (const std::string& part : split_dashes(name, 9)) {
      if (!part.empty() && part[0] == 'x' && spec.in_flight == 0) {
        spec.in_flight = count(part, 'x', 1);
      } else if (!part.empty() && part[0] == 'w' && spec.io_workers < 0) {
        spec.io_workers = static_cast<std::int32_t>(count(part, 'w', 0));
      } else {
        throw bad();
      }
    }
    return spec;
  }
  if (name.rfind("fixed-", 0) != 0) throw bad();
  const std::vector<std::string> parts = split_dashes(name, 6);
  if (parts.size() < 2 || parts.size() > 3) throw bad();
  const auto bytes = parse_bytes(parts[0]);
  const auto delay = parse_delay(parts[1]);
  if (!bytes || !delay || *bytes == 0) throw bad();
  spec.fixed = true;
  spec.bytes = *bytes;
  spec.delay_ns = *delay;
  if (parts.size() == 3) spec.in_flight = count(parts[2], 'x', 1);
  return spec;
}

std::unique_ptr<weft::FlushPolicy> make_policy(const PolicySpec& spec, double target_ms) {
  if (spec.adaptive) {
    weft::AdaptiveFlushOptions options;
    options.latency_target_p99 =
        std::chrono::nanoseconds(static_cast<std::int64_t>(target_ms * 1e6));
    if (spec.in_flight != 0) options.max_in_flight_limit = spec.in_flight;
    if (spec.io_workers >= 0) options.io_workers = static_cast<std::uint32_t>(spec.io_workers);
    return weft::make_adaptive_flush(options);
  }
  if (spec.natural) return weft::make_natural_flush();
  if (spec.bytes == 0) return weft::make_flush_every_record();
  return weft::make_fixed_flush(spec.bytes, std::chrono::nanoseconds(spec.delay_ns),
                                spec.in_flight);
}

}  // namespace shmem_bench
