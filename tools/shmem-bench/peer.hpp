// The other processes: forked children, each pinned to a CPU, driven by the parent through a
// control block in one MAP_SHARED|MAP_ANONYMOUS mapping created before the first fork; and the
// private scratch directory that holds the benchmark's channel files.
//
// Child 0 ("side B") is forked when the Peer is made; further workers (extra MPSC producers,
// extra broadcast consumers, recovery victims) are forked on demand by spawn() and inherit the
// same mapping, so every process sees every control block and the shared Board.
//
// Concurrency
//   Roles: the parent (side A) and the children, one thread each.
//   Single writers: the parent writes a child's `params`, `command`, `stop`, `produced` and
//   `floor_ping`; that child writes its `report`, `done`, `consumer_stop` and `floor_pong`. Each
//   word is on its own 128-byte block. Board words say who writes them (some are counters that
//   several processes add to with fetch_add).
//   Protocol: the parent fills `params`, then stores `command` with release; the child acquires
//   it, runs the command, fills `report`, then stores `done` (the command's serial) with release;
//   the parent acquires `done` before it reads `report`.
//
// Lifetime: each child asks the kernel to SIGKILL it when the parent dies (PR_SET_PDEATHSIG), and
// the parent kills and reaps every child on every way out (destructor, exception,
// SIGINT/SIGTERM), so no child is ever left spinning. The scratch directory is removed on the
// same paths.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "env_info.hpp"
#include "histogram.hpp"
#include "timebase.hpp"

namespace shmem_bench {

inline constexpr std::size_t kBlockBytes = 128;
// Children besides side B: extra producers or consumers, victims. Bounds --producers/--consumers.
inline constexpr int kWorkersMax = 16;
inline constexpr int kProcessesMax = 1 + kWorkersMax;

struct alignas(kBlockBytes) SharedWord {
  std::atomic<std::uint64_t> value{0};
};
static_assert(sizeof(SharedWord) == kBlockBytes, "one word per 128-byte block");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "lock-free atomics are address-free, which sharing between processes requires");

enum class Command : std::uint32_t {
  kNone = 0,
  kQuit,
  kFloorEcho,        // Echo floor_ping into floor_pong until `stop`.
  kEndpointOpen,     // Open this process's end of an endpoint (see endpoint.hpp).
  kEndpointClose,    // Drop one endpoint (params.endpoint_id) or all (kAllEndpoints).
  kEndpointEcho,     // Echo pings until `stop`.
  kEndpointConsume,  // Consume and time a throughput phase.
  kEndpointProduce,  // Produce for a throughput phase (extra MPSC producers).
  kOpenLoopProduce,  // Send on a fixed schedule (open loop).
  kOpenLoopConsume,  // Receive and record one-way latency.
  kRecoveryProduce,  // Recovery: a live producer, a victim that claims and hangs, or streams.
};

inline constexpr std::uint32_t kAllEndpoints = 0xffffffff;

struct CommandParams {
  std::uint64_t size_bytes = 0;
  std::uint64_t warmup_messages = 0;
  std::uint64_t messages = 0;  // 0: run for duration_ticks instead.
  std::uint64_t duration_ticks = 0;
  std::uint64_t batch = 0;
  std::uint64_t period_ticks = 0;        // Open loop: one message per period per producer.
  std::uint64_t start_ticks = 0;         // Open loop: the schedule's origin.
  std::uint64_t offset_ticks = 0;        // Open loop: this producer's first message after start.
  std::uint64_t end_ticks = 0;           // Open loop: no message scheduled at or after this.
  std::uint64_t window_start_ticks = 0;  // Open loop: latencies of messages from here on count.
  std::uint64_t capacity_bytes = 0;
  std::uint32_t flags = 0;
  std::uint32_t endpoint_id = 0;
  std::uint32_t transport = 0;  // Transport (endpoint.hpp).
  std::uint32_t role = 0;       // Which end: see endpoint.cpp.
  std::uint32_t producer_index = 0;
  std::uint32_t producers = 1;        // Producers in this phase (the consumer needs the count).
  std::uint32_t idle = 0;             // 1: spin, then yield (the process shares its CPU).
  std::uint32_t timeout_ms = 60'000;  // Stall limit of the child's loops.
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
  std::uint64_t lost_records = 0;
  std::uint64_t claims_refused = 0;
  std::uint64_t late_messages = 0;  // Open loop: sent after their intended time.
  std::uint64_t position = 0;       // Recovery: where the victim's claim is.
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
  SharedWord progress;       // Child: a state the parent watches (recovery: claimed).
  alignas(kBlockBytes) CommandParams params;
  alignas(kBlockBytes) ChildReport report;
};

// Words every process of a multi-process phase shares. The parent resets them before a phase.
struct Board {
  SharedWord consumer_stop;   // The measuring consumer (or the parent): producers stop now.
  SharedWord producers_done;  // Producers that stopped, fetch_add by each.
  SharedWord produced_total;  // Records they committed in the phase, fetch_add by each.
  SharedWord ready;           // Processes ready to start, fetch_add by each.
  SharedWord go;              // Parent: non-zero starts the phase.
  SharedWord stop;            // Parent: every loop that watches it ends.
  SharedWord consumers_done;  // Consumers that finished draining, fetch_add by each.
};

// What a handler in a child sees.
struct ChildContext {
  Control& control;
  Board& board;
  Histogram& histogram;  // This child's histogram slot, read by the parent after `done`.
  int index;             // 0: side B; 1..: workers.
  int fd_socket;         // This child's end of the descriptor-passing socket (SCM_RIGHTS).
};

