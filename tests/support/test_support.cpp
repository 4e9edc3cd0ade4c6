#include "support/test_support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

namespace weft::test {

// ---- Directories and files -------------------------------------------------------------------

TempDir::TempDir() {
  char pattern[] = "/dev/shm/weft-test-XXXXXX";
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

std::vector<std::string> TempDir::list() const {
  std::vector<std::string> names;
  DIR* dir = opendir(path_.c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

ChannelOptions TempDir::channel_options(std::uint64_t capacity_bytes,
                                        std::uint64_t record_bytes_max) const {
  ChannelOptions options;
  options.capacity_bytes = capacity_bytes;
  options.record_bytes_max = record_bytes_max;
  options.dir = path_;
  return options;
}

OpenOptions TempDir::open_options() const {
  OpenOptions options;
  options.dir = path_;
  return options;
}

void pwrite_file(const std::string& path, std::uint64_t offset, const void* bytes,
                 std::size_t count) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << "open " << path << ": " << std::strerror(errno);
  const ssize_t written = ::pwrite(fd, bytes, count, static_cast<off_t>(offset));
  const int err = errno;
  ::close(fd);
  ASSERT_EQ(written, static_cast<ssize_t>(count))
      << "pwrite " << path << ": " << std::strerror(err);
}

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_size);
}

unsigned file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<unsigned>(st.st_mode) & 07777U;
}

std::size_t open_fd_count() {
  std::size_t count = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;  // Includes the descriptor of the directory being read; constant across calls.
}

bool maps_mention(std::string_view needle) {
  std::FILE* file = std::fopen("/proc/self/maps", "re");
  if (file == nullptr) return false;
  char line[4096];
  bool found = false;
  while (std::fgets(line, sizeof line, file) != nullptr) {
    if (std::string_view(line).find(needle) != std::string_view::npos) {
      found = true;
      break;
    }
  }
  std::fclose(file);
  return found;
}

bool is_mapped(const void* address) {
  // msync wants a page-aligned address, and fails with ENOMEM exactly when the range is not
  // mapped.
  auto* byte = const_cast<char*>(static_cast<const char*>(address));
  byte -= reinterpret_cast<std::uintptr_t>(byte) % 4096;
  return msync(byte, 1, MS_ASYNC) == 0;
}

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): tests change the environment single-threaded.
  if (const char* old = std::getenv(name)) {
    had_value_ = true;
    old_value_ = old;
  }
  if (value != nullptr) {
    setenv(name, value, 1);
  } else {
    unsetenv(name);
  }
}

ScopedEnv::~ScopedEnv() {
  if (had_value_) {
    setenv(name_.c_str(), old_value_.c_str(), 1);
  } else {
    unsetenv(name_.c_str());
  }
}

ScopedUmask::ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
ScopedUmask::~ScopedUmask() { ::umask(old_); }

// ---- Seeds, scale and random numbers ---------------------------------------------------------

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

std::uint64_t mix64(std::uint64_t a, std::uint64_t b) noexcept {
  Rng rng(a ^ (b * 0xd1342543de82ef95ULL));
  return rng.next();
}

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

// ---- The self-checking record ----------------------------------------------------------------

std::size_t payload_bytes_for(std::uint64_t seed, std::uint64_t sequence,
                              std::size_t payload_bytes_max) noexcept {
  const std::uint64_t r = mix64(seed, sequence);
  std::size_t bytes = (r & 63) == 0 ? static_cast<std::size_t>(200 + (r >> 8) % 1801)
                                    : static_cast<std::size_t>((r >> 8) % 201);
  return std::min(bytes, payload_bytes_max);
}

void write_record(std::span<std::byte> out, std::uint64_t sequence) noexcept {
  const std::span<std::byte> payload = out.subspan(kStampBytes);
  fill_pattern(payload, sequence);
  const std::uint64_t checksum = XXH64(payload.data(), payload.size(), sequence);
  std::memcpy(out.data(), &sequence, 8);
  std::memcpy(out.data() + 8, &checksum, 8);
}

std::uint64_t record_sequence(std::span<const std::byte> record) noexcept {
  std::uint64_t sequence = 0;
  if (record.size() >= 8) std::memcpy(&sequence, record.data(), 8);
  return sequence;
}

std::string check_record(std::span<const std::byte> record, std::uint64_t expected_sequence,
                         std::size_t expected_bytes) {
  if (record.size() < kStampBytes) {
    return "record of " + std::to_string(record.size()) + " bytes is too short for its stamp" +
           " (expected sequence " + std::to_string(expected_sequence) + ")";
  }
  std::uint64_t sequence = 0;
  std::uint64_t checksum = 0;
  std::memcpy(&sequence, record.data(), 8);
  std::memcpy(&checksum, record.data() + 8, 8);
  if (sequence != expected_sequence) {
    return "sequence " + std::to_string(sequence) + ", expected " +
           std::to_string(expected_sequence) +
           (sequence < expected_sequence ? " (duplicate or reordered)" : " (records lost)");
  }
  if (record.size() != expected_bytes) {
    return "record " + std::to_string(sequence) + " has " + std::to_string(record.size()) +
           " bytes, expected " + std::to_string(expected_bytes);
  }
  const std::span<const std::byte> payload = record.subspan(kStampBytes);
  if (XXH64(payload.data(), payload.size(), sequence) != checksum) {
    return "record " + std::to_string(sequence) + " fails its checksum (payload corrupted)";
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
  // Acquire: pairs with the child's compare_exchange in set().
  return written.load(std::memory_order_acquire) == 0;
}

std::string ChildMessage::get() const {
  if (empty()) return "(no message from the child)";
  return {text};
}

namespace {

const char* g_watchdog_what = nullptr;
const std::atomic<std::uint64_t>* g_watchdog_progress = nullptr;

void watchdog_fired(int) {
  char buffer[512];
  const std::uint64_t progress =
      g_watchdog_progress != nullptr ? g_watchdog_progress->load(std::memory_order_relaxed) : 0;
  const int length =
      std::snprintf(buffer, sizeof buffer,
                    "\nWATCHDOG: %s did not finish (progress counter %" PRIu64
                    "): a hang, such as a lost wake-up\n",
                    g_watchdog_what != nullptr ? g_watchdog_what : "the test", progress);
  if (length > 0) {
    const ssize_t ignored = ::write(2, buffer, static_cast<std::size_t>(length));
    static_cast<void>(ignored);
  }
  std::abort();
}

}  // namespace

Watchdog::Watchdog(unsigned seconds, const char* what, const std::atomic<std::uint64_t>* progress) {
  g_watchdog_what = what;
  g_watchdog_progress = progress;
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
  g_watchdog_progress = nullptr;
}

ChildStatus run_with_deadline(unsigned seconds, const std::function<int()>& body) {
  ChildProcess child([&] {
    signal(SIGALRM, SIG_DFL);
    alarm(seconds);
    return body();
  });
  return child.wait();
}

}  // namespace weft::test
