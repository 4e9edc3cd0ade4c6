#include "weft/error.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include "error_util.hpp"

namespace weft {

const char* errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kNotFound:
      return "not found";
    case Errc::kAlreadyExists:
      return "already exists";
    case Errc::kPermissionDenied:
      return "permission denied";
    case Errc::kBusy:
      return "busy";
    case Errc::kCorrupted:
      return "corrupted";
    case Errc::kVersionMismatch:
      return "version mismatch";
    case Errc::kNoMemory:
      return "out of memory";
    case Errc::kNoSpace:
      return "no space";
    case Errc::kUnsupported:
      return "unsupported";
    case Errc::kTimedOut:
      return "timed out";
    case Errc::kIoError:
      return "i/o error";
  }
  return "unknown error";
}

std::string Error::message() const {
  std::string out = where != nullptr ? where : "weft";
  out += ": ";
  out += errc_name(code);
  if (detail[0] != '\0') {
    out += ": ";
    out += detail;
  }
  if (sys_errno != 0) {
    char buffer[128];
    // GNU strerror_r returns the message, which may not be in `buffer`.
    const char* text = strerror_r(sys_errno, buffer, sizeof buffer);
    out += " (errno ";
    out += std::to_string(sys_errno);
    out += ": ";
    out += text;
    out += ")";
  }
  return out;
}

namespace detail {

Errc errc_from_errno(int err) noexcept {
  switch (err) {
    case ENOENT:
      return Errc::kNotFound;
    case EEXIST:
      return Errc::kAlreadyExists;
    case EACCES:
    case EPERM:
    case EROFS:
      return Errc::kPermissionDenied;
    case ENOMEM:
      return Errc::kNoMemory;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return Errc::kNoSpace;
    case ENOSYS:
    case EOPNOTSUPP:
    case ENODEV:
      return Errc::kUnsupported;
    case EINVAL:
    case ENAMETOOLONG:
      return Errc::kInvalidArgument;
    case EBUSY:
    case EAGAIN:
      return Errc::kBusy;
    case ETIMEDOUT:
      return Errc::kTimedOut;
    default:
      return Errc::kIoError;
  }
}

}  // namespace detail
}  // namespace weft
