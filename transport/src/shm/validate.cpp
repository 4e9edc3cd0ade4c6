#include "shm/validate.hpp"

#include <atomic>
#include <bit>

#include "error_util.hpp"

namespace weft::detail {

Result<ValidatedMeta> validate_header(const ChannelHeader& header, std::uint64_t file_bytes,
                                      std::string_view path) noexcept {
  constexpr const char* kWhere = "channel open";
  const ChannelMeta& meta = header.meta;
  if (meta.magic != kChannelMagic) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'magic' is {:#018x}, expected {:#018x}: not a weft channel file", path,
                meta.magic, kChannelMagic);
  }
  if (meta.layout_version != kLayoutVersion) {
    return fail(Errc::kVersionMismatch, 0, kWhere,
                "{}: field 'layout_version' is {}, this library reads {}: upgrade the older side",
                path, meta.layout_version, kLayoutVersion);
  }
  if (meta.kind != static_cast<std::uint32_t>(ChannelKind::kSpsc)) {
    return fail(Errc::kCorrupted, 0, kWhere, "{}: field 'kind' is {}, not a known channel kind",
                path, meta.kind);
  }
  if (meta.header_bytes != kHeaderBytes) {
    return fail(Errc::kCorrupted, 0, kWhere, "{}: field 'header_bytes' is {}, expected {}", path,
                meta.header_bytes, kHeaderBytes);
  }
  const std::uint64_t capacity = meta.capacity_bytes;
  if (!std::has_single_bit(capacity) || capacity < kCapacityBytesMin ||
      capacity > kCapacityBytesMax) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'capacity_bytes' is {}, expected a power of two in [{}, {}]", path,
                capacity, kCapacityBytesMin, kCapacityBytesMax);
  }
  if (meta.size_bytes != kHeaderBytes + capacity) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'size_bytes' is {}, expected header_bytes + capacity_bytes = {}", path,
                meta.size_bytes, kHeaderBytes + capacity);
  }
  if (meta.size_bytes != file_bytes) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'size_bytes' is {} but the file is {} bytes: truncated or overwritten",
                path, meta.size_bytes, file_bytes);
  }
  if (meta.record_bytes_max == 0 || meta.record_bytes_max > record_bytes_max_limit(capacity)) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'record_bytes_max' is {}, expected 1..{} for capacity {}", path,
                meta.record_bytes_max, record_bytes_max_limit(capacity), capacity);
  }
  // Acquire (both): pairs with the release stores of the cursors; only a sanity check here, the
  // owning roles re-read them when they attach.
  const std::uint64_t head = header.consumer.head_position.load(std::memory_order_acquire);
  const std::uint64_t tail = header.producer.tail_position.load(std::memory_order_acquire);
  if (head % kRecordAlign != 0 || tail % kRecordAlign != 0) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: cursors 'head_position' {} / 'tail_position' {} are not 8-byte aligned", path,
                head, tail);
  }
  // A consumer may run ahead of tail_position by records whose producer has not yet published
  // (or, killed, never will publish) tail; either way the two are never more than a ring apart.
  const std::uint64_t distance = head <= tail ? tail - head : head - tail;
  if (distance > capacity) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: cursors 'head_position' {} and 'tail_position' {} are more than a ring "
                "({} bytes) apart",
                path, head, tail, capacity);
  }
  return ValidatedMeta{static_cast<ChannelKind>(meta.kind), capacity, meta.record_bytes_max};
}

}  // namespace weft::detail
