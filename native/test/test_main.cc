// Runs every registered test (or those whose name contains argv[1]) and prints a summary. Exits 1 if
// any check failed.
#include <cstring>

#include "check.h"

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  size_t run = 0, failed_tests = 0;
  for (const check::Test& t : check::registry()) {
    if (filter != nullptr && std::strstr(t.name, filter) == nullptr) continue;
    const size_t before = check::counters().failures;
    t.fn();
    run++;
    if (check::counters().failures != before) {
      failed_tests++;
      std::fprintf(stderr, "FAILED %s\n", t.name);
    }
  }
  std::printf("native unit tests: %zu run, %zu failed, %zu checks, %zu check failures\n", run, failed_tests,
              check::counters().checks, check::counters().failures);
  return failed_tests == 0 ? 0 : 1;
}
