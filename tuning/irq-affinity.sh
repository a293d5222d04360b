#!/usr/bin/env bash
# Spreads the receive/transmit queue interrupts of one network interface over CPUs, the way the seeds pinned
# each tx/rx queue of their 10G NIC to its own core through /proc/irq/<n>/smp_affinity.
#
#   tuning/irq-affinity.sh IFACE [--cpus LIST] [--dry-run] [--interrupts FILE]
#
#   IFACE             the interface, e.g. eth0, ens1f0
#   --cpus LIST       CPUs to use, Linux list syntax (0-3,8); default: every online CPU
#   --dry-run         print the plan and the commands, change nothing (no root needed)
#   --interrupts FILE read FILE instead of /proc/interrupts (plan for a captured file; implies --dry-run)
#
# Which IRQs: the lines of /proc/interrupts whose name contains IFACE (ixgbe "eth0-TxRx-3", ena "eth0-Tx-Rx-0",
# i40e "i40e-eth0-TxRx-0"), plus the MSI vectors of the interface's device from sysfs (mlx5 "mlx5_comp3@pci:…",
# virtio "virtio2-input.0"). Only queue vectors are moved (names with rx, tx, input, output, comp, queue, or a
# trailing queue number); control vectors (config, async, mgmnt, the bare link vector) are left alone.
#
# Queue q goes to the (q mod n)-th CPU of the list, so the rx and tx vectors of one queue pair share a CPU and
# consecutive queues land on consecutive CPUs. Starling's WorkgroupCpus can then pin workgroup i to the same
# CPUs. irqbalance rewrites affinities every 10 s: stop it (systemctl disable --now irqbalance) or ban these
# IRQs (IRQBALANCE_BANNED_IRQS / --banirq). The setting does not survive a reboot: run this from a unit or
# rc script after the interface is up.
set -euo pipefail

usage() {
  sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

iface=""
cpus_arg=""
dry_run=0
interrupts=/proc/interrupts
while [ $# -gt 0 ]; do
  case "$1" in
    --cpus) [ $# -ge 2 ] || usage; cpus_arg=$2; shift 2 ;;
    --cpus=*) cpus_arg=${1#--cpus=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --interrupts) [ $# -ge 2 ] || usage; interrupts=$2; dry_run=1; shift 2 ;;
    --interrupts=*) interrupts=${1#--interrupts=}; dry_run=1; shift ;;
    -h | --help) usage ;;
    -*) echo "irq-affinity: unknown option $1" >&2; usage ;;
    *) [ -z "$iface" ] || usage; iface=$1; shift ;;
  esac
done
[ -n "$iface" ] || usage
[ -r "$interrupts" ] || { echo "irq-affinity: cannot read $interrupts" >&2; exit 1; }
if [ "$interrupts" = /proc/interrupts ] && [ ! -e "/sys/class/net/$iface" ]; then
  echo "irq-affinity: no interface $iface (see: ip -brief link)" >&2
  exit 1
fi

# "0-2,5" -> "0 1 2 5"
expand_list() {
  local out=() parts part a b
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
      a=${BASH_REMATCH[1]}; b=${BASH_REMATCH[2]}
      [ "$a" -le "$b" ] || { echo "irq-affinity: bad CPU range $part" >&2; exit 2; }
      for ((c = a; c <= b; c++)); do out+=("$c"); done
    elif [[ $part =~ ^[0-9]+$ ]]; then
      out+=("$part")
    else
      echo "irq-affinity: bad CPU list '$1' (expected e.g. 0-3,8)" >&2; exit 2
    fi
  done
  echo "${out[@]}"
}

if [ "$interrupts" = /proc/interrupts ]; then
  online=$(cat /sys/devices/system/cpu/online 2>/dev/null || echo "0-$(($(getconf _NPROCESSORS_ONLN) - 1))")
  ncpu_total=$(getconf _NPROCESSORS_CONF)
else
  # A captured file: its header names the CPUs of the machine it came from.
  ncpu_total=$(head -1 "$interrupts" | wc -w)
  [ "$ncpu_total" -gt 0 ] || { echo "irq-affinity: $interrupts has no CPU header line" >&2; exit 1; }
  online="0-$((ncpu_total - 1))"
