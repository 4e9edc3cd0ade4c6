// Kernel IPC endpoints for `compare`: a pipe, a Unix domain socket (SOCK_SEQPACKET), POSIX message
// queues and TCP on 127.0.0.1, measured by the same ping-pong and stream phases as weft.
//
// The parent creates both ends of every transport and passes the child's end over the Peer's
// descriptor socket (SCM_RIGHTS; a message queue descriptor is a file descriptor on Linux), so
// nothing is named in the file system for longer than mq_open..mq_unlink, and the TCP listener
// (127.0.0.1, an ephemeral port, backlog 1) is closed as soon as the one connection is accepted.
//
// Every message is one write(2)/send(2)/mq_send(3) of `size` bytes; readers of the byte streams
// (pipe, TCP) read whatever is there, up to 256 KiB per call, and count messages by bytes. Both
// sides block in the kernel when they must wait (the usual way to use these transports); the
// receiving side reads every byte (the kernel copies it out).
#include <arpa/inet.h>
#include <fcntl.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "endpoint.hpp"
#include "errors.hpp"
#include "payload.hpp"

namespace shmem_bench {
namespace {

constexpr std::uint32_t kRoleEcho = 1;
constexpr std::uint32_t kRoleConsumer = 2;
constexpr std::size_t kReadBytesMax = 256 * 1024;

std::string call_failed(const char* what) { return fmt::format("{}: {}", what, errno_text(errno)); }

// A file descriptor that closes itself.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() noexcept {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int get() const noexcept { return fd_; }

 private:
  int fd_ = -1;
};

// ---- the byte-level operations of each transport ----------------------------------------------

// Sends one message; throws RunError on failure.
void send_message(Transport t, int fd, const std::byte* data, std::size_t size) {
  if (t == Transport::kMq) {
    while (mq_send(fd, reinterpret_cast<const char*>(data), size, 0) != 0) {
      if (errno != EINTR) throw RunError(call_failed("mq_send"));
    }
    return;
  }
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = t == Transport::kPipe ? write(fd, data + done, size - done)
                                            : send(fd, data + done, size - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw RunError(call_failed(t == Transport::kPipe ? "write" : "send"));
    }
    done += static_cast<std::size_t>(n);
    if (t == Transport::kUnix && done != size)
      throw RunError("send: a SOCK_SEQPACKET message was cut");
  }
}

// Receives up to `capacity` bytes (one message for mq and SOCK_SEQPACKET, any bytes otherwise);
// returns the count. 0 means the peer closed.
std::size_t receive_some(Transport t, int fd, std::byte* buffer, std::size_t capacity) {
  for (;;) {
    ssize_t n = 0;
    if (t == Transport::kMq) {
      n = mq_receive(fd, reinterpret_cast<char*>(buffer), capacity, nullptr);
    } else if (t == Transport::kPipe) {
      n = read(fd, buffer, capacity);
    } else {
      n = recv(fd, buffer, capacity, 0);
    }
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) throw RunError(call_failed("receive"));
  }
}

// Receives exactly one message of `size` bytes into `buffer` (capacity >= size; for mq at least
// the queue's mq_msgsize).
void receive_message(Transport t, int fd, std::byte* buffer, std::size_t capacity,
                     std::size_t size) {
  if (t == Transport::kMq || t == Transport::kUnix) {
    const std::size_t n = receive_some(t, fd, buffer, capacity);
    if (n != size)
      throw RunError(fmt::format("received a message of {} bytes, expected {}", n, size));
    return;
  }
  std::size_t done = 0;
  while (done < size) {
    const std::size_t n = receive_some(t, fd, buffer + done, size - done);
    if (n == 0) throw RunError("the peer closed the connection");
    done += n;
  }
}

// True when `fd` has data within `timeout_ms`.
bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  const int r = poll(&p, 1, timeout_ms);
  if (r < 0 && errno != EINTR) throw RunError(call_failed("poll"));
  return r > 0;
}

std::uint64_t sentinel_word(std::size_t size) noexcept {
  return expected_first_word(~std::uint64_t{0}, size);
}

long read_proc_long(const char* path, long fallback) {
  std::ifstream in(path);
  long value = fallback;
  if (!(in >> value)) return fallback;
  return value;
}

// ---- parent side -----------------------------------------------------------------------------

