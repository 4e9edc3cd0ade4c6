#include "kinds_support.hpp"

#include <ftw.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <random>

#include <gtest/gtest.h>

#include "weft/detail/layout.hpp"
#include "weft/idle.hpp"

namespace weft::kinds_test {

// ---- Directories -----------------------------------------------------------------------------

TempDir::TempDir() {
  char pattern[] = "/dev/shm/weft-kinds-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    std::fprintf(stderr, "mkdtemp(%s) failed: %s\n", pattern, std::strerror(errno));
    std::abort();
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  // Depth-first removal of everything below the directory, then the directory itself.
  nftw(
      path_.c_str(),
      [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

std::string TempDir::file(std::string_view name) const { return path_ + "/" + std::string(name); }

bool TempDir::exists(std::string_view name) const {
  struct stat st {};
  return ::stat(file(name).c_str(), &st) == 0;
}

ChannelOptions TempDir::options(ChannelKind kind, std::uint64_t capacity_bytes,
                                std::uint64_t record_bytes_max) const {
  ChannelOptions options;
  options.kind = kind;
  options.capacity_bytes = capacity_bytes;
  options.record_bytes_max = record_bytes_max;
  options.dir = path_;
  return options;
}

OpenOptions TempDir::open_options(bool read_only) const {
  OpenOptions options;
  options.dir = path_;
  options.read_only = read_only;
  return options;
}

// ---- Seeds, scale, time and random numbers ---------------------------------------------------

double test_scale() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts.
  const char* text = std::getenv("WEFT_TEST_SCALE");
  if (text == nullptr || text[0] == '\0') return 1.0;
  char* end = nullptr;
  const double scale = std::strtod(text, &end);
  if (end == text || !(scale > 0.0) || scale > 1000.0) {
    std::fprintf(stderr, "ignoring WEFT_TEST_SCALE=%s: expected a number in (0, 1000]\n", text);
    return 1.0;
  }
  return scale;
}

std::uint64_t scaled(std::uint64_t count, std::uint64_t count_min) {
  const double value = static_cast<double>(count) * test_scale();
  const auto result = static_cast<std::uint64_t>(value);
  return std::max(result, count_min);
}

std::uint64_t test_seed() {
  std::uint64_t seed = 0;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts.
  if (const char* text = std::getenv("WEFT_TEST_SEED"); text != nullptr && text[0] != '\0') {
    seed = std::strtoull(text, nullptr, 0);
  } else {
    std::random_device device;
    seed = (std::uint64_t{device()} << 32) ^ device();
  }
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::printf("[   SEED   ] %s.%s: WEFT_TEST_SEED=%" PRIu64 "\n",
              info != nullptr ? info->test_suite_name() : "?", info != nullptr ? info->name() : "?",
              seed);
  std::fflush(stdout);
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void spin_for_ns(std::int64_t ns) noexcept {
  const std::int64_t until = monotonic_ns() + ns;
  while (monotonic_ns() < until) cpu_relax();
}

std::uint64_t mix64(std::uint64_t a, std::uint64_t b) noexcept {
  Rng rng(a ^ (b * 0xd1342543de82ef95ULL));
  return rng.next();
}

std::string describe_channel(const Channel& channel) {
  const detail::ChannelHeader& header = *channel.header();
  std::string out = channel.path() + ": tail " +
                    std::to_string(header.producer.tail_position.load()) + ", head " +
                    std::to_string(header.consumer.head_position.load()) + ", unblocks " +
                    std::to_string(header.recovery.unblocks.load()) + ", detaches " +
                    std::to_string(header.recovery.detaches.load());
  const auto position = [](std::uint64_t value) {
    return value == detail::kNoPosition ? std::string("-") : std::to_string(value);
  };
  for (std::uint32_t i = 0; i < channel.producers_max(); ++i) {
    const detail::ProducerSlot& slot = channel.producer_slots()[i];
    if (slot.role.pid.load() == 0 && slot.chunk_start.load() == detail::kNoPosition) continue;
    out += "; producer slot " + std::to_string(i) + ": pid " +
           std::to_string(slot.role.pid.load()) + " intent [" + position(slot.intent.load()) +
           ", " + position(slot.intent_end.load()) + ") chunk [" +
           position(slot.chunk_start.load()) + ", " + position(slot.chunk_end.load()) + ") limit " +
           position(slot.chunk_limit.load()) + " writing " + position(slot.write_position.load()) +
           " given up [" + position(slot.given_up_start.load()) + ", " +
           position(slot.given_up_end.load()) + ") version " +
           std::to_string(slot.chunk_version.load());
  }
  if (channel.kind() == ChannelKind::kMpsc) {
    const std::uint64_t head = header.consumer.head_position.load();
    const std::uint64_t mask = channel.capacity_bytes() - 1;
    out += "; consumer taken [" + position(header.consumer.taken_start.load()) + ", " +
           position(header.consumer.taken_end.load()) + ") slot " +
           std::to_string(header.consumer.taken_slot.load()) + ", word at head " +
           std::to_string(
               reinterpret_cast<const std::atomic<std::uint64_t>*>(channel.ring() + (head & mask))
                   ->load());
  }
  for (std::uint32_t i = 0; i < channel.consumers_max(); ++i) {
    const detail::ConsumerSlot& slot = channel.consumer_slots()[i];
    if (slot.role.pid.load() == 0) continue;
    out += "; consumer slot " + std::to_string(i) + ": pid " +
           std::to_string(slot.role.pid.load()) + " head " + position(slot.head_position.load());
  }
  return out;
}

std::string dump_ring(const Channel& channel, std::uint64_t position, std::uint64_t before,
                      std::uint64_t after) {
  const std::uint64_t mask = channel.capacity_bytes() - 1;
  std::string out;
  const std::uint64_t from = (position > before ? position - before : 0) & ~std::uint64_t{7};
  for (std::uint64_t p = from; p < position + after; p += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, channel.ring() + (p & mask), 8);
    if (word == 0) continue;
    char line[96];
    std::snprintf(line, sizeof line, "\n  %llu (offset %llu): %016llx",
                  static_cast<unsigned long long>(p), static_cast<unsigned long long>(p & mask),
                  static_cast<unsigned long long>(word));
    out += line;
  }
  return out;
}

// ---- The self-checking record ----------------------------------------------------------------

std::size_t payload_bytes_for(std::uint64_t seed, std::uint32_t source, std::uint64_t sequence,
                              std::size_t small_max, std::size_t payload_max) noexcept {
  const std::uint64_t r = mix64(seed ^ (std::uint64_t{source} << 48), sequence);
  const std::size_t bytes = (r & 63) == 0 ? static_cast<std::size_t>((r >> 8) % (payload_max + 1))
                                          : static_cast<std::size_t>((r >> 8) % (small_max + 1));
  return std::min(bytes, payload_max);
}

namespace {

std::uint64_t record_key(std::uint32_t source, std::uint64_t sequence) noexcept {
  return mix64(std::uint64_t{source} + 0x51ed, sequence);
}

}  // namespace

void fill_pattern(std::span<std::byte> out, std::uint64_t key) noexcept {
  std::uint64_t x = mix64(key, 0x5eed);
  std::size_t offset = 0;
  while (offset + 8 <= out.size()) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    std::memcpy(out.data() + offset, &x, 8);
    offset += 8;
  }
  if (offset < out.size()) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    std::memcpy(out.data() + offset, &x, out.size() - offset);
  }
}

std::uint64_t checksum64(std::span<const std::byte> bytes, std::uint64_t key) noexcept {
  // 64-bit multiply-xorshift over 8-byte words, then the tail; enough to catch any torn or
  // shifted payload in a test.
  std::uint64_t h = key ^ (bytes.size() * 0x9e3779b97f4a7c15ULL);
  std::size_t offset = 0;
  while (offset + 8 <= bytes.size()) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes.data() + offset, 8);
    h = (h ^ word) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
    offset += 8;
  }
  if (offset < bytes.size()) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes.data() + offset, bytes.size() - offset);
    h = (h ^ word) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 31;
  }
  return h ^ (h >> 33);
}

