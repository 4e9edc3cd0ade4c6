// Channel files: create, open, validate, map and unlink a named shared-memory channel.
//
// A channel is one file in a directory (default /dev/shm/weft; $WEFT_SHM_DIR or the options
// override it): a 4 KiB header followed by a power-of-two data ring. Creation is atomic: the file
// is built and initialised under a temporary name and linked under its real name only when
// complete, so no process can ever open a half-initialised channel. Opening validates every header
// field against the file and reports the first bad one by name. Every mapping is prefaulted.
// Every read-write handle holds a shared flock(2) on the file, so that a channel whose users all
// died can be told from one in use (is_stale) and removed safely (remove_if_stale).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "weft/detail/layout.hpp"
#include "weft/export.hpp"
#include "weft/numa.hpp"
#include "weft/options.hpp"
#include "weft/result.hpp"

namespace weft {

namespace detail {
struct MappingOwner;  // Unmaps the file and closes its descriptor when the last handle goes.
}  // namespace detail

class WEFT_EXPORT Channel {
 public:
  // Creates channel `name` and maps it read-write. Fails with kAlreadyExists if it exists.
  // Requires: name is 1-63 characters of [A-Za-z0-9._-] and does not start with '.'.
  static Result<Channel> create(std::string_view name, const ChannelOptions& options = {});
  // Opens and validates an existing channel. Returns kNotFound, kPermissionDenied, kCorrupted
  // (naming the bad field) or kVersionMismatch on failure.
  static Result<Channel> open(std::string_view name, const OpenOptions& options = {});
  // Removes the channel's name. Processes that have it mapped keep using it until they unmap.
  static Result<void> unlink(std::string_view name, std::string_view dir = {});
  // The directory used for `dir`: itself if non-empty, else $WEFT_SHM_DIR, else /dev/shm/weft.
  static std::string resolve_dir(std::string_view dir);
  // True when no process has the channel open (every process that opens or creates a channel
  // holds a shared lock on its file until it closes it; the kernel drops the lock when a process
  // dies). Read-only opens take no lock. kNotFound if the channel does not exist.
  static Result<bool> is_stale(std::string_view name, std::string_view dir = {});
  // Removes the channel if it is stale, atomically with respect to processes opening it: an
  // opener that races with the removal notices and fails with kNotFound. Returns true if removed.
  static Result<bool> remove_if_stale(std::string_view name, std::string_view dir = {});

  // A second handle to the same mapping (same addresses, same lock), for a process that plays
  // two roles on one channel, e.g. a producer thread and a consumer thread. ThreadSanitizer
  // sees the ring's accesses only when both roles use one mapping.
  [[nodiscard]] Channel share() const;

  Channel(Channel&& other) noexcept;
  Channel& operator=(Channel&& other) noexcept;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ~Channel();

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] bool read_only() const noexcept { return read_only_; }
  // Values validated when the channel was opened; the data path trusts only these copies.
  [[nodiscard]] std::uint64_t capacity_bytes() const noexcept { return capacity_bytes_; }
  [[nodiscard]] std::uint64_t record_bytes_max() const noexcept { return record_bytes_max_; }
  [[nodiscard]] ChannelKind kind() const noexcept { return kind_; }
  [[nodiscard]] std::uint64_t header_bytes() const noexcept { return header_bytes_; }
  [[nodiscard]] std::uint32_t producers_max() const noexcept { return producers_max_; }
  [[nodiscard]] std::uint32_t consumers_max() const noexcept { return consumers_max_; }
  [[nodiscard]] bool lossy() const noexcept { return (flags_ & detail::kFlagLossy) != 0; }
  [[nodiscard]] std::uint64_t unblock_timeout_ns() const noexcept { return unblock_timeout_ns_; }
  [[nodiscard]] detail::ChannelHeader* header() const noexcept { return header_; }
  // MPSC producer slots and broadcast consumer slots (empty for other kinds).
  [[nodiscard]] detail::ProducerSlot* producer_slots() const noexcept {
    return reinterpret_cast<detail::ProducerSlot*>(reinterpret_cast<std::byte*>(header_) +
                                                   detail::kSlotsOffset);
  }
  [[nodiscard]] detail::ConsumerSlot* consumer_slots() const noexcept {
    return reinterpret_cast<detail::ConsumerSlot*>(reinterpret_cast<std::byte*>(header_) +
                                                   detail::kSlotsOffset +
                                                   producers_max_ * detail::kFalseSharingRange);
  }
  [[nodiscard]] std::byte* ring() const noexcept { return ring_; }
  [[nodiscard]] std::size_t mapped_bytes() const noexcept { return mapped_bytes_; }
  // Page size of the mapping: kBasePageBytes, or the huge page size of a hugetlbfs channel.
  [[nodiscard]] std::uint64_t page_bytes() const noexcept { return page_bytes_; }
  // The placement the creator asked for (from the header) and where the mapping's pages are now,
  // per node (a move_pages query: it moves nothing). For `weftctl show`. Without NUMA support
  // pages_known is false and only the requested values are filled.
  [[nodiscard]] Result<ChannelPlacement> placement() const;

 private:
  Channel() = default;
  void reset() noexcept;

  std::string name_;
  std::string path_;
  detail::ChannelHeader* header_ = nullptr;
  std::byte* ring_ = nullptr;
  std::size_t mapped_bytes_ = 0;
  std::uint64_t page_bytes_ = kBasePageBytes;
  std::uint32_t placement_flags_ = 0;
  std::int32_t numa_node_ = -1;
  std::int32_t numa_cpu_ = -1;
  std::uint64_t capacity_bytes_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  std::uint64_t header_bytes_ = 0;
  std::uint64_t unblock_timeout_ns_ = 0;
  std::uint32_t producers_max_ = 0;
  std::uint32_t consumers_max_ = 0;
  std::uint32_t flags_ = 0;
  ChannelKind kind_ = ChannelKind::kSpsc;
  int fd_ = -1;  // Holds the shared lock that marks the channel in use; -1 for read-only opens.
  std::shared_ptr<detail::MappingOwner> owner_;  // Shared by share()d handles.
  bool read_only_ = false;

  friend struct ChannelAccess;
};

}  // namespace weft
