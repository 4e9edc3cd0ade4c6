// Read-only inspection of channel files: snapshots, dumps and invariant checks (weft/inspect.hpp).
#include "weft/inspect.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "error_util.hpp"
#include "ring/role.hpp"
#include "shm/validate.hpp"
#include "sys/sys.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/journal.hpp"

namespace weft::inspect {

using detail::fail;
using detail::fail_errno;
using detail::kNoPosition;

const char* to_string(Liveness liveness) noexcept {
  switch (liveness) {
    case Liveness::kFree:
      return "free";
    case Liveness::kAlive:
      return "alive";
    case Liveness::kDead:
      return "dead";
    case Liveness::kBusy:
      return "busy";
  }
  return "unknown";
}

const char* to_string(Status status) noexcept {
  switch (status) {
    case Status::kOk:
      return "ok";
    case Status::kBackPressured:
      return "back-pressured";
    case Status::kStuck:
      return "stuck";
    case Status::kStale:
      return "stale";
  }
  return "unknown";
}

std::int64_t monotonic_now_ns() noexcept { return detail::monotonic_ns(); }

struct ChannelView::State {
  std::string name;
  std::string path;
  const std::byte* base = nullptr;
  std::size_t bytes = 0;
  const detail::ChannelHeader* header = nullptr;
  const std::byte* ring = nullptr;
  detail::ValidatedMeta meta{};
  std::uint32_t file_mode = 0;
  std::uint32_t file_uid = 0;
  std::uint32_t file_gid = 0;
  int fd = -1;  // Kept open to notice a file truncated under the mapping (revalidate()).

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (base != nullptr) sys::ops().munmap(const_cast<std::byte*>(base), bytes);
    if (fd >= 0) sys::ops().close(fd);
  }

  [[nodiscard]] std::uint64_t capacity() const noexcept { return meta.capacity_bytes; }
  [[nodiscard]] std::uint64_t mask() const noexcept { return meta.capacity_bytes - 1; }
  // The ring word at `position`. Acquire: pairs with the producers' release stores of record
  // header words (and the MPSC consumer's padding), so the bytes they cover are visible.
  [[nodiscard]] std::uint64_t word(std::uint64_t position) const noexcept {
    return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(ring + (position & mask())),
                           __ATOMIC_ACQUIRE);
  }
  // A broadcast record's sequence number. Relaxed: published with the record's word.
  [[nodiscard]] std::uint64_t seq(std::uint64_t position) const noexcept {
    return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(ring + (position & mask()) + 8),
                           __ATOMIC_RELAXED);
  }
  [[nodiscard]] const detail::ProducerSlot* producer_slots() const noexcept {
    return reinterpret_cast<const detail::ProducerSlot*>(base + detail::kSlotsOffset);
  }
  [[nodiscard]] const detail::ConsumerSlot* consumer_slots() const noexcept {
    return reinterpret_cast<const detail::ConsumerSlot*>(
        base + detail::kSlotsOffset + meta.producers_max * detail::kFalseSharingRange);
  }
  [[nodiscard]] bool broadcast() const noexcept { return meta.kind == ChannelKind::kBroadcast; }
  [[nodiscard]] bool mpsc() const noexcept { return meta.kind == ChannelKind::kMpsc; }
  [[nodiscard]] bool lossy() const noexcept { return (meta.flags & detail::kFlagLossy) != 0; }
  // The slowest attached broadcast consumer's head (tail when none is attached). Acquire (all):
  // pairs with the consumers' release stores of head_position.
  [[nodiscard]] std::uint64_t broadcast_min_head(std::uint64_t tail) const noexcept {
    std::uint64_t min_head = tail;
    const detail::ConsumerSlot* slots = consumer_slots();
    for (std::uint32_t i = 0; i < meta.consumers_max; ++i) {
      if (slots[i].role.pid.load(std::memory_order_acquire) == 0) continue;
      const std::uint64_t head = slots[i].head_position.load(std::memory_order_acquire);
      if (head == kNoPosition || head > tail) continue;
      min_head = std::min(min_head, head);
    }
    return min_head;
  }
  // Lossy broadcast: the producer may have written over `position` (see BroadcastConsumer).
  [[nodiscard]] bool lapped(std::uint64_t position) const noexcept {
    // Relaxed: ordered after the loads it validates by the caller's acquire fence.
    return header->reserve.reserve_position.load(std::memory_order_relaxed) > position + capacity();
  }
  // Where the oldest record nobody may overwrite yet starts: the consumer's head (SPSC, MPSC) or
  // the slowest attached consumer's (broadcast).
  [[nodiscard]] std::uint64_t floor_position(std::uint64_t tail) const noexcept {
    if (broadcast()) return broadcast_min_head(tail);
    // Acquire: pairs with the consumer's release store of head_position.
    const std::uint64_t head = header->consumer.head_position.load(std::memory_order_acquire);
    if (mpsc()) {
      // The MPSC consumer zeroes what it consumed before it publishes the head; zeroing_end says
      // how far it got. Acquire: pairs with its release fence.
      const std::uint64_t zeroing = header->consumer.zeroing_end.load(std::memory_order_acquire);
      if (zeroing > head && zeroing - head <= capacity()) return zeroing;
    }
    return head;
  }
  // True when something seen at `position` may have been rewritten meanwhile: a cursor passed it
  // (or, lossy, the producer lapped it). Call after the loads it validates.
  [[nodiscard]] bool overtaken(std::uint64_t position) const noexcept {
    std::atomic_thread_fence(std::memory_order_acquire);
    if (broadcast() && lossy() && lapped(position)) return true;
    // Acquire: pairs with the producer's release store of tail_position.
    const std::uint64_t tail = header->producer.tail_position.load(std::memory_order_acquire);
    return floor_position(tail) > position;
  }
};

