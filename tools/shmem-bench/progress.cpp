// The progress line; see progress.hpp.
#include "progress.hpp"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

#include "timebase.hpp"

namespace shmem_bench {

Progress::Progress(bool wanted)
    : enabled_(wanted && isatty(STDERR_FILENO) != 0), start_ns_(monotonic_ns()) {}

Progress::~Progress() { clear(); }

void Progress::phase(const std::string& label) {
  if (!enabled_) return;
  ++done_;
  const double elapsed_s = static_cast<double>(monotonic_ns() - start_ns_) / 1e9;
  std::string counter =
      total_ != 0 ? fmt::format("[{:>3}/{}] ", std::min(done_, total_), total_) : std::string{};
  // \r and "erase to end of line": the line is rewritten in place.
  fmt::print(stderr, "\r\x1b[K{}{:5.1f} s  {}", counter, elapsed_s, label);
  std::fflush(stderr);
  shown_ = true;
}

void Progress::clear() {
  if (!enabled_ || !shown_) return;
  fmt::print(stderr, "\r\x1b[K");
  std::fflush(stderr);
  shown_ = false;
}

}  // namespace shmem_bench
