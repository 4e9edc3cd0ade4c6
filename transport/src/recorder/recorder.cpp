// The recorder: channel -> journal, and the durable position published back into the channel.
// The protocol is described in weft/recorder.hpp.
#include "weft/recorder.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "error_util.hpp"
#include "ring/role.hpp"
#include "sys/sys.hpp"
#include "weft/broadcast.hpp"
#include "weft/detail/bell.hpp"
#include "weft/idle.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"

namespace weft {

using detail::fail;
using detail::fail_errno;

namespace {

constexpr const char* kRecorderRole = "recorder";
constexpr std::size_t kStepRecordsMax = 4096;            // Records moved per step, at most.
constexpr std::int64_t kBeatIntervalNs = 1'000'000'000;  // Heartbeat at most this often.
constexpr std::int64_t kStatsIntervalNs = 10'000'000;    // Statistics at least this often.
constexpr std::int64_t kCompletionWaitNs = 50'000;  // Wait for a flush, then look at the channel.
constexpr std::uint64_t kNoSource = ~std::uint64_t{0};
constexpr const char* kSourceFile = "SOURCE";

std::int64_t realtime_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::uint64_t double_bits(double value) noexcept { return std::bit_cast<std::uint64_t>(value); }
double bits_double(std::uint64_t bits) noexcept { return std::bit_cast<double>(bits); }

// The channel the journal follows, as DIR/SOURCE records it: "<created_unix_ns> <name>".
std::uint64_t read_source(const std::string& dir) {
  const std::string path = dir + "/" + kSourceFile;
  std::FILE* file = std::fopen(path.c_str(), "re");
  if (file == nullptr) return 0;
  unsigned long long created = 0;  // NOLINT(google-runtime-int): fscanf's type.
  if (std::fscanf(file, "%llu", &created) != 1) created = 0;
  std::fclose(file);
  return created;
}

Result<void> write_source(const std::string& dir, std::uint64_t created, const std::string& name) {
  const std::string path = dir + "/" + kSourceFile;
  const std::string temp = path + ".tmp";
  const int fd = sys::ops().open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail_errno(errno, "recorder", "{}: cannot create", temp);
  const std::string text = std::to_string(created) + " " + name + "\n";
  const bool written =
      sys::ops().pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size());
  const int err = errno;
  const bool synced = written && sys::ops().fdatasync(fd) == 0;
  sys::ops().close(fd);
  if (!written || !synced) return fail_errno(err, "recorder", "{}: cannot write", temp);
  if (sys::ops().rename(temp.c_str(), path.c_str()) != 0) {
    return fail_errno(errno, "recorder", "{}: rename failed", temp);
  }
  const int dir_fd = sys::ops().open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dir_fd >= 0) {
    sys::ops().fsync(dir_fd);
    sys::ops().close(dir_fd);
  }
  return {};
}

}  // namespace

struct Recorder::Impl {
  std::variant<SpscConsumer, MpscConsumer, BroadcastConsumer> consumer;
  Journal journal;
  RecorderOptions options;
  detail::ChannelHeader* header = nullptr;
  bool holds_role = false;
  bool full_fence = true;
  std::uint64_t skip_until = 0;  // Records ending at or below this are in the journal already.
  std::uint64_t published_position = 0;
  std::uint64_t published_sequence = 0;
  std::int64_t last_beat_ns = 0;
  std::int64_t last_stats_ns = 0;
  std::vector<std::byte> scratch;
  RecorderStats stats;

  Impl(std::variant<SpscConsumer, MpscConsumer, BroadcastConsumer>&& c, Journal&& j)
      : consumer(std::move(c)), journal(std::move(j)) {}
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  ~Impl() {
    if (holds_role && header != nullptr) {
      static_cast<void>(journal.sync());
      publish(true);
      detail::give_back_role(header->recorder.role);
    }
  }

  [[nodiscard]] const Channel& channel() const noexcept {
    return std::visit([](const auto& c) -> const Channel& { return c.channel(); }, consumer);
  }

