#include "kinds_support.hpp"

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cstdio>

#include <gtest/gtest.h>

#include "weft/detail/layout.hpp"
#include "weft/idle.hpp"

namespace weft::kinds_test {

// ---- Directories -----------------------------------------------------------------------------

bool TempDir::exists(std::string_view name) const {
  struct stat st {};
  return ::stat(file(name).c_str(), &st) == 0;
}

ChannelOptions TempDir::options(ChannelKind kind, std::uint64_t capacity_bytes,
                                std::uint64_t record_bytes_max) const {
  ChannelOptions options = channel_options(capacity_bytes, record_bytes_max);
  options.kind = kind;
  return options;
}

OpenOptions TempDir::open_options(bool read_only) const {
  OpenOptions options = test::TempDir::open_options();
  options.read_only = read_only;
  return options;
}

// ---- Seeds, scale, time and random numbers ---------------------------------------------------

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void spin_for_ns(std::int64_t ns) noexcept {
  const std::int64_t until = monotonic_ns() + ns;
  while (monotonic_ns() < until) cpu_relax();
}

std::string describe_channel(const Channel& channel) {
  const detail::ChannelHeader& header = *channel.header();
  std::string out = channel.path() + ": tail " +
                    std::to_string(header.producer.tail_position.load()) + ", head " +
                    std::to_string(header.consumer.head_position.load()) + ", unblocks " +
                    std::to_string(header.recovery.unblocks.load()) + ", detaches " +
                    std::to_string(header.recovery.detaches.load());
  const auto position = [](std::uint64_t value) {
    return value == detail::kNoPosition ? std::string("-") : std::to_string(value);
  };
  for (std::uint32_t i = 0; i < channel.producers_max(); ++i) {
    const detail::ProducerSlot& slot = channel.producer_slots()[i];
    if (slot.role.pid.load() == 0 && slot.chunk_start.load() == detail::kNoPosition) continue;
    out += "; producer slot " + std::to_string(i) + ": pid " +
           std::to_string(slot.role.pid.load()) + " intent [" + position(slot.intent.load()) +
           ", " + position(slot.intent_end.load()) + ") chunk [" +
           position(slot.chunk_start.load()) + ", " + position(slot.chunk_end.load()) + ") limit " +
           position(slot.chunk_limit.load()) + " writing " + position(slot.write_position.load()) +
           " given up [" + position(slot.given_up_start.load()) + ", " +
           position(slot.given_up_end.load()) + ") version " +
           std::to_string(slot.chunk_version.load());
  }
  if (channel.kind() == ChannelKind::kMpsc) {
    const std::uint64_t head = header.consumer.head_position.load();
    const std::uint64_t mask = channel.capacity_bytes() - 1;
    out += "; consumer taken [" + position(header.consumer.taken_start.load()) + ", " +
           position(header.consumer.taken_end.load()) + ") slot " +
           std::to_string(header.consumer.taken_slot.load()) + ", word at head " +
           std::to_string(
               reinterpret_cast<const std::atomic<std::uint64_t>*>(channel.ring() + (head & mask))
                   ->load());
  }
  for (std::uint32_t i = 0; i < channel.consumers_max(); ++i) {
    const detail::ConsumerSlot& slot = channel.consumer_slots()[i];
    if (slot.role.pid.load() == 0) continue;
    out += "; consumer slot " + std::to_string(i) + ": pid " +
           std::to_string(slot.role.pid.load()) + " head " + position(slot.head_position.load());
  }
  return out;
}

std::string dump_ring(const Channel& channel, std::uint64_t position, std::uint64_t before,
                      std::uint64_t after) {
  const std::uint64_t mask = channel.capacity_bytes() - 1;
  std::string out;
  const std::uint64_t from = (position > before ? position - before : 0) & ~std::uint64_t{7};
  for (std::uint64_t p = from; p < position + after; p += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, channel.ring() + (p & mask), 8);
    if (word == 0) continue;
    char line[96];
    std::snprintf(line, sizeof line, "\n  %llu (offset %llu): %016llx",
                  static_cast<unsigned long long>(p), static_cast<unsigned long long>(p & mask),
                  static_cast<unsigned long long>(word));
    out += line;
  }
  return out;
}

// ---- The self-checking record ----------------------------------------------------------------

std::size_t payload_bytes_for(std::uint64_t seed, std::uint32_t source, std::uint64_t sequence,
                              std::size_t small_max, std::size_t payload_max) noexcept {
  const std::uint64_t r = mix64(seed ^ (std::uint64_t{source} << 48), sequence);
  const std::size_t bytes = (r & 63) == 0 ? static_cast<std::size_t>((r >> 8) % (payload_max + 1))
                                          : static_cast<std::size_t>((r >> 8) % (small_max + 1));
  return std::min(bytes, payload_max);
}

namespace {

std::uint64_t record_key(std::uint32_t source, std::uint64_t sequence) noexcept {
  return mix64(std::uint64_t{source} + 0x51ed, sequence);
}

}  // namespace

