#!/bin/bash
# Run the unit tests (and an import of every cni_flannel module) with the bullseye root's
# Python 3.9 venv, to catch code that needs a newer Python than the portable build has.
#
#   bash packaging/portable/py39-tests.sh [pytest args]      (default: -q tests/unit)
#
# Needs the root of packaging/portable/build.sh.  The repository is bind-mounted read-only at /src
# with no bytecode or pytest cache written, so the shared tree is left as it was.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/../lib.sh"

[[ $(id -u) == 0 ]] || die "needs root (chroot, mounts)"
in_private_mount_ns "$0" "$@"

ROOT=${BULLSEYE_ROOT:-$repo/build/bullseye-root}
[[ -f $ROOT/.cni-flannel/venv ]] || die "no bullseye root with a venv at $ROOT: run 'bash packaging/portable/build.sh' first"
exec 8>"$ROOT.lock"
flock 8
trap unmount_all EXIT

mount_chroot "$ROOT"
# /src is the build's own copy; shadow it with the live tree for this run only.
mkdir -p "$ROOT/src"
mount_into "$ROOT" --bind "$repo" /src
mount -o remount,bind,ro "$ROOT/src"
mount_into "$ROOT" -t tmpfs tmpfs /tmp

py=(/usr/bin/env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/src /opt/venv/bin/python)
echo "== import every cni_flannel module with $(in_root "$ROOT" /opt/venv/bin/python -V)"
in_root "$ROOT" /bin/bash -c "cd /src && ${py[*]} -c '
import pkgutil, importlib, sys, cni_flannel
bad = n = 0
for m in pkgutil.walk_packages(cni_flannel.__path__, \"cni_flannel.\"):
    n += 1
    try:
        importlib.import_module(m.name)
    except Exception as exc:
        bad += 1
        print(\"IMPORT FAILED\", m.name, type(exc).__name__, exc)
print(n, \"modules imported; failures:\", bad)
sys.exit(1 if bad else 0)
'" || rc_import=$?
echo "== pytest ${*:--q tests/unit}"
in_root "$ROOT" /bin/bash -c "cd /src && ${py[*]} -m pytest -p no:cacheprovider ${*:--q tests/unit}" || rc_tests=$?
exit $(( ${rc_import:-0} || ${rc_tests:-0} ))
