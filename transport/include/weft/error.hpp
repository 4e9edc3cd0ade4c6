// Errors at the API boundary: a code chosen by what the caller can do next, the errno that caused
// it, and a message a person can act on. Error never allocates and is trivially copyable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "weft/export.hpp"

namespace weft {

// What the caller should do next decides the code, not where the failure happened.
enum class Errc : std::uint8_t {
  kInvalidArgument = 1,  // Fix the call: a bad name, size or option.
  kNotFound,             // The channel or file does not exist: create it or check the directory.
  kAlreadyExists,        // Open it instead, or remove the old one first.
  kPermissionDenied,     // Change the file's owner/mode or run as a user who may open it.
  kBusy,                 // The role is held by a live process: retry later or use another name.
  kCorrupted,            // Shared memory or a file holds bytes that break the format: give up.
  kVersionMismatch,      // Written by another layout version: upgrade the older side.
  kNoMemory,             // Out of memory or address space: free some, or use a smaller ring.
  kNoSpace,              // The file system is full: free space or choose another directory.
  kUnsupported,          // A kernel or file-system feature is missing.
  kTimedOut,             // Nothing happened within the deadline: retry or give up.
  kIoError,              // Any other system-call failure: see sys_errno.
};

// Returns a stable lower-case name for `code`, such as "corrupted".
WEFT_EXPORT const char* errc_name(Errc code) noexcept;

struct Error {
  static constexpr std::size_t kDetailBytesMax = 240;

  Errc code;
  int sys_errno;                 // 0 when no system call failed.
  const char* where;             // A static string naming the operation, such as "channel open".
  char detail[kDetailBytesMax];  // NUL-terminated: which channel, file or field, and what to do.

  // Returns "where: detail (strerror(sys_errno))".
  [[nodiscard]] WEFT_EXPORT std::string message() const;
};

static_assert(std::is_trivially_copyable_v<Error>, "Error is copied by value across the API");

}  // namespace weft
