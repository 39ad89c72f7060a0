#!/bin/bash
# Freeze the plugins into dist/cni/ (see packaging/README.md for the layout and why).
#
#   dist/cni/flannel, bridge, host-local, portmap, loopback   the static hand-off client (native/),
#                                                             hard-linked under each plugin name
#   dist/cni/.cni-flannel/                                    the shared bundle (Python runtime,
#                                                             libraries, our modules as .pyc)
#   dist/cni/.cni-flannel/cni-flannel                         the PyInstaller entry (bootloader)
#   dist/cni/.cni-flannel/.cni-flannel -> .                   so that entry finds its bundle
#
# The client hands the work to the resident agent or execs <its dir>/.cni-flannel/cni-flannel
# with the same argv.  That bootloader finds its bundle as "<directory of the executable>/
# .cni-flannel" (the executable path comes from /proc/self/exe) — inside the bundle, the
# self-link — and Python sees the plugin name in sys.argv[0].  Copied into /opt/cni/bin under
# a plugin name (NATIVE=0 installs), the same bootloader finds /opt/cni/bin/.cni-flannel.  So an
# entry works wherever it is copied, as long as .cni-flannel/ sits next to it.
#
# The build goes to build/ first and replaces dist/cni in two renames, so a concurrent test run
# never sees a half-written tree.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

PYTHON=${PYTHON:-$root/.venv/bin/python}
dest=${1:-dist/cni}   # where the finished tree goes (relative to the repo root)
PLUGINS=(flannel bridge host-local portmap loopback)
bundle=.cni-flannel
work=$root/build/pyinstaller
stage=$root/build/stage

mkdir -p "$root/build" "$root/dist"
# One build at a time (several sessions share this tree).
exec 9>"$root/build/.build.lock"
flock 9

start=$(date +%s)
rm -rf "$stage"
mkdir -p "$work" "$stage"

"$PYTHON" -m PyInstaller --noconfirm --log-level "${PYI_LOG_LEVEL:-WARN}" \
    --distpath "$stage" --workpath "$work" packaging/cni-flannel.spec

out=$stage/cni
exe=$out/cni-flannel
[[ -x $exe && -d $out/$bundle ]] || { echo "build.sh: PyInstaller produced no $exe" >&2; exit 1; }

python_entry=$out/$bundle/cni-flannel
mv "$exe" "$python_entry"
ln -s . "$out/$bundle/$bundle"
PYTHON=$PYTHON bash native/build.sh "$stage/client"
for name in "${PLUGINS[@]}"; do
    ln -f "$stage/client" "$out/$name"
done

# flanneld, the node daemon: the PyInstaller entry itself under that name (it finds the bundle
# as <its dir>/.cni-flannel and dispatches on argv[0]; no hand-off client in front of it).
ln -f "${python_entry:-$out/${PLUGINS[0]}}" "$out/flanneld"

# Identity of this build: install.sh uses ENTRY_SHA256 to recognise entries it installed before
# (so an upgrade may replace them) from binaries that belong to someone else (never replaced).
{
    echo "ENTRY_SHA256=$(sha256sum "$out/${PLUGINS[0]}" | cut -d' ' -f1)"
    echo "PYTHON_ENTRY_SHA256=$(sha256sum "$python_entry" | cut -d' ' -f1)"
    echo "PLUGINS=${PLUGINS[*]}"
    echo "PYTHON=$("$PYTHON" -c 'import platform; print(platform.python_version())')"
    echo "GLIBC=$(getconf GNU_LIBC_VERSION | cut -d' ' -f2)"
    echo "SOURCE=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- cni_flannel plugins packaging 2>/dev/null || echo -dirty)"
} >"$out/$bundle/BUILD"
# make compares sources against BUILD: date it from the start, so an edit during the build
# still counts as newer than the build.
touch -d "@$start" "$out/$bundle/BUILD"

# Smoke test before publishing: every name answers VERSION, from the client and from Python, and
# a request the client passes on reaches the Python entry (code 4: the CNI_* variables are missing).
for name in "${PLUGINS[@]}"; do
    for entry in "$out/$name" "$python_entry"; do
        reply=$(CNI_COMMAND=VERSION bash -c 'exec -a "$0" "$1"' "$name" "$entry" </dev/null) \
            || { echo "build.sh: $entry VERSION failed" >&2; exit 1; }
        [[ $reply == *'"supportedVersions"'* ]] || { echo "build.sh: $entry VERSION said: $reply" >&2; exit 1; }
    done
done
reply=$(env -i CNI_COMMAND=ADD CNI_FLANNEL_AGENT=off "$out/loopback" </dev/null || true)
[[ $reply == *'"code": 4'* ]] || { echo "build.sh: the client did not reach the Python entry: $reply" >&2; exit 1; }

reply=$("$out/flanneld" --version 2>&1) && [[ $reply == v* ]] \
    || { echo "build.sh: flanneld --version said: $reply" >&2; exit 1; }

if [[ -e $dest ]]; then
    rm -rf "$dest.old"
    mv "$dest" "$dest.old"
fi
mv "$out" "$dest"
rm -rf "$dest.old" "$stage"
echo "built $dest: ${PLUGINS[*]} ($(du -sh "$dest" | cut -f1), $(grep SOURCE "$dest/$bundle/BUILD"))"
