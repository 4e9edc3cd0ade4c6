// Helpers shared by the weft test programs: private temporary channel directories, seeds and
// scale factors, child processes, shared counters, and the self-checking record format that the
// stress, multi-process and crash tests send through channels.
//
// Every test creates its channels in its own TempDir (under /dev/shm, never /dev/shm/weft), so
// test programs can run in parallel and leave nothing behind.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/options.hpp"

namespace weft::test {

// ---- Directories and files -------------------------------------------------------------------

// A fresh directory under /dev/shm (mkdtemp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  // The path of `name` inside the directory.
  [[nodiscard]] std::string file(std::string_view name) const;
  // The names in the directory (hidden ones included), sorted.
  [[nodiscard]] std::vector<std::string> list() const;
  [[nodiscard]] ChannelOptions channel_options(std::uint64_t capacity_bytes = std::uint64_t{1}
                                                                              << 16,
                                               std::uint64_t record_bytes_max = 0) const;
  [[nodiscard]] OpenOptions open_options() const;

 private:
  std::string path_;
};

// Writes `bytes` at `offset` of the file at `path` with pwrite(2); aborts the test on failure.
void pwrite_file(const std::string& path, std::uint64_t offset, const void* bytes,
                 std::size_t count);
template <class T>
void pwrite_value(const std::string& path, std::uint64_t offset, const T& value) {
  pwrite_file(path, offset, &value, sizeof value);
}
// Returns the size of the file at `path`.
std::uint64_t file_size(const std::string& path);
// Returns the permission bits (07777) of the file at `path`.
unsigned file_mode(const std::string& path);
// Returns the number of open file descriptors of this process.
std::size_t open_fd_count();
// Returns true when /proc/self/maps mentions `needle`. A channel mapped by its creator shows
// under the temporary name it was built under, marked "(deleted)".
bool maps_mention(std::string_view needle);
// Returns true when the page holding `address` is mapped in this process.
bool is_mapped(const void* address);

// Sets (or, with nullptr, unsets) an environment variable and restores it on destruction.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::string old_value_;
  bool had_value_ = false;
};

// Sets the process umask and restores it on destruction.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask);
  ~ScopedUmask();
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

// ---- Seeds, scale and random numbers ---------------------------------------------------------

// WEFT_TEST_SCALE (default 1.0): sanitizer builds set it below 1 to shorten the long tests.
double test_scale();
// `count` scaled by test_scale(), at least `count_min`.
std::uint64_t scaled(std::uint64_t count, std::uint64_t count_min = 1);
// The seed of the current test: WEFT_TEST_SEED when set, else a fresh random one. It is printed
// and recorded as a test property so that a failure can be replayed.
std::uint64_t test_seed();

// SplitMix64: small, fast and good enough to drive tests deterministically from a seed.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound). Requires: bound > 0.
  std::uint64_t below(std::uint64_t bound) noexcept { return next() % bound; }
  // Uniform in [low, high].
  std::uint64_t between(std::uint64_t low, std::uint64_t high) noexcept {
    return low + below(high - low + 1);
  }
  // True with probability 1 / n.
  bool one_in(std::uint64_t n) noexcept { return below(n) == 0; }

 private:
  std::uint64_t state_;
};

// Mixes two values into one well-spread 64-bit value.
std::uint64_t mix64(std::uint64_t a, std::uint64_t b) noexcept;

// Fills `out` with bytes determined by `key`.
void fill_pattern(std::span<std::byte> out, std::uint64_t key) noexcept;

// ---- The self-checking record ----------------------------------------------------------------
//
// A test record is a 16-byte stamp (the 64-bit sequence number, then the XXH64 of the payload
// seeded with the sequence number) followed by a payload whose length is a pure function of the
// run's seed and the sequence number. A receiver recomputes the length and the checksum, so a
// lost, duplicated, reordered, truncated or corrupted record is always detected.

inline constexpr std::size_t kStampBytes = 16;