void write_record(std::span<std::byte> out, std::uint32_t source, std::uint64_t sequence) noexcept {
  const std::span<std::byte> payload = out.subspan(kStampBytes);
  const std::uint64_t key = record_key(source, sequence);
  fill_pattern(payload, key);
  const Stamp stamp{source, static_cast<std::uint32_t>(payload.size()), sequence,
                    checksum64(payload, key)};
  std::memcpy(out.data(), &stamp, kStampBytes);
}

Stamp read_stamp(std::span<const std::byte> record) noexcept {
  Stamp stamp{};
  if (record.size() >= kStampBytes) std::memcpy(&stamp, record.data(), kStampBytes);
  return stamp;
}

std::string check_record(std::span<const std::byte> record) {
  if (record.size() < kStampBytes) {
    return "record of " + std::to_string(record.size()) + " bytes is too short for its stamp";
  }
  const Stamp stamp = read_stamp(record);
  if (stamp.payload_bytes != record.size() - kStampBytes) {
    return "record " + std::to_string(stamp.source) + "/" + std::to_string(stamp.sequence) +
           " has " + std::to_string(record.size() - kStampBytes) +
           " payload bytes, its stamp says " + std::to_string(stamp.payload_bytes);
  }
  if (checksum64(record.subspan(kStampBytes), record_key(stamp.source, stamp.sequence)) !=
      stamp.checksum) {
    return "record " + std::to_string(stamp.source) + "/" + std::to_string(stamp.sequence) +
           " fails its checksum (payload corrupted)";
  }
  return {};
}

