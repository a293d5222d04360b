#!/usr/bin/env bash
# The first hour of a new user: clone this checkout into a temporary folder and run the README's two commands
# exactly as written (`npm install`, `npm test`), as on a machine with only the build tools: the optional
# programs are hidden from the suites (HIDE_TEST_PROGRAMS makes test/helpers.ts describeWith report them
# missing, so their suites are skipped with one line saying what to install) and CI is unset (with CI=true they
# would be required). Not part of `npm test` (it runs `npm test`); .ci/run calls it after its own steps.
# Clones the committed HEAD: uncommitted changes are not in the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d "${TMPDIR:-/tmp}/starling-fresh-clone.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
# mktemp makes the folder 0700; a checkout is normally readable by others, and test/70.tune.test.ts runs the CLI
# as nobody (uid 65534), which must be able to reach it.
chmod 755 "$tmp"
start=$(date +%s)

git clone -q "$PWD" "$tmp"
echo "fresh-clone: $(git -C "$tmp" log -1 --format='%h %s') cloned into $tmp"
cd "$tmp"

# The README's first block, line by line, as written (comments removed).
commands=$(awk '/^```/{n++; next} n==1' README.md | sed 's/ *#.*$//' | sed '/^$/d')
if [ "$commands" != $'npm install\nnpm test' ]; then
  echo "fresh-clone: FAILED: the README's first block is no longer 'npm install' and 'npm test':" >&2
  printf '%s\n' "$commands" >&2
  exit 1
fi

run() {
  echo "fresh-clone: \$ $1"
  if ! env -u CI HIDE_TEST_PROGRAMS=chromium,nats-server,redis-server bash -c "$1"; then
    echo "fresh-clone: FAILED: '$1' in a fresh clone (optional programs hidden, CI unset), after $(( $(date +%s) - start )) s" >&2
    exit 1
  fi
}
mapfile -t lines <<< "$commands"
for command in "${lines[@]}"; do run "$command" </dev/null; done

echo "fresh-clone: PASSED: npm install and npm test in a fresh clone (chromium, nats-server and redis-server hidden, CI unset) in $(( $(date +%s) - start )) s"
