// Options for creating and opening channels.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace weft {

inline constexpr const char* kDefaultShmDir = "/dev/shm/weft";
inline constexpr const char* kShmDirEnv = "WEFT_SHM_DIR";

struct ChannelOptions {
  // Bytes in the data ring; a power of two between 4 KiB and 1 TiB.
  std::uint64_t capacity_bytes = std::uint64_t{1} << 20;
  // Largest record payload; 0 means capacity_bytes / 4. At most capacity_bytes / 2 - 16.
  std::uint64_t record_bytes_max = 0;
  // File mode of the channel file, applied exactly (the umask does not narrow it).
  mode_t mode = 0600;
  // Directory holding channel files. Empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string dir;
};

struct OpenOptions {
  // Directory holding channel files. Empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string dir;
  // Map read-only: for inspection tools, which must never disturb a channel.
  bool read_only = false;
};

}  // namespace weft
