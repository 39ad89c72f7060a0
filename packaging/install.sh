#!/bin/sh
# Install the frozen plugins and the conflist -- `make install`, and what an initContainer runs.
# POSIX sh plus cp/mv/cmp/diff/sha256sum, so a busybox image can run it too.
#
#   SRC        build to install from           (default: dist/cni next to this script's repo)
#   DESTDIR    prefix for the two directories  (default: none)
#   BIN_DIR    plugin directory                (default: $DESTDIR/opt/cni/bin)
#   CONF_DIR   network config directory        (default: $DESTDIR/etc/cni/net.d)
#   CONFLIST   conflist to install; empty: none (default: conflists/10-flannel.conflist)
#   PLUGINS    plugin names to install         (default: flannel)
#   NATIVE=0   install the PyInstaller entries themselves instead of the static hand-off
#              client in front of them (default 1: the client, see native/)
#   FORCE=1    replace files that are not ours
#
# The node's kubernetes-cni package owns names like loopback and bridge, so a file that differs
# from ours is never replaced silently: the install stops before changing anything, naming the
# files, unless FORCE=1.  A file identical to ours is left alone, and an entry of our own earlier
# build (its checksums are recorded in the installed bundle's BUILD) is upgraded.
#
# An entry is the static hand-off client (SRC/<plugin>), which hands the work to the resident
# agent or runs the bundle's PyInstaller entry (.cni-flannel/cni-flannel); with NATIVE=0 that
# PyInstaller entry itself is installed under each plugin name, as before the client existed.
#
# Every file is written next to its destination and renamed into place, so a runtime executing a
# plugin meanwhile sees the old or the new file, never a partial one.  The bundle directory is
# swapped with two renames (it is missing for the instant between them).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
SRC=${SRC:-$repo/dist/cni}
DESTDIR=${DESTDIR:-}
BIN_DIR=${BIN_DIR:-$DESTDIR/opt/cni/bin}
CONF_DIR=${CONF_DIR:-$DESTDIR/etc/cni/net.d}
CONFLIST=${CONFLIST-$repo/conflists/10-flannel.conflist}
PLUGINS=${PLUGINS:-flannel}
FORCE=${FORCE:-}
NATIVE=${NATIVE:-1}

BUNDLE=.cni-flannel
KNOWN="flannel bridge host-local portmap loopback"

say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }
. "$here/install-lib.sh"
build_entry_sha() { sed -n 's/^ENTRY_SHA256=//p' "$1/$BUNDLE/BUILD" 2>/dev/null || true; }
build_python_sha() { sed -n 's/^PYTHON_ENTRY_SHA256=//p' "$1/$BUNDLE/BUILD" 2>/dev/null || true; }
# entry <plugin>: the file installed under that name
entry() { if [ "$NATIVE" = 0 ]; then echo "$SRC/$BUNDLE/cni-flannel"; else echo "$SRC/$1"; fi; }

# --- what to install --------------------------------------------------------------------------

[ -f "$SRC/$BUNDLE/BUILD" ] || die "no frozen build in $SRC (run 'make binaries')"
case $NATIVE in 0|1) ;; *) die "NATIVE must be 0 or 1, not '$NATIVE'" ;; esac
for p in $PLUGINS; do
    case " $KNOWN " in
        *" $p "*) ;;
        *) die "unknown plugin '$p' in PLUGINS (known: $KNOWN)" ;;
    esac
    [ -f "$(entry "$p")" ] && [ -x "$(entry "$p")" ] || die "$(entry "$p") is missing from the build"
done
if [ -n "$CONFLIST" ]; then
    [ -f "$CONFLIST" ] || die "conflist $CONFLIST does not exist (set CONFLIST= to install none)"
fi
new_sha=$(build_entry_sha "$SRC")
[ -n "$new_sha" ] || die "$SRC/$BUNDLE/BUILD has no ENTRY_SHA256"

mkdir -p "$BIN_DIR"
old_sha=$(build_entry_sha "$BIN_DIR")
old_python_sha=$(build_python_sha "$BIN_DIR")

# --- refuse before touching anything -----------------------------------------------------------

# ours <dest>: an entry (client or PyInstaller) of the installed build of ours (which the new
# bundle replaces)
ours() {
    [ -n "$old_sha" ] && [ -f "$1" ] && [ ! -L "$1" ] || return 1
    sum=$(sha256 "$1")
    [ "$sum" = "$old_sha" ] || { [ -n "$old_python_sha" ] && [ "$sum" = "$old_python_sha" ]; }
}

conflicts=""
for p in $PLUGINS; do
    dest=$BIN_DIR/$p
    if [ -e "$dest" ] || [ -L "$dest" ]; then
        [ -d "$dest" ] && die "$dest is a directory; remove it first"
        cmp -s "$(entry "$p")" "$dest" && continue
        ours "$dest" && continue
        conflicts="$conflicts $dest"
    fi
done
if [ -e "$BIN_DIR/$BUNDLE" ] && [ ! -f "$BIN_DIR/$BUNDLE/BUILD" ]; then
    conflicts="$conflicts $BIN_DIR/$BUNDLE"
fi
if [ -n "$CONFLIST" ]; then
    dest=$CONF_DIR/$(basename "$CONFLIST")
    if [ -e "$dest" ] && ! cmp -s "$CONFLIST" "$dest"; then
        conflicts="$conflicts $dest"
    fi
fi
if [ -n "$conflicts" ]; then
    if [ "$FORCE" != 1 ]; then
        for f in $conflicts; do echo "install: $f exists and is not the file cni-flannel installs" >&2; done
        die "refusing to replace it; compare the files, move them away or run with FORCE=1"
    fi
    for f in $conflicts; do say "replacing $f (FORCE=1)"; done
fi

# --- install -----------------------------------------------------------------------------------

install_traps
swap_bundle "$SRC/$BUNDLE" "$BIN_DIR/$BUNDLE"

for p in $PLUGINS; do
    dest=$BIN_DIR/$p
    if [ -f "$dest" ] && cmp -s "$(entry "$p")" "$dest"; then
        say "$dest is up to date"
    else
        put "$(entry "$p")" "$dest" 0755
        say "installed $dest"
    fi
done

# Entries of our previous build that were not asked for still need the new bundle's entry.
if [ -n "$old_sha" ] && [ "$old_sha" != "$new_sha" ]; then
    for p in $KNOWN; do
        case " $PLUGINS " in *" $p "*) continue ;; esac
        if ours "$BIN_DIR/$p"; then
            put "$(entry "$p")" "$BIN_DIR/$p" 0755
            say "upgraded $BIN_DIR/$p (installed earlier by cni-flannel)"
        fi
    done
fi

if [ -n "$CONFLIST" ]; then
    mkdir -p "$CONF_DIR"
    dest=$CONF_DIR/$(basename "$CONFLIST")
    if [ -f "$dest" ] && cmp -s "$CONFLIST" "$dest"; then
        say "$dest is up to date"
    else
        put "$CONFLIST" "$dest" 0644
        say "installed $dest"
    fi
fi