// Copies `text` into a fixed char array, truncating and NUL-terminating it.
template <std::size_t N>
void copy_text(char (&out)[N], const std::string& text) {
  const std::size_t n = text.size() < N - 1 ? text.size() : N - 1;
  text.copy(out, n);
  out[n] = '\0';
}

// Chooses the CPUs: `requested` if given (validated against the affinity mask; the first is side
// A, the second side B, any further ones go to extra processes), else the allowed CPUs in order;
// unpinned when fewer than two are allowed. Throws UsageError.
Placement choose_placement(const std::optional<std::vector<int>>& requested);

// A private directory under /dev/shm (mkdtemp), removed with everything in it by the destructor
// or by the SIGINT/SIGTERM/SIGHUP handler it installs.
class ScratchDir {
 public:
  ScratchDir();
  // A private directory `prefix`-XXXXXX under `base` (a --dir the user chose), removed with
  // everything in it by the destructor only. Throws UsageError naming --dir when it cannot be made.
  ScratchDir(const std::string& base, std::string_view prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  bool signal_cleanup_ = false;  // Registered with the signal handler (the /dev/shm one).
};

// Runs `command` in a child; fills context.control.report. Exceptions become report.error.
using ChildHandler = std::function<void(Command command, ChildContext& context)>;

struct SharedBlock;

class Peer {
 public:
  // Pins this process to placement.cpu_a, forks side B pinned to placement.cpu_b that serves
  // commands with `handler`. Throws RunError.
  Peer(const Placement& placement, ChildHandler handler);
  ~Peer();  // Asks every child to quit; kills and reaps any that does not within a second.
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  // Forks a worker pinned to `cpu` (-1: unpinned) serving the same handler; returns its index
  // (1..kWorkersMax). Throws RunError.
  int spawn(int cpu);
  // SIGKILLs child `index` now and reaps it; its index becomes free. Returns the CLOCK_MONOTONIC
  // time, in ns, taken right before kill(2).
  std::uint64_t kill_child(int index);
  // Asks worker `index` to quit and reaps it (SIGKILL after a second).
  void retire(int index);
  [[nodiscard]] pid_t pid(int index) const noexcept {
    return pids_[static_cast<std::size_t>(index)];
  }
  [[nodiscard]] int cpu(int index) const noexcept { return cpus_[static_cast<std::size_t>(index)]; }

  [[nodiscard]] Control& control(int index = 0) noexcept;
  [[nodiscard]] Board& board() noexcept;
  // Child `index`'s histogram slot (open-loop consumers fill theirs); valid after wait_done.
  [[nodiscard]] Histogram& histogram(int index) noexcept;

  // Starts `command` in child `index` and returns at once. Resets stop/consumer_stop/produced.
  void post(Command command) { post(0, command); }
  void post(int index, Command command);
  // Waits until the child finished the posted command; throws RunError if it failed, died, or
  // took longer than `timeout_s`.
  const ChildReport& wait_done(double timeout_s) { return wait_done(0, timeout_s); }
  const ChildReport& wait_done(int index, double timeout_s);
  const ChildReport& call(Command command, double timeout_s) { return call(0, command, timeout_s); }
  const ChildReport& call(int index, Command command, double timeout_s) {
    post(index, command);
    return wait_done(index, timeout_s);
  }
  // Throws RunError if child `index` (every child when -1) has exited. A system call: for stalled
  // loops only.
  void check_alive(int index = -1);
  // Throws RunError with the child's message if a child finished its posted command with an
  // error (a consumer that gave up while this process still produces).
  void check_failed();
  // Sends descriptors to child `index` (received by receive_fds in the child). Throws RunError.
  void send_fds(int index, std::span<const int> fds);

 private:
  void fork_child(int index, int cpu);
  void reap(int index, bool post_quit);

  SharedBlock* shared_ = nullptr;
  ChildHandler handler_;
  pid_t parent_ = -1;
  std::array<pid_t, kProcessesMax> pids_{};
  std::array<int, kProcessesMax> cpus_{};
  std::array<int, kProcessesMax> fd_sockets_{};  // Parent's ends; -1 when closed.
  std::array<std::uint64_t, kProcessesMax> serials_{};
};

// Child side: receives `count` descriptors sent with Peer::send_fds. Throws RunError.
std::vector<int> receive_fds(int fd_socket, std::size_t count);

// For spin loops that wait on a child: call tick() on every empty spin and progress() when
// the wait ends. After 2^20 spins without progress it checks that the children live, and it throws
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

// The same for loops in a child that wait on the parent or on siblings: throws RunError once
// `stall_s` passes without progress (no system call on the fast path).
class ChildStallGuard {
 public:
  explicit ChildStallGuard(double stall_s) noexcept
      : stall_ns_(static_cast<std::uint64_t>(stall_s * 1e9)) {}
  void tick() {
    if ((++spins_ & kMask) == 0) [[unlikely]]
      slow_check();
  }
  void progress() noexcept {
    spins_ = 0;
    stalled_since_ns_ = 0;
  }

 private:
  static constexpr std::uint64_t kMask = (std::uint64_t{1} << 16) - 1;
  void slow_check();
  std::uint64_t stall_ns_;
  std::uint64_t spins_ = 0;
  std::uint64_t stalled_since_ns_ = 0;
};

}  // namespace shmem_bench
