// Validation of a channel header read from shared memory. The bytes come from another process
// (buggy, crashed or hostile): every field is checked before anything relies on it.
#pragma once

#include <cstdint>
#include <string_view>

#include "weft/detail/layout.hpp"
#include "weft/result.hpp"

namespace weft::detail {

struct ValidatedMeta {
  ChannelKind kind;
  std::uint64_t capacity_bytes;
  std::uint64_t record_bytes_max;
  std::uint64_t header_bytes;
  std::uint32_t producers_max;
  std::uint32_t consumers_max;
  std::uint32_t flags;
  std::uint64_t unblock_timeout_ns;
  // Placement (docs/numa.md).
  std::uint64_t page_bytes = kPageBytes;  // 4096 or a huge page size; never 0.
  std::uint32_t placement_flags = 0;
  std::int32_t numa_node = -1;  // -1 unless kPlacementNode.
  std::int32_t numa_cpu = -1;   // -1 unless kPlacementViaCpu.
};

// The size of a channel file: header and ring, rounded up to whole pages of `page_bytes`.
constexpr std::uint64_t file_bytes_for(std::uint64_t header_bytes, std::uint64_t capacity_bytes,
                                       std::uint64_t page_bytes) noexcept {
  return (header_bytes + capacity_bytes + page_bytes - 1) / page_bytes * page_bytes;
}

// Checks `header` (the first kPageBytes of a file of `file_bytes` bytes) and returns the values
// the data path may trust, or kCorrupted / kVersionMismatch naming `path` and the bad field.
// Requires: kPageBytes bytes are readable at `header` (slot pages are not read here).
Result<ValidatedMeta> validate_header(const ChannelHeader& header, std::uint64_t file_bytes,
                                      std::string_view path) noexcept;

// The largest record_bytes_max a ring of `capacity_bytes` allows: a record and the padding before
// it, plus the zeroed header after it, must fit in the ring.
constexpr std::uint64_t record_bytes_max_limit(std::uint64_t capacity_bytes) noexcept {
  const std::uint64_t half = capacity_bytes / 2 - 2 * kRecordHeaderBytes;
  return half < 0xffff'ffffULL ? half : 0xffff'fff0ULL;
}

}  // namespace weft::detail
