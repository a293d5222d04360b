// A minimal test harness for the native unit tests: TEST(name) registers a test, CHECK and CHECK_EQ
// record failures with file:line and keep going; test_main.cc runs every test and prints a summary.
#pragma once
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace check {

struct Test {
  const char* name;
  void (*fn)();
};

inline std::vector<Test>& registry() {
  static std::vector<Test> tests;
  return tests;
}

struct Registrar {
  Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

struct Counters {
  size_t checks = 0;
  size_t failures = 0;
};

inline Counters& counters() {
  static Counters c;
  return c;
}

// True for a null C string, which must not be turned into a string_view.
template <typename T>
bool is_null(const T& v) {
  if constexpr (std::is_pointer_v<T>) {
    return v == nullptr;
  } else {
    return false;
  }
}

// Renders a value for a failure message: strings quoted, enums and bytes as integers.
template <typename T>
std::string show(const T& v) {
  std::ostringstream os;
  if constexpr (std::is_enum_v<T>) {
    os << static_cast<long long>(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "true" : "false");
  } else if constexpr (std::is_same_v<T, char>) {
    os << "'" << v << "' (" << static_cast<int>(v) << ")";
  } else if constexpr (std::is_integral_v<T>) {
    os << +v;
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    if (is_null(v)) return "(null)";
    const std::string_view s = v;
    os << '"';
    for (char c : s) {
      if (c >= 0x20 && c < 0x7F) {
        os << c;
      } else {
        char hex[5];
        std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
        os << hex;
      }
    }
    os << '"';
  } else {
    os << "<value>";
  }
  return os.str();
}

inline void fail(const char* file, int line, const std::string& what) {
  counters().failures++;
  std::fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, what.c_str());
}

inline void check(bool ok, const char* file, int line, const char* expr) {
  counters().checks++;
  if (!ok) fail(file, line, expr);
}

template <typename A, typename B>
void check_eq(const A& a, const B& b, const char* file, int line, const char* ea, const char* eb) {
  counters().checks++;
  bool equal;
  if constexpr (std::is_integral_v<A> && std::is_integral_v<B> && !std::is_same_v<A, bool>)
    equal = static_cast<long long>(a) == static_cast<long long>(b) ||
            static_cast<unsigned long long>(a) == static_cast<unsigned long long>(b);
  else if constexpr (std::is_convertible_v<const A&, std::string_view> &&
                     std::is_convertible_v<const B&, std::string_view>)
    equal = (is_null(a) || is_null(b)) ? is_null(a) && is_null(b)
                                        : std::string_view(a) == std::string_view(b);
  else
    equal = a == b;
  if (!equal) fail(file, line, std::string(ea) + " == " + eb + "  (" + show(a) + " vs " + show(b) + ")");
}

}  // namespace check

#define CHECK_CONCAT2(a, b) a##b
#define CHECK_CONCAT(a, b) CHECK_CONCAT2(a, b)

// Defines and registers a test; the name is a C++ identifier describing the behaviour tested.
#define TEST(name)                                                   \
  static void name();                                                \
  static ::check::Registrar CHECK_CONCAT(registrar_, name)(#name, name); \
  static void name()

#define CHECK(cond) ::check::check(static_cast<bool>(cond), __FILE__, __LINE__, #cond)
#define CHECK_EQ(a, b) ::check::check_eq((a), (b), __FILE__, __LINE__, #a, #b)
