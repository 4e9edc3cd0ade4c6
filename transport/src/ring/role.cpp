#include "ring/role.hpp"

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "error_util.hpp"
#include "weft/spsc.hpp"

namespace weft::detail {

namespace {

// Reads the state (field 3) and start time (field 22) of /proc/PID/stat. False if it is gone.
bool read_proc_stat(std::uint32_t pid, char* state, std::uint64_t* start_ticks) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  std::FILE* file = std::fopen(path, "re");
  if (file == nullptr) return false;
  char buffer[1024];
  const std::size_t length = std::fread(buffer, 1, sizeof buffer - 1, file);
  std::fclose(file);
  buffer[length] = '\0';
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const char* cursor = std::strrchr(buffer, ')');
  if (cursor == nullptr || cursor[1] != ' ' || cursor[2] == '\0') return false;
  *state = cursor[2];
  // After ") " come fields 3, 4, ...; field 22 follows the 19th space from here.
  int field = 2;
  while (*cursor != '\0' && field < 22) {
    if (*cursor == ' ') ++field;
    ++cursor;
  }
  if (field != 22) return false;
  *start_ticks = std::strtoull(cursor, nullptr, 10);
  return true;
}

}  // namespace

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

Result<void> check_attachable(const Channel& channel, ChannelKind kind, const char* role) {
  if (channel.header() == nullptr) {
    return fail(Errc::kInvalidArgument, 0, "attach", "the channel handle is empty");
  }
  if (channel.read_only()) {
    return fail(Errc::kInvalidArgument, 0, "attach",
                "{}: opened read-only; a {} needs a read-write mapping", channel.path(), role);
  }
  if (channel.kind() != kind) {
    constexpr const char* kNames[] = {"an unknown", "an SPSC", "an MPSC", "a broadcast"};
    const auto name = [&](ChannelKind k) {
      const auto index = static_cast<std::uint32_t>(k);
      return index < 4 ? kNames[index] : kNames[0];
    };
    return fail(Errc::kInvalidArgument, 0, "attach",
                "{}: not {} channel (it is {} channel): open it with the matching class",
                channel.path(), name(kind), name(channel.kind()));
  }
  return {};
}

std::uint64_t process_start_ticks(std::uint32_t pid) noexcept {
  char state = 0;
  std::uint64_t ticks = 0;
  return read_proc_stat(pid, &state, &ticks) ? ticks : 0;
}

bool process_alive(std::uint32_t pid, std::uint64_t start_ticks) noexcept {
  // Above PID_MAX_LIMIT no process can exist (and kill() with a negative pid would address a
  // group): values like that come from a corrupt or hostile header.
  constexpr std::uint32_t kPidMaxLimit = 4'194'304;
  if (pid == 0 || pid > kPidMaxLimit) return false;
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  char state = 0;
  std::uint64_t now_ticks = 0;
  if (!read_proc_stat(pid, &state, &now_ticks)) return false;  // Gone between the two checks.
  // A zombie (killed, not yet reaped) or dying process can never write shared memory again.
  if (state == 'Z' || state == 'X' || state == 'x') return false;
  // start_ticks 0: the holder is between its pid CAS and its start-time store; treat as alive.
  return start_ticks == 0 || start_ticks == now_ticks;
}

