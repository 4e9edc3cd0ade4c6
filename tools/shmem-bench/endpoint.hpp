// Endpoints: one way of moving messages between the benchmark's processes (a weft channel kind, or
// a kernel IPC transport for `compare`), opened once and then measured phase after phase, so that
// several endpoints can be measured interleaved in one run (DESIGN.md, decision 10).
//
// An endpoint is opened in one of two modes. Ping-pong: side A (the parent) sends a ping to side B
// (child 0), which sends it straight back; one sample per round trip. Stream: producers send as
// fast as they can (or on a fixed schedule: open loop) and consumers receive; the parent is always
// producer 0, child 0 is always consumer 0, and further producers (MPSC) or consumers (broadcast)
// are worker processes.
//
// Placement of the extra processes: when there are at least as many CPUs (--cpus, or the affinity
// mask) as processes, each process gets its own; otherwise every producer shares side A's CPU and
// every consumer side B's, and each process that shares a CPU uses a spin-then-yield idle strategy
// (weft::SpinYieldIdle) so that its neighbour runs when it cannot make progress. A process alone on
// its CPU busy-spins, as the SPSC figures always do.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "floor.hpp"
#include "histogram.hpp"
#include "peer.hpp"
#include "timebase.hpp"

namespace shmem_bench {

enum class Transport : std::uint32_t {
  kSpsc = 1,
  kMpsc = 2,
  kBroadcast = 3,
  kPipe = 4,  // Two pipe(2)s, one per direction.
  kUnix = 5,  // A socketpair(AF_UNIX, SOCK_SEQPACKET).
  kMq = 6,    // Two POSIX message queues.
  kTcp = 7,   // A TCP connection on 127.0.0.1, TCP_NODELAY.
};

// "spsc", "mpsc", "broadcast", "pipe", "unix", "mq", "tcp".
const char* transport_name(Transport transport) noexcept;
bool is_weft(Transport transport) noexcept;

struct EndpointSpec {
  Transport transport = Transport::kSpsc;
  std::uint64_t size_bytes = 64;
  std::uint64_t capacity_bytes = std::uint64_t{1} << 16;  // weft rings.
  std::uint32_t producers = 1;                            // MPSC: producer processes.
  std::uint32_t consumers = 1;                            // Broadcast: consumer processes.
  std::uint32_t slots_max = 0;  // The channel's producers_max / consumers_max; 0: as many as used.
  bool lossy = false;           // Broadcast.
  std::uint64_t batch = 256;    // Records per poll() at most.
  bool copy = false;            // Producers use try_send from a buffer.
  bool touch_all = true;        // Consumers read every payload byte.
  int numa_node = -1;           // --node: the channel's memory goes there (-1: no placement).
};

// "spsc", "mpsc x2", "broadcast x2 lossy", "pipe".
std::string describe(const EndpointSpec& spec);

// Where one process of an endpoint runs.
struct ProcessSlot {
  std::string role;  // "producer 0 (parent)", "consumer 1 (worker)", ...
  int peer_index;    // -1: the parent; 0: side B; 1..: a worker.
  int cpu;           // -1: not pinned.
  bool yields;       // Shares its CPU with another process of this endpoint: spin, then yield.
  bool is_producer = false;
  std::uint32_t rank = 0;  // Producer or consumer number.
};

// One consumer's view of a stream phase.
struct ConsumerCount {
  std::uint64_t received = 0;  // Records handed to it in the phase.
  std::uint64_t lost = 0;      // Lossy broadcast: records overwritten before it read them.
  double msgs_per_s = 0;       // Its own rate over its timed window.
};

// One stream phase.
struct StreamRun {
  double msgs_per_s = 0;  // SPSC/MPSC: seen by the consumer; broadcast: sent by the producer.
  double bytes_per_s = 0;
  std::uint64_t messages = 0;  // Records in the timed window.
  double seconds = 0;
  std::uint64_t claims_refused = 0;  // Back pressure: claims the channel refused (header counters).
  std::vector<ConsumerCount> consumers;
};

// One open-loop phase: messages sent on a fixed schedule, latency taken from the intended send
// time of each message to its receipt, so a producer that falls behind its schedule (back
// pressure, preemption) is charged for it (no coordinated omission).
struct OpenLoopLimits {
  double rate_per_s = 0;  // All producers together; 0: as fast as possible (closed loop).
  double warmup_s = 0.05;
  double duration_s = 0.25;
  double timeout_s = 60;
};

struct OpenLoopRun {
  Histogram latency;  // One-way, clock ticks, every consumer merged.
  double offered_per_s = 0;
  double achieved_per_s = 0;  // Records received per second over the timed window (per consumer).
  std::uint64_t messages = 0;
  std::uint64_t claims_refused = 0;
  std::uint64_t late_messages = 0;  // Sent after their intended time (queued behind back pressure).
  std::uint64_t lost_records = 0;   // Lossy broadcast, every consumer.
  std::uint64_t clock_negative = 0;  // Receipts stamped before their send: clock skew (counted 0).
};

// What every endpoint needs to run; one per benchmark invocation.
class BenchContext {
 public:
  BenchContext(Peer& peer, const std::string& dir, const Timebase& clock,
               const Placement& placement) noexcept
      : peer_(peer), dir_(dir), clock_(clock), placement_(placement) {}
  [[nodiscard]] Peer& peer() noexcept { return peer_; }
  [[nodiscard]] const std::string& dir() const noexcept { return dir_; }
  [[nodiscard]] const Timebase& clock() const noexcept { return clock_; }
  [[nodiscard]] const Placement& placement() const noexcept { return placement_; }
  [[nodiscard]] std::uint32_t next_id() noexcept { return ++last_id_; }
  // The placement of `producers` producers and `consumers` consumers (see the top of this file);
  // spawns the workers it needs, reusing idle ones on the same CPU.
  std::vector<ProcessSlot> plan(std::uint32_t producers, std::uint32_t consumers);

