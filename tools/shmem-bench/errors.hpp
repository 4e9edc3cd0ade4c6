// The two ways shmem-bench fails: a usage error (bad flags or an impossible configuration, exit
// status 2) and a run error (a system call, the channel or the peer process failed, exit 1).
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace shmem_bench {

// The text of an errno value (strerror is not thread-safe; the recorder threads run beside this).
inline std::string errno_text(int err) { return std::generic_category().message(err); }

inline constexpr int kExitRunError = 1;
inline constexpr int kExitUsage = 2;

struct UsageError : std::runtime_error {
  explicit UsageError(const std::string& what) : std::runtime_error(what) {}
};

struct RunError : std::runtime_error {
  explicit RunError(const std::string& what) : std::runtime_error(what) {}
};

// A transport this machine does not offer as asked (a kernel limit, a missing privilege): the
// comparison reports it as skipped, with the reason, and goes on.
struct UnsupportedError : RunError {
  explicit UnsupportedError(const std::string& what) : RunError(what) {}
};

}  // namespace shmem_bench
