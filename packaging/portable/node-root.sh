#!/bin/bash
# A bare Debian bullseye root standing in for an old node: glibc 2.31 and no Python at all
# (debootstrap --variant=minbase: essential packages + apt; nothing added).  Used by
# tests/integration/test_portability.py to run the portable binaries.
#
#   bash packaging/portable/node-root.sh      -> build/bullseye-node (env BULLSEYE_NODE_ROOT)
#
# Made once (stamp), from the host's own Debian mirror; ~35 s and ~200 MB here.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/../lib.sh"

[[ $(id -u) == 0 ]] || die "needs root (debootstrap)"
in_private_mount_ns "$0" "$@"

ROOT=${BULLSEYE_NODE_ROOT:-$repo/build/bullseye-node}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
STAMP=$ROOT/.cni-flannel/debootstrap

mkdir -p "$(dirname "$ROOT")"
exec 8>"$ROOT.lock"
flock 8

if [[ -f $STAMP ]]; then
    say "$ROOT is ready ($(cat "$STAMP"))"
    exit 0
fi
ensure_debootstrap "$ROOT"
rm -rf "$ROOT/var/cache/apt/archives/"*.deb
if compgen -G "$ROOT/usr/bin/python*" >/dev/null || compgen -G "$ROOT/usr/lib/python3*" >/dev/null; then
    rm -f "$STAMP"
    die "$ROOT unexpectedly contains Python"
fi
echo "$SUITE $MIRROR glibc $(chroot "$ROOT" getconf GNU_LIBC_VERSION | cut -d' ' -f2)" >"$STAMP"
