// The second process: a forked child pinned to its own CPU, driven by the parent through a small
// control block in a MAP_SHARED|MAP_ANONYMOUS mapping created before fork; and the private
// scratch directory that holds the benchmark's channel files.
//
// Concurrency
//   Roles: the parent (side A) and the child (side B), one thread each.
//   Single writers: the parent writes `params`, `command`, `stop`, `produced` and `floor_ping`;
//   the child writes `report`, `done`, `consumer_stop` and `floor_pong`. Each word is on its own
//   128-byte block.
//   Protocol: the parent fills `params`, then stores `command` with release; the child acquires
//   it, runs the command, fills `report`, then stores `done` (the command's serial) with release;
//   the parent acquires `done` before it reads `report`.
//
// Lifetime: the child asks the kernel to SIGKILL it when the parent dies (PR_SET_PDEATHSIG), and
// the parent kills and reaps the child on every way out (destructor, exception, SIGINT/SIGTERM),
// so no child is ever left spinning. The scratch directory is removed on the same paths.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "env_info.hpp"
#include "timebase.hpp"

namespace shmem_bench {

inline constexpr std::size_t kBlockBytes = 128;

struct alignas(kBlockBytes) SharedWord {
  std::atomic<std::uint64_t> value{0};
};
static_assert(sizeof(SharedWord) == kBlockBytes, "one word per 128-byte block");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "lock-free atomics are address-free, which sharing between processes requires");

enum class Command : std::uint32_t {
  kNone = 0,
  kQuit,
  kFloorEcho,    // Echo floor_ping into floor_pong until `stop`.
  kSpscOpen,     // Open the channels named in params (see SpscOpen flags).
  kSpscClose,    // Drop every channel the child holds.
  kSpscEcho,     // Echo each record of channel A->B into channel B->A until `stop`.
  kSpscConsume,  // Consume and time a throughput run (see spsc_bench.cpp).
};

struct CommandParams {
  std::uint64_t size_bytes = 0;
  std::uint64_t warmup_messages = 0;
  std::uint64_t messages = 0;  // 0: run for duration_ticks instead.
  std::uint64_t duration_ticks = 0;
  std::uint64_t batch = 0;
  std::uint32_t flags = 0;
  std::uint32_t reserved = 0;
  char dir[256] = {};
  char name_ab[64] = {};
  char name_ba[64] = {};
};

struct ChildReport {
  std::int32_t ok = 0;
  std::int32_t reserved = 0;
  std::uint64_t measured_messages = 0;
  std::uint64_t measured_ticks = 0;
  std::uint64_t consumed_messages = 0;
  std::uint64_t sequence_errors = 0;
  std::uint64_t checksum = 0;
  char error[512] = {};
};

struct Control {
  SharedWord command;        // Parent: (serial << 8) | Command.
  SharedWord done;           // Child: serial of the last finished command.
  SharedWord stop;           // Parent: ends an echo loop.
  SharedWord consumer_stop;  // Child: the consumer has measured enough; the producer stops.
  SharedWord produced;       // Parent: records committed in this run + 1; 0 while producing.
  SharedWord floor_ping;     // Parent's cache line of the floor ping-pong.
  SharedWord floor_pong;     // Child's cache line of the floor ping-pong.
  alignas(kBlockBytes) CommandParams params;
  alignas(kBlockBytes) ChildReport report;
};

// Copies `text` into a fixed char array, truncating and NUL-terminating it.
template <std::size_t N>
void copy_text(char (&out)[N], const std::string& text) {
  const std::size_t n = text.size() < N - 1 ? text.size() : N - 1;
  text.copy(out, n);
  out[n] = '\0';
}

// Chooses the two CPUs: `requested` if given (validated against the affinity mask), else the
// first two allowed CPUs; unpinned when fewer than two are allowed. Throws UsageError.
Placement choose_placement(const std::optional<std::pair<int, int>>& requested);

// A private directory under /dev/shm (mkdtemp), removed with everything in it by the destructor
// or by the SIGINT/SIGTERM/SIGHUP handler it installs.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// Runs `command` in the child; fills control.report. Exceptions become report.error.
using ChildHandler = std::function<void(Command command, Control& control)>;

class Peer {
 public:
  // Pins this process to placement.cpu_a, forks a child pinned to placement.cpu_b that serves
  // commands with `handler`. Throws RunError.
  Peer(const Placement& placement, ChildHandler handler);
  ~Peer();  // Asks the child to quit; kills and reaps it if it does not within a second.
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  [[nodiscard]] Control& control() noexcept { return *control_; }

  // Starts `command` in the child and returns at once. Resets stop/consumer_stop/produced.
  void post(Command command);
  // Waits until the child finished the posted command; throws RunError if it failed, died, or
  // took longer than `timeout_s`.
  const ChildReport& wait_done(double timeout_s);
  const ChildReport& call(Command command, double timeout_s) {
    post(command);
    return wait_done(timeout_s);
  }
  // Throws RunError if the child has exited. A system call: for stalled loops only.
  void check_alive();

 private:
  Control* control_ = nullptr;
  pid_t pid_ = -1;
  std::uint64_t serial_ = 0;
};

// For spin loops that wait on the child: call tick() on every empty spin and progress() when
// the wait ends. After 2^20 spins without progress it checks that the child lives, and it throws
// RunError once a wait has made no progress for `stall_s`. The fast path is an increment and a
// test; the slow path (a system call) runs only in a wait that is already a millisecond long.
class StallGuard {
 public:
  StallGuard(Peer& peer, double stall_s) noexcept
      : peer_(&peer), stall_ns_(static_cast<std::uint64_t>(stall_s * 1e9)) {}
  void tick() {
    if ((++spins_ & kMask) == 0) [[unlikely]]
      slow_check();
  }
  void progress() noexcept {
    spins_ = 0;
    stalled_since_ns_ = 0;
  }

 private:
  static constexpr std::uint64_t kMask = (std::uint64_t{1} << 20) - 1;
  void slow_check();
  Peer* peer_;
  std::uint64_t stall_ns_;
  std::uint64_t spins_ = 0;
  std::uint64_t stalled_since_ns_ = 0;
};

}  // namespace shmem_bench
