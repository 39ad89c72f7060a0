"""`make install` and packaging/install.sh (what the initContainer runs), into a DESTDIR.

The node's kubernetes-cni package owns names like loopback and bridge: a different file of the
same name is never replaced unless FORCE=1, an identical one is accepted, and an entry of our own
earlier build is upgraded.  Nothing here touches a network namespace.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist" / "cni"
BUNDLE = ".cni-flannel"
CONFLIST = REPO / "conflists" / "10-flannel.conflist"
NAMES = ("flannel", "bridge", "host-local", "portmap", "loopback")
GO_LOOPBACK = Path("/usr/lib/cni/loopback")  # a "foreign" binary, as kubernetes-cni would install


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    if not DIST.exists() and os.environ.get("CNI_TEST_FROM_SOURCE") == "1":
        pytest.skip("dist/cni is absent and CNI_TEST_FROM_SOURCE=1: installing needs `make binaries`")
    missing = [n for n in (*NAMES, BUNDLE) if not (DIST / n).exists()]
    if missing:
        pytest.fail(f"{DIST} lacks {', '.join(missing)}: run `make binaries`")
    if not CONFLIST.exists():
        pytest.fail(f"{CONFLIST} is missing: make install has no conflist to install")


def make_install(destdir: Path, plugins: Optional[str] = None, force: bool = False,
                 native: Optional[str] = None) -> subprocess.CompletedProcess:
    argv = ["make", "--no-print-directory", "-C", str(REPO), "install", f"DESTDIR={destdir}"]
    if plugins is not None:
        argv.append(f"PLUGINS={plugins}")
    if force:
        argv.append("FORCE=1")
    if native is not None:
        argv.append(f"NATIVE={native}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "PLUGINS", "FORCE", "DESTDIR", "NATIVE")}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def install_sh(bin_dir: Path, conf_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """packaging/install.sh the way an initContainer runs it: plain POSIX sh, explicit paths."""
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SRC": str(DIST), "BIN_DIR": str(bin_dir),
            "CONF_DIR": str(conf_dir), "CONFLIST": str(CONFLIST)}
    full.update(env)
    return subprocess.run(["dash", str(REPO / "packaging" / "install.sh")], capture_output=True, text=True,
                          env=full, timeout=120)


def bindir(destdir: Path) -> Path:
    return destdir / "opt" / "cni" / "bin"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> Dict[str, str]:
    """Relative path -> sha256 (or 'dir'/'link') of everything under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "link" if path.is_symlink() else "dir" if path.is_dir() else sha(path)
    return out


def version(binary: Path) -> dict:
    proc = subprocess.run([str(binary)], input=b'{"cniVersion": "1.0.0"}', capture_output=True,
                          env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}, timeout=30)
    assert proc.returncode == 0, proc
    return json.loads(proc.stdout)


# --- the default install -----------------------------------------------------------------------