std::uint64_t checksum64(std::span<const std::byte> bytes, std::uint64_t key) noexcept {
  // 64-bit multiply-xorshift over 8-byte words, then the tail; enough to catch any torn or
  // shifted payload in a test.
  std::uint64_t h = key ^ (bytes.size() * 0x9e3779b97f4a7c15ULL);
  std::size_t offset = 0;
  while (offset + 8 <= bytes.size()) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes.data() + offset, 8);
    h = (h ^ word) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
    offset += 8;
  }
  if (offset < bytes.size()) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes.data() + offset, bytes.size() - offset);
    h = (h ^ word) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 31;
  }
  return h ^ (h >> 33);
}

void write_record(std::span<std::byte> out, std::uint32_t source, std::uint64_t sequence) noexcept {
  const std::span<std::byte> payload = out.subspan(kStampBytes);
  const std::uint64_t key = record_key(source, sequence);
  fill_pattern(payload, key);
  const Stamp stamp{source, static_cast<std::uint32_t>(payload.size()), sequence,
                    checksum64(payload, key)};
  std::memcpy(out.data(), &stamp, kStampBytes);
}

Stamp read_stamp(std::span<const std::byte> record) noexcept {
  Stamp stamp{};
  if (record.size() >= kStampBytes) std::memcpy(&stamp, record.data(), kStampBytes);
  return stamp;
}

std::string check_record(std::span<const std::byte> record) {
  if (record.size() < kStampBytes) {
    return "record of " + std::to_string(record.size()) + " bytes is too short for its stamp";
  }
  const Stamp stamp = read_stamp(record);
  if (stamp.payload_bytes != record.size() - kStampBytes) {
    return "record " + std::to_string(stamp.source) + "/" + std::to_string(stamp.sequence) +
           " has " + std::to_string(record.size() - kStampBytes) +
           " payload bytes, its stamp says " + std::to_string(stamp.payload_bytes);
  }
  if (checksum64(record.subspan(kStampBytes), record_key(stamp.source, stamp.sequence)) !=
      stamp.checksum) {
    return "record " + std::to_string(stamp.source) + "/" + std::to_string(stamp.sequence) +
           " fails its checksum (payload corrupted)";
  }
  return {};
}

// ---- Broadcast consumers ---------------------------------------------------------------------

int consume_until_end(BroadcastConsumer& consumer, ConsumerReport& report,
                      const std::atomic<std::uint64_t>* producer_sent, const ConsumeSpec& spec) {
  std::uint64_t next = 0;
  std::uint64_t received = 0;
  std::uint64_t gaps = 0;
  std::uint64_t lost_records = 0;
  std::uint64_t lost_bytes = 0;
  bool end = false;
  std::string problem;
  const auto handler = [&](std::span<const std::byte> record) {
    if (end) return;  // Records after the first end marker are not counted.
    const Stamp stamp = read_stamp(record);
    const std::string bad = check_record(record);
    if (!bad.empty() && problem.empty()) problem = bad;
    if (stamp.sequence < next && problem.empty()) {
      problem = "sequence " + std::to_string(stamp.sequence) + " after " + std::to_string(next - 1);
    }
    if (stamp.sequence >= next) gaps += stamp.sequence - next;
    next = stamp.sequence + 1;
    ++received;
    if (stamp.source == kEndSource) end = true;
    if (spec.slow_ns != 0) spin_for_ns(spec.slow_ns);
    if (spec.stall_every != 0 && producer_sent != nullptr && received % spec.stall_every == 0) {
      // Relaxed: a progress hint; being late only stalls longer.
      while (producer_sent->load(std::memory_order_relaxed) < next + spec.stall_records) {
        cpu_relax();
      }
    }
  };
  // Lossy: one record per poll, so that the losses a poll reports all precede the record it hands
  // out (losses after the end marker must not count).
  const std::size_t per_poll = consumer.channel().lossy() ? 1 : SIZE_MAX;
  SpinThenWait idle;
  while (!end) {
    const BroadcastPollResult result = consumer.poll(handler, per_poll);
    if (result.status == PollStatus::kCorrupted || result.status == PollStatus::kDetached) {
      report.message.set(result.status == PollStatus::kDetached
                             ? std::string("detached while alive")
                             : consumer.last_error().message());
      return 3;
    }
    lost_records += result.lost_records;
    lost_bytes += result.lost_bytes;
    if (result.count == 0 && result.lost_records == 0) idle.idle(consumer);
  }
  // Relaxed (all): read by the parent after this process ended.
  report.received.store(received, std::memory_order_relaxed);
  report.lost_records.store(lost_records, std::memory_order_relaxed);
  report.lost_bytes.store(lost_bytes, std::memory_order_relaxed);
  report.gaps.store(gaps, std::memory_order_relaxed);
  report.last_sequence.store(next - 1, std::memory_order_relaxed);
  report.lost_records_total.store(consumer.lost_records_total(), std::memory_order_relaxed);
  report.slot_lost_records.store(
      consumer.channel().consumer_slots()[consumer.slot_index()].lost_records.load(),
      std::memory_order_relaxed);
  report.done.store(1, std::memory_order_release);
  if (!problem.empty()) {
    report.message.set(problem);
    return 4;
  }
  return 0;
}

}  // namespace weft::kinds_test
