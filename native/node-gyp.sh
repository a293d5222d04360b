#!/bin/sh
# Runs node-gyp against the headers of the node binary that runs it (every Node.js distribution ships
# them in <prefix>/include/node), so that building never downloads a header tarball.
prefix=$(node -p "require('path').resolve(process.execPath, '..', '..')")
if [ -f "$prefix/include/node/node_api.h" ]; then
  exec node-gyp "$@" --nodedir="$prefix"
fi
exec node-gyp "$@"