  // Stores the journal's durable position in the header and wakes whoever waits for it.
  void publish(bool force_stats) noexcept {
    const std::uint64_t sequence = journal.durable_sequence();
    const std::uint64_t position = journal.durable_source_position();
    if (sequence != published_sequence && position != kNoSource && position > published_position) {
      published_sequence = sequence;
      published_position = position;
      // Relaxed: published by the release store of durable_position below.
      header->durable.durable_sequence.store(sequence, std::memory_order_relaxed);
      // Release: the journal said durable before this store; pairs with wait_durable's and
      // durable_position()'s acquire loads.
      header->durable.durable_position.store(position, std::memory_order_release);
      detail::ring_bell(header->durable_sleepers, header->durable_seq, full_fence);
      force_stats = true;
      hold_back();
    }
    const std::int64_t now = detail::monotonic_ns();
    if (force_stats || now - last_stats_ns >= kStatsIntervalNs) {
      last_stats_ns = now;
      write_stats();
    }
    if (now - last_beat_ns >= kBeatIntervalNs) {
      last_beat_ns = now;
      detail::beat(header->recorder.role);
    }
  }

  // SPSC and MPSC: the ring keeps every record that is not durable yet, so that a recorder that
  // replaces this one after a crash reads it again (and skips what the journal already holds).
  // Broadcast consumers cannot resume where a dead one stopped; they release as they read.
  void hold_back() noexcept {
    if (auto* spsc = std::get_if<SpscConsumer>(&consumer)) {
      spsc->set_release_limit(published_position);
    } else if (auto* mpsc = std::get_if<MpscConsumer>(&consumer)) {
      mpsc->set_release_limit(published_position);
    }
  }

