#!/usr/bin/env bash
# Huge pages for Starling's native heap. The history cache's messages are in huge pages already (2 MiB chunks
# Starling asks the kernel for: THP mode madvise or always); the rest (connection structs, subject index, write
# queues: ~292 B per idle connection, ~3 GB at 10M) is glibc malloc's, which can back it with huge pages too:
#
#   GLIBC_TUNABLES=glibc.malloc.hugetlb=1   malloc asks for transparent huge pages (madvise) — needs THP mode
#                                           "madvise" or "always"; nothing to reserve (glibc >= 2.35)
#   GLIBC_TUNABLES=glibc.malloc.hugetlb=2   malloc uses reserved hugetlb pages (vm.nr_hugepages), falling back
#                                           to normal pages when they run out
#
# Fewer TLB misses when a broadcast walks millions of connections; the cost is memory rounded up to 2 MiB
# pieces. The kernel's own socket memory (~3.8 KB per idle TCP socket) is not affected by any of this.
#
#   tuning/hugepages.sh status                  THP mode, reserved pages, and huge-page use of running Starlings
#   tuning/hugepages.sh reserve SIZE [--dry-run] reserve hugetlb pages for SIZE bytes (4G, 512M) for hugetlb=2
#   tuning/hugepages.sh release [--dry-run]      give the reserved pages back (vm.nr_hugepages = 0)
#   tuning/hugepages.sh thp MODE [--dry-run]     set transparent huge pages to always | madvise | never
#
# Changes do not survive a reboot: put vm.nr_hugepages in /etc/sysctl.d (or hugepages=N on the kernel command
# line, which is the reliable way to get many pages before memory fragments), and the THP mode on the kernel
# command line (transparent_hugepage=madvise).
set -euo pipefail

usage() {
  sed -n '14,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

THP=/sys/kernel/mm/transparent_hugepage/enabled
NR=/proc/sys/vm/nr_hugepages

meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

# "4G" / "512M" / "1048576" -> bytes
bytes_of() {
  local v=$1 n unit
  [[ $v =~ ^([0-9]+)([KkMmGgTt]?)[iI]?[bB]?$ ]] || { echo "hugepages: bad size '$v' (e.g. 4G, 512M)" >&2; exit 2; }
  n=${BASH_REMATCH[1]}
  unit=${BASH_REMATCH[2],,}
  case "$unit" in
    k) echo $((n << 10)) ;;
    m) echo $((n << 20)) ;;
    g) echo $((n << 30)) ;;
    t) echo $((n << 40)) ;;
    *) echo "$n" ;;
  esac
}

need_root() {
  [ "$(id -u)" -eq 0 ] || { echo "hugepages: $1 needs root; add --dry-run to see what it would do" >&2; exit 1; }
}

status() {
  local page_kb total free mode pid
  page_kb=$(meminfo Hugepagesize)
  total=$(meminfo HugePages_Total)
  free=$(meminfo HugePages_Free)
  mode=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$THP" 2>/dev/null || echo unknown)
  echo "transparent huge pages: $mode   (the history cache's chunks and glibc.malloc.hugetlb=1 need madvise or always)"
  echo "hugetlb pages: $total reserved, $free free, $((page_kb / 1024)) MiB each = $((total * page_kb / 1024)) MiB   (for glibc.malloc.hugetlb=2)"
  echo "anonymous memory in transparent huge pages, whole system: $(($(meminfo AnonHugePages) / 1024)) MiB"
  for pid in $(pgrep -f 'dist/src/cli.js serve' 2>/dev/null || true); do
    [ -r "/proc/$pid/smaps_rollup" ] || continue
    local rss anon tun
    rss=$(awk '$1 == "Rss:" { print $2 }' "/proc/$pid/smaps_rollup")
    anon=$(awk '$1 == "AnonHugePages:" { print $2 }' "/proc/$pid/smaps_rollup")
    tun=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^GLIBC_TUNABLES=//p')
    echo "starling pid $pid: RSS $((rss / 1024)) MiB, of which $((anon / 1024)) MiB in transparent huge pages; GLIBC_TUNABLES=${tun:-(unset)}"
  done
}

reserve() {
  local size=$1 dry=$2 page_kb pages got
  page_kb=$(meminfo Hugepagesize)
  pages=$((($(bytes_of "$size") + page_kb * 1024 - 1) / (page_kb * 1024)))
  echo "reserve $pages huge pages of $((page_kb / 1024)) MiB for $size (now $(cat $NR))"
  if [ "$dry" -eq 1 ]; then
    echo "  echo $pages > $NR"
    echo "dry run: nothing changed"
    return
  fi
  need_root reserve
  echo "$pages" >"$NR"
  got=$(cat $NR)
  if [ "$got" -lt "$pages" ]; then
    echo "hugepages: the kernel found only $got of $pages pages (memory is fragmented); reserve at boot with hugepages=$pages on the kernel command line" >&2
    exit 1
  fi
  echo "reserved $got pages; start Starling with GLIBC_TUNABLES=glibc.malloc.hugetlb=2"
}

release() {
  local dry=$1
  echo "release $(cat $NR) huge pages"
  if [ "$dry" -eq 1 ]; then
    echo "  echo 0 > $NR"
    echo "dry run: nothing changed"
    return
  fi
  need_root release
  echo 0 >"$NR"
  echo "now $(cat $NR) reserved"
}

thp() {
  local mode=$1 dry=$2
  case "$mode" in always | madvise | never) ;; *) echo "hugepages: thp mode must be always, madvise or never" >&2; exit 2 ;; esac
  echo "transparent huge pages: $(sed -n 's/.*\[\(.*\)\].*/\1/p' "$THP") -> $mode"
  if [ "$dry" -eq 1 ]; then
    echo "  echo $mode > $THP"
    echo "dry run: nothing changed"
    return
  fi
  need_root thp
  echo "$mode" >"$THP"
}

dry=0
args=()
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1 ;;
    -h | --help) usage ;;
    *) args+=("$a") ;;
  esac
done
[ ${#args[@]} -ge 1 ] || usage
case "${args[0]}" in
  status) [ ${#args[@]} -eq 1 ] || usage; status ;;
  reserve) [ ${#args[@]} -eq 2 ] || usage; reserve "${args[1]}" "$dry" ;;
  release) [ ${#args[@]} -eq 1 ] || usage; release "$dry" ;;
  thp) [ ${#args[@]} -eq 2 ] || usage; thp "${args[1]}" "$dry" ;;
  *) usage ;;
esac