namespace {

constexpr std::uint32_t kPidMaxLimit = 4'194'304;

RoleInfo read_role(const detail::RoleSlot& slot, bool liveness, std::int64_t now_s) {
  RoleInfo info;
  // Acquire (pid, start_ticks): pair with the holder's release stores in take_role/try_take_slot.
  info.pid = slot.pid.load(std::memory_order_acquire);
  info.start_ticks = slot.start_ticks.load(std::memory_order_acquire);
  // Relaxed (both): advisory statistics.
  info.heartbeat_s = slot.heartbeat_s.load(std::memory_order_relaxed);
  info.attach_count = slot.attach_count.load(std::memory_order_relaxed);
  if (info.heartbeat_s != 0 && now_s >= info.heartbeat_s) {
    info.heartbeat_age_s = now_s - info.heartbeat_s;
  }
  if (info.pid == 0) {
    info.liveness = Liveness::kFree;
  } else if (info.pid == detail::kSlotBusyPid) {
    info.liveness = Liveness::kBusy;
  } else if (!liveness) {
    info.liveness = Liveness::kAlive;  // Not looked up; callers that need it pass liveness.
  } else {
    info.liveness =
        detail::process_alive(info.pid, info.start_ticks) ? Liveness::kAlive : Liveness::kDead;
  }
  return info;
}

bool covers(std::uint64_t start, std::uint64_t end, std::uint64_t position) noexcept {
  return start != kNoPosition && end != kNoPosition && start <= position && position < end;
}

std::string name_from_meta(const detail::ChannelMeta& meta) {
  const char* begin = meta.name;
  const void* nul = std::memchr(begin, '\0', sizeof meta.name);
  const std::size_t length = nul == nullptr
                                 ? sizeof meta.name
                                 : static_cast<std::size_t>(static_cast<const char*>(nul) - begin);
  std::string out;
  for (std::size_t i = 0; i < length; ++i) {
    const auto c = static_cast<unsigned char>(begin[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return out;
}

}  // namespace

ChannelView::ChannelView(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
ChannelView::ChannelView(ChannelView&&) noexcept = default;
ChannelView& ChannelView::operator=(ChannelView&&) noexcept = default;
ChannelView::~ChannelView() = default;

const std::string& ChannelView::name() const noexcept { return state_->name; }
const std::string& ChannelView::path() const noexcept { return state_->path; }
ChannelKind ChannelView::kind() const noexcept { return state_->meta.kind; }

Result<ChannelView> ChannelView::open(std::string_view name, std::string_view dir) {
  constexpr const char* kWhere = "channel inspect";
  if (name.empty() || name.size() >= detail::kNameBytesMax || name.front() == '.' ||
      name.find('/') != std::string_view::npos) {
    return fail(Errc::kInvalidArgument, 0, kWhere,
                "'{}' is not a channel name (1 to {} characters, no '/', not starting with '.')",
                name, detail::kNameBytesMax - 1);
  }
  auto state = std::make_unique<State>();
  state->name = std::string(name);
  state->path = Channel::resolve_dir(dir) + "/" + state->name;
  const int fd = sys::ops().open(state->path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      return fail(Errc::kNotFound, err, kWhere, "channel '{}' does not exist at {}", name,
                  state->path);
    }
    if (err == EACCES || err == EPERM) {
      return fail(Errc::kPermissionDenied, err, kWhere,
                  "cannot read {}: run as its owner or a member of its group", state->path);
    }
    return fail_errno(err, kWhere, "cannot open {}", state->path);
  }
  state->fd = fd;  // Closed with the state.
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    return fail_errno(err, kWhere, "cannot stat {}", state->path);
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(Errc::kCorrupted, 0, kWhere, "{} is not a regular file", state->path);
  }
  const auto file_bytes = static_cast<std::uint64_t>(st.st_size);
  if (file_bytes < detail::kPageBytes) {
    return fail(Errc::kCorrupted, 0, kWhere,
                "{} is {} bytes, shorter than a channel header ({} bytes): not a weft channel",
                state->path, file_bytes, detail::kPageBytes);
  }
  state->file_mode = static_cast<std::uint32_t>(st.st_mode & 07777);
  state->file_uid = st.st_uid;
  state->file_gid = st.st_gid;
  // Map the header page alone first: the sizes in it are not trusted until validated.
  void* head_map = sys::ops().mmap(nullptr, detail::kPageBytes, PROT_READ, MAP_SHARED, fd, 0);
  if (head_map == MAP_FAILED) {
    const int err = errno;
    return fail_errno(err, kWhere, "cannot map the header of {}", state->path);
  }
  auto meta = detail::validate_header(*static_cast<const detail::ChannelHeader*>(head_map),
                                      file_bytes, state->path);
  sys::ops().munmap(head_map, detail::kPageBytes);
  if (!meta) return unexpected(meta.error());
  // No prefault: an observer touches only the pages it reads.
  void* mapping = sys::ops().mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (mapping == MAP_FAILED) {
    const int err = errno;
    return fail_errno(err, kWhere, "cannot map {} bytes of {}", file_bytes, state->path);
  }
  state->base = static_cast<const std::byte*>(mapping);
  state->bytes = file_bytes;
  auto final_meta = detail::validate_header(*static_cast<const detail::ChannelHeader*>(mapping),
                                            file_bytes, state->path);
  if (!final_meta) return unexpected(final_meta.error());
  if (final_meta->header_bytes != meta->header_bytes ||
      final_meta->capacity_bytes != meta->capacity_bytes) {
    return fail(Errc::kCorrupted, 0, kWhere, "{}: header changed while it was being read",
                state->path);
  }
  state->meta = *final_meta;
  state->header = static_cast<const detail::ChannelHeader*>(mapping);
  state->ring = state->base + final_meta->header_bytes;
  return ChannelView(std::move(state));
}

Result<void> ChannelView::revalidate() const {
  const State& s = *state_;
  struct stat st {};
  if (fstat(s.fd, &st) != 0) {
    const int err = errno;
    return fail_errno(err, "channel inspect", "cannot stat {}", s.path);
  }
  if (static_cast<std::uint64_t>(st.st_size) != s.bytes) {
    return fail(Errc::kCorrupted, 0, "channel inspect",
                "{} is now {} bytes, it was {} when mapped: truncated or replaced while being read",
                s.path, st.st_size, s.bytes);
  }
  auto meta = detail::validate_header(*s.header, s.bytes, s.path);
  if (!meta) return unexpected(meta.error());
  if (meta->header_bytes != s.meta.header_bytes || meta->capacity_bytes != s.meta.capacity_bytes) {
    return fail(Errc::kCorrupted, 0, "channel inspect", "{}: header changed while being read",
                s.path);
  }
  return {};
}

ChannelSnapshot ChannelView::snapshot(bool liveness) const {
  const State& s = *state_;
  const detail::ChannelHeader& h = *s.header;
  ChannelSnapshot out;
  out.taken_ns = detail::monotonic_ns();
  const std::int64_t now_s = out.taken_ns / 1'000'000'000;
  out.name = s.name;
  out.path = s.path;
  out.kind = s.meta.kind;
  out.lossy = s.lossy();
  // ChannelMeta and ChannelConfig are written once before the file had its name: plain reads.
  out.layout_version = h.meta.layout_version;
  out.size_bytes = h.meta.size_bytes;
  out.header_bytes = s.meta.header_bytes;
  out.capacity_bytes = s.meta.capacity_bytes;
  out.record_bytes_max = s.meta.record_bytes_max;
  out.created_unix_ns = h.meta.created_unix_ns;
  out.creator_pid = h.meta.creator_pid;
  out.meta_name = name_from_meta(h.meta);
  out.producers_max = s.meta.producers_max;
  out.consumers_max = s.meta.consumers_max;
  out.unblock_timeout_ns = s.meta.unblock_timeout_ns;
  out.file_mode = s.file_mode;
  out.file_uid = s.file_uid;
  out.file_gid = s.file_gid;

  // Acquire: pairs with the producers' release stores (or CAS) of tail_position.
  out.tail_position = h.producer.tail_position.load(std::memory_order_acquire);
  // Relaxed (all below unless said): statistics and advisory fields for display.
  out.reserve_position = h.reserve.reserve_position.load(std::memory_order_relaxed);
  out.zeroing_end = h.consumer.zeroing_end.load(std::memory_order_relaxed);
  out.taken_start = h.consumer.taken_start.load(std::memory_order_relaxed);
  out.taken_end = h.consumer.taken_end.load(std::memory_order_relaxed);
  out.taken_slot = h.consumer.taken_slot.load(std::memory_order_relaxed);
  out.data_sleepers = h.data_sleepers.sleepers.load(std::memory_order_relaxed);
  out.data_seq = h.data_seq.seq.load(std::memory_order_relaxed);
  out.space_sleepers = h.space_sleepers.sleepers.load(std::memory_order_relaxed);
  out.space_seq = h.space_seq.seq.load(std::memory_order_relaxed);
  out.unblocks = h.recovery.unblocks.load(std::memory_order_relaxed);
  out.unblocked_bytes = h.recovery.unblocked_bytes.load(std::memory_order_relaxed);
  out.detaches = h.recovery.detaches.load(std::memory_order_relaxed);
  const std::uint64_t tail = out.tail_position;

  const auto count = [&](Liveness l, std::uint32_t& alive, std::uint32_t& dead) {
    if (l == Liveness::kAlive) ++alive;
    if (l == Liveness::kDead) ++dead;
  };

  if (s.mpsc()) {
    const detail::ProducerSlot* slots = s.producer_slots();
    for (std::uint32_t i = 0; i < s.meta.producers_max; ++i) {
      const detail::ProducerSlot& slot = slots[i];
      // Relaxed: records_committed persists across holders of a slot.
      out.records_committed += slot.records_committed.load(std::memory_order_relaxed);
      out.claims_refused += slot.claims_refused.load(std::memory_order_relaxed);
      if (slot.role.pid.load(std::memory_order_relaxed) == 0) continue;
      ProducerInfo p;
      p.slot = i;
      p.role = read_role(slot.role, liveness, now_s);
      if (p.role.liveness == Liveness::kFree) continue;
      p.records_committed = slot.records_committed.load(std::memory_order_relaxed);
      p.claims_refused = slot.claims_refused.load(std::memory_order_relaxed);
      // Acquire (all): pair with the producer's stores of its claim ranges.
      p.intent = slot.intent.load(std::memory_order_acquire);
      p.intent_end = slot.intent_end.load(std::memory_order_acquire);
      p.chunk_start = slot.chunk_start.load(std::memory_order_acquire);
      p.chunk_end = slot.chunk_end.load(std::memory_order_acquire);
      p.chunk_limit = slot.chunk_limit.load(std::memory_order_acquire);
      p.write_position = slot.write_position.load(std::memory_order_acquire);
      count(p.role.liveness, out.producers_alive, out.producers_dead);
      out.producers.push_back(p);
    }
  } else {
    ProducerInfo p;
    p.role = read_role(h.producer.role, liveness, now_s);
    p.records_committed = h.producer.records_committed.load(std::memory_order_relaxed);
    p.claims_refused = h.producer.claims_refused.load(std::memory_order_relaxed);
    out.records_committed = p.records_committed;
    out.claims_refused = p.claims_refused;
    if (p.role.liveness != Liveness::kFree) {
      count(p.role.liveness, out.producers_alive, out.producers_dead);
      out.producers.push_back(p);
    }
  }

  if (s.broadcast()) {
    const detail::ConsumerSlot* slots = s.consumer_slots();
    std::uint64_t min_head = tail;
    std::optional<std::uint64_t> max_lag_records;
    std::uint64_t min_consumed = ~std::uint64_t{0};
    for (std::uint32_t i = 0; i < s.meta.consumers_max; ++i) {
      const detail::ConsumerSlot& slot = slots[i];
      if (slot.role.pid.load(std::memory_order_relaxed) == 0) continue;
      ConsumerInfo c;
      c.slot = i;
      c.role = read_role(slot.role, liveness, now_s);
      if (c.role.liveness == Liveness::kFree) continue;
      // Acquire: pairs with the consumer's release store of its head.
      c.head_position = slot.head_position.load(std::memory_order_acquire);
      c.records_consumed = slot.records_consumed.load(std::memory_order_relaxed);
      c.lost_records = slot.lost_records.load(std::memory_order_relaxed);
      c.lost_bytes = slot.lost_bytes.load(std::memory_order_relaxed);
      c.detached = slot.detached.load(std::memory_order_relaxed) != 0;
      c.sleeping = slot.sleeping.load(std::memory_order_relaxed) != 0;
      if (c.head_position != kNoPosition && c.head_position <= tail) {
        c.lag_bytes = tail - c.head_position;
        min_head = std::min(min_head, c.head_position);
        if (c.head_position == tail) {
          c.lag_records = 0;
        } else if (c.lag_bytes <= s.capacity() && !s.lapped(c.head_position)) {
          // The record at the head carries its sequence number; the producer's count is the next.
          const std::uint64_t first = s.seq(c.head_position);
          if (first <= out.records_committed) c.lag_records = out.records_committed - first;
        }
        if (c.lag_records && (!max_lag_records || *c.lag_records > *max_lag_records)) {
          max_lag_records = c.lag_records;
        }
      }
      min_consumed = std::min(min_consumed, c.records_consumed);
      out.lag_bytes = std::max(out.lag_bytes, c.lag_bytes);
      count(c.role.liveness, out.consumers_alive, out.consumers_dead);
      out.consumers.push_back(c);
    }
    out.head_position = min_head;
    out.records_consumed = out.consumers.empty() ? 0 : min_consumed;
    out.lag_records = out.consumers.empty() ? std::optional<std::uint64_t>(0) : max_lag_records;
  } else {
    ConsumerInfo c;
    c.role = read_role(h.consumer.role, liveness, now_s);
    // Acquire: pairs with the consumer's release store of head_position.
    c.head_position = h.consumer.head_position.load(std::memory_order_acquire);
    c.records_consumed = h.consumer.records_consumed.load(std::memory_order_relaxed);
    c.lag_bytes = c.head_position <= tail ? tail - c.head_position : 0;
    if (out.records_committed >= c.records_consumed) {
      c.lag_records = out.records_committed - c.records_consumed;
    }
    out.head_position = c.head_position;
    out.records_consumed = c.records_consumed;
    out.lag_bytes = c.lag_bytes;
    out.lag_records = c.lag_records;
    if (c.role.liveness != Liveness::kFree) {
      count(c.role.liveness, out.consumers_alive, out.consumers_dead);
      out.consumers.push_back(c);
    }
  }
  out.used_bytes = out.head_position <= tail ? std::min(tail - out.head_position, s.capacity()) : 0;

  // The recorder's blocks (weft/recorder.hpp): its role, the durable position and statistics.
  // Acquire (pid): pairs with the recorder's release in take_role.
  const std::uint64_t durable = h.durable.durable_position.load(std::memory_order_acquire);
  if (h.recorder.role.pid.load(std::memory_order_acquire) != 0 || durable != 0) {
    JournalInfo j;
    j.recorder = read_role(h.recorder.role, liveness, now_s);
    j.durable_position = durable;
    j.durable_lag_bytes = durable <= tail ? tail - durable : 0;
    // Relaxed (all below): statistics, validated by the seqlock's version where they have one.
    j.durable_sequence = h.durable.durable_sequence.load(std::memory_order_relaxed);
    j.records_appended = h.recorder.records_appended.load(std::memory_order_relaxed);
    j.lost_records = h.durable.lost_records.load(std::memory_order_relaxed);
    const detail::JournalStatsBlock& block = h.journal_stats;
    constexpr int kSeqlockTriesMax = 1000;
    j.stats_consistent = false;
    for (int tries = 0; tries < kSeqlockTriesMax && !j.stats_consistent; ++tries) {
      // Acquire: pairs with the recorder's release store of an even version.
      const std::uint32_t version = block.version.load(std::memory_order_acquire);
      if ((version & 1) != 0) continue;
      j.sync_mode = block.sync_mode.load(std::memory_order_relaxed);
      j.policy.arrival_records_per_s =
          std::bit_cast<double>(block.arrival_records_per_s.load(std::memory_order_relaxed));
      j.policy.arrival_bytes_per_s =
          std::bit_cast<double>(block.arrival_bytes_per_s.load(std::memory_order_relaxed));
      j.policy.flush_fixed_ns =
          std::bit_cast<double>(block.flush_fixed_ns.load(std::memory_order_relaxed));
      j.policy.flush_ns_per_byte =
          std::bit_cast<double>(block.flush_ns_per_byte.load(std::memory_order_relaxed));
      j.policy.flush_cost_spread_ns =
          std::bit_cast<double>(block.flush_cost_spread_ns.load(std::memory_order_relaxed));
      j.policy.gather_bytes = block.gather_bytes.load(std::memory_order_relaxed);
      j.policy.max_delay_ns = block.max_delay_ns.load(std::memory_order_relaxed);
      j.policy.max_in_flight = block.max_in_flight.load(std::memory_order_relaxed);
      j.policy.max_io_workers = block.max_io_workers.load(std::memory_order_relaxed);
      j.in_flight = block.in_flight.load(std::memory_order_relaxed);
      j.flushes = block.flushes.load(std::memory_order_relaxed);
      j.bytes_durable = block.bytes_durable.load(std::memory_order_relaxed);
      j.records_durable = block.records_durable.load(std::memory_order_relaxed);
      j.errors = block.errors.load(std::memory_order_relaxed);
      j.retries = block.retries.load(std::memory_order_relaxed);
      // Acquire fence: the field loads above happen before the second version load; pairs with
      // the recorder's release fence after it made the version odd.
      std::atomic_thread_fence(std::memory_order_acquire);
      j.stats_consistent = block.version.load(std::memory_order_relaxed) == version;
    }
    j.sync = j.sync_mode <= static_cast<std::uint32_t>(JournalSync::kNone)
                 ? journal_sync_name(static_cast<JournalSync>(j.sync_mode))
                 : "unknown";
    out.journal = std::move(j);
  }

  // MPSC: is the head waiting on a dead producer's claim?
  if (s.mpsc() && liveness && tail != out.head_position && s.word(out.head_position) == 0) {
    const std::uint64_t at = out.head_position;
    for (const ProducerInfo& p : out.producers) {
      if (p.role.liveness != Liveness::kDead) continue;
      if (covers(p.chunk_start, p.chunk_end, at) || covers(p.intent, p.intent_end, at)) {
        out.head_blocked_by_dead_producer = true;
        out.blocking_slot = static_cast<std::int32_t>(p.slot);
        break;
      }
    }
  }
  return out;
}

void classify(ChannelSnapshot& now, const ChannelSnapshot* before, bool stale,
              std::int64_t stuck_after_s) {
  now.stale = stale;
  now.reason.clear();
  if (stale) {
    now.status = Status::kStale;
    now.reason = "no process has the channel open: its users are gone (weftctl gc removes it)";
    return;
  }
  if (now.journal && now.journal->durable_lag_bytes != 0 &&
      now.journal->recorder.liveness == Liveness::kDead) {
    now.status = Status::kStuck;
    now.reason = fmt::format("recorder pid {} died with {} bytes not yet durable: restart it",
                             now.journal->recorder.pid, now.journal->durable_lag_bytes);
    return;
  }
  const bool pending = now.lag_bytes != 0;
  const bool progressed = before != nullptr && (now.records_consumed != before->records_consumed ||
                                                now.head_position != before->head_position);
  if (pending && now.head_blocked_by_dead_producer) {
    now.status = Status::kStuck;
    now.reason = fmt::format(
        "the head waits on a claim of dead producer slot {}: the consumer pads it after the "
        "unblock timeout, or run weftctl unblock",
        now.blocking_slot);
    return;
  }
  if (pending && !progressed) {
    const ConsumerInfo* slowest = nullptr;
    for (const ConsumerInfo& c : now.consumers) {
      if (slowest == nullptr || c.lag_bytes > slowest->lag_bytes) slowest = &c;
    }
    if (slowest == nullptr || slowest->lag_bytes == 0) {
      // Nobody consumes: not stuck (nothing to wait for), but the producer fills the ring.
    } else if (slowest->role.liveness == Liveness::kDead) {
      now.status = Status::kStuck;
      now.reason = fmt::format("consumer pid {} died with {} bytes unread", slowest->role.pid,
                               slowest->lag_bytes);
      return;
    } else if (before != nullptr && slowest->role.heartbeat_age_s >= stuck_after_s) {
      now.status = Status::kStuck;
      now.reason = fmt::format(
          "consumer pid {} is alive but has not moved for the sample and its last heartbeat is "
          "{} s old, with {} bytes unread",
          slowest->role.pid, slowest->role.heartbeat_age_s, slowest->lag_bytes);
      return;
    }
  }
  const bool refused = before != nullptr ? now.claims_refused > before->claims_refused
                                         : now.used_bytes * 10 >= now.capacity_bytes * 9;
  if (refused) {
    now.status = Status::kBackPressured;
    now.reason = before != nullptr ? "producers were refused space during the sample"
                                   : "the ring is 90% full or more";
    return;
  }
  now.status = Status::kOk;
}

Result<DumpResult> ChannelView::dump(const DumpOptions& options) const {
  constexpr const char* kWhere = "channel dump";
  const State& s = *state_;
  const detail::ChannelHeader& h = *s.header;
  DumpResult out;
  // Acquire: pairs with the producers' release of tail_position.
  const std::uint64_t tail = h.producer.tail_position.load(std::memory_order_acquire);
  out.tail = tail;
  std::uint64_t from = 0;
  const bool broadcast = s.broadcast();
  if (broadcast) {
    if (options.consumer_slot >= 0) {
      if (static_cast<std::uint32_t>(options.consumer_slot) >= s.meta.consumers_max) {
        return fail(Errc::kInvalidArgument, 0, kWhere,
                    "{}: consumer slot {} does not exist (the channel has {} slots)", s.path,
                    options.consumer_slot, s.meta.consumers_max);
      }
      const detail::ConsumerSlot& slot =
          s.consumer_slots()[static_cast<std::uint32_t>(options.consumer_slot)];
      // Acquire: pairs with the consumer's release store of its head.
      from = slot.head_position.load(std::memory_order_acquire);
      if (slot.role.pid.load(std::memory_order_acquire) == 0 || from == kNoPosition) {
        return fail(Errc::kNotFound, 0, kWhere,
                    "{}: consumer slot {} is free: no cursor to dump from (weftctl show lists "
                    "the attached consumers)",
                    s.path, options.consumer_slot);
      }
    } else {
      from = s.broadcast_min_head(tail);
    }
  } else {
    // Acquire: pairs with the consumer's release store of head_position.
    from = h.consumer.head_position.load(std::memory_order_acquire);
  }
  out.from = from;
  if (from > tail || tail - from > s.capacity()) {
    if (broadcast && s.lossy() && from < tail) {
      from = tail;  // Lapped: what it has not read is gone; nothing left to show.
      out.note = "the consumer was lapped: the records it missed are gone";
      out.from = from;
    } else if (from > tail) {
      out.complete = true;
      return out;  // The consumer is ahead of a tail not yet published: nothing to show.
    } else {
      return fail(Errc::kCorrupted, 0, kWhere,
                  "{}: cursor {} and tail_position {} are more than a ring ({} bytes) apart",
                  s.path, from, tail, s.capacity());
    }
  }
  const std::uint64_t header_bytes =
      broadcast ? detail::kBroadcastHeaderBytes : detail::kRecordHeaderBytes;
  std::uint64_t position = from;
  std::size_t data_records = 0;
  while (position < tail) {
    if (data_records >= options.count_max) {
      out.note = fmt::format("stopped after {} records (--count)", data_records);
      return out;
    }
    const std::uint64_t word = s.word(position);
    const std::uint32_t type = detail::record_word_type(word);
    const std::uint64_t length = detail::record_word_length(word);
    const std::uint64_t slot = position & s.mask();
    DumpedRecord record;
    record.position = position;
    std::uint64_t span = 0;
    if (word == 0) {
      if (!s.mpsc()) {
        if (s.overtaken(position)) {
          out.note = fmt::format("a consumer moved past position {} while it was read: run again",
                                 position);
          return out;
        }
        return fail(Errc::kCorrupted, 0, kWhere,
                    "{}: no record at position {} although tail_position is {}", s.path, position,
                    tail);
      }
      // MPSC: a claim not committed yet. Skip to the end of the chunk (or intent) that holds it.
      std::uint64_t end = kNoPosition;
      const detail::ProducerSlot* slots = s.producer_slots();
      for (std::uint32_t i = 0; i < s.meta.producers_max && end == kNoPosition; ++i) {
        // Acquire (all): pair with the producer's stores of its claim ranges.
        const std::uint64_t start = slots[i].chunk_start.load(std::memory_order_acquire);
        const std::uint64_t chunk_end = slots[i].chunk_end.load(std::memory_order_acquire);
        const std::uint64_t intent = slots[i].intent.load(std::memory_order_acquire);
        const std::uint64_t intent_end = slots[i].intent_end.load(std::memory_order_acquire);
        if (covers(start, chunk_end, position)) end = chunk_end;
        if (end == kNoPosition && covers(intent, intent_end, position)) end = intent_end;
      }
      if (end == kNoPosition || end > tail || end - position > s.capacity()) {
        if (s.overtaken(position)) {
          out.note = fmt::format("the consumer moved past position {} while it was read: run again",
                                 position);
          return out;
        }
        out.note = fmt::format(
            "position {} is claimed but not committed, and no producer slot says by whom",
            position);
        return out;
      }
      // The unused rest of a chunk still open at the tail is no record: leave it out.
      if (end < tail) {
        record.gap = true;
        record.length = end - position;
        out.records.push_back(std::move(record));
      }
      position = end;
      continue;
    }
    if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) {
      span = broadcast ? detail::broadcast_span_bytes(length) : detail::record_span_bytes(length);
      if (length > s.meta.record_bytes_max || slot + span > s.capacity()) span = 0;
    } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding)) {
      span = header_bytes + length;
      if (broadcast ? (slot == 0 || span != s.capacity() - slot)
                    : (span % detail::kRecordAlign != 0 || span >= s.capacity() ||
                       slot + span > s.capacity())) {
        span = 0;
      }
      record.padding = true;
    }
    if (span == 0) {
      if (s.overtaken(position)) {
        out.note =
            fmt::format("a consumer moved past position {} while it was read: run again", position);
        return out;
      }
      return fail(Errc::kCorrupted, 0, kWhere,
                  "{}: record header {:#018x} at position {} (ring offset {}) is invalid: unknown "
                  "type, length above record_bytes_max {}, or past the ring end",
                  s.path, word, position, slot, s.meta.record_bytes_max);
    }
    record.length = length;
    if (broadcast) record.sequence = s.seq(position);
    if (!record.padding) {
      const std::size_t copy =
          static_cast<std::size_t>(std::min<std::uint64_t>(length, options.payload_bytes_max));
      record.payload.resize(copy);
      // The bytes below the record's word were published by its release store (acquired above).
      if (copy != 0) std::memcpy(record.payload.data(), s.ring + slot + header_bytes, copy);
      if (s.overtaken(position)) {
        out.note =
            fmt::format("a consumer moved past position {} while it was read: run again", position);
        return out;
      }
      ++data_records;
    }
    if (!record.padding || options.include_padding) out.records.push_back(std::move(record));
    position += span;
  }
  out.complete = true;
  return out;
}

