// Taking and giving back a role (producer or consumer) recorded in the channel header.
#pragma once

#include <cstdint>
#include <string_view>

#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/result.hpp"

namespace weft::detail {

// CLOCK_MONOTONIC in nanoseconds.
std::int64_t monotonic_ns() noexcept;

// kInvalidArgument unless `channel` is mapped read-write and of `kind`; `role` names the caller
// ("producer", "consumer") in the message.
Result<void> check_attachable(const Channel& channel, ChannelKind kind, const char* role);

// A pid value no process has: marks a slot that its detacher owns for a moment.
inline constexpr std::uint32_t kSlotBusyPid = 0xffff'ffff;

// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat), or 0
// when the process does not exist.
std::uint64_t process_start_ticks(std::uint32_t pid) noexcept;

// True when the process recorded as (pid, start_ticks) still runs. A recycled pid whose start
// time differs counts as dead.
bool process_alive(std::uint32_t pid, std::uint64_t start_ticks) noexcept;

// Records this process as the holder of `slot`. kBusy naming the holder when a live process has
// it; a dead holder is replaced.
Result<void> take_role(RoleSlot& slot, std::string_view channel_path, const char* role) noexcept;

// Tries to take `slot` for this process: when it is free (pid 0), or, with `take_from_dead`, when
// its holder is dead. Returns true on success.
bool try_take_slot(RoleSlot& slot, bool take_from_dead) noexcept;

// Stores the current CLOCK_MONOTONIC seconds in `slot.heartbeat_s`. Holder only.
void beat(RoleSlot& slot) noexcept;

// Clears `slot` if this process holds it.
void give_back_role(RoleSlot& slot) noexcept;

}  // namespace weft::detail
