// The channel fuzz harness; the input format is described in channel_fuzz.hpp.
#include "fuzz/channel_fuzz.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include "shm/validate.hpp"
#include "weft/channel.hpp"
#include "weft/detail/layout.hpp"
#include "weft/spsc.hpp"

namespace weft::fuzz {
namespace {

using detail::ChannelHeader;
using detail::ChannelMeta;

constexpr const char* kChannelName = "fuzz";
constexpr std::uint64_t kFileBytes = detail::kHeaderBytes + kRingBytes;
constexpr int kConsumerStepsMax = 96;
constexpr int kProducerStepsMax = 8;

Stats g_stats;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "channel_fuzz: BUG: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

std::uint64_t read_u64(const std::uint8_t* data, std::size_t size, std::size_t offset) {
  std::uint64_t value = 0;
  if (offset < size) std::memcpy(&value, data + offset, std::min<std::size_t>(8, size - offset));
  return value;
}

std::uint8_t read_u8(const std::uint8_t* data, std::size_t size, std::size_t offset) {
  return offset < size ? data[offset] : 0;
}

// The directory and file the harness reuses for every input, removed at exit (or by
// remove_workspace() from a signal handler).
class Workspace {
 public:
  static Workspace& get() {
    static Workspace workspace;
    return workspace;
  }
  ~Workspace() { remove(); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  [[nodiscard]] std::string dir() const { return dir_; }
  [[nodiscard]] std::string path() const { return path_; }
  // Async-signal-safe: plain arrays and system calls only.
  void remove() noexcept {
    ::unlink(path_);
    ::rmdir(dir_);
  }

 private:
  // Under $WEFT_FUZZ_WORK_DIR when set (ctest points it into the build tree, since libFuzzer
  // ends a timed-out run with _Exit and leaves the directory behind), else under /dev/shm.
  Workspace() {
    const char* parent = std::getenv("WEFT_FUZZ_WORK_DIR");
    if (parent == nullptr || parent[0] == '\0') parent = "/dev/shm";
    if (std::snprintf(dir_, sizeof dir_, "%s/weft-fuzz-XXXXXX", parent) >=
        static_cast<int>(sizeof dir_)) {
      fail("WEFT_FUZZ_WORK_DIR is too long");
    }
    if (mkdtemp(dir_) == nullptr) fail("mkdtemp failed");
    std::snprintf(path_, sizeof path_, "%s/%s", dir_, kChannelName);
  }
  char dir_[512] = {};
  char path_[600] = {};
};

template <class T>
void put(std::uint8_t* image, std::size_t offset, T value) {
  std::memcpy(image + offset, &value, sizeof value);
}

// (a): validate_header over arbitrary bytes and an arbitrary claimed file size.
void fuzz_validate(const std::uint8_t* data, std::size_t size) {
  alignas(ChannelHeader) static std::uint8_t header[detail::kHeaderBytes];
  std::memset(header, 0, sizeof header);
  const std::uint64_t claimed = read_u64(data, size, 0);
  if (size > 8) std::memcpy(header, data + 8, std::min<std::size_t>(size - 8, sizeof header));
  auto meta = detail::validate_header(*reinterpret_cast<const ChannelHeader*>(header), claimed,
                                      "fuzz-header");
  if (!meta) {
    const Errc code = meta.error().code;
    if (code != Errc::kCorrupted && code != Errc::kVersionMismatch) fail("unexpected error code");
    if (meta.error().detail[0] == '\0') fail("an error without a message");
    return;
  }
  ++g_stats.headers_accepted;
  // Paired assertions: what validation accepts is what the data path assumes.
  if (meta->kind != detail::ChannelKind::kSpsc) fail("accepted an unknown kind");
  if (!std::has_single_bit(meta->capacity_bytes)) fail("accepted a non-power-of-two capacity");
  if (meta->capacity_bytes < detail::kCapacityBytesMin ||
      meta->capacity_bytes > detail::kCapacityBytesMax) {
    fail("accepted a capacity out of range");
  }
  if (claimed != detail::kHeaderBytes + meta->capacity_bytes) fail("accepted a wrong file size");
  if (meta->record_bytes_max == 0 ||
      meta->record_bytes_max > detail::record_bytes_max_limit(meta->capacity_bytes)) {
    fail("accepted a record_bytes_max the ring cannot hold");
  }
}

// Builds the file image for (b).
void build_image(const std::uint8_t* data, std::size_t size, std::uint8_t* image) {
  std::memset(image, 0, kFileBytes);
  const std::uint64_t record_max = 1 + (read_u64(data, size, kRecordMaxOffset) & 0xffff) %
                                           detail::record_bytes_max_limit(kRingBytes);
  const std::uint64_t head = read_u64(data, size, kHeadOffset);
  std::uint64_t tail = read_u64(data, size, kTailOffset);
  if ((read_u8(data, size, kFlagsOffset) & 1) != 0) {
    tail = (head + tail % (2 * kRingBytes)) & ~std::uint64_t{7};
  }
  constexpr std::size_t kMeta = offsetof(ChannelHeader, meta);
  put(image, kMeta + offsetof(ChannelMeta, magic), detail::kChannelMagic);
  put(image, kMeta + offsetof(ChannelMeta, layout_version), detail::kLayoutVersion);
  put(image, kMeta + offsetof(ChannelMeta, kind),
      static_cast<std::uint32_t>(detail::ChannelKind::kSpsc));
  put(image, kMeta + offsetof(ChannelMeta, size_bytes), kFileBytes);
  put(image, kMeta + offsetof(ChannelMeta, header_bytes), detail::kHeaderBytes);
  put(image, kMeta + offsetof(ChannelMeta, capacity_bytes), std::uint64_t{kRingBytes});
  put(image, kMeta + offsetof(ChannelMeta, record_bytes_max), record_max);
  std::memcpy(image + kMeta + offsetof(ChannelMeta, name), kChannelName,
              std::strlen(kChannelName) + 1);
  put(image, offsetof(ChannelHeader, producer) + offsetof(detail::ProducerBlock, tail_position),
      tail);
  put(image, offsetof(ChannelHeader, consumer) + offsetof(detail::ConsumerBlock, head_position),
      head);
  if (size > kRingOffset) {
    std::memcpy(image + detail::kHeaderBytes, data + kRingOffset,
                std::min<std::size_t>(size - kRingOffset, kRingBytes));
  }
}

// Checks a span the ring handed out and reads every byte of it.
void check_span(std::span<const std::byte> bytes, const Channel& channel) {
  const std::byte* ring = channel.ring();
  if (bytes.size() > channel.record_bytes_max()) fail("a record above record_bytes_max");
  if (!bytes.empty()) {
    if (bytes.data() < ring + detail::kRecordHeaderBytes) fail("a record before the ring");
    if (bytes.data() + bytes.size() > ring + channel.capacity_bytes()) {
      fail("a record past the ring's end");
    }
  }
  unsigned sum = 0;
  for (const std::byte b : bytes) sum += static_cast<unsigned>(b);
  static std::atomic<unsigned> sink{0};
  // Relaxed: only keeps the reads from being optimised away.
  sink.fetch_add(sum, std::memory_order_relaxed);
}

// Reads with a consumer for a bounded number of steps chosen by the script, read from
// `script_start` on, round and round.
void run_consumer(const std::uint8_t* script, std::size_t script_start) {
  OpenOptions options;
  options.dir = Workspace::get().dir();
  auto consumer = SpscConsumer::open(kChannelName, options);
  if (!consumer) {
    if (consumer.error().code == Errc::kBusy) fail("a role still held by this process");
    return;
  }
  ++g_stats.channels_opened;
  const Channel& channel = consumer->channel();
  std::byte buffer[256];
  int empty_steps = 0;
  for (int step = 0; step < kConsumerStepsMax; ++step) {
    const std::uint8_t op = script[(static_cast<std::size_t>(step) + script_start) % kScriptBytes];
    const std::uint64_t before = consumer->position();
    bool corrupted = false;
    bool empty = false;
    switch (op % 3) {
      case 0: {
        std::size_t handed = 0;
        const PollResult result = consumer->poll(
            [&](std::span<const std::byte> bytes) {
              check_span(bytes, channel);
              ++handed;
              ++g_stats.records_read;
            },
            1 + (op >> 2) % 8);
        if (handed != result.count) fail("poll miscounted");
        corrupted = result.status == PollStatus::kCorrupted;
        empty = result.status == PollStatus::kEmpty;
        break;
      }
      case 1: {
        const PeekResult next = consumer->peek();
        if (next.status == PollStatus::kOk) {
          check_span(next.bytes, channel);
          ++g_stats.records_read;
          if ((op & 4) != 0) consumer->release();
        }
        corrupted = next.status == PollStatus::kCorrupted;
        empty = next.status == PollStatus::kEmpty;
        break;
      }
      default: {
        const std::size_t room = (op >> 2) % 2 == 0 ? 8 : sizeof buffer;
        const RecvResult received = consumer->try_recv(std::span<std::byte>(buffer, room));
        if (received.status == RecvStatus::kOk && received.size > room) fail("try_recv overran");
        if (received.status == RecvStatus::kTooSmall && received.size <= room) {
          fail("kTooSmall for a record that fits");
        }
        if (received.status == RecvStatus::kOk) ++g_stats.records_read;
        corrupted = received.status == RecvStatus::kCorrupted;
        empty = received.status == RecvStatus::kEmpty;
        break;
      }
    }
    // Positions are 64-bit counters compared modulo 2^64: a fuzzed head near 2^64 may wrap (a
    // real ring never gets there), so "forward" means a small unsigned difference.
    if (consumer->position() - before > (std::uint64_t{1} << 62)) {
      fail("the consumer moved backwards");
    }
    if (corrupted) {
      ++g_stats.corruptions_found;
      if (!consumer->corrupted()) fail("kCorrupted without corrupted()");
      if (consumer->last_error().code != Errc::kCorrupted) fail("kCorrupted with a wrong code");
      if (consumer->poll([](std::span<const std::byte>) {}).status != PollStatus::kCorrupted) {
        fail("corruption was not sticky");
      }
      return;
    }
    if (empty && ++empty_steps > 2) return;
  }
}

// Writes a few records with a producer; its attach walks records past tail_position.
void run_producer(const std::uint8_t* script) {
  OpenOptions options;
  options.dir = Workspace::get().dir();
  auto producer = SpscProducer::open(kChannelName, options);
  if (!producer) {
    if (producer.error().code == Errc::kBusy) fail("a role still held by this process");
    return;
  }
  ++g_stats.producers_attached;
  const Channel& channel = producer->channel();
  for (int step = 0; step < kProducerStepsMax; ++step) {
    const std::uint8_t op = script[static_cast<std::size_t>(step) % kScriptBytes];
    const std::size_t bytes = static_cast<std::size_t>(op) * 9 % (channel.record_bytes_max() + 2);
    const ClaimResult claim = producer->try_claim(bytes);
    if (claim.status == ClaimStatus::kTooLarge) {
      if (bytes <= channel.record_bytes_max()) fail("kTooLarge for an allowed size");
      continue;
    }
    if (claim.status != ClaimStatus::kOk) return;
    check_span(claim.bytes, channel);
    std::memset(claim.bytes.data(), op, claim.bytes.size());
    if ((op & 1) != 0) {
      producer->abort();
    } else {
      producer->commit(claim.bytes.size() - (op >> 1) % (claim.bytes.size() + 1));
      ++g_stats.records_written;
    }
  }
}

// (b): the channel file.
void fuzz_channel(const std::uint8_t* data, std::size_t size) {
  alignas(ChannelHeader) static std::uint8_t image[kFileBytes];
  build_image(data, size, image);
  const Workspace& workspace = Workspace::get();
  const int fd = ::open(workspace.path().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot open the fuzz channel file");
  const bool written = ::pwrite(fd, image, kFileBytes, 0) == static_cast<ssize_t>(kFileBytes) &&
                       ::ftruncate(fd, static_cast<off_t>(kFileBytes)) == 0;
  ::close(fd);
  if (!written) fail("cannot write the fuzz channel file");

  std::uint8_t script[kScriptBytes] = {};
  if (size > kScriptOffset) {
    std::memcpy(script, data + kScriptOffset, std::min(size - kScriptOffset, kScriptBytes));
  }
  run_consumer(script, 0);
  run_producer(script);
  run_consumer(script, 1);
}

}  // namespace

const Stats& stats() noexcept { return g_stats; }

void remove_workspace() noexcept { Workspace::get().remove(); }

void run_one(const std::uint8_t* data, std::size_t size) {
  ++g_stats.inputs;
  fuzz_validate(data, size);
  fuzz_channel(data, size);
}

std::vector<std::vector<std::uint8_t>> make_seed_inputs() {
  std::vector<std::vector<std::uint8_t>> seeds;
  char pattern[] = "/dev/shm/weft-fuzz-seed-XXXXXX";
  if (mkdtemp(pattern) == nullptr) fail("mkdtemp failed");
  const std::string dir = pattern;
  ChannelOptions create_options;
  create_options.dir = dir;
  create_options.capacity_bytes = kRingBytes;
  OpenOptions open_options;
  open_options.dir = dir;

  // Snapshots the channel as a (b) input, and its header as an (a) input.
  const auto snapshot = [&](const Channel& channel, std::uint8_t flags) {
    std::vector<std::uint8_t> input(kInputBytesMax, 0);
    input[kFlagsOffset] = flags;
    const std::uint64_t record_max = channel.record_bytes_max() - 1;
    std::memcpy(input.data() + kRecordMaxOffset, &record_max, 2);
    // Acquire (both): pair with the roles' release stores.
    const std::uint64_t head =
        channel.header()->consumer.head_position.load(std::memory_order_acquire);
    const std::uint64_t tail =
        channel.header()->producer.tail_position.load(std::memory_order_acquire);
    std::memcpy(input.data() + kHeadOffset, &head, 8);
    std::memcpy(input.data() + kTailOffset, &tail, 8);
    for (std::size_t i = 0; i < kScriptBytes; ++i) {
      input[kScriptOffset + i] = static_cast<std::uint8_t>(i * 37 + flags);
    }
    std::memcpy(input.data() + kRingOffset, channel.ring(), kRingBytes);
    seeds.push_back(input);

    std::vector<std::uint8_t> header(8 + detail::kHeaderBytes);
    const std::uint64_t file_bytes = channel.mapped_bytes();
    std::memcpy(header.data(), &file_bytes, 8);
    std::memcpy(header.data() + 8, channel.header(), detail::kHeaderBytes);
    seeds.push_back(header);
  };

  const auto scenario = [&](const char* name, std::uint64_t record_bytes_max, auto&& body) {
    create_options.record_bytes_max = record_bytes_max;
    auto producer = SpscProducer::create(name, create_options);
    auto consumer = SpscConsumer::open(name, open_options);
    if (!producer || !consumer) fail("cannot build a seed channel");
    body(*producer, *consumer);
    snapshot(producer->channel(), static_cast<std::uint8_t>(seeds.size()));
  };
  const auto send = [](SpscProducer& producer, std::size_t bytes, std::uint8_t fill) {
    const ClaimResult claim = producer.try_claim(bytes);
    if (!claim) return false;
    std::memset(claim.bytes.data(), fill, bytes);
    producer.commit();
    return true;
  };
  const auto drain = [](SpscConsumer& consumer, std::size_t records_max) {
    static_cast<void>(consumer.poll([](std::span<const std::byte>) {}, records_max));
  };

  scenario("empty", 0, [](SpscProducer&, SpscConsumer&) {});
  scenario("some", 0, [&](SpscProducer& p, SpscConsumer&) {
    for (std::size_t i = 0; i < 12; ++i) send(p, i * 13, static_cast<std::uint8_t>(i));
  });
  scenario("full", 0, [&](SpscProducer& p, SpscConsumer&) {
    for (std::uint8_t i = 0; send(p, 100, i); ++i) {
    }
  });
  scenario("wrapped", 0, [&](SpscProducer& p, SpscConsumer& c) {
    for (std::uint8_t i = 0; i < 40; ++i) {
      if (!send(p, 300, i)) drain(c, 3);
    }
    drain(c, 2);
  });
  scenario("padding", 0, [&](SpscProducer& p, SpscConsumer& c) {
    for (std::uint8_t i = 0; i < 4; ++i) send(p, 1000, i);
    drain(c, 4);
    send(p, 1000, 9);  // Needs padding before it.
    send(p, 0, 10);
  });
  scenario("largest", 2032, [&](SpscProducer& p, SpscConsumer& c) {
    for (std::uint8_t i = 0; i < 5; ++i) {
      if (!send(p, 2032, i)) drain(c, 1);
    }
  });
  scenario("zero", 0, [&](SpscProducer& p, SpscConsumer&) {
    for (std::uint8_t i = 0; i < 30; ++i) send(p, 0, i);
  });
  scenario("dead-producer", 0, [&](SpscProducer& p, SpscConsumer& c) {
    for (std::uint8_t i = 0; i < 6; ++i) send(p, 200, i);
    drain(c, 2);
    // Release: rewinds tail_position as a producer killed before its last store leaves it.
    p.channel().header()->producer.tail_position.store(208, std::memory_order_release);
  });

  for (const char* name :
       {"empty", "some", "full", "wrapped", "padding", "largest", "zero", "dead-producer"}) {
    static_cast<void>(Channel::unlink(name, dir));
  }
  ::rmdir(dir.c_str());
  return seeds;
}

}  // namespace weft::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  weft::fuzz::run_one(data, size);
  return 0;
}