std::vector<Violation> ChannelView::verify() const {
  const State& s = *state_;
  const detail::ChannelHeader& h = *s.header;
  std::vector<Violation> out;
  const auto add = [&out](std::string field, std::string message) {
    out.push_back({std::move(field), std::move(message)});
  };
  const std::uint64_t cap = s.capacity();
  const std::int64_t now_s = detail::monotonic_ns() / 1'000'000'000;

  // ---- meta
  const std::string meta_name = name_from_meta(h.meta);
  if (std::memchr(h.meta.name, '\0', sizeof h.meta.name) == nullptr) {
    add("meta.name", "the name field is not NUL-terminated");
  } else if (meta_name != s.name) {
    add("meta.name", fmt::format("the header names the channel '{}' but its file is '{}' "
                                 "(renamed or copied)",
                                 meta_name, s.name));
  }
  // ---- roles
  const auto check_role = [&](const detail::RoleSlot& slot, const std::string& field) {
    const RoleInfo role = read_role(slot, false, now_s);
    if (role.pid != 0 && role.pid != detail::kSlotBusyPid && role.pid > kPidMaxLimit) {
      add(field + ".pid",
          fmt::format("pid {} is above the kernel's limit {}", role.pid, kPidMaxLimit));
    }
    if (role.heartbeat_s != 0 && role.heartbeat_s > now_s + 1) {
      add(field + ".heartbeat_s",
          fmt::format("heartbeat {} s is in the future (now {} s)", role.heartbeat_s, now_s));
    }
  };
  // ---- sleepers
  const std::uint32_t data_sleepers = h.data_sleepers.sleepers.load(std::memory_order_relaxed);
  const std::uint32_t space_sleepers = h.space_sleepers.sleepers.load(std::memory_order_relaxed);
  const std::uint32_t consumers_possible = s.broadcast() ? s.meta.consumers_max : 1;
  const std::uint32_t producers_possible = s.mpsc() ? s.meta.producers_max : 1;
  if (data_sleepers > consumers_possible) {
    add("data_sleepers.sleepers",
        fmt::format("{} sleepers counted, but at most {} consumers can sleep", data_sleepers,
                    consumers_possible));
  }
  if (space_sleepers > producers_possible) {
    add("space_sleepers.sleepers",
        fmt::format("{} sleepers counted, but at most {} producers can sleep", space_sleepers,
                    producers_possible));
  }
  const std::uint64_t recovery_unblocks = h.recovery.unblocks.load(std::memory_order_relaxed);
  const std::uint64_t recovery_bytes = h.recovery.unblocked_bytes.load(std::memory_order_relaxed);
  if (!s.mpsc() && (recovery_unblocks != 0 || recovery_bytes != 0)) {
    add("recovery.unblocks", "non-zero, but only MPSC channels unblock claims");
  }
  if (!s.broadcast() && h.recovery.detaches.load(std::memory_order_relaxed) != 0) {
    add("recovery.detaches", "non-zero, but only broadcast channels detach consumers");
  }

  check_role(h.producer.role, "producer.role");
  if (!s.broadcast()) check_role(h.consumer.role, "consumer.role");

  // The walk of the ring: from the oldest cursor to the tail, restarted (a few times) when a
  // cursor passes the position where something looked wrong, since that part may be reused.
  constexpr int kRestartsMax = 50;
  const std::uint64_t header_bytes =
      s.broadcast() ? detail::kBroadcastHeaderBytes : detail::kRecordHeaderBytes;
  std::vector<Violation> walk_violations;
  for (int attempt = 0; attempt <= kRestartsMax; ++attempt) {
    walk_violations.clear();
    const auto walk_add = [&walk_violations](std::string field, std::string message) {
      walk_violations.push_back({std::move(field), std::move(message)});
    };
    // Acquire: pairs with the producers' release of tail_position.
    // Relaxed (both): compared with a second reading after the walk; equal readings mean the
    // channel stood still meanwhile.
    const std::uint64_t committed_before =
        h.producer.records_committed.load(std::memory_order_relaxed);
    const std::uint64_t consumed_before =
        h.consumer.records_consumed.load(std::memory_order_relaxed);
    const std::uint64_t tail = h.producer.tail_position.load(std::memory_order_acquire);
    const std::uint64_t from = s.floor_position(tail);
    bool restart = false;
    const auto anomaly = [&](std::uint64_t position) {
      if (s.overtaken(position)) {
        restart = true;
        return false;
      }
      return true;
    };
    const std::uint64_t align = s.broadcast() ? detail::kBroadcastAlign : detail::kRecordAlign;
    if (tail % align != 0) {
      walk_add("producer.tail_position", fmt::format("{} is not a multiple of {}", tail, align));
      break;
    }
    if (from > tail) {
      if (s.broadcast()) {
        walk_add("consumer slots", fmt::format("a head {} is ahead of the tail {}", from, tail));
        break;
      }
      // SPSC/MPSC: a producer killed between committing a record and publishing the tail leaves
      // the consumer ahead by those records; the next producer walks over them.
      if (from - tail > cap) {
        walk_add("consumer.head_position",
                 fmt::format("{} is more than a ring ahead of tail_position {}", from, tail));
      }
      break;
    }
    if (tail - from > cap && !(s.broadcast() && s.lossy())) {
      if (anomaly(from)) {
        walk_add("consumer.head_position",
                 fmt::format("head {} and tail {} are more than a ring ({} bytes) apart", from,
                             tail, cap));
      }
      if (restart) continue;
      break;
    }
    std::uint64_t position = from;
    if (s.broadcast() && s.lossy() && tail - from > cap) position = tail;  // Lapped; nothing.
    std::uint64_t data_records = 0;
    std::optional<std::uint64_t> expected_seq;
    if (s.broadcast() && position < tail) expected_seq = s.seq(position);
    while (position < tail && !restart) {
      const std::uint64_t word = s.word(position);
      const std::uint32_t type = detail::record_word_type(word);
      const std::uint64_t length = detail::record_word_length(word);
      const std::uint64_t slot = position & s.mask();
      if (word == 0 && s.mpsc()) {
        // A claim not committed yet: skip the chunk (or intent) that holds it.
        std::uint64_t end = kNoPosition;
        const detail::ProducerSlot* slots = s.producer_slots();
        for (std::uint32_t i = 0; i < s.meta.producers_max && end == kNoPosition; ++i) {
          // Acquire (all): pair with the producers' stores of their claim ranges.
          const std::uint64_t start = slots[i].chunk_start.load(std::memory_order_acquire);
          const std::uint64_t chunk_end = slots[i].chunk_end.load(std::memory_order_acquire);
          const std::uint64_t intent = slots[i].intent.load(std::memory_order_acquire);
          const std::uint64_t intent_end = slots[i].intent_end.load(std::memory_order_acquire);
          if (covers(start, chunk_end, position)) end = chunk_end;
          if (end == kNoPosition && covers(intent, intent_end, position)) end = intent_end;
        }
        if (end == kNoPosition || end - position > cap) {
          if (anomaly(position)) {
            walk_add("ring", fmt::format("position {} (before the tail {}) holds no record and no "
                                         "producer slot has claimed it",
                                         position, tail));
          }
          break;
        }
        position = end;
        continue;
      }
      std::uint64_t span = 0;
      std::string problem;
      if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) {
        span = s.broadcast() ? detail::broadcast_span_bytes(length)
                             : detail::record_span_bytes(length);
        if (length > s.meta.record_bytes_max) {
          problem = fmt::format("data record of {} bytes exceeds record_bytes_max {}", length,
                                s.meta.record_bytes_max);
        } else if (slot + span > cap) {
          problem = fmt::format("data record of {} bytes at ring offset {} runs past the ring end",
                                length, slot);
        }
      } else if (type == static_cast<std::uint32_t>(detail::RecordType::kPadding)) {
        span = header_bytes + length;
        if (s.broadcast()
                ? (slot == 0 || span != cap - slot)
                : (span % detail::kRecordAlign != 0 || span >= cap || slot + span > cap)) {
          problem = fmt::format("padding of {} bytes at ring offset {} does not fit the ring",
                                length, slot);
        } else if (!s.mpsc() && slot + span != cap) {
          problem = fmt::format("padding at ring offset {} ends at {}, not at the ring end", slot,
                                slot + span);
        }
      } else if (word == 0) {
        problem = fmt::format("no record although the tail is at {}", tail);
      } else {
        problem = fmt::format("record header {:#018x}: unknown type {:#x}", word, type);
      }
      if (problem.empty() && s.broadcast() && expected_seq) {
        const std::uint64_t seq = s.seq(position);
        if (seq != *expected_seq) {
          problem = fmt::format("sequence number {} where {} was expected", seq, *expected_seq);
        }
      }
      if (!problem.empty()) {
        if (anomaly(position)) {
          walk_add("ring",
                   fmt::format("position {} (ring offset {}): {}", position, slot, problem));
        }
        break;
      }
      if (type == static_cast<std::uint32_t>(detail::RecordType::kData)) {
        ++data_records;
        if (expected_seq) ++*expected_seq;
      }
      position += span;
    }
    if (restart) continue;
    if (walk_violations.empty() && position != tail && position > tail) {
      if (anomaly(position)) {
        walk_add("ring", fmt::format("the last record before the tail ends at {}, past "
                                     "tail_position {}",
                                     position, tail));
      }
      if (restart) continue;
    }
    // What follows the tail: SPSC and broadcast producers zero the next header word before every
    // commit. Checked only while the tail stays where it was.
    if (walk_violations.empty() && !s.mpsc() && tail - from + header_bytes <= cap) {
      const std::uint64_t next = s.word(tail);
      const std::uint64_t tail_again = h.producer.tail_position.load(std::memory_order_acquire);
      if (next != 0 && tail_again == tail) {
        // A commit in flight stores the word before the tail: look once more.
        const std::uint64_t tail_later = h.producer.tail_position.load(std::memory_order_acquire);
        if (tail_later == tail && s.word(tail) != 0 &&
            h.producer.tail_position.load(std::memory_order_acquire) == tail) {
          // Not a violation when a producer was killed after storing the word: the next producer
          // walks over such records. Report only garbage.
          const std::uint32_t next_type = detail::record_word_type(next);
          if (next_type != static_cast<std::uint32_t>(detail::RecordType::kData) &&
              next_type != static_cast<std::uint32_t>(detail::RecordType::kPadding)) {
            walk_add("ring", fmt::format("the header word after the tail ({}) is {:#018x}, "
                                         "not zero",
                                         tail, next));
          }
        }
      }
    }
    // Broadcast: the sequence number stored after the last record is the producer's count.
    if (walk_violations.empty() && s.broadcast() && expected_seq) {
      const std::uint64_t committed = h.producer.records_committed.load(std::memory_order_relaxed);
      const std::uint64_t tail_again = h.producer.tail_position.load(std::memory_order_acquire);
      if (tail_again == tail && committed != *expected_seq && committed < *expected_seq) {
        walk_add("producer.records_committed",
                 fmt::format("{} records committed, but the ring holds records up to sequence {}",
                             committed, *expected_seq));
      }
    }
    // SPSC: the records counted between head and tail match the counters, when nothing moved
    // during the walk. A producer killed between committing records and publishing the tail
    // leaves committed records after it: they count as well.
    if (walk_violations.empty() && s.meta.kind == ChannelKind::kSpsc && position == tail) {
      std::uint64_t beyond = 0;
      std::uint64_t p = tail;
      while (p - from < cap) {
        const std::uint64_t w = s.word(p);
        const std::uint64_t len = detail::record_word_length(w);
        const std::uint64_t off = p & s.mask();
        if (detail::record_word_type(w) == static_cast<std::uint32_t>(detail::RecordType::kData) &&
            len <= s.meta.record_bytes_max && off + detail::record_span_bytes(len) <= cap) {
          ++beyond;
          p += detail::record_span_bytes(len);
        } else if (w != 0 &&
                   detail::record_word_type(w) ==
                       static_cast<std::uint32_t>(detail::RecordType::kPadding) &&
                   off + detail::kRecordHeaderBytes + len == cap) {
          p += detail::kRecordHeaderBytes + len;
        } else {
          break;
        }
      }
      const std::uint64_t committed = h.producer.records_committed.load(std::memory_order_relaxed);
      const std::uint64_t consumed = h.consumer.records_consumed.load(std::memory_order_relaxed);
      const bool still = committed == committed_before && consumed == consumed_before &&
                         h.producer.tail_position.load(std::memory_order_acquire) == tail &&
                         h.consumer.head_position.load(std::memory_order_acquire) == from;
      // The producer stores its count after the record's word: the consumer may be one ahead.
      if (still && committed + 1 < consumed) {
        walk_add("consumer.records_consumed",
                 fmt::format("{} records consumed but only {} committed", consumed, committed));
      } else if (still && committed >= consumed && committed - consumed > data_records + beyond) {
        // One-sided: every record not consumed yet lies between the head and the tail (or just
        // past the tail). The ring may hold more: the consumer counts a record when it reads it
        // but releases its space later (in batches, or held back until durable by a recorder).
        walk_add("producer.records_committed",
                 fmt::format("producer committed {} and consumer consumed {} records, so {} "
                             "should be pending, but the ring holds only {}",
                             committed, consumed, committed - consumed, data_records + beyond));
      }
    }
    break;
  }
  out.insert(out.end(), walk_violations.begin(), walk_violations.end());

  // ---- MPSC slots and the consumer's recovery fields
  if (s.mpsc()) {
    const std::uint64_t tail = h.producer.tail_position.load(std::memory_order_acquire);
    const std::uint64_t head = h.consumer.head_position.load(std::memory_order_acquire);
    const detail::ProducerSlot* slots = s.producer_slots();
    std::uint64_t committed = 0;
    for (std::uint32_t i = 0; i < s.meta.producers_max; ++i) {
      const detail::ProducerSlot& slot = slots[i];
      const std::string field = fmt::format("producer_slots[{}]", i);
      committed += slot.records_committed.load(std::memory_order_relaxed);
      if (slot.role.pid.load(std::memory_order_relaxed) == 0) continue;
      check_role(slot.role, field + ".role");
      const std::uint64_t start = slot.chunk_start.load(std::memory_order_acquire);
      const std::uint64_t end = slot.chunk_end.load(std::memory_order_acquire);
      const std::uint64_t limit = slot.chunk_limit.load(std::memory_order_acquire);
      const std::uint64_t tail_now = h.producer.tail_position.load(std::memory_order_acquire);
      if (start != kNoPosition && end != kNoPosition) {
        if (start > end || end - start > cap) {
          add(field, fmt::format("chunk [{}, {}) is not a range within one ring", start, end));
        } else if (end > tail_now) {
          add(field,
              fmt::format("chunk [{}, {}) ends past tail_position {}", start, end, tail_now));
        }
        if (limit != kNoPosition && limit > end) {
          add(field, fmt::format("chunk_limit {} is above chunk_end {}", limit, end));
        }
      }
    }
    const std::uint64_t consumed = h.consumer.records_consumed.load(std::memory_order_relaxed);
    if (consumed > committed) {
      // Re-read: a producer may have committed meanwhile.
      std::uint64_t again = 0;
      for (std::uint32_t i = 0; i < s.meta.producers_max; ++i) {
        again += slots[i].records_committed.load(std::memory_order_relaxed);
      }
      // A producer stores its count after the record's word, so the consumer may count a record
      // first: by one record per producer at most (for good, if it died in between).
      if (consumed > again + s.meta.producers_max) {
        add("consumer.records_consumed",
            fmt::format("{} records consumed but the producer slots committed only {}", consumed,
                        again));
      }
    }
    const std::uint64_t taken_end = h.consumer.taken_end.load(std::memory_order_relaxed);
    const std::uint64_t taken_start = h.consumer.taken_start.load(std::memory_order_relaxed);
    const std::uint32_t taken_slot = h.consumer.taken_slot.load(std::memory_order_relaxed);
    if (taken_end != 0 && taken_end != kNoPosition &&
        (taken_slot >= s.meta.producers_max || taken_start >= taken_end ||
         taken_end - taken_start > cap)) {
      add("consumer.taken_end",
          fmt::format("taken range [{}, {}) of slot {} is not a valid range of one of {} slots",
                      taken_start, taken_end, taken_slot, s.meta.producers_max));
    }
    // Free space is all zero: the consumer zeroes what it consumed before releasing it, so no
    // old record can be mistaken for a new one. Checked over [tail, head + capacity) while the
    // cursors stay put.
    if (tail >= head && tail - head <= cap) {
      // At most the 16 MiB after the tail: a huge (or hostile, sparse) ring stays quick to check.
      constexpr std::uint64_t kFreeScanBytesMax = std::uint64_t{16} << 20;
      const std::uint64_t end = std::min(head + cap, tail + kFreeScanBytesMax);
      for (std::uint64_t p = tail; p < end; p += detail::kRecordAlign) {
        if (s.word(p) == 0) continue;
        // Acquire: pairs with the producers' CAS: a new claim makes p allocated.
        if (h.producer.tail_position.load(std::memory_order_acquire) > p) break;
        add("ring", fmt::format("free position {} (ring offset {}) is not zero: stale bytes may "
                                "be mistaken for a record",
                                p, p & s.mask()));
        break;
      }
    }
  }
  // ---- broadcast slots
  if (s.broadcast()) {
    const std::uint64_t tail = h.producer.tail_position.load(std::memory_order_acquire);
    const detail::ConsumerSlot* slots = s.consumer_slots();
    for (std::uint32_t i = 0; i < s.meta.consumers_max; ++i) {
      const detail::ConsumerSlot& slot = slots[i];
      const std::uint32_t pid = slot.role.pid.load(std::memory_order_acquire);
      const std::uint64_t head = slot.head_position.load(std::memory_order_acquire);
      const std::string field = fmt::format("consumer_slots[{}]", i);
      if (pid == 0) continue;
      check_role(slot.role, field + ".role");
      if (head == kNoPosition || pid == detail::kSlotBusyPid) continue;
      if (head % detail::kBroadcastAlign != 0) {
        add(field + ".head_position", fmt::format("{} is not 16-byte aligned", head));
      } else if (head > tail &&
                 head - std::min(head, h.producer.tail_position.load(std::memory_order_acquire)) >
                     detail::broadcast_span_bytes(s.meta.record_bytes_max)) {
        // A consumer reads a record as soon as its word is stored, before the producer publishes
        // the tail: ahead by one record at most (for good, if the producer died in between).
        add(field + ".head_position",
            fmt::format("{} is more than a record ahead of the tail {}", head, tail));
      } else if (!s.lossy() && head <= tail && tail - head > cap) {
        add(field + ".head_position",
            fmt::format("{} is more than a ring behind the tail {} in a reliable channel", head,
                        tail));
      }
    }
    if (s.lossy()) {
      const std::uint64_t reserve = h.reserve.reserve_position.load(std::memory_order_relaxed);
      const std::uint64_t tail_again = h.producer.tail_position.load(std::memory_order_acquire);
      if (reserve < tail_again && tail_again != 0 &&
          h.reserve.reserve_position.load(std::memory_order_relaxed) < tail_again) {
        add("reserve.reserve_position",
            fmt::format("{} is below tail_position {}", reserve, tail_again));
      }
    }
  }
  return out;
}