 private:
  int worker_on(int cpu, std::size_t nth);
  Peer& peer_;
  std::string dir_;
  const Timebase& clock_;
  const Placement& placement_;
  std::uint32_t last_id_ = 0;
  std::vector<std::pair<int, int>> workers_;  // (peer index, cpu)
};

enum class EndpointMode { kPingPong, kStream };

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Ping-pong mode: one phase; round-trip times in clock ticks.
  virtual Histogram ping(const PhaseLimits& limits) = 0;
  // Stream mode: one closed-loop phase.
  virtual StreamRun stream(const PhaseLimits& limits) = 0;
  // Stream mode: one open-loop phase. Throws UsageError where the endpoint has none.
  virtual OpenLoopRun open_loop(const OpenLoopLimits& limits);

  [[nodiscard]] const EndpointSpec& spec() const noexcept { return spec_; }
  [[nodiscard]] const std::vector<ProcessSlot>& processes() const noexcept { return processes_; }
  // The largest payload this endpoint carries.
  [[nodiscard]] virtual std::uint64_t size_max() const noexcept = 0;

 protected:
  Endpoint(const EndpointSpec& spec, BenchContext& context) : spec_(spec), context_(context) {}
  EndpointSpec spec_;
  BenchContext& context_;
  std::uint32_t id_ = 0;
  std::vector<ProcessSlot> processes_;
};

// Throws UsageError when `spec` asks for what the transport cannot do (two producers on SPSC,
// more producers than producers_max, a lossy SPSC, a record larger than the ring allows, ...).
void validate_spec(const EndpointSpec& spec);

// Opens an endpoint (creating its channels or descriptors, opening the children's ends). Throws
// UsageError for an impossible configuration, RunError when a system call fails.
std::unique_ptr<Endpoint> open_endpoint(const EndpointSpec& spec, EndpointMode mode,
                                        BenchContext& context);

// A note about the endpoint's configuration for reports (message-queue limits); empty if none.
std::string endpoint_note(const Endpoint& endpoint);

// Child side of the kEndpoint*, kOpenLoop* commands.
void endpoint_child(Command command, ChildContext& context, const Timebase& clock);

// Implementation hooks, one per family (weft_endpoint.cpp, transports.cpp).
std::unique_ptr<Endpoint> open_weft_endpoint(const EndpointSpec& spec, EndpointMode mode,
                                             BenchContext& context);
std::unique_ptr<Endpoint> open_ipc_endpoint(const EndpointSpec& spec, EndpointMode mode,
                                            BenchContext& context);

// Child-side state of one endpoint in one process.
class ChildEnd {
 public:
  virtual ~ChildEnd() = default;
  virtual void echo(ChildContext& context) = 0;
  virtual void consume(ChildContext& context, const Timebase& clock) = 0;
  virtual void produce(ChildContext& context, const Timebase& clock);
  virtual void open_loop_produce(ChildContext& context, const Timebase& clock);
  virtual void open_loop_consume(ChildContext& context, const Timebase& clock);
};
std::unique_ptr<ChildEnd> open_weft_child_end(const CommandParams& params);
std::unique_ptr<ChildEnd> open_ipc_child_end(const CommandParams& params, ChildContext& context);

}  // namespace shmem_bench