def test_default_installs_flannel_bundle_and_conflist(tmp_path: Path) -> None:
    proc = make_install(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bins = bindir(tmp_path)
    assert sorted(p.name for p in bins.iterdir()) == [BUNDLE, "flannel"]
    assert sha(bins / "flannel") == sha(DIST / "flannel")
    assert os.access(bins / "flannel", os.X_OK)
    assert tree(bins / BUNDLE) == tree(DIST / BUNDLE)
    conf = tmp_path / "etc" / "cni" / "net.d" / "10-flannel.conflist"
    assert conf.read_bytes() == CONFLIST.read_bytes()
    assert oct(conf.stat().st_mode & 0o777) == "0o644"
    assert not list(bins.glob(".*.new.*")) and not list(bins.glob(f"{BUNDLE}.*")), "temporary files left"
    assert version(bins / "flannel")["cniVersion"] == "1.0.0"


def test_reinstall_is_a_no_op(tmp_path: Path) -> None:
    assert make_install(tmp_path).returncode == 0
    before = tree(tmp_path)
    mtime = (bindir(tmp_path) / "flannel").stat().st_mtime_ns
    proc = make_install(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
    assert tree(tmp_path) == before
    assert (bindir(tmp_path) / "flannel").stat().st_mtime_ns == mtime


def test_other_plugins_only_when_asked(tmp_path: Path) -> None:
    proc = make_install(tmp_path, plugins="bridge host-local portmap loopback")
    assert proc.returncode == 0, proc.stderr
    bins = bindir(tmp_path)
    assert sorted(p.name for p in bins.iterdir()) == sorted([BUNDLE, "bridge", "host-local", "portmap", "loopback"])
    for name in ("bridge", "host-local", "portmap", "loopback"):
        assert version(bins / name)["supportedVersions"][-1] == "1.1.0"


def test_unknown_plugin_name_is_refused(tmp_path: Path) -> None:
    proc = make_install(tmp_path, plugins="flannel macvlan")
    assert proc.returncode != 0
    assert "unknown plugin 'macvlan'" in proc.stderr
    assert not bindir(tmp_path).exists() or not any(bindir(tmp_path).iterdir())


# --- never replace someone else's binary --------------------------------------------------------

def _foreign_loopback(tmp_path: Path) -> Path:
    bins = bindir(tmp_path)
    bins.mkdir(parents=True)
    foreign = bins / "loopback"
    foreign.write_bytes(GO_LOOPBACK.read_bytes() if GO_LOOPBACK.exists() else b"#!/bin/sh\necho foreign\n")
    foreign.chmod(0o755)
    return foreign


def test_refuses_to_replace_a_different_binary(tmp_path: Path) -> None:
    foreign = _foreign_loopback(tmp_path)
    before = sha(foreign)
    proc = make_install(tmp_path, plugins="flannel loopback")
    assert proc.returncode != 0
    assert str(foreign) in proc.stderr and "FORCE=1" in proc.stderr
    assert sha(foreign) == before
    # Nothing at all was installed: the check runs before any change.
    assert sorted(p.name for p in bindir(tmp_path).iterdir()) == ["loopback"]
    assert not (tmp_path / "etc").exists()


def test_force_replaces_a_different_binary(tmp_path: Path) -> None:
    foreign = _foreign_loopback(tmp_path)
    proc = make_install(tmp_path, plugins="loopback", force=True)
    assert proc.returncode == 0, proc.stderr
    assert "FORCE=1" in proc.stdout
    assert sha(foreign) == sha(DIST / "loopback")
    assert version(foreign)["cniVersion"] == "1.0.0"


def test_accepts_an_identical_existing_binary(tmp_path: Path) -> None:
    bins = bindir(tmp_path)
    bins.mkdir(parents=True)
    (bins / "loopback").write_bytes((DIST / "loopback").read_bytes())
    (bins / "loopback").chmod(0o755)
    proc = make_install(tmp_path, plugins="loopback")
    assert proc.returncode == 0, proc.stderr
    assert version(bins / "loopback")["cniVersion"] == "1.0.0"


def test_refuses_a_different_conflist(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "cni" / "net.d" / "10-flannel.conflist"
    conf.parent.mkdir(parents=True)
    conf.write_text('{"name": "operators-own", "cniVersion": "1.0.0", "plugins": []}')
    proc = make_install(tmp_path)
    assert proc.returncode != 0
    assert str(conf) in proc.stderr
    assert "operators-own" in conf.read_text()
    assert not bindir(tmp_path).joinpath("flannel").exists()


def test_refuses_a_foreign_bundle_directory(tmp_path: Path) -> None:
    foreign = bindir(tmp_path) / BUNDLE
    foreign.mkdir(parents=True)
    (foreign / "something").write_text("not ours")
    proc = make_install(tmp_path)
    assert proc.returncode != 0
    assert str(foreign) in proc.stderr
    assert (foreign / "something").read_text() == "not ours"


def test_upgrades_entries_of_our_earlier_build(tmp_path: Path) -> None:
    """An entry recorded in the installed bundle's BUILD is ours: a newer build replaces it, even
    when only flannel is being installed; a foreign file next to it stays."""
    assert make_install(tmp_path, plugins="flannel loopback").returncode == 0
    bins = bindir(tmp_path)
    old_entry = b"\x7fELF pretend this is the entry of an older cni-flannel build"
    for name in ("flannel", "loopback"):
        (bins / name).write_bytes(old_entry)
    build = bins / BUNDLE / "BUILD"
    lines = [l for l in build.read_text().splitlines() if not l.startswith("ENTRY_SHA256=")]
    build.write_text("\n".join([f"ENTRY_SHA256={hashlib.sha256(old_entry).hexdigest()}", *lines]) + "\n")
    (bins / "bridge").write_bytes(b"someone else's bridge")

    proc = make_install(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha(bins / "flannel") == sha(DIST / "flannel")
    assert sha(bins / "loopback") == sha(DIST / "loopback"), "our older loopback must follow the new bundle"
    assert "upgraded" in proc.stdout
    assert (bins / "bridge").read_bytes() == b"someone else's bridge"
    assert tree(bins / BUNDLE) == tree(DIST / BUNDLE)


# --- the initContainer's way ----------------------------------------------------------------------

def test_initcontainer_install_with_posix_sh(tmp_path: Path) -> None:
    bins, confs = tmp_path / "host" / "opt" / "cni" / "bin", tmp_path / "host" / "etc" / "cni" / "net.d"
    proc = install_sh(bins, confs, PLUGINS="flannel")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert version(bins / "flannel")["cniVersion"] == "1.0.0"
    assert (confs / "10-flannel.conflist").read_bytes() == CONFLIST.read_bytes()
    # A second initContainer run (pod restart) changes nothing.
    before = tree(tmp_path)
    assert install_sh(bins, confs, PLUGINS="flannel").returncode == 0
    assert tree(tmp_path) == before


# --- the hand-off client in front of the bundle, or not (NATIVE=0) ------------------------------

def _serves_a_request(binary: Path) -> bool:
    """A request that needs the Python entry (no CNI_* variables: code 4) reaches it."""
    proc = subprocess.run([str(binary)], input=b"{}", capture_output=True, timeout=30,
                          env={"CNI_COMMAND": "ADD", "CNI_FLANNEL_AGENT": "off", "PATH": "/usr/bin:/bin",
                               "CNI_FLANNEL_LOG": "/dev/null"})
    return proc.returncode == 1 and json.loads(proc.stdout)["code"] == 4


def test_native_client_by_default_pyinstaller_entries_with_native_0(tmp_path: Path) -> None:
    client, python_entry = sha(DIST / "flannel"), sha(DIST / BUNDLE / "cni-flannel")
    assert client != python_entry
    bins = bindir(tmp_path)
    assert make_install(tmp_path, native="0").returncode == 0
    assert sha(bins / "flannel") == python_entry and _serves_a_request(bins / "flannel")
    assert version(bins / "flannel")["cniVersion"] == "1.0.0"
    # switching either way is an upgrade of our own entry, never a conflict
    proc = make_install(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sha(bins / "flannel") == client and _serves_a_request(bins / "flannel")
    assert make_install(tmp_path, native="0").returncode == 0 and sha(bins / "flannel") == python_entry
    assert os.readlink(bins / BUNDLE / BUNDLE) == "."  # the bundle's own PyInstaller entry finds it
    bad = make_install(tmp_path, native="2")
    assert bad.returncode != 0 and "NATIVE must be 0 or 1" in bad.stderr


def test_bundle_without_its_self_link_is_reinstalled(tmp_path: Path) -> None:
    assert make_install(tmp_path).returncode == 0
    bins = bindir(tmp_path)
    (bins / BUNDLE / BUNDLE).unlink()
    assert not _serves_a_request(bins / "flannel")  # the client cannot run the Python entry now
    proc = make_install(tmp_path)
    assert proc.returncode == 0 and f"installed {bins / BUNDLE}" in proc.stdout, proc.stdout
    assert _serves_a_request(bins / "flannel")
