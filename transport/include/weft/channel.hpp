// Channel files: create, open, validate, map and unlink a named shared-memory channel.
//
// A channel is one file in a directory (default /dev/shm/weft; $WEFT_SHM_DIR or the options
// override it): a 4 KiB header followed by a power-of-two data ring. Creation is atomic: the file
// is built and initialised under a temporary name and linked under its real name only when
// complete, so no process can ever open a half-initialised channel. Opening validates every header
// field against the file and reports the first bad one by name. Every mapping is prefaulted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "weft/detail/layout.hpp"
#include "weft/export.hpp"
#include "weft/options.hpp"
#include "weft/result.hpp"

namespace weft {

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
  [[nodiscard]] detail::ChannelKind kind() const noexcept { return kind_; }
  [[nodiscard]] detail::ChannelHeader* header() const noexcept { return header_; }
  [[nodiscard]] std::byte* ring() const noexcept { return ring_; }
  [[nodiscard]] std::size_t mapped_bytes() const noexcept { return mapped_bytes_; }

 private:
  Channel() = default;
  void reset() noexcept;

  std::string name_;
  std::string path_;
  detail::ChannelHeader* header_ = nullptr;
  std::byte* ring_ = nullptr;
  std::size_t mapped_bytes_ = 0;
  std::uint64_t capacity_bytes_ = 0;
  std::uint64_t record_bytes_max_ = 0;
  detail::ChannelKind kind_ = detail::ChannelKind::kSpsc;
  bool read_only_ = false;

  friend struct ChannelAccess;
};

}  // namespace weft