// ---- Processes -------------------------------------------------------------------------------

std::string ChildStatus::describe() const {
  if (exited) return "exited with code " + std::to_string(exit_code);
  if (signal != 0) return std::string("killed by signal ") + strsignal(signal);
  return "still running";
}

namespace {

ChildStatus decode_status(int raw) {
  ChildStatus status;
  if (WIFEXITED(raw)) {
    status.exited = true;
    status.exit_code = WEXITSTATUS(raw);
  } else if (WIFSIGNALED(raw)) {
    status.signal = WTERMSIG(raw);
  }
  return status;
}

}  // namespace

ChildProcess::ChildProcess(const std::function<int()>& body) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) {
    std::fprintf(stderr, "fork failed: %s\n", std::strerror(errno));
    std::abort();
  }
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The parent may have died before prctl took effect.
    if (getppid() != parent) _exit(120);
    int code = 121;
    try {
      code = body();
    } catch (...) {
      code = 122;
    }
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(code);
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) kill_and_wait();
}

ChildStatus ChildProcess::wait() {
  if (reaped_) return status_;
  int raw = 0;
  while (waitpid(pid_, &raw, 0) < 0) {
    if (errno != EINTR) std::abort();
  }
  reaped_ = true;
  status_ = decode_status(raw);
  return status_;
}

void ChildProcess::kill_now() noexcept {
  if (!reaped_) ::kill(pid_, SIGKILL);
}

ChildStatus ChildProcess::kill_and_wait() {
  kill_now();
  return wait();
}

bool ChildProcess::poll_exited() {
  if (reaped_) return true;
  int raw = 0;
  const pid_t result = waitpid(pid_, &raw, WNOHANG);
  if (result != pid_) return false;
  reaped_ = true;
  status_ = decode_status(raw);
  return true;
}

