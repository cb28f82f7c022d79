// result<T>: a value or an operating error, as a negative errno (the io_uring convention).
//
// Used on every path that can fail for reasons outside the program (disk, network, kernel).
// It is a plain aggregate: no exceptions, no allocation. Reading value() of an error is a
// programmer error and asserts.
#pragma once

#include <cstring>
#include <utility>

#include "ringmta/core/assert.h"

namespace ringmta::core {

struct error_code {
  int errno_value;  // positive errno, e.g. ENOSPC
};

// Builds the error side: `return core::fail(ENOSPC);` or `return core::fail(-cqe_res);`.
inline error_code fail(int errno_value) noexcept {
  RINGMTA_ASSERT(errno_value > 0);
  return error_code{errno_value};
}

template <typename T>
class [[nodiscard]] result {
 public:
  result(T value) noexcept : _value(std::move(value)), _errno(0) {}  // NOLINT: implicit by design
  result(error_code error) noexcept : _value(), _errno(error.errno_value) {}  // NOLINT

  bool ok() const noexcept { return _errno == 0; }
  explicit operator bool() const noexcept { return ok(); }
  int error() const noexcept { return _errno; }  // positive errno, 0 when ok
  const char* error_text() const noexcept { return ok() ? "ok" : std::strerror(_errno); }

  T& value() & noexcept {
    RINGMTA_ASSERT(ok());
    return _value;
  }
  const T& value() const& noexcept {
    RINGMTA_ASSERT(ok());
    return _value;
  }
  T&& value() && noexcept {
    RINGMTA_ASSERT(ok());
    return std::move(_value);
  }

 private:
  T _value;
  int _errno;
};

template <>
class [[nodiscard]] result<void> {
 public:
  result() noexcept : _errno(0) {}
  result(error_code error) noexcept : _errno(error.errno_value) {}  // NOLINT

  bool ok() const noexcept { return _errno == 0; }
  explicit operator bool() const noexcept { return ok(); }
  int error() const noexcept { return _errno; }
  const char* error_text() const noexcept { return ok() ? "ok" : std::strerror(_errno); }

 private:
  int _errno;
};

}  // namespace ringmta::core
