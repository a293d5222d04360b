#!/bin/sh
# `npm run package`: a self-contained tarball that runs `starling serve` on a Linux machine without Node.js
# or npm — the running Node.js binary, the built addon, the compiled JavaScript, the production dependencies,
# the default config, the tuning kit, the systemd unit and install.sh.
#
#   sh tuning/package.sh [--no-build] [--out DIR]
#
#   --no-build   package what dist/ and build/Release/ hold now (default: `npm run build` first)
#   --out DIR    where the tarball goes (default: dist/)
#
# Result: DIR/starling-<version>-<platform>-<arch>.tar.gz (and .sha256), which unpacks to
#
#   starling-<version>-linux-x64/
#     bin/starling        launcher (sh): runs node/bin/node on lib/dist/src/cli.js, from anywhere, via symlinks
#     node/bin/node       a copy of the Node.js binary that built the addon (same ABI)
#     lib/                the application, laid out like a checkout: package.json, dist/src, dist/bench,
#                         build/Release/starling.node, node_modules/ (production only), src/ assets,
#                         starling.conf, tuning/, docs/
#     install.sh          installs under /opt, adds the user, the unit and /etc/starling (see docs/deploy.md)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$root"
build=1
out="$root/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --out) [ $# -ge 2 ] || { echo "package: --out needs a directory" >&2; exit 2; }; out=$2; shift 2 ;;
    *) echo "package: unknown argument $1 (usage: sh tuning/package.sh [--no-build] [--out DIR])" >&2; exit 2 ;;
  esac
done

if [ $build -eq 1 ]; then
  npm run build
fi
for f in dist/src/cli.js build/Release/starling.node package.json; do
  [ -f "$f" ] || { echo "package: $f is missing: run npm install (or npm run build) first" >&2; exit 1; }
done

node=$(node -p process.execPath)
version=$(node -p "require('./package.json').version")
platform=$(node -p process.platform)
arch=$(node -p process.arch)
name="starling-$version-$platform-$arch"
mkdir -p "$out"
out=$(cd "$out" && pwd -P)

stage=$(mktemp -d "${TMPDIR:-/tmp}/starling-package.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
pkg="$stage/$name"
mkdir -p "$pkg/bin" "$pkg/node/bin" "$pkg/lib/build/Release" "$pkg/lib/dist"

# The runtime: the very binary that runs this script, whose ABI the addon was built against.
cp "$node" "$pkg/node/bin/node"
for license in "$(dirname "$node")/../share/doc/node/LICENSE" "$(dirname "$node")/../LICENSE" /usr/share/doc/nodejs/LICENSE; do
  if [ -f "$license" ]; then cp "$license" "$pkg/node/LICENSE"; break; fi
done
node -e "require('fs').writeFileSync(process.argv[1], process.version + '\n')" "$pkg/node/VERSION"

# The compiled JavaScript (no source maps or declarations: their sources are not shipped), minus the
# benchmark peers, which need development dependencies; the client SDK's builds (the monitor serves the ES
# module at /client.js) with the package.json that marks dist/client/esm as ES modules.
(cd dist && find src bench client \( -name '*.js' -o -path 'client/esm/package.json' \) ! -path 'bench/peers/*' -print) | while read -r f; do
  mkdir -p "$pkg/lib/dist/$(dirname "$f")"
  cp "dist/$f" "$pkg/lib/dist/$f"
done
# Assets that live beside the sources and are read at run time (e.g. src/monitor/dashboard.html).
(find src -type f ! -name '*.ts' -print) | while read -r f; do
  mkdir -p "$pkg/lib/$(dirname "$f")"
  cp "$f" "$pkg/lib/$f"
done
cp build/Release/starling.node "$pkg/lib/build/Release/"
cp package.json starling.conf README.md LICENSE "$pkg/lib/"
mkdir -p "$pkg/lib/bench"
cp bench/*.conf "$pkg/lib/bench/"   # benchsub/benchpub's example configs, which docs/benchmarks.md points to
mkdir -p "$pkg/lib/docs"
cp docs/*.md "$pkg/lib/docs/"
cp -R tuning "$pkg/lib/tuning"
rm -f "$pkg/lib/tuning/package.sh"

# Production dependencies, whatever package.json lists: npm resolves the tree, we copy the folders.
deps=$(npm ls --omit=dev --all --parseable 2>"$stage/npm-ls.err") || {
  echo "package: npm ls --omit=dev failed (is node_modules in step with package.json? run npm install):" >&2
  grep -v 'Unknown user config' "$stage/npm-ls.err" >&2 || true
  exit 1
}
echo "$deps" | while read -r dir; do
  [ "$dir" != "$root" ] || continue
  rel=${dir#"$root"/}
  [ -e "$pkg/lib/$rel" ] && continue # already copied inside its parent
  mkdir -p "$pkg/lib/$(dirname "$rel")"
  cp -R "$dir" "$pkg/lib/$rel"
done

# The launcher.
cat >"$pkg/bin/starling" <<'EOF'
#!/bin/sh
# Starling launcher: runs the bundled Node.js on the bundled CLI, so neither node nor npm is needed on PATH.
# Works from any directory and through symlinks (/usr/local/bin/starling -> /opt/starling/bin/starling).
self=$0
case $self in */*) ;; *) self=./$self ;; esac
while [ -L "$self" ]; do
  link=$(readlink "$self") || break
  case $link in /*) self=$link ;; *) self=${self%/*}/$link ;; esac
done
root=$(cd "${self%/*}/.." && pwd -P) || exit 1
exec "$root/node/bin/node" "$root/lib/dist/src/cli.js" "$@"
EOF
chmod 755 "$pkg/bin/starling" "$pkg/node/bin/node"
cp tuning/install.sh "$pkg/install.sh"
chmod 755 "$pkg/install.sh" "$pkg/lib/tuning/"*.sh

# It must start before it ships: the bundled runtime loads the addon and the CLI.
got=$(env -i PATH=/nonexistent "$pkg/bin/starling" --version) || { echo "package: the packaged starling does not run" >&2; exit 1; }
[ "$got" = "$version" ] || { echo "package: the packaged starling says version '$got', expected '$version'" >&2; exit 1; }

tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$out/$name.tar.gz.part" "$name"
mv "$out/$name.tar.gz.part" "$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "$out/$name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1); Node.js $(cat "$pkg/node/VERSION"))"
