#!/bin/bash
# Build the static hand-off client (native/cni-flannel-client.c) into OUT (a file path).
#
#   PYTHON=… bash native/build.sh OUT     (PYTHON: an interpreter that can import cni_flannel)
#
# Static (-static): no dynamic loader, no libc version dependency, so it runs on any node the
# kernel runs; checked below.  packaging/build.sh runs this for every bundle.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: native/build.sh OUT}
PYTHON=${PYTHON:-$root/.venv/bin/python}
CC=${CC:-gcc}

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
PYTHONPATH=$root "$PYTHON" "$root/native/gen_header.py" "$gen/client_gen.h"
mkdir -p "$(dirname "$out")"
"$CC" -std=gnu11 -Os -static -s -Wall -Wextra -Werror \
    -ffunction-sections -fdata-sections -Wl,--gc-sections -fno-asynchronous-unwind-tables \
    -I "$gen" -o "$out.tmp" "$root/native/cni-flannel-client.c"
# Static for real: no program interpreter, no shared library.
if LC_ALL=C readelf -lW "$out.tmp" | grep -q 'INTERP' || LC_ALL=C readelf -dW "$out.tmp" | grep -q NEEDED; then
    echo "native/build.sh: $out is not static" >&2
    exit 1
fi
mv "$out.tmp" "$out"
