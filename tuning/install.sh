#!/bin/sh
# Installs an unpacked Starling package (npm run package) on this machine:
#
#   /opt/starling-<version>/            the package (bin/, node/, lib/)
#   /opt/starling -> starling-<version> the current version (upgrade = install the next one; rollback = relink)
#   /usr/local/bin/starling             -> /opt/starling/bin/starling
#   /etc/starling/starling.conf         the default config, only if there is none yet
#   /etc/systemd/system/starling.service
#   user and group "starling"           a system account without a shell or home
#   with --sysctl: /etc/sysctl.d/60-starling.conf (the server profile for this machine), applied now
#   with --limits: /etc/security/limits.d/60-starling.conf
#
#   ./install.sh [--prefix /opt] [--user starling] [--sysctl] [--limits] [--root DIR]
#
#   --root DIR  install into DIR as if it were / (for images and tests): no user is created, nothing is
#               applied or reloaded, and symlinks point to the final paths.
# Run as root (except with --root). It never starts the service: `systemctl enable --now starling` does.
set -eu

pkg=$(cd "$(dirname "$0")" && pwd -P)
prefix=/opt
user=starling
sysctl=0
limits=0
dest_root=""
usage() {
  sed -n '15p' "$0" | sed 's/^# *//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
    --user) [ $# -ge 2 ] || usage; user=$2; shift 2 ;;
    --sysctl) sysctl=1; shift ;;
    --limits) limits=1; shift ;;
    --root) [ $# -ge 2 ] || usage; dest_root=$(mkdir -p "$2" && cd "$2" && pwd -P); shift 2 ;;
    -h | --help) usage ;;
    *) echo "install: unknown argument $1" >&2; usage ;;
  esac
done
case $prefix in /*) ;; *) echo "install: --prefix must be an absolute path" >&2; exit 2 ;; esac

if [ ! -x "$pkg/bin/starling" ] || [ ! -f "$pkg/lib/package.json" ] || [ ! -x "$pkg/node/bin/node" ]; then
  echo "install: run install.sh from an unpacked package (npm run package; tar xzf starling-*.tar.gz)" >&2
  exit 1
fi
if [ -z "$dest_root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install: needs root (or --root DIR to install into a directory)" >&2
  exit 1
fi
version=$("$pkg/node/bin/node" -p "require(process.argv[1]).version" "$pkg/lib/package.json")

R=$dest_root
home="$prefix/starling-$version"
step() { echo "  $*"; }
echo "Installing Starling $version into ${R:-}$home${R:+ (root $R)}"

# The package.
if [ "$(cd "$pkg/.." && pwd -P)/$(basename "$pkg")" != "$(mkdir -p "$R$prefix" && cd "$R$prefix" && pwd -P)/starling-$version" ]; then
  rm -rf "$R$home.new"
  mkdir -p "$R$home.new"
  cp -R "$pkg/bin" "$pkg/node" "$pkg/lib" "$pkg/install.sh" "$R$home.new/"
  rm -rf "$R$home"
  mv "$R$home.new" "$R$home"
fi
step "package        $home"
ln -sfn "starling-$version" "$R$prefix/starling"
step "current        $prefix/starling -> starling-$version"
mkdir -p "$R/usr/local/bin"
ln -sfn "$prefix/starling/bin/starling" "$R/usr/local/bin/starling"
step "command        /usr/local/bin/starling -> $prefix/starling/bin/starling"

# The configuration: never overwrite the operator's.
mkdir -p "$R/etc/starling"
if [ -e "$R/etc/starling/starling.conf" ]; then
  cp "$pkg/lib/starling.conf" "$R/etc/starling/starling.conf.dist"
  step "config         /etc/starling/starling.conf kept; this version's default is starling.conf.dist"
else
  cp "$pkg/lib/starling.conf" "$R/etc/starling/starling.conf"
  step "config         /etc/starling/starling.conf"
fi

# The service account.
if [ -n "$R" ]; then
  step "user           $user: not created (--root); create it in the image: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin $user"
elif id "$user" >/dev/null 2>&1; then
  step "user           $user exists"
else
  nologin=$(command -v nologin || echo /usr/sbin/nologin)
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell "$nologin" "$user"
  step "user           $user created"
fi

# Kernel profile and limits.
if [ $sysctl -eq 1 ]; then
  mkdir -p "$R/etc/sysctl.d"
  "$pkg/bin/starling" tune --print --role server >"$R/etc/sysctl.d/60-starling.conf"
  if [ -z "$R" ]; then
    sysctl -q -e -p /etc/sysctl.d/60-starling.conf || echo "install: some settings were not applied; see: starling tune --apply --role server" >&2
    step "sysctl         /etc/sysctl.d/60-starling.conf (applied)"
  else
    step "sysctl         /etc/sysctl.d/60-starling.conf"
  fi
fi
if [ $limits -eq 1 ]; then
  mkdir -p "$R/etc/security/limits.d"
  sed "s/^starling /$user /" "$pkg/lib/tuning/limits.conf" >"$R/etc/security/limits.d/60-starling.conf"
  step "limits         /etc/security/limits.d/60-starling.conf"
fi

# The unit, with this installation's paths and user. LimitNOFILE may not exceed fs.nr_open, or systemd
# fails the unit with 205/LIMITS: lower it to what this kernel allows unless the profile was installed.
limit=20000000
nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo "$limit")
if [ $sysctl -eq 0 ] && [ "$nr_open" -lt "$limit" ]; then
  limit=$nr_open
  echo "install: fs.nr_open is $nr_open, so LimitNOFILE=$nr_open (install with --sysctl for the profile's 20000000)" >&2
fi
mkdir -p "$R/etc/systemd/system"
sed -e "s|/opt/starling/|$prefix/starling/|g" \
  -e "s|^User=starling\$|User=$user|" -e "s|^Group=starling\$|Group=$user|" \
  -e "s|^LimitNOFILE=.*|LimitNOFILE=$limit|" \
  "$pkg/lib/tuning/starling.service" >"$R/etc/systemd/system/starling.service"
step "unit           /etc/systemd/system/starling.service (LimitNOFILE=$limit)"
if [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  step "systemd        reloaded"
fi

echo "Done. Next:"
echo "  starling doctor --connections N            does this machine hold N connections? (exit 1 if not)"
echo "  edit /etc/starling/starling.conf            (Listen, Workgroups, ...)"
echo "  systemctl enable --now starling             start it now and at boot; journalctl -u starling -f for its log"
