#!/bin/bash
# Where a server's CPU goes on one workload: the kernel's TCP send of the deliveries (the part every server that
# writes each message with its own send pays), waking the subscribers, receiving the publishes, page faults and
# user space, as shares of a perf profile of the server; and the cores the server and the two load tools use
# over the same window. The result files this made say "floor" (bench/results/floor-*.md).
#
#   bash bench/floor.sh [--clients N] <workload: W1 | W2> <server spec>...
#   e.g. bash bench/floor.sh W1 uws starling:IoBackend=io_uring starling
#
# Each server runs `compare.js --workloads <workload> --seconds 20` alone; from its 9th second, `perf record -g`
# samples the server for 10 s (~2 % CPU of overhead at 1,999 Hz) while /proc/<pid>/stat gives the three processes'
# CPU. Needs perf (linux-perf) and the right to profile the server (root, or kernel.perf_event_paranoid ≤ 1).
# Run nothing else meanwhile: the machine's two cores are shared by all three processes.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
while [[ ${1:-} == --* ]]; do extra+=("$1" "$2"); shift 2; done
workload=${1:?usage: floor.sh [--clients N] W1|W2 <server spec>...}
shift
command -v perf > /dev/null || { echo "floor.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "| server | workload | CPU µs/msg | cores: server / benchsub / benchpub | TCP send of deliveries | of it, waking subscribers | receiving publishes | page faults | user space |"
echo "|---|---|---|---|---|---|---|---|---|"
for server in "$@"; do
  node dist/bench/compare.js --servers "$server" --workloads "$workload" --seconds 20 --out "$tmp/results" "${extra[@]}" > "$tmp/run.log" 2>&1 &
  cp=$!
  sleep 9
  pid=$(pgrep -P $cp -f 'cli.js serve|peers/' | head -1)
  sub=$(pgrep -P $cp -f 'cli.js benchsub' | head -1)
  pub=$(pgrep -P $cp -f 'cli.js benchpub' | head -1)
  t0=($(ticks "$pid") $(ticks "$sub") $(ticks "$pub"))
  perf record -F 1999 -g -p "$pid" -o "$tmp/perf.data" -- sleep 10 > /dev/null 2>&1
  t1=($(ticks "$pid") $(ticks "$sub") $(ticks "$pub"))
  wait $cp
  hz=$(getconf CLK_TCK)
  cores=$(awk -v hz="$hz" -v a="${t0[*]}" -v b="${t1[*]}" 'BEGIN {split(a, x); split(b, y); printf "%.2f / %.2f / %.2f", (y[1]-x[1])/hz/10, (y[2]-x[2])/hz/10, (y[3]-x[3])/hz/10}')
  cpu=$(grep -o '"cpuMicrosPerMessage":[0-9.]*' "$tmp/run.log" | head -1 | cut -d: -f2)
  perf report -i "$tmp/perf.data" --children --sort sym 2> /dev/null | grep -E '^ +[0-9.]+%' > "$tmp/children.txt"
  # A symbol's share with its callees (the first row that names it), and that share of the CPU per message.
  share() { awk -v s="$1" -v cpu="$cpu" '$4 == s {v = $1; sub("%", "", v); printf "%.1f %% (%.1f µs)", v, v * cpu / 100; f = 1; exit} END {if (!f) printf "0 %%"}' "$tmp/children.txt"; }
  user=$(perf report -i "$tmp/perf.data" --no-children --sort dso 2> /dev/null | grep -E '^ +[0-9.]+%' | grep -v '\[kernel' | awk -v cpu="$cpu" '{v = $1; sub("%", "", v); s += v} END {printf "%.1f %% (%.1f µs)", s, s * cpu / 100}')
  printf '| %s | %s | %.2f | %s | %s | %s | %s | %s | %s |\n' "$server" "$workload" "$cpu" "$cores" \
    "$(share tcp_sendmsg)" "$(share sock_def_readable)" "$(share tcp_recvmsg)" "$(share asm_exc_page_fault)" "$user"
done
