// Taking and giving back a role (producer or consumer) recorded in the channel header.
#pragma once

#include <cstdint>
#include <string_view>

#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/export.hpp"
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

// Whether a dead holder's slot may be taken over; `context` is the caller's. Called only once the
// holder has been seen dead, so what it reads of the holder's state is final (see try_take_slot).
using DeadHolderCheck = bool (*)(const void* context) noexcept;

// A DeadHolderCheck that always allows the takeover.
inline bool any_dead_holder(const void* /*context*/) noexcept { return true; }

// Tries to take `slot` for this process: when it is free (pid 0), or when its holder is dead and
// `may_replace(context)` agrees. The holder is read first, then found dead, then `may_replace`
// runs, and the pid is swapped from exactly that holder: a check made on an earlier holder's state
// (before another process took the slot, used it and died) can never admit the takeover. Returns
// true on success.
bool try_take_slot(RoleSlot& slot, DeadHolderCheck may_replace,
                   const void* context = nullptr) noexcept;

// A test seam (like journal/io_seam.hpp): MpscProducer::attach calls `before_take` right before it
// tries to take producer slot `index`, so a test can change the slot's holder at that moment.
// Null: nothing is called. Tests set it and must reset it.
struct SlotTakeSeam {
  void (*before_take)(std::uint32_t index, void* context) = nullptr;
  void* context = nullptr;
};
WEFT_EXPORT SlotTakeSeam& slot_take_seam() noexcept;

// Stores the current CLOCK_MONOTONIC seconds in `slot.heartbeat_s`. Holder only.
void beat(RoleSlot& slot) noexcept;

// Clears `slot` if this process holds it.
void give_back_role(RoleSlot& slot) noexcept;

}  // namespace weft::detail