  // The seqlock write of JournalStatsBlock (one writer: this recorder).
  void write_stats() noexcept {
    detail::JournalStatsBlock& block = header->journal_stats;
    const JournalStats s = journal.stats();
    // Relaxed: only this recorder writes the block.
    const std::uint32_t version = block.version.load(std::memory_order_relaxed);
    // Relaxed + release fence: the odd version is visible before any field changes; pairs with
    // the reader's acquire fence before its second version load.
    block.version.store(version + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    // Relaxed (all fields): ordered by the fence above and the release store below.
    block.sync_mode.store(static_cast<std::uint32_t>(journal.sync_mode()),
                          std::memory_order_relaxed);
    block.arrival_records_per_s.store(double_bits(s.policy.arrival_records_per_s),
                                      std::memory_order_relaxed);
    block.arrival_bytes_per_s.store(double_bits(s.policy.arrival_bytes_per_s),
                                    std::memory_order_relaxed);
    block.flush_fixed_ns.store(double_bits(s.policy.flush_fixed_ns), std::memory_order_relaxed);
    block.flush_ns_per_byte.store(double_bits(s.policy.flush_ns_per_byte),
                                  std::memory_order_relaxed);
    block.flush_cost_spread_ns.store(double_bits(s.policy.flush_cost_spread_ns),
                                     std::memory_order_relaxed);
    block.gather_bytes.store(s.policy.gather_bytes, std::memory_order_relaxed);
    block.max_delay_ns.store(s.policy.max_delay_ns, std::memory_order_relaxed);
    block.max_in_flight.store(s.policy.max_in_flight, std::memory_order_relaxed);
    block.max_io_workers.store(s.policy.max_io_workers, std::memory_order_relaxed);
    block.in_flight.store(journal.in_flight(), std::memory_order_relaxed);
    block.flushes.store(s.flushes, std::memory_order_relaxed);
    block.bytes_durable.store(s.durable_bytes, std::memory_order_relaxed);
    block.records_durable.store(s.durable_records, std::memory_order_relaxed);
    block.errors.store(s.errors, std::memory_order_relaxed);
    block.retries.store(s.retries, std::memory_order_relaxed);
    header->recorder.records_appended.store(stats.records, std::memory_order_relaxed);
    header->durable.lost_records.store(stats.lost_records, std::memory_order_relaxed);
    // Release: the fields above before the even version; pairs with the reader's first acquire
    // load of version.
    block.version.store(version + 2, std::memory_order_release);
  }

  // Appends the record just copied into `scratch`, which ends at channel position `end`.
  Result<void> append(std::uint64_t end) {
    if (end <= skip_until) {
      ++stats.skipped;
      return {};
    }
    RecordMeta meta;
    meta.timestamp_ns = realtime_ns();
    meta.source_position = end;
    auto appended = journal.append(scratch, meta);
    if (!appended) return unexpected(appended.error());
    ++stats.records;
    return {};
  }

  // Appends `record` (in place in the ring) whose header starts at the first record boundary at
  // or after `cursor` that lies at its slot; advances `cursor` past it. SPSC and MPSC records are
  // contiguous in ring order (padding aside), so each record's channel end position follows from
  // where it lies in the ring: no copy is needed to learn it.
  Result<void> append_in_place(std::span<const std::byte> record, std::uint64_t& cursor,
                               const std::byte* ring, std::uint64_t mask) {
    const auto slot = static_cast<std::uint64_t>(record.data() - detail::kRecordHeaderBytes - ring);
    const std::uint64_t start = cursor + ((slot - (cursor & mask)) & mask);
    cursor = start + detail::record_span_bytes(record.size());
    if (cursor <= skip_until) {
      ++stats.skipped;
      return {};
    }
    RecordMeta meta;
    meta.timestamp_ns = realtime_ns();
    meta.source_position = cursor;
    auto appended = journal.append(record, meta);
    if (!appended) return unexpected(appended.error());
    ++stats.records;
    return {};
  }

  template <class Consumer>
  Result<std::size_t> step_ring(Consumer& c) {
    const Channel& ch = c.channel();
    const std::byte* ring = ch.ring();
    const std::uint64_t mask = ch.capacity_bytes() - 1;
    std::uint64_t cursor = c.position();
    Result<void> outcome;
    const auto handler = [&](std::span<const std::byte> record) {
      if (outcome) outcome = append_in_place(record, cursor, ring, mask);
    };
    const PollResult r = c.poll(handler, kStepRecordsMax);
    if (!outcome) return unexpected(outcome.error());
    if (r.status == PollStatus::kCorrupted) return unexpected(c.last_error());
    return r.count;
  }

  Result<std::size_t> step_broadcast(BroadcastConsumer& broadcast) {
    std::size_t moved = 0;
    const auto copy = [this](std::span<const std::byte> record) {
      scratch.assign(record.begin(), record.end());
    };
    // One at a time: a lossy consumer hands out copies, so a record's end position is read from
    // the consumer after each.
    while (moved < kStepRecordsMax) {
      const BroadcastPollResult r = broadcast.poll(copy, 1);
      stats.lost_records += r.lost_records;
      if (r.status == PollStatus::kDetached) {
        return fail(Errc::kBusy, 0, "recorder",
                    "{}: the producer detached the recorder (it looked dead); restart it",
                    channel().path());
      }
      if (r.status == PollStatus::kCorrupted) return unexpected(broadcast.last_error());
      if (r.count == 0) break;
      if (auto appended = append(broadcast.position()); !appended) {
        return unexpected(appended.error());
      }
      ++moved;
    }
    return moved;
  }

  Result<std::size_t> step() {
    Result<std::size_t> moved = std::size_t{0};
    if (auto* spsc = std::get_if<SpscConsumer>(&consumer)) {
      moved = step_ring(*spsc);
    } else if (auto* mpsc = std::get_if<MpscConsumer>(&consumer)) {
      moved = step_ring(*mpsc);
    } else {
      moved = step_broadcast(std::get<BroadcastConsumer>(consumer));
    }
    if (!moved) return moved;
    if (auto polled = journal.poll(); !polled) return unexpected(polled.error());
    publish(false);
    return moved;
  }

  void idle_wait() {
    if (options.spin) {
      // Yield rather than spin hard: the io_uring worker that runs the fdatasync may need this
      // CPU, and a yield hands it over at once when it is runnable.
      std::this_thread::yield();
      return;
    }
    if (journal.in_flight() != 0) {
      static_cast<void>(journal.wait(std::chrono::nanoseconds(kCompletionWaitNs)));
      return;
    }
    std::chrono::nanoseconds timeout = options.idle_sleep;
    if (journal.pending_bytes() != 0 && journal.recheck_at_ns() != 0) {
      const std::int64_t until = journal.recheck_at_ns() - detail::monotonic_ns();
      if (until <= 0) return;
      if (until < timeout.count()) timeout = std::chrono::nanoseconds(until);
    }
    std::visit([timeout](auto& c) { static_cast<void>(c.wait(timeout)); }, consumer);
  }
};

Result<Recorder> Recorder::open(std::string_view channel_name, std::string_view journal_dir,
                                RecorderOptions options) {
  OpenOptions open_options;
  open_options.dir = options.shm_dir;
  auto channel = Channel::open(channel_name, open_options);
  if (!channel) return unexpected(channel.error());
  detail::ChannelHeader* header = channel->header();
  const std::uint64_t created = channel->header()->meta.created_unix_ns;
  const std::string path = channel->path();
  const std::string name = channel->name();
  if (auto taken = detail::take_role(header->recorder.role, path, kRecorderRole); !taken) {
    return unexpected(taken.error());
  }
  // From here on the role is ours: give it back on every failure.
  struct RoleGuard {
    detail::RoleSlot* slot;
    ~RoleGuard() {
      if (slot != nullptr) detail::give_back_role(*slot);
    }
  } guard{&header->recorder.role};

  auto journal = Journal::open(journal_dir, std::move(options.journal));
  if (!journal) return unexpected(journal.error());
  const std::string dir(journal_dir);

  Result<std::variant<SpscConsumer, MpscConsumer, BroadcastConsumer>> consumer =
      fail(Errc::kInvalidArgument, 0, "recorder", "{}: unknown channel kind", path);
  switch (channel->kind()) {
    case ChannelKind::kSpsc:
      if (auto c = SpscConsumer::attach(std::move(*channel)); c) {
        consumer = std::variant<SpscConsumer, MpscConsumer, BroadcastConsumer>(std::move(*c));
      } else {
        consumer = unexpected(c.error());
      }
      break;
    case ChannelKind::kMpsc:
      if (auto c = MpscConsumer::attach(std::move(*channel)); c) {
        consumer = std::variant<SpscConsumer, MpscConsumer, BroadcastConsumer>(std::move(*c));
      } else {
        consumer = unexpected(c.error());
      }
      break;
    case ChannelKind::kBroadcast:
      if (auto c = BroadcastConsumer::attach(std::move(*channel)); c) {
        consumer = std::variant<SpscConsumer, MpscConsumer, BroadcastConsumer>(std::move(*c));
      } else {
        consumer = unexpected(c.error());
      }
      break;
  }
  if (!consumer) return unexpected(consumer.error());

  auto impl = std::make_unique<Impl>(std::move(*consumer), std::move(*journal));
  impl->options = std::move(options);
  impl->header = header;
  impl->full_fence = !detail::register_ringer();
  const Journal& j = impl->journal;
  // The same channel as before: skip what the journal holds already. Another channel (or the
  // same name created anew): its positions start over, so nothing is skipped.
  if (read_source(dir) == created && created != 0) {
    if (j.last_source_position() != kNoSource) impl->skip_until = j.last_source_position();
    impl->published_position =
        header->durable.durable_position.load(std::memory_order_acquire);  // Pairs: publish().
  } else {
    if (auto written = write_source(dir, created, name); !written) {
      return unexpected(written.error());
    }
    // Relaxed: this recorder is the only writer of the block from now on.
    header->durable.durable_position.store(0, std::memory_order_relaxed);
  }
  // Relaxed: informational for weftctl.
  header->durable.channel_created_unix_ns.store(created, std::memory_order_relaxed);
  impl->holds_role = true;
  guard.slot = nullptr;
  impl->hold_back();
  impl->publish(true);
  return Recorder(std::move(impl));
}

Recorder::Recorder(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Recorder::Recorder(Recorder&& other) noexcept = default;
Recorder& Recorder::operator=(Recorder&& other) noexcept = default;
Recorder::~Recorder() = default;

Result<std::size_t> Recorder::step() { return impl_->step(); }

Result<void> Recorder::run(const std::atomic<bool>& stop) {
  // Relaxed: a stop request needs no ordering; it is seen within one idle wait.
  while (!stop.load(std::memory_order_relaxed)) {
    auto moved = impl_->step();
    if (!moved) return unexpected(moved.error());
    if (*moved == 0) impl_->idle_wait();
  }
  return sync();
}

Result<void> Recorder::sync() {
  if (auto synced = impl_->journal.sync(); !synced) return synced;
  impl_->publish(true);
  return {};
}

RecorderStats Recorder::stats() const noexcept {
  RecorderStats out = impl_->stats;
  out.durable_position = impl_->published_position;
  out.journal = impl_->journal.stats();
  return out;
}

const Journal& Recorder::journal() const noexcept { return impl_->journal; }
const Channel& Recorder::channel() const noexcept { return impl_->channel(); }

// ---- Waiting ----------------------------------------------------------------------------------

std::uint64_t durable_position(const Channel& channel) noexcept {
  // Acquire: pairs with the recorder's release store in publish().
  return channel.header()->durable.durable_position.load(std::memory_order_acquire);
}

namespace {

struct DurableWaitContext {
  const detail::ChannelHeader* header;
  std::uint64_t position;
};

// wait_durable(kSpin) yields the CPU once every this many spins (tens of microseconds).
constexpr std::uint64_t kSpinsPerYield = 1024;

bool durable_reached(const void* context) {
  const auto* c = static_cast<const DurableWaitContext*>(context);
  // Acquire: as in durable_position().
  return c->header->durable.durable_position.load(std::memory_order_acquire) >= c->position;
}

}  // namespace

WaitStatus wait_durable(const Channel& channel, std::uint64_t position,
                        std::chrono::nanoseconds timeout, DurableWait how) noexcept {
  detail::ChannelHeader* header = channel.header();
  const DurableWaitContext context{header, position};
  if (durable_reached(&context)) return WaitStatus::kReady;
  const std::int64_t deadline = detail::deadline_after(timeout);
  if (how == DurableWait::kSpin || channel.read_only()) {
    for (std::uint64_t spins = 1;; ++spins) {
      if (durable_reached(&context)) return WaitStatus::kReady;
      cpu_relax();
      if ((spins & (kSpinsPerYield - 1)) == 0 || how == DurableWait::kSleep) {
        if (detail::monotonic_ns() >= deadline) return WaitStatus::kTimedOut;
        // The write is completed by kernel threads (the O_DSYNC flush worker, io_uring's fsync
        // worker) that may be queued on this CPU: a spinner that never yields makes them wait
        // for a scheduler tick (4 ms at HZ=250). A yield every few microseconds costs ~1 us.
        std::this_thread::yield();
      }
    }
  }
  for (;;) {
    const std::int64_t remaining = deadline - detail::monotonic_ns();
    if (remaining <= 0)
      return durable_reached(&context) ? WaitStatus::kReady : WaitStatus::kTimedOut;
    if (detail::sleep_on_bell(header->durable_sleepers, header->durable_seq, durable_reached,
                              &context, std::chrono::nanoseconds(remaining))) {
      return WaitStatus::kReady;
    }
  }
}

RecorderStatus recorder_status(const Channel& channel) noexcept {
  const detail::ChannelHeader* header = channel.header();
  RecorderStatus out;
  out.state = detail::peer_state(header->recorder.role);
  // Relaxed: informational.
  out.pid = header->recorder.role.pid.load(std::memory_order_relaxed);
  // Acquire: as in durable_position().
  out.durable_position = header->durable.durable_position.load(std::memory_order_acquire);
  out.durable_sequence = header->durable.durable_sequence.load(std::memory_order_relaxed);
  out.records_appended = header->recorder.records_appended.load(std::memory_order_relaxed);
  out.lost_records = header->durable.lost_records.load(std::memory_order_relaxed);
  const detail::JournalStatsBlock& block = header->journal_stats;
  constexpr int kSeqlockTriesMax = 1000;
  for (int tries = 0; tries < kSeqlockTriesMax; ++tries) {
    // Acquire: pairs with the recorder's final release store of an even version.
    const std::uint32_t before = block.version.load(std::memory_order_acquire);
    if ((before & 1) != 0) continue;
    // Relaxed (fields): validated by the version check below.
    out.sync = static_cast<JournalSync>(block.sync_mode.load(std::memory_order_relaxed));
    out.policy.arrival_records_per_s =
        bits_double(block.arrival_records_per_s.load(std::memory_order_relaxed));
    out.policy.arrival_bytes_per_s =
        bits_double(block.arrival_bytes_per_s.load(std::memory_order_relaxed));
    out.policy.flush_fixed_ns = bits_double(block.flush_fixed_ns.load(std::memory_order_relaxed));
    out.policy.flush_ns_per_byte =
        bits_double(block.flush_ns_per_byte.load(std::memory_order_relaxed));
    out.policy.flush_cost_spread_ns =
        bits_double(block.flush_cost_spread_ns.load(std::memory_order_relaxed));
    out.policy.gather_bytes = block.gather_bytes.load(std::memory_order_relaxed);
    out.policy.max_delay_ns = block.max_delay_ns.load(std::memory_order_relaxed);
    out.policy.max_in_flight = block.max_in_flight.load(std::memory_order_relaxed);
    out.policy.max_io_workers = block.max_io_workers.load(std::memory_order_relaxed);
    out.in_flight = block.in_flight.load(std::memory_order_relaxed);
    out.flushes = block.flushes.load(std::memory_order_relaxed);
    out.bytes_durable = block.bytes_durable.load(std::memory_order_relaxed);
    out.records_durable = block.records_durable.load(std::memory_order_relaxed);
    out.errors = block.errors.load(std::memory_order_relaxed);
    out.retries = block.retries.load(std::memory_order_relaxed);
    // Acquire fence: the field loads above happen before the second version load; pairs with
    // the writer's release fence after it made the version odd.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (block.version.load(std::memory_order_relaxed) == before) break;
  }
  return out;
}

}  // namespace weft