class IpcEndpoint final : public Endpoint {
 public:
  IpcEndpoint(const EndpointSpec& spec, EndpointMode mode, BenchContext& context)
      : Endpoint(spec, context), mode_(mode) {
    id_ = context.next_id();
    const Transport t = spec.transport;
    std::vector<Fd> child_fds;
    switch (t) {
      case Transport::kPipe: {
        int ab[2];
        if (pipe2(ab, O_CLOEXEC) != 0) throw RunError(call_failed("pipe2"));
        write_fd_ = Fd(ab[1]);
        child_fds.emplace_back(ab[0]);
        if (mode == EndpointMode::kPingPong) {
          int ba[2];
          if (pipe2(ba, O_CLOEXEC) != 0) throw RunError(call_failed("pipe2"));
          read_fd_ = Fd(ba[0]);
          child_fds.emplace_back(ba[1]);
        }
        break;
      }
      case Transport::kUnix: {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
          throw RunError(call_failed("socketpair(AF_UNIX, SOCK_SEQPACKET)"));
        }
        write_fd_ = Fd(sv[0]);
        child_fds.emplace_back(sv[1]);
        break;
      }
      case Transport::kTcp:
        open_tcp(child_fds);
        break;
      case Transport::kMq:
        open_mq(mode, child_fds);
        break;
      default:
        throw RunError("not an IPC transport");
    }
    std::vector<int> raw;
    for (const Fd& fd : child_fds) raw.push_back(fd.get());
    Peer& peer = context.peer();
    peer.send_fds(0, raw);
    CommandParams& params = peer.control(0).params;
    params.endpoint_id = id_;
    params.transport = static_cast<std::uint32_t>(t);
    params.role = mode == EndpointMode::kPingPong ? kRoleEcho : kRoleConsumer;
    params.size_bytes = spec.size_bytes;
    params.capacity_bytes = mq_msgsize_;
    params.batch = raw.size();
    peer.call(0, Command::kEndpointOpen, 30);
    processes_ = {{mode == EndpointMode::kPingPong ? "ping (parent)" : "producer 0 (parent)", -1,
                   context.placement().cpu_a, false, true, 0},
                  {mode == EndpointMode::kPingPong ? "echo (child)" : "consumer 0 (child)", 0,
                   context.placement().cpu_b, false, false, 0}};
    buffer_.resize(std::max<std::size_t>(spec.size_bytes, mq_msgsize_) + 64);
    message_.resize(spec.size_bytes);
  }

  ~IpcEndpoint() override {
    try {
      CommandParams& params = context_.peer().control(0).params;
      params.endpoint_id = id_;
      context_.peer().call(0, Command::kEndpointClose, 10);
    } catch (const std::exception&) {
      // The child died or hung: the Peer's destructor kills it.
    }
  }

  [[nodiscard]] std::uint64_t size_max() const noexcept override { return spec_.size_bytes; }

  // A note for reports (message queue limits), empty if none.
  [[nodiscard]] const std::string& note() const noexcept { return note_; }

  Histogram ping(const PhaseLimits& limits) override {
    if (mode_ != EndpointMode::kPingPong) throw RunError("ping on a stream endpoint");
    Peer& peer = context_.peer();
    const Timebase& clock = context_.clock();
    const Transport t = spec_.transport;
    const std::size_t size = spec_.size_bytes;
    const int out = write_fd_.get();
    const int in = read_fd_.get() >= 0 ? read_fd_.get() : write_fd_.get();
    CommandParams& params = peer.control(0).params;
    params.endpoint_id = id_;
    params.size_bytes = size;
    peer.post(0, Command::kEndpointEcho);
    Histogram histogram;
    const std::uint64_t total =
        limits.messages == 0 ? ~std::uint64_t{0} : limits.warmup + limits.messages;
    const std::uint64_t begin = clock.now();
    std::uint64_t previous = begin;
    bool warm = limits.warmup == 0;
    std::uint64_t end_ticks = warm ? begin + limits.duration_ticks : ~std::uint64_t{0};
    std::uint64_t errors = 0;
    for (std::uint64_t seq = 1; seq <= total; ++seq) {
      write_payload(message_.data(), size, seq);
      send_message(t, out, message_.data(), size);
      receive_message(t, in, buffer_.data(), buffer_.size(), size);
      const std::uint64_t now = clock.now();
      errors += read_first_word({buffer_.data(), size}) != expected_first_word(seq, size) ? 1U : 0U;
      if (warm) histogram.record(now - previous);
      previous = now;
      if (!warm && (seq == limits.warmup || (limits.messages == 0 && limits.warmup_ticks_max != 0 &&
                                             now - begin >= limits.warmup_ticks_max))) {
        warm = true;
        end_ticks = now + limits.duration_ticks;
      }
      if (limits.messages == 0 && now >= end_ticks) break;
    }
    // Stop the echo: a sentinel message, echoed back like any other.
    write_payload(message_.data(), size, ~std::uint64_t{0});
    send_message(t, out, message_.data(), size);
    receive_message(t, in, buffer_.data(), buffer_.size(), size);
    peer.wait_done(0, limits.timeout_s);
    if (errors != 0)
      throw RunError(fmt::format("{} pongs carried the wrong sequence number", errors));
    return histogram;
  }

  StreamRun stream(const PhaseLimits& limits) override {
    if (mode_ != EndpointMode::kStream) throw RunError("stream on a ping-pong endpoint");
    Peer& peer = context_.peer();
    const Timebase& clock = context_.clock();
    const std::size_t size = spec_.size_bytes;
    Board& board = peer.board();
    // Relaxed (all): published by the release store of the child's command.
    board.consumer_stop.value.store(0, std::memory_order_relaxed);
    board.producers_done.value.store(0, std::memory_order_relaxed);
    board.produced_total.value.store(0, std::memory_order_relaxed);
    CommandParams& params = peer.control(0).params;
    params.endpoint_id = id_;
    params.size_bytes = size;
    // Warm-up: a thousand messages, fewer for large ones (at most 16 MiB).
    params.warmup_messages = std::max<std::uint64_t>(
        limits.warmup,
        std::min<std::uint64_t>(1000, std::max<std::uint64_t>(16, (16U << 20) / size)));
    params.messages = limits.messages;
    params.duration_ticks = limits.duration_ticks;
    params.producers = 1;
    peer.post(0, Command::kEndpointConsume);
    const std::uint64_t total =
        limits.messages == 0 ? ~std::uint64_t{0} : params.warmup_messages + limits.messages;
    std::uint64_t sent = 0;
    write_payload(message_.data(), size, 0);
    while (sent != total) {
      // Relaxed: a flag with nothing to publish; the consumer drains whatever was sent.
      if (board.consumer_stop.value.load(std::memory_order_relaxed) != 0) break;
      const std::uint64_t word = sent;
      std::memcpy(message_.data(), &word, std::min<std::size_t>(size, 8));
      send_message(spec_.transport, write_fd_.get(), message_.data(), size);
      ++sent;
    }
    // Relaxed: published by the release fetch_add below.
    board.produced_total.value.fetch_add(sent, std::memory_order_relaxed);
    // Release: pairs with the consumer's acquire load.
    board.producers_done.value.fetch_add(1, std::memory_order_release);
    const ChildReport& report = peer.wait_done(0, limits.timeout_s);
    if (report.sequence_errors != 0) {
      throw RunError(
          fmt::format("{} messages carried the wrong sequence number", report.sequence_errors));
    }
    if (report.consumed_messages != sent) {
      throw RunError(fmt::format("the consumer saw {} messages, the producer sent {}",
                                 report.consumed_messages, sent));
    }
    StreamRun run;
    run.messages = report.measured_messages;
    run.seconds = clock.to_ns(report.measured_ticks) / 1e9;
    if (run.messages == 0 || run.seconds <= 0) {
      throw RunError("the timed window was empty: raise --messages or --duration");
    }
    run.msgs_per_s = static_cast<double>(run.messages) / run.seconds;
    run.bytes_per_s = run.msgs_per_s * static_cast<double>(size);
    run.consumers.push_back({report.consumed_messages, 0, run.msgs_per_s});
    return run;
  }

 private:
  void open_tcp(std::vector<Fd>& child_fds) {
    Fd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (listener.get() < 0) throw RunError(call_failed("socket(AF_INET)"));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;  // Ephemeral.
    if (bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      throw RunError(call_failed("bind 127.0.0.1:0"));
    }
    if (listen(listener.get(), 1) != 0) throw RunError(call_failed("listen"));
    socklen_t length = sizeof(address);
    if (getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw RunError(call_failed("getsockname"));
    }
    Fd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (client.get() < 0) throw RunError(call_failed("socket(AF_INET)"));
    if (connect(client.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      throw RunError(call_failed("connect 127.0.0.1"));
    }
    // Bounded: the connection is already queued on the listener, accept returns at once.
    Fd server(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (server.get() < 0) throw RunError(call_failed("accept"));
    const int one = 1;
    for (const int fd : {client.get(), server.get()}) {
      if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        throw RunError(call_failed("setsockopt(TCP_NODELAY)"));
      }
    }
    tcp_port_ = ntohs(address.sin_port);
    write_fd_ = std::move(client);
    child_fds.push_back(std::move(server));
  }

  // One or two queues of depth min(fs.mqueue.msg_max, 10) and message size `size`, created,
  // unlinked at once and passed by descriptor.
  void open_mq(EndpointMode mode, std::vector<Fd>& child_fds) {
    const long msg_max = read_proc_long("/proc/sys/fs/mqueue/msg_max", 10);
    const long msgsize_max = read_proc_long("/proc/sys/fs/mqueue/msgsize_max", 8192);
    mq_attr attr{};
    attr.mq_maxmsg = std::min<long>(10, msg_max);
    attr.mq_msgsize = static_cast<long>(spec_.size_bytes);
    const int queues = mode == EndpointMode::kPingPong ? 2 : 1;
    // The kernel charges each queue about maxmsg * (msgsize + a pointer) against
    // RLIMIT_MSGQUEUE; raise the soft limit to what is needed when the hard one allows.
    const auto needed = static_cast<rlim_t>(queues) * static_cast<rlim_t>(attr.mq_maxmsg) *
                        static_cast<rlim_t>(attr.mq_msgsize + 64);
    rlimit limit{};
    if (getrlimit(RLIMIT_MSGQUEUE, &limit) == 0 && limit.rlim_cur < needed) {
      rlimit raised = limit;
      raised.rlim_cur = std::max(limit.rlim_cur, needed);
      if (raised.rlim_max < raised.rlim_cur) raised.rlim_max = raised.rlim_cur;
      if (setrlimit(RLIMIT_MSGQUEUE, &raised) != 0) {
        // Keep what we have; shrink the queue depth to fit instead.
        const auto per_message =
            static_cast<rlim_t>(attr.mq_msgsize + 64) * static_cast<rlim_t>(queues);
        attr.mq_maxmsg = std::max<long>(1, static_cast<long>(limit.rlim_cur / per_message));
      }
    }
    note_ = fmt::format("queue depth {} (fs.mqueue.msg_max {}), message size {} (msgsize_max {}{})",
                        attr.mq_maxmsg, msg_max, attr.mq_msgsize, msgsize_max,
                        attr.mq_msgsize > msgsize_max ? ", exceeded with CAP_SYS_RESOURCE" : "");
    const auto open_one = [&](const char* which) {
      const std::string name = fmt::format("/shmem-bench.{}.{}.{}", getpid(), id_, which);
      const mqd_t q = mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
      if (q == static_cast<mqd_t>(-1)) {
        const int err = errno;
        throw UnsupportedError(fmt::format(
            "mq_open({} messages of {} bytes): {}{}", attr.mq_maxmsg, attr.mq_msgsize,
            errno_text(err),
            err == EINVAL ? fmt::format(" (/proc/sys/fs/mqueue/msgsize_max is {}, msg_max {}; "
                                        "raise them or run with CAP_SYS_RESOURCE)",
                                        msgsize_max, msg_max)
                          : std::string{}));
      }
      mq_unlink(name.c_str());  // Nothing named is left behind, whatever happens next.
      return Fd(q);
    };
    write_fd_ = open_one("ab");
    {
      // The child's read end of A->B: the same queue through a second descriptor.
      const int dup_fd = fcntl(write_fd_.get(), F_DUPFD_CLOEXEC, 0);
      if (dup_fd < 0) throw RunError(call_failed("fcntl(F_DUPFD_CLOEXEC)"));
      child_fds.emplace_back(dup_fd);
    }
    if (mode == EndpointMode::kPingPong) {
      read_fd_ = open_one("ba");
      const int dup_fd = fcntl(read_fd_.get(), F_DUPFD_CLOEXEC, 0);
      if (dup_fd < 0) throw RunError(call_failed("fcntl(F_DUPFD_CLOEXEC)"));
      child_fds.emplace_back(dup_fd);
    }
    mq_msgsize_ = static_cast<std::size_t>(attr.mq_msgsize);
  }

  EndpointMode mode_;
  Fd write_fd_;  // Parent -> child (and child -> parent for sockets).
  Fd read_fd_;   // Child -> parent, where it is a separate descriptor.
  std::size_t mq_msgsize_ = 0;
  int tcp_port_ = 0;
  std::string note_;
  std::vector<std::byte> buffer_;
  std::vector<std::byte> message_;
};

