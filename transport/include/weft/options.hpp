// Options for creating and opening channels.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace weft {

enum class ChannelKind : std::uint32_t {
  kSpsc = 1,       // One producer, one consumer.
  kMpsc = 2,       // Many producers, one consumer.
  kBroadcast = 3,  // One producer, many consumers, each with its own cursor.
};

inline constexpr const char* kDefaultShmDir = "/dev/shm/weft";
inline constexpr const char* kShmDirEnv = "WEFT_SHM_DIR";

struct ChannelOptions {
  ChannelKind kind = ChannelKind::kSpsc;
  // Bytes in the data ring; a power of two between 4 KiB and 1 TiB.
  std::uint64_t capacity_bytes = std::uint64_t{1} << 20;
  // Largest record payload; 0 means capacity_bytes / 4. At most capacity_bytes / 2 - 16.
  std::uint64_t record_bytes_max = 0;
  // File mode of the channel file, applied exactly (the umask does not narrow it).
  mode_t mode = 0600;
  // Directory holding channel files. Empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string dir;
  // MPSC: producer slots (producers attached at once), 1..1024.
  std::uint32_t producers_max = 64;
  // Broadcast: consumer slots (consumers attached at once), 1..1024.
  std::uint32_t consumers_max = 64;
  // Broadcast: lossy (the producer never waits; a consumer that falls a ring behind is told how
  // many records and bytes it lost) instead of reliable (the slowest live consumer holds the
  // producer back).
  bool lossy = false;
  // MPSC: how long a claim whose producer is dead may block the consumer before it becomes
  // padding.
  std::chrono::nanoseconds unblock_timeout = std::chrono::seconds(2);
};

struct OpenOptions {
  // Directory holding channel files. Empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string dir;
  // Map read-only: for inspection tools, which must never disturb a channel.
  bool read_only = false;
};

}  // namespace weft
