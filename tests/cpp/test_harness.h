// SPDX-License-Identifier: Apache-2.0
// A minimal test harness for the CPU-side C++ tests (no dependency to install
// on CI or GPU machines). TEST(name) registers a case; EXPECT_* record
// failures and keep going; EXPECT_THROW_MSG checks an hpc_ops::Error's kind
// and that its message contains a substring. main() runs every case and ends
// with the line "N passed, N failed".
#pragma once

#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "hpc_ops/core/error.h"

namespace test {

struct Case {
  const char* name;
  std::function<void()> body;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
inline int& failures_in_case() {
  static int n = 0;
  return n;
}
struct Registrar {
  Registrar(const char* name, std::function<void()> body) {
    registry().push_back({name, std::move(body)});
  }
};

template <class T>
std::string str(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

inline void report(const char* file, int line, const std::string& what) {
  std::printf("  FAILED %s:%d: %s\n", file, line, what.c_str());
  ++failures_in_case();
}

inline int run_all() {
  int passed = 0, failed = 0;
  for (const Case& c : registry()) {
    failures_in_case() = 0;
    try {
      c.body();
    } catch (const std::exception& e) {
      report(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
    }
    if (failures_in_case() == 0) {
      ++passed;
      std::printf("[ok]   %s\n", c.name);
    } else {
      ++failed;
      std::printf("[FAIL] %s\n", c.name);
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace test

#define TEST_CONCAT_(a, b) a##b
#define TEST_CONCAT(a, b) TEST_CONCAT_(a, b)
#define TEST(name)                                                                  \
  static void name();                                                               \
  static ::test::Registrar TEST_CONCAT(registrar_, name)(#name, &name);             \
  static void name()

#define EXPECT_TRUE(cond) \
  do { if (!(cond)) ::test::report(__FILE__, __LINE__, "expected " #cond); } while (0)

#define EXPECT_EQ(a, b)                                                                  \
  do {                                                                                   \
    const auto va_ = (a);                                                                \
    const auto vb_ = (b);                                                                \
    if (!(va_ == vb_)) {                                                                 \
      ::test::report(__FILE__, __LINE__,                                                 \
                     std::string(#a " == " #b ": ") + ::test::str(va_) + " vs " +        \
                         ::test::str(vb_));                                           \
    }                                                                                    \
  } while (0)

// Runs stmt; expects hpc_ops::Error of `kind` whose message contains `substr`.
#define EXPECT_THROW_MSG(stmt, expected_kind, substr)                                             \
  do {                                                                                   \
    bool thrown_ = false;                                                                \
    try {                                                                                \
      stmt;                                                                              \
    } catch (const ::hpc_ops::Error& e_) {                                               \
      thrown_ = true;                                                                    \
      if (e_.kind() != (expected_kind)) {                                                       \
        ::test::report(__FILE__, __LINE__, std::string("wrong error kind: ") + e_.what()); \
      }                                                                                  \
      if (std::string(e_.what()).find(substr) == std::string::npos) {                    \
        ::test::report(__FILE__, __LINE__,                                               \
                       std::string("message lacks '") + (substr) + "': " + e_.what());   \
      }                                                                                  \
    }                                                                                    \
    if (!thrown_) ::test::report(__FILE__, __LINE__, "no hpc_ops::Error from " #stmt);   \
  } while (0)

#define TEST_MAIN() \
  int main() { return ::test::run_all(); }