// ---- child side ------------------------------------------------------------------------------

class IpcChildEnd final : public ChildEnd {
 public:
  IpcChildEnd(const CommandParams& params, ChildContext& context)
      : transport_(static_cast<Transport>(params.transport)) {
    const std::vector<int> fds = receive_fds(context.fd_socket, params.batch);
    for (const int fd : fds) fds_.emplace_back(fd);
    // Pipe and mq: [read end of A->B, write end of B->A]; sockets: one for both.
    read_fd_ = fds_.front().get();
    write_fd_ = fds_.back().get();
    const std::size_t capacity = std::max<std::size_t>(params.size_bytes, params.capacity_bytes);
    buffer_.resize(std::max(capacity + 64, kReadBytesMax));
  }

  void echo(ChildContext& context) override {
    const std::size_t size = context.control.params.size_bytes;
    const std::uint64_t sentinel = sentinel_word(size);
    for (;;) {
      receive_message(transport_, read_fd_, buffer_.data(), buffer_.size(), size);
      send_message(transport_, write_fd_, buffer_.data(), size);
      if (read_first_word({buffer_.data(), size}) == sentinel) return;
    }
  }

  void consume(ChildContext& context, const Timebase& clock) override {
    const CommandParams& params = context.control.params;
    const std::size_t size = params.size_bytes;
    const bool per_message = transport_ == Transport::kMq || transport_ == Transport::kUnix;
    const std::size_t capacity = per_message ? buffer_.size() : kReadBytesMax;
    const std::uint64_t total =
        params.messages == 0 ? ~std::uint64_t{0} : params.warmup_messages + params.messages;
    Board& board = context.board;
    ChildReport& report = context.control.report;
    std::uint64_t bytes = 0;
    std::uint64_t messages = 0;
    std::uint64_t errors = 0;
    std::size_t in_message = 0;  // Bytes of the current message already received.
    bool started = false;
    bool finished = false;
    std::uint64_t start_ticks = 0;
    std::uint64_t start_count = 0;
    const auto account = [&](std::size_t n) {
      // Check the sequence word of every message whose first 8 bytes arrived in this read.
      std::size_t offset = 0;
      while (offset < n) {
        if (in_message == 0 && n - offset >= 8 && size >= 8) {
          errors += read_first_word({buffer_.data() + offset, 8}) != messages ? 1U : 0U;
        }
        const std::size_t take = std::min(size - in_message, n - offset);
        offset += take;
        in_message += take;
        if (in_message == size) {
          in_message = 0;
          ++messages;
        }
      }
      bytes += n;
    };
    for (;;) {
      if (finished) {
        // Acquire: pairs with the producer's release fetch_add after its count.
        if (board.producers_done.value.load(std::memory_order_acquire) != 0 &&
            // Relaxed: ordered by the acquire load above.
            messages >= board.produced_total.value.load(std::memory_order_relaxed)) {
          break;
        }
        if (!readable(read_fd_, 10)) continue;
      }
      const std::size_t n = receive_some(transport_, read_fd_, buffer_.data(), capacity);
      if (n == 0) throw RunError("the producer closed the transport");
      account(n);
      if (finished) continue;
      if (!started) {
        if (messages < params.warmup_messages) continue;
        started = true;
        start_ticks = clock.now();
        start_count = messages;
        continue;
      }
      const std::uint64_t now = clock.now();
      if (messages >= total ||
          (params.messages == 0 && now - start_ticks >= params.duration_ticks)) {
        report.measured_ticks = now - start_ticks;
        report.measured_messages = messages - start_count;
        finished = true;
        // Relaxed: a flag; the messages travel through the transport.
        board.consumer_stop.value.store(1, std::memory_order_relaxed);
      }
    }
    report.consumed_messages = messages;
    report.sequence_errors = errors;
    report.checksum = bytes;
  }

 private:
  Transport transport_;
  std::vector<Fd> fds_;
  int read_fd_ = -1;
  int write_fd_ = -1;
  std::vector<std::byte> buffer_;
};

}  // namespace

std::unique_ptr<Endpoint> open_ipc_endpoint(const EndpointSpec& spec, EndpointMode mode,
                                            BenchContext& context) {
  return std::make_unique<IpcEndpoint>(spec, mode, context);
}

std::unique_ptr<ChildEnd> open_ipc_child_end(const CommandParams& params, ChildContext& context) {
  return std::make_unique<IpcChildEnd>(params, context);
}

std::string endpoint_note(const Endpoint& endpoint) {
  if (const auto* ipc = dynamic_cast<const IpcEndpoint*>(&endpoint)) return ipc->note();
  return {};
}

}  // namespace shmem_bench