fi
read -ra cpus <<<"$(expand_list "${cpus_arg:-$online}")"
[ ${#cpus[@]} -gt 0 ] || { echo "irq-affinity: no CPUs" >&2; exit 2; }
if [ -n "$cpus_arg" ]; then
  read -ra online_cpus <<<"$(expand_list "$online")"
  for c in "${cpus[@]}"; do
    [[ " ${online_cpus[*]} " == *" $c "* ]] || { echo "irq-affinity: CPU $c is not online (online: $online)" >&2; exit 2; }
  done
fi

# The hex smp_affinity mask of one CPU: 32-bit groups, most significant first, comma separated.
mask_of() {
  local cpu=$1 groups=$(((ncpu_total + 31) / 32)) g mask=""
  for ((g = groups - 1; g >= 0; g--)); do
    if [ $((cpu / 32)) -eq "$g" ]; then
      mask+=$(printf '%08x' $((1 << (cpu % 32))))
    else
      mask+=00000000
    fi
    [ "$g" -eq 0 ] || mask+=,
  done
  echo "$mask"
}

# IRQ numbers of the interface's device (and, for virtio, of the PCI function that carries it).
declare -A device_irq=()
if [ "$interrupts" = /proc/interrupts ] && [ -e "/sys/class/net/$iface/device" ]; then
  dev=$(readlink -f "/sys/class/net/$iface/device")
  for d in "$dev" "$(dirname "$dev")"; do
    if [ -d "$d/msi_irqs" ]; then
      for f in "$d"/msi_irqs/*; do [ -e "$f" ] && device_irq[$(basename "$f")]=1; done
      break
    fi
  done
  devname=$(basename "$dev") # virtio2: its vectors are named virtio2-…
else
  devname=""
fi

# irq<TAB>name for every line of the interrupts file that belongs to the interface.
plan_irqs=()
plan_names=()
while read -r line; do
  irq=${line%%:*}
  irq=${irq// /}
  [[ $irq =~ ^[0-9]+$ ]] || continue
  name=${line##* }
  mine=0
  # The interface name as a whole word: eth1 must not take eth10's vectors.
  [[ $name =~ (^|[^[:alnum:]])"$iface"([^[:alnum:]]|$) ]] && mine=1
  if [ $mine -eq 0 ] && [ -n "${device_irq[$irq]:-}" ]; then
    # A PCI function's vectors can belong to several netdevs (rare); for virtio keep only this device's.
    if [[ $devname == virtio* ]]; then [[ $name == "$devname"-* ]] && mine=1; else mine=1; fi
  fi
  [ $mine -eq 1 ] || continue
  lname=${name,,}
  if [[ $lname =~ (config|async|mgmnt|mgmt|ctrl|misc|event|fw) ]] || [ "$name" = "$iface" ]; then
    continue # control vector
  fi
  if [[ $lname =~ (rx|tx|input|output|comp|queue) ]] || [[ $name =~ [0-9]+$ ]]; then
    plan_irqs+=("$irq")
    plan_names+=("$name")
  fi
done <"$interrupts"

if [ ${#plan_irqs[@]} -eq 0 ]; then
  echo "irq-affinity: no queue interrupts found for $iface in $interrupts" >&2
  echo "  (a NIC without MSI-X, or a virtual interface such as lo, veth or a bridge, has none to spread)" >&2
  exit 1
fi

if [ $dry_run -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "irq-affinity: writing /proc/irq/*/smp_affinity_list needs root; --dry-run shows the plan without it" >&2
  exit 1
fi

if command -v pgrep >/dev/null 2>&1 && pgrep -x irqbalance >/dev/null 2>&1; then
  echo "warning: irqbalance is running and will overwrite these affinities; stop it (systemctl disable --now irqbalance)" >&2
fi

echo "IRQ affinity for $iface: ${#plan_irqs[@]} queue interrupt(s) over CPU(s) ${cpus[*]}"
failed=0
seq_no=0
for i in "${!plan_irqs[@]}"; do
  irq=${plan_irqs[$i]}
  name=${plan_names[$i]}
  # The queue number is the last number in the name (TxRx-3, input.3, comp3@pci…: take the one before '@').
  base=${name%%@*}
  if [[ $base =~ ([0-9]+)[^0-9]*$ ]] && [[ $base =~ (rx|tx|input|output|comp|queue|[-._])[^0-9]*([0-9]+)[^0-9]*$ ]]; then
    queue=$((10#${BASH_REMATCH[2]}))
  else
    queue=$seq_no
  fi
  seq_no=$((seq_no + 1))
  cpu=${cpus[$((queue % ${#cpus[@]}))]}
  now=$(cat "/proc/irq/$irq/smp_affinity_list" 2>/dev/null || echo "?")
  [ "$interrupts" = /proc/interrupts ] || now="?"
  printf '  IRQ %-5s %-28s queue %-3s -> CPU %-3s (mask %s; now %s)\n' "$irq" "$name" "$queue" "$cpu" "$(mask_of "$cpu")" "$now"
  if [ $dry_run -eq 1 ]; then
    echo "    echo $cpu > /proc/irq/$irq/smp_affinity_list"
  elif ! { echo "$cpu" >"/proc/irq/$irq/smp_affinity_list"; } 2>/dev/null; then
    echo "    failed: cannot write /proc/irq/$irq/smp_affinity_list (root needed; some IRQs are managed by the kernel)" >&2
    failed=1
  elif [ "$(cat "/proc/irq/$irq/smp_affinity_list")" != "$cpu" ]; then
    echo "    failed: the kernel kept $(cat "/proc/irq/$irq/smp_affinity_list")" >&2
    failed=1
  fi
done
if [ $dry_run -eq 1 ]; then
  echo "dry run: nothing changed"
else
  [ $failed -eq 0 ] && echo "done; check with: grep -E '$iface|${devname:-$iface}' /proc/interrupts (counts should now grow on the chosen CPUs)"
fi
exit $failed