Result<void> take_role(RoleSlot& slot, std::string_view channel_path, const char* role) noexcept {
  const auto me = static_cast<std::uint32_t>(getpid());
  const std::uint64_t my_ticks = process_start_ticks(me);
  constexpr int kAttemptsMax = 16;  // Bounded: each failure means another process raced us.
  for (int attempt = 0; attempt < kAttemptsMax; ++attempt) {
    // Acquire: pairs with the holder's release stores in take_role/give_back_role.
    std::uint32_t holder = slot.pid.load(std::memory_order_acquire);
    if (holder == me) {
      return fail(Errc::kBusy, 0, "attach",
                  "{}: this process (pid {}) already holds the {} role: use that handle",
                  channel_path, me, role);
    }
    if (holder != 0) {
      // Acquire: pairs with the holder's release store of its start time.
      const std::uint64_t ticks = slot.start_ticks.load(std::memory_order_acquire);
      if (process_alive(holder, ticks)) {
        return fail(Errc::kBusy, 0, "attach",
                    "{}: the {} role is held by live pid {}: stop it first, or use another channel",
                    channel_path, role, holder);
      }
    }
    // A dead holder's start time must not stay paired with our pid once we swap it in: a
    // contender would take us for dead. 0 reads as "being taken" (alive while the pid exists).
    // Relaxed: published by the release half of the CAS below.
    if (holder != 0) slot.start_ticks.store(0, std::memory_order_relaxed);
    // Acq_rel: acquire the previous holder's writes, release ours to the next reader of pid.
    if (slot.pid.compare_exchange_strong(holder, me, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
      // Release: pairs with the acquire load of start_ticks in a contender's take_role.
      slot.start_ticks.store(my_ticks, std::memory_order_release);
      // Relaxed: a statistic for weftctl, written only by the role holder.
      slot.attach_count.fetch_add(1, std::memory_order_relaxed);
      beat(slot);
      return {};
    }
  }
  return fail(Errc::kBusy, 0, "attach", "{}: the {} role kept changing hands; retry", channel_path,
              role);
}

bool try_take_slot(RoleSlot& slot, DeadHolderCheck may_replace, const void* context) noexcept {
  const auto me = static_cast<std::uint32_t>(getpid());
  // Acquire: pairs with the release stores of the previous holder.
  std::uint32_t holder = slot.pid.load(std::memory_order_acquire);
  if (holder != 0) {
    // kSlotBusyPid: a producer is detaching this slot right now.
    if (may_replace == nullptr || holder == me || holder == kSlotBusyPid) return false;
    // Acquire: pairs with the holder's release store of its start time.
    if (process_alive(holder, slot.start_ticks.load(std::memory_order_acquire))) return false;
    // Only now, with `holder` known dead, may its state be judged: read any earlier, it may have
    // been a predecessor's, or this holder's before it claimed what it then left unfinished. The
    // holder's stores are complete (it is dead; our /proc reads above are system calls, full
    // barriers, made after its death); the compare-and-swap below fails if anyone took the slot
    // since the load of `holder`.
    if (!may_replace(context)) return false;
  }
  // As in take_role: never pair our pid with the dead holder's start time.
  if (holder != 0) slot.start_ticks.store(0, std::memory_order_relaxed);
  // Acq_rel: acquire the previous holder's writes, release ours to the next reader of pid.
  if (!slot.pid.compare_exchange_strong(holder, me, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
    return false;
  }
  // Release: pairs with the acquire load of start_ticks in a contender's liveness check.
  slot.start_ticks.store(process_start_ticks(me), std::memory_order_release);
  // Relaxed: a statistic for weftctl, written only by the slot holder.
  slot.attach_count.fetch_add(1, std::memory_order_relaxed);
  beat(slot);
  return true;
}

SlotTakeSeam& slot_take_seam() noexcept {
  static SlotTakeSeam seam;
  return seam;
}

PeerState peer_state(const RoleSlot& slot) noexcept {
  // Acquire (both): pair with the holder's release stores in take_role / try_take_slot.
  const std::uint32_t pid = slot.pid.load(std::memory_order_acquire);
  if (pid == 0) return PeerState::kNone;
  return process_alive(pid, slot.start_ticks.load(std::memory_order_acquire)) ? PeerState::kAlive
                                                                              : PeerState::kDead;
}

void beat(RoleSlot& slot) noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  // Relaxed: an advisory timestamp for observers; only the holder writes it.
  slot.heartbeat_s.store(static_cast<std::uint32_t>(ts.tv_sec), std::memory_order_relaxed);
}

void give_back_role(RoleSlot& slot) noexcept {
  const auto me = static_cast<std::uint32_t>(getpid());
  std::uint32_t expected = me;
  // Relaxed: cleared before the pid is released below; a contender reading 0 ticks treats the
  // slot as in transition and reads pid again.
  slot.start_ticks.store(0, std::memory_order_relaxed);
  // Release: our last cursor stores happen-before a new holder's acquire of pid.
  slot.pid.compare_exchange_strong(expected, 0, std::memory_order_release,
                                   std::memory_order_relaxed);
}

}  // namespace weft::detail
