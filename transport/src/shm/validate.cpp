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
  const ChannelConfig& config = header.config;
  const bool spsc = meta.kind == static_cast<std::uint32_t>(ChannelKind::kSpsc);
  const bool mpsc = meta.kind == static_cast<std::uint32_t>(ChannelKind::kMpsc);
  const bool broadcast = meta.kind == static_cast<std::uint32_t>(ChannelKind::kBroadcast);
  if (!spsc && !mpsc && !broadcast) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'kind' is {}, not a known channel kind (1 SPSC, 2 MPSC, 3 broadcast)",
                path, meta.kind);
  }
  const std::uint32_t producers_expected_max = mpsc ? kProducersMaxLimit : 0;
  if ((mpsc && config.producers_max == 0) || config.producers_max > producers_expected_max) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'producers_max' is {}, expected {} for this kind", path,
                config.producers_max, mpsc ? "1..1024" : "0");
  }
  const std::uint32_t consumers_expected_max = broadcast ? kConsumersMaxLimit : 0;
  if ((broadcast && config.consumers_max == 0) || config.consumers_max > consumers_expected_max) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'consumers_max' is {}, expected {} for this kind", path,
                config.consumers_max, broadcast ? "1..1024" : "0");
  }
  if ((config.flags & ~(broadcast ? kFlagLossy : 0U)) != 0) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'flags' is {:#x}, unknown bits for this kind", path, config.flags);
  }
  const std::uint64_t header_bytes = header_bytes_for(config.producers_max, config.consumers_max);
  if (meta.header_bytes != header_bytes) {
    return fail(Errc::kCorrupted, 0, kWhere, "{}: field 'header_bytes' is {}, expected {}", path,
                meta.header_bytes, header_bytes);
  }
  const std::uint64_t capacity = meta.capacity_bytes;
  if (!std::has_single_bit(capacity) || capacity < kCapacityBytesMin ||
      capacity > kCapacityBytesMax) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'capacity_bytes' is {}, expected a power of two in [{}, {}]", path,
                capacity, kCapacityBytesMin, kCapacityBytesMax);
  }
  const std::uint64_t page_bytes = config.page_bytes == 0 ? kPageBytes : config.page_bytes;
  if (page_bytes != kPageBytes &&
      (!std::has_single_bit(page_bytes) || page_bytes < (std::uint64_t{64} << 10) ||
       page_bytes > kHugePageBytesMax)) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'page_bytes' is {}, expected 0, 4096 or a huge page size", path,
                config.page_bytes);
  }
  if ((config.placement_flags & ~kPlacementFlagsAll) != 0) {
    return fail(Errc::kCorrupted, 0, kWhere, "{}: field 'placement_flags' is {:#x}, unknown bits",
                path, config.placement_flags);
  }
  const bool has_node = (config.placement_flags & kPlacementNode) != 0;
  const bool via_cpu = (config.placement_flags & kPlacementViaCpu) != 0;
  if ((has_node && (config.numa_node < 0 || config.numa_node >= 1024)) ||
      (via_cpu && (!has_node || config.numa_cpu < 0))) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: fields 'numa_node' {} / 'numa_cpu' {} do not fit 'placement_flags' {:#x}",
                path, config.numa_node, config.numa_cpu, config.placement_flags);
  }
  const std::uint64_t size_expected = file_bytes_for(header_bytes, capacity, page_bytes);
  if (meta.size_bytes != size_expected) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: field 'size_bytes' is {}, expected header_bytes + capacity_bytes rounded up "
                "to {}-byte pages = {}",
                path, meta.size_bytes, page_bytes, size_expected);
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
  // The cursors of a live channel move while they are read, and a reader can be descheduled
  // between two loads: head is read on both sides of tail, so that the head at the instant tail
  // was read lies in [head_before, head_after] (head only grows). Acquire (all three): pair with
  // the consumer's and the producers' release stores of the cursors, and keep the three loads in
  // this order; only a sanity check here, the owning roles re-read them when they attach.
  const std::uint64_t head_before = header.consumer.head_position.load(std::memory_order_acquire);
  const std::uint64_t tail = header.producer.tail_position.load(std::memory_order_acquire);
  const std::uint64_t head_after = header.consumer.head_position.load(std::memory_order_acquire);
  if (head_before % kRecordAlign != 0 || head_after % kRecordAlign != 0 ||
      tail % kRecordAlign != 0) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: cursors 'head_position' {} / 'tail_position' {} are not 8-byte aligned", path,
                head_before % kRecordAlign != 0 ? head_before : head_after, tail);
  }
  // A consumer may run ahead of tail_position by records whose producer has not yet published
  // (or, killed, never will publish) tail; either way the two are never more than a ring apart.
  // Corrupt only if no head in [head_before, head_after] is within a ring of tail.
  // Broadcast consumers keep their cursors in their slots; the shared head is unused.
  const bool tail_too_far = tail > head_after && tail - head_after > capacity;
  const bool head_too_far = head_before > tail && head_before - tail > capacity;
  if (!broadcast && (tail_too_far || head_too_far)) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{}: cursors 'head_position' {} and 'tail_position' {} are more than a ring "
                "({} bytes) apart",
                path, tail_too_far ? head_after : head_before, tail, capacity);
  }
  return ValidatedMeta{static_cast<ChannelKind>(meta.kind),
                       capacity,
                       meta.record_bytes_max,
                       header_bytes,
                       config.producers_max,
                       config.consumers_max,
                       config.flags,
                       config.unblock_timeout_ns,
                       page_bytes,
                       config.placement_flags,
                       has_node ? config.numa_node : -1,
                       via_cpu ? config.numa_cpu : -1};
}

}  // namespace weft::detail
