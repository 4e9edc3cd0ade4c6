// Result<T>: a value or an Error, with std::expected's member names so that moving to C++23
// replaces it with an alias. It builds with g++ 12 and clang 14 against libstdc++ 12, where
// <expected> does not.
#pragma once

#include <cstdlib>
#include <type_traits>
#include <utility>
#include <variant>

#include "weft/error.hpp"

namespace weft {

// Wraps an Error so that `return weft::unexpected(e);` converts to any Result<T>.
class unexpected {  // NOLINT(readability-identifier-naming): mirrors std::unexpected.
 public:
  explicit unexpected(const Error& e) noexcept : error_(e) {}
  [[nodiscard]] const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result(T value) noexcept(std::is_nothrow_move_constructible_v<T>)  // NOLINT: implicit by design.
      : storage_(std::in_place_index<0>, std::move(value)) {}
  Result(unexpected u) noexcept  // NOLINT(google-explicit-constructor): implicit by design.
      : storage_(std::in_place_index<1>, u.error()) {}

  [[nodiscard]] bool has_value() const noexcept { return storage_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  // Requires: has_value(). Calling it on an error is a bug and aborts.
  T& value() & { return checked(); }
  [[nodiscard]] const T& value() const& { return const_cast<Result*>(this)->checked(); }
  T&& value() && { return std::move(checked()); }
  T& operator*() & { return checked(); }
  [[nodiscard]] const T& operator*() const& { return const_cast<Result*>(this)->checked(); }
  T&& operator*() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->checked(); }

  // Requires: !has_value().
  [[nodiscard]] const Error& error() const {
    if (has_value()) std::abort();
    return std::get<1>(storage_);
  }

 private:
  T& checked() {
    if (!has_value()) std::abort();
    return std::get<0>(storage_);
  }
  std::variant<T, Error> storage_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;

  Result() noexcept = default;
  Result(unexpected u) noexcept  // NOLINT(google-explicit-constructor): implicit by design.
      : ok_(false), error_(u.error()) {}

  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  void value() const {
    if (!ok_) std::abort();
  }
  [[nodiscard]] const Error& error() const {
    if (ok_) std::abort();
    return error_;
  }

 private:
  bool ok_ = true;
  Error error_{};
};

}  // namespace weft
