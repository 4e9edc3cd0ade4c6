// A one-line progress display on stderr while the benchmark runs: only when stderr is a terminal
// and the output is not JSON, and erased before anything else is printed. Nothing else in the
// program writes to the terminal while a run is in progress.
#pragma once

#include <cstdint>
#include <string>

namespace shmem_bench {

class Progress {
 public:
  // Enabled when `wanted` and stderr is a terminal.
  explicit Progress(bool wanted);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Phases this run will take, for the [done/total] counter; 0 leaves the counter out.
  void set_total(std::uint64_t phases) noexcept { total_ = phases; }
  void add_total(std::uint64_t phases) noexcept { total_ += phases; }
  // Shows `label` as the phase now running.
  void phase(const std::string& label);
  // Erases the line (before printing results).
  void clear();
  [[nodiscard]] bool enabled() const noexcept { return enabled_; }

 private:
  bool enabled_;
  bool shown_ = false;
  std::uint64_t total_ = 0;
  std::uint64_t done_ = 0;
  std::uint64_t start_ns_;
};

}  // namespace shmem_bench
