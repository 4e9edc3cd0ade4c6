// The journal's fault-injection seam: a hook that sees every io_uring completion before the
// journal does and may change its result, so tests can inject EIO, ENOSPC, short writes, -EAGAIN
// and fsync failures without a failing disk. File system calls go through the sys/ seam.
#pragma once

#include <cstdint>

#include "weft/export.hpp"

namespace weft::journal {

enum class IoOp : std::uint8_t { kWrite, kFsync };

struct Faults {
  // Returns the result the journal should see for a completion of `op` that returned `result`
  // for a request of `requested` bytes (0 for fsync). Null: results pass unchanged.
  int (*completion)(IoOp op, int result, std::uint32_t requested, void* context) = nullptr;
  void* context = nullptr;
};

// The hook in use. Tests set it and must reset it; not thread-safe to change while a journal
// in this process has flushes in flight.
WEFT_EXPORT Faults& faults() noexcept;

}  // namespace weft::journal
