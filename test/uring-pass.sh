#!/bin/sh
# The second pass of `npm test`: the suites that start servers through test/helpers.ts (startServer), run again
# on the io_uring backend (the first pass ran them on epoll); or the test files given as arguments (test/asan.sh).
# Skipped, with the reason, where this kernel cannot run io_uring; required in CI (CI=true).
set -e
cd "$(dirname "$0")/.."
why=$(node -e "process.stdout.write(require('./dist/src/native').addon.ioUring().unavailable)")
if [ -n "$why" ]; then
  if [ "$CI" = "true" ]; then
    echo "io_uring pass: required in CI, but the io_uring backend cannot run here: $why" >&2
    exit 1
  fi
  echo "# io_uring pass skipped: $why (needs Linux 6.7 or later with io_uring allowed)"
  exit 0
fi
echo "# io_uring pass: the server suites again with IoBackend = io_uring"
if [ $# -gt 0 ]; then
  TEST_IO_BACKEND=io_uring exec node --test --test-concurrency=1 "$@"
fi
TEST_IO_BACKEND=io_uring exec node --test --test-concurrency=1 \
  dist/test/13.entitlement.test.js dist/test/14.entitlement-hostile.test.js dist/test/14.entitlement-random.test.js \
  dist/test/20.server.test.js dist/test/25.workgroups.test.js dist/test/30.hostile.test.js \
  dist/test/32.core-defects.test.js dist/test/33.core-defects.test.js dist/test/34.core-defects.test.js \
  dist/test/35.recovery.test.js dist/test/36.recovery-hostile.test.js \
  dist/test/38.http.test.js dist/test/39.http-hostile.test.js dist/test/41.http-auth.test.js \
  dist/test/60.monitor.test.js dist/test/62.monitor-limits.test.js \
  dist/test/90.client.test.js dist/test/90.client-protocol.test.js dist/test/90.client-restart.test.js \
  dist/test/91.client-fuzz.test.js dist/test/92.client-auth.test.js dist/test/93.entitlement-browser.test.js dist/test/94.sse-browser.test.js \
  dist/test/98.cluster.test.js dist/test/98.cluster-hostile.test.js
