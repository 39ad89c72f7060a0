#!/bin/bash
# Freeze the plugins inside a Debian bullseye root (glibc 2.31, Python 3.9), so the binaries run
# on any node with glibc >= 2.31 and keep the onedir bundle's fast start-up.
#
#   bash packaging/portable/build.sh [OUT]      (OUT default: dist/cni)
#
# OUT gets exactly the layout of `make binaries` (packaging/build.sh runs unchanged inside the
# root): OUT/{flannel,bridge,host-local,portmap,loopback} hard-linked entries + OUT/.cni-flannel/.
#
# Cached under build/ (env BULLSEYE_ROOT, default build/bullseye-root), one stamp per step:
#   1. debootstrap --variant=minbase bullseye from the host's own Debian mirror
#   2. apt-get install python3 python3-venv python3-dev gcc binutils zlib1g-dev … (in the root)
#   3. /opt/venv in the root: pip install -r requirements-dev.txt (re-run when the pins change),
#      with the host's pip configuration (config files copied, local indexes bind-mounted)
#   4. every run: copy the sources to /src in the root and run packaging/build.sh there.
# A second run repeats only step 4.  Runs in a private mount namespace: /proc, /sys, /dev and the
# pip index binds exist only for its duration.  Needs root, debootstrap, unshare, chroot.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/../lib.sh"

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mounts)"
in_private_mount_ns "$0" "$@"

OUT=${1:-dist/cni}
[[ $OUT == /* ]] || OUT=$repo/$OUT
ROOT=${BULLSEYE_ROOT:-$repo/build/bullseye-root}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(host_security_mirror)}
APT_PACKAGES=(python3 python3-venv python3-dev python3-pip gcc libc6-dev binutils zlib1g-dev
              ca-certificates)
VENV=/opt/venv
STAMPS=$ROOT/.cni-flannel
PLUGINS=(flannel bridge host-local portmap loopback)

mkdir -p "$(dirname "$ROOT")"
exec 8>"$ROOT.lock"
flock 8
trap unmount_all EXIT
trap 'exit 1' INT TERM HUP

t0=$(date +%s)
step() { say "[$(( $(date +%s) - t0 ))s] $*"; }

# --- 1. debootstrap, 2. build dependencies (packaging/lib.sh) ---------------------------------
ensure_debootstrap "$ROOT"
mount_chroot "$ROOT"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
ensure_apt "$ROOT" "${APT_PACKAGES[@]}"

# --- 3. the venv ------------------------------------------------------------------------------
# The host's pip configuration: the files are copied in; the local wheel directories, indexes,
# constraint and certificate files they (or PIP_* variables) name are bind-mounted read-only.
pip_configs=(/etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip")
for c in "${pip_configs[@]}"; do
    [[ -e $c ]] || continue
    dest=$ROOT${c/#$HOME//root}
    rm -rf "$dest"; mkdir -p "$(dirname "$dest")"; cp -a "$c" "$dest"
done
pip_files=$(for c in "${pip_configs[@]}"; do [[ -e $c ]] && find "$c" -type f; done || true)
pip_paths=$(
    { [[ -z $pip_files ]] || cat $pip_files; env | grep -E '^PIP_' | cut -d= -f2- || true; } |
        grep -oE '(file://)?/[^[:space:]"'"'"',;]+' | sed 's|^file://||' | sort -u || true
)
for p in $pip_paths; do
    case $p in /etc/pip.conf|/etc/xdg/pip*|$HOME/.config/pip*|$HOME/.pip*) continue ;; esac
    # A local index ".../simple" links its files as ../../files/...: bind its parent.
    [[ $p =~ /simple/?$ ]] && p=$(dirname "$p")
    [[ -e $p ]] || continue
    mountpoint -q "$ROOT$p" 2>/dev/null || bind_ro "$ROOT" "$p"
done

venv_key="$(cat "$repo/requirements.txt" "$repo/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
if ! stamp_ok "$STAMPS/venv" "$venv_key"; then
    step "venv $VENV: pip install -r requirements-dev.txt"
    rm -rf "$ROOT$VENV" "$ROOT/tmp/req"
    mkdir -p "$ROOT/tmp/req"
    cp "$repo/requirements.txt" "$repo/requirements-dev.txt" "$ROOT/tmp/req/"
    in_root "$ROOT" /usr/bin/python3 -m venv "$VENV"
    # bullseye's pip 20.3 predates current wheel metadata: upgrade pip itself (not a pinned
    # dependency) before installing the pins.
    # (pip warns for every package one of several local indexes lacks: noise, filtered.)
    quiet_pip() { { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2; }
    in_root "$ROOT" "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | quiet_pip
    in_root "$ROOT" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r /tmp/req/requirements-dev.txt 2>&1 | quiet_pip
    echo "$venv_key" >"$STAMPS/venv"
fi

# --- 4. build ---------------------------------------------------------------------------------
step "freezing with $(in_root "$ROOT" "$VENV/bin/python" -V) / glibc $(in_root "$ROOT" getconf GNU_LIBC_VERSION | cut -d' ' -f2)"
# The sources are copied (not bind-mounted) so the build cannot write into the shared tree; /src/build
# (PyInstaller's work cache) is kept between runs.
src=$ROOT/src
mkdir -p "$src"
rm -rf "$src/cni_flannel" "$src/plugins" "$src/packaging" "$src/conflists" "$src/native" "$src/dist"
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - \
    cni_flannel plugins packaging conflists native requirements.txt requirements-dev.txt | tar -C "$src" -xf -
in_root "$ROOT" /bin/bash -c "cd /src && PYTHON=$VENV/bin/python bash packaging/build.sh" >&2

built=$src/dist/cni
[[ -f $built/.cni-flannel/BUILD ]] || die "packaging/build.sh produced no $built"
# There is no git in the root: record the host's view of the sources, as packaging/build.sh would.
source_id="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet HEAD -- cni_flannel plugins packaging 2>/dev/null || echo -dirty)"
sed -i "s/^SOURCE=.*/SOURCE=$source_id/" "$built/.cni-flannel/BUILD"
echo "BUILT_IN=debian-$SUITE" >>"$built/.cni-flannel/BUILD"
touch -d "@$t0" "$built/.cni-flannel/BUILD"

# Publish like packaging/build.sh: a complete tree, swapped in with two renames.
mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT.new" "$OUT.old"
cp -a "$built" "$OUT.new"
if [[ -e $OUT ]]; then mv "$OUT" "$OUT.old"; fi
mv "$OUT.new" "$OUT"
rm -rf "$OUT.old"
step "built $OUT ($(du -sh "$OUT" | cut -f1); $(tr '\n' ' ' <"$OUT/.cni-flannel/BUILD" | sed 's/ENTRY_SHA256=[0-9a-f]* //'))"