void ChildMessage::set(std::string_view message) noexcept {
  std::uint32_t expected = 0;
  // Acq_rel: the first writer wins; the parent reads the text only after the child ended.
  if (!written.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return;
  const std::size_t count = std::min(message.size(), sizeof text - 1);
  std::memcpy(text, message.data(), count);
  text[count] = '\0';
}

bool ChildMessage::empty() const noexcept {
  // Acquire: pairs with the compare_exchange in set().
  return written.load(std::memory_order_acquire) == 0;
}

std::string ChildMessage::get() const {
  if (empty()) return "(no message)";
  return {text};
}

namespace {

const char* g_watchdog_what = nullptr;

void watchdog_fired(int) {
  char buffer[512];
  const int length = std::snprintf(buffer, sizeof buffer,
                                   "\nWATCHDOG: %s did not finish: a hang (a lost wake-up, a "
                                   "producer held back forever, a consumer that never unblocks)\n",
                                   g_watchdog_what != nullptr ? g_watchdog_what : "the test");
  if (length > 0) {
    const ssize_t ignored = ::write(2, buffer, static_cast<std::size_t>(length));
    static_cast<void>(ignored);
  }
  std::abort();
}

}  // namespace

Watchdog::Watchdog(unsigned seconds, const char* what) {
  g_watchdog_what = what;
  struct sigaction action {};
  action.sa_handler = watchdog_fired;
  sigemptyset(&action.sa_mask);
  sigaction(SIGALRM, &action, nullptr);
  alarm(seconds);
}

Watchdog::~Watchdog() {
  alarm(0);
  signal(SIGALRM, SIG_DFL);
  g_watchdog_what = nullptr;
}

// ---- Broadcast consumers ---------------------------------------------------------------------

int consume_until_end(BroadcastConsumer& consumer, ConsumerReport& report,
                      const std::atomic<std::uint64_t>* producer_sent, const ConsumeSpec& spec) {
  std::uint64_t next = 0;
  std::uint64_t received = 0;
  std::uint64_t gaps = 0;
  std::uint64_t lost_records = 0;
  std::uint64_t lost_bytes = 0;
  bool end = false;
  std::string problem;
  const auto handler = [&](std::span<const std::byte> record) {
    if (end) return;  // Records after the first end marker are not counted.
    const Stamp stamp = read_stamp(record);
    const std::string bad = check_record(record);
    if (!bad.empty() && problem.empty()) problem = bad;
    if (stamp.sequence < next && problem.empty()) {
      problem = "sequence " + std::to_string(stamp.sequence) + " after " + std::to_string(next - 1);
    }
    if (stamp.sequence >= next) gaps += stamp.sequence - next;
    next = stamp.sequence + 1;
    ++received;
    if (stamp.source == kEndSource) end = true;
    if (spec.slow_ns != 0) spin_for_ns(spec.slow_ns);
    if (spec.stall_every != 0 && producer_sent != nullptr && received % spec.stall_every == 0) {
      // Relaxed: a progress hint; being late only stalls longer.
      while (producer_sent->load(std::memory_order_relaxed) < next + spec.stall_records) {
        cpu_relax();
      }
    }
  };
  SpinThenWait idle;
  while (!end) {
    const BroadcastPollResult result = consumer.poll(handler);
    if (result.status == PollStatus::kCorrupted || result.status == PollStatus::kDetached) {
      report.message.set(result.status == PollStatus::kDetached
                             ? std::string("detached while alive")
                             : consumer.last_error().message());
      return 3;
    }
    lost_records += result.lost_records;
    lost_bytes += result.lost_bytes;
    if (result.count == 0 && result.lost_records == 0) idle.idle(consumer);
  }
  // Relaxed (all): read by the parent after this process ended.
  report.received.store(received, std::memory_order_relaxed);
  report.lost_records.store(lost_records, std::memory_order_relaxed);
  report.lost_bytes.store(lost_bytes, std::memory_order_relaxed);
  report.gaps.store(gaps, std::memory_order_relaxed);
  report.last_sequence.store(next - 1, std::memory_order_relaxed);
  report.lost_records_total.store(consumer.lost_records_total(), std::memory_order_relaxed);
  report.slot_lost_records.store(
      consumer.channel().consumer_slots()[consumer.slot_index()].lost_records.load(),
      std::memory_order_relaxed);
  report.done.store(1, std::memory_order_release);
  if (!problem.empty()) {
    report.message.set(problem);
    return 4;
  }
  return 0;
}

}  // namespace weft::kinds_test
