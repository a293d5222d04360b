#!/bin/sh
# npm run test:asan: end-to-end suites against the addon built with AddressSanitizer and UBSan
# (native/test/Makefile, target addon), on epoll, then the first two again on io_uring.
set -e
cd "$(dirname "$0")/.."
preload="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export STARLING_ADDON="$PWD/native/test/build/asan/starling.node"
export LD_PRELOAD="$preload"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
node --test --test-concurrency=1 dist/test/20.server.test.js dist/test/30.hostile.test.js dist/test/13.entitlement.test.js \
  dist/test/14.entitlement-random.test.js dist/test/50.bench-smoke.test.js \
  dist/test/98.cluster.test.js dist/test/98.cluster-hostile.test.js
sh test/uring-pass.sh dist/test/20.server.test.js dist/test/30.hostile.test.js