// Payload length of record `sequence`: mostly 0..200 bytes, one in 64 up to 2000 bytes, never
// above `payload_bytes_max`.
std::size_t payload_bytes_for(std::uint64_t seed, std::uint64_t sequence,
                              std::size_t payload_bytes_max = 2000) noexcept;
// Record bytes (stamp + payload) of record `sequence`.
inline std::size_t record_bytes_for(std::uint64_t seed, std::uint64_t sequence,
                                    std::size_t payload_bytes_max = 2000) noexcept {
  return kStampBytes + payload_bytes_for(seed, sequence, payload_bytes_max);
}
// Writes record `sequence` into `out`. Requires: out.size() >= kStampBytes.
void write_record(std::span<std::byte> out, std::uint64_t sequence) noexcept;
// Returns the sequence number stored in a record (0 if it is too short to hold one).
std::uint64_t record_sequence(std::span<const std::byte> record) noexcept;
// Checks a received record: its size, its sequence number and its checksum. Returns "" when it is
// intact, else a description of what is wrong. Does not allocate when the record is intact.
std::string check_record(std::span<const std::byte> record, std::uint64_t expected_sequence,
                         std::size_t expected_bytes);

// ---- Processes -------------------------------------------------------------------------------

// How a child process ended.
struct ChildStatus {
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  [[nodiscard]] bool ok() const noexcept { return exited && exit_code == 0; }
  [[nodiscard]] std::string describe() const;
};

// A forked child that runs `body` and _exits with its return value. The child dies with its
// parent (PR_SET_PDEATHSIG), so a test killed by its ctest TIMEOUT leaves no process behind.
// The destructor SIGKILLs and reaps a child that is still running.
class ChildProcess {
 public:
  explicit ChildProcess(const std::function<int()>& body);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // Waits for the child to end and reaps it.
  ChildStatus wait();
  // Sends SIGKILL (no reaping).
  void kill_now() noexcept;
  // Sends SIGKILL, then waits and reaps.
  ChildStatus kill_and_wait();
  // Returns true when the child has ended (it is then reaped and its status stored).
  bool poll_exited();
  [[nodiscard]] bool reaped() const noexcept { return reaped_; }
  [[nodiscard]] const ChildStatus& status() const noexcept { return status_; }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  ChildStatus status_;
};

// An object of type T in anonymous shared memory: a fork()ed child and its parent see the same
// one. T must be usable across processes (atomics that are always lock-free, plain data).
template <class T>
class SharedBlock {
 public:
  SharedBlock() {
    void* memory =
        mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    object_ = new (memory) T();
  }
  ~SharedBlock() {
    object_->~T();
    munmap(object_, sizeof(T));
  }
  SharedBlock(const SharedBlock&) = delete;
  SharedBlock& operator=(const SharedBlock&) = delete;
  T* operator->() const noexcept { return object_; }
  T& operator*() const noexcept { return *object_; }

 private:
  T* object_ = nullptr;
};

// A failure report a child writes for its parent to print.
struct ChildMessage {
  std::atomic<std::uint32_t> written{0};
  char text[1024] = {};
  // Stores the first message only.
  void set(std::string_view message) noexcept;
  [[nodiscard]] bool empty() const noexcept;
  [[nodiscard]] std::string get() const;
};

// Turns a hang into a failure with a message: after `seconds` it prints `what` with the value of
// `*progress` (when given) and aborts. The timeout is far above any normal run time; it exists so
// that a lost wake-up fails with a diagnosis instead of waiting for the ctest TIMEOUT.
class Watchdog {
 public:
  Watchdog(unsigned seconds, const char* what,
           const std::atomic<std::uint64_t>* progress = nullptr);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
};

// Runs `body` in a child process with an alarm of `seconds`: returns its status, where a
// signal SIGALRM means that `body` did not return in time (a hang).
ChildStatus run_with_deadline(unsigned seconds, const std::function<int()>& body);

}  // namespace weft::test