Result<std::vector<std::string>> list_channels(std::string_view dir_name) {
  const std::string dir = Channel::resolve_dir(dir_name);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    if (err == ENOENT) {
      return fail(Errc::kNotFound, err, "channel list",
                  "the channel directory {} does not exist: no channel was created there (set "
                  "--dir or {})",
                  dir, kShmDirEnv);
    }
    return fail_errno(err, "channel list", "cannot read the channel directory {}", dir);
  }
  std::vector<std::string> names;
  while (const dirent* entry = readdir(d)) {
    const std::string_view name = entry->d_name;
    if (name.empty() || name.front() == '.') continue;
    if (entry->d_type != DT_REG && entry->d_type != DT_UNKNOWN) continue;
    names.emplace_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::vector<std::string>> list_orphan_temp_files(std::string_view dir_name) {
  const std::string dir = Channel::resolve_dir(dir_name);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    return fail_errno(err, "channel list", "cannot read the channel directory {}", dir);
  }
  std::vector<std::string> names;
  while (const dirent* entry = readdir(d)) {
    const std::string_view name = entry->d_name;
    // ".NAME.PID.N.tmp", as Channel::create names a channel it is building.
    if (name.size() < 8 || name.front() != '.' || !name.ends_with(".tmp")) continue;
    const std::string_view stem = name.substr(0, name.size() - 4);
    const std::size_t counter_dot = stem.rfind('.');
    if (counter_dot == std::string_view::npos || counter_dot == 0) continue;
    const std::size_t pid_dot = stem.rfind('.', counter_dot - 1);
    if (pid_dot == std::string_view::npos || pid_dot == 0) continue;
    const std::string pid_text(stem.substr(pid_dot + 1, counter_dot - pid_dot - 1));
    if (pid_text.empty() || pid_text.size() > 10 ||
        pid_text.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    const unsigned long pid = std::stoul(pid_text);
    if (pid == 0 || pid > kPidMaxLimit) continue;
    // The creator holds the file only for the moment of creation: a live pid keeps it.
    if (detail::process_start_ticks(static_cast<std::uint32_t>(pid)) != 0) continue;
    names.emplace_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace weft::inspect
