#!/bin/sh
# Install flanneld, the node daemon -- `make install-flanneld`, or `make install PLUGINS="... flanneld"`.
# POSIX sh plus cp/mv/cmp/diff/sha256sum (a busybox image can run it).
#
#   SRC      build to install from      (default: dist/cni next to this script's repo)
#   DESTDIR  prefix                     (default: none)
#   BIN_DIR  where flanneld goes        (default: $DESTDIR/opt/bin, where kube-flannel.yml runs it)
#   FORCE=1  replace a flanneld that is not ours (e.g. upstream's Go binary)
#
# flanneld is the bundle's PyInstaller entry under that name; it needs the bundle directory
# .cni-flannel next to it, so both are installed: the bundle swapped in with two renames, the
# entry written next to its destination and renamed over it.  An existing flanneld that is
# neither identical nor an earlier build of ours is never replaced without FORCE=1.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
SRC=${SRC:-$repo/dist/cni}
DESTDIR=${DESTDIR:-}
BIN_DIR=${BIN_DIR:-$DESTDIR/opt/bin}
FORCE=${FORCE:-}
BUNDLE=.cni-flannel

say() { echo "install-flanneld: $*"; }
die() { echo "install-flanneld: $*" >&2; exit 1; }
. "$here/install-lib.sh"
# the checksums a build records for its entries (either layout)
build_shas() { sed -n 's/^\(PYTHON_\)\{0,1\}ENTRY_SHA256=//p' "$1/$BUNDLE/BUILD" 2>/dev/null || true; }

[ -f "$SRC/$BUNDLE/BUILD" ] || die "no frozen build in $SRC (run 'make binaries')"
[ -f "$SRC/flanneld" ] && [ -x "$SRC/flanneld" ] || die "$SRC/flanneld is missing from the build (rebuild: make binaries)"

mkdir -p "$BIN_DIR"
dest=$BIN_DIR/flanneld
if [ -e "$dest" ] || [ -L "$dest" ]; then
    [ -d "$dest" ] && die "$dest is a directory; remove it first"
    if ! cmp -s "$SRC/flanneld" "$dest"; then
        mine=""
        if [ ! -L "$dest" ]; then
            have=$(sha256 "$dest")
            for s in $(build_shas "$BIN_DIR"); do [ "$s" = "$have" ] && mine=1; done
        fi
        if [ -z "$mine" ]; then
            [ "$FORCE" = 1 ] || die "$dest exists and is not a flanneld cni-flannel installed (upstream's?); move it away or run with FORCE=1"
            say "replacing $dest (FORCE=1)"
        fi
    fi
fi
if [ -e "$BIN_DIR/$BUNDLE" ] && [ ! -f "$BIN_DIR/$BUNDLE/BUILD" ] && [ "$FORCE" != 1 ]; then
    die "$BIN_DIR/$BUNDLE exists and is not a cni-flannel bundle; move it away or run with FORCE=1"
fi

install_traps
swap_bundle "$SRC/$BUNDLE" "$BIN_DIR/$BUNDLE"
put "$SRC/flanneld" "$dest" 0755
version=$("$dest" --version) || die "$dest --version failed after installing"
say "installed $dest ($version)"
