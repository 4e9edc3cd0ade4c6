#include "ring/role.hpp"

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "error_util.hpp"

namespace weft::detail {

std::uint64_t process_start_ticks(std::uint32_t pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  std::FILE* file = std::fopen(path, "re");
  if (file == nullptr) return 0;
  char buffer[1024];
  const std::size_t length = std::fread(buffer, 1, sizeof buffer - 1, file);
  std::fclose(file);
  buffer[length] = '\0';
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const char* cursor = std::strrchr(buffer, ')');
  if (cursor == nullptr) return 0;
  // After ')' come fields 3.. ; start time is field 22, the 20th of them.
  int field = 2;
  while (*cursor != '\0' && field < 22) {
    if (*cursor == ' ') ++field;
    ++cursor;
  }
  if (field != 22) return 0;
  return std::strtoull(cursor, nullptr, 10);
}

bool process_alive(std::uint32_t pid, std::uint64_t start_ticks) noexcept {
  // Above PID_MAX_LIMIT no process can exist (and kill() with a negative pid would address a
  // group): values like that come from a corrupt or hostile header.
  constexpr std::uint32_t kPidMaxLimit = 4'194'304;
  if (pid == 0 || pid > kPidMaxLimit) return false;
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  std::FILE* file = std::fopen(path, "re");
  if (file == nullptr) return false;
  char buffer[1024];
  const std::size_t length = std::fread(buffer, 1, sizeof buffer - 1, file);
  std::fclose(file);
  buffer[length] = '\0';
  const char* cursor = std::strrchr(buffer, ')');
  if (cursor == nullptr || cursor[1] != ' ') return false;
  // A zombie (killed or exited, not yet reaped) can never write shared memory again.
  const char state = cursor[2];
  if (state == 'Z' || state == 'X' || state == 'x') return false;
  const std::uint64_t now_ticks = process_start_ticks(pid);
  if (now_ticks == 0) return false;  // Gone between the two reads.
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
    // Acq_rel: acquire the previous holder's writes, release ours to the next reader of pid.
    if (slot.pid.compare_exchange_strong(holder, me, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
      // Release: pairs with the acquire load of start_ticks in a contender's take_role.
      slot.start_ticks.store(my_ticks, std::memory_order_release);
      // Relaxed: a statistic for weftctl, written only by the role holder.
      slot.attach_count.fetch_add(1, std::memory_order_relaxed);
      return {};
    }
  }
  return fail(Errc::kBusy, 0, "attach", "{}: the {} role kept changing hands; retry", channel_path,
              role);
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
