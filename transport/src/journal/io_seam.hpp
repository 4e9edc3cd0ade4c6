// The journal's fault-injection seam: a hook that sees every io_uring completion before the
// journal does and may change its result, so tests can inject EIO, ENOSPC, short writes, -EAGAIN
// and fsync failures without a failing disk. File system calls go through the sys/ seam.
#pragma once

#include <cstdint>

#include "weft/export.hpp"

namespace weft::journal {

// kSegmentStart: any request of the chain that starts a segment (its header write, the header's
// fdatasync, the rename, the directory's fsync); `requested` is the header's size for its write.
enum class IoOp : std::uint8_t { kWrite, kFsync, kSegmentStart };

struct Faults {
  // Returns the result the journal should see for a completion of `op` that returned `result`
  // for a request of `requested` bytes (0 for fsync). Null: results pass unchanged.
  int (*completion)(IoOp op, int result, std::uint32_t requested, void* context) = nullptr;
  void* context = nullptr;
  // Read when a journal opens: start segments synchronously, as on a kernel that cannot rename
  // through io_uring.
  bool synchronous_segment_start = false;
};

// The hook in use. Tests set it and must reset it; not thread-safe to change while a journal
// in this process has flushes in flight.
WEFT_EXPORT Faults& faults() noexcept;

}  // namespace weft::journal
