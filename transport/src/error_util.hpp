// Building Error values: the one place that turns errno into an Errc.
#pragma once

#include <utility>

#include <fmt/format.h>

#include "weft/error.hpp"
#include "weft/result.hpp"

namespace weft::detail {

// Maps an errno from a file or memory system call to what the caller can do next.
Errc errc_from_errno(int err) noexcept;

template <class... Args>
Error make_error(Errc code, int sys_errno, const char* where, fmt::format_string<Args...> format,
                 Args&&... args) noexcept {
  Error e{code, sys_errno, where, {}};
  try {
    const auto out =
        fmt::format_to_n(e.detail, Error::kDetailBytesMax - 1, format, std::forward<Args>(args)...);
    *out.out = '\0';
  } catch (...) {
    e.detail[0] = '\0';
  }
  return e;
}

template <class... Args>
unexpected fail(Errc code, int sys_errno, const char* where, fmt::format_string<Args...> format,
                Args&&... args) noexcept {
  return unexpected(make_error(code, sys_errno, where, format, std::forward<Args>(args)...));
}

// For a failed system call: the code comes from errno.
template <class... Args>
unexpected fail_errno(int err, const char* where, fmt::format_string<Args...> format,
                      Args&&... args) noexcept {
  return fail(errc_from_errno(err), err, where, format, std::forward<Args>(args)...);
}

}  // namespace weft::detail
