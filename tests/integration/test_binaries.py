"""The frozen binaries in dist/cni (`make binaries`): every plugin name exists and answers VERSION
whatever it is asked, the plugin is chosen by the name the binary is run as, the build keeps
working when copied the ways it gets deployed, and processes it starts get the node's
environment, not the bundler's library path.

Nothing here touches a network namespace: VERSION and flannel's STATUS read files only.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist" / "cni"
BUNDLE = ".cni-flannel"
NAMES = ("flannel", "bridge", "host-local", "portmap", "loopback")
SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
LATEST = SUPPORTED[-1]


@pytest.fixture(scope="module")
def dist() -> Path:
    if not DIST.exists() and os.environ.get("CNI_TEST_FROM_SOURCE") == "1":
        pytest.skip("dist/cni is absent and CNI_TEST_FROM_SOURCE=1: the frozen-binary tests need `make binaries`")
    missing = [n for n in (*NAMES, BUNDLE) if not (DIST / n).exists()]
    if missing:
        pytest.fail(f"{DIST} lacks {', '.join(missing)}: run `make binaries`")
    return DIST


def _env(**extra: str) -> Dict[str, str]:
    """A plain environment: nothing from this (possibly frozen-aware) test process leaks in."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_FLANNEL_LOG": "/dev/null"}
    env.update(extra)
    return env


CLOSED = b"<closed>"  # run with file descriptor 0 closed


def run(binary: Path, stdin: Optional[bytes], env: Dict[str, str], argv0: Optional[str] = None,
        args: List[str] = ()) -> subprocess.CompletedProcess:
    """stdin None: /dev/null; CLOSED: no fd 0 at all; else these bytes through a pipe."""
    kwargs: dict = {"input": stdin}
    if stdin is None:
        kwargs = {"stdin": subprocess.DEVNULL}
    elif stdin is CLOSED:
        kwargs = {"stdin": subprocess.DEVNULL, "preexec_fn": lambda: os.close(0)}
    return subprocess.run([argv0 or str(binary), *args], executable=str(binary),
                          capture_output=True, env=env, timeout=30, **kwargs)


def version(binary: Path, stdin: Optional[bytes]) -> dict:
    proc = run(binary, stdin, _env(CNI_COMMAND="VERSION"))
    assert proc.returncode == 0, proc
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")
    reply = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert reply["supportedVersions"] == SUPPORTED
    assert set(reply) == {"cniVersion", "supportedVersions"}
    return reply


# --- VERSION, every name, every way of asking ----------------------------------------------------

ASKED = [pytest.param(json.dumps({"cniVersion": v}).encode(), v, id=f"asks-{v}") for v in SUPPORTED] + [
    pytest.param(json.dumps({"cniVersion": v, "name": "n", "type": "t"}).encode(), v, id=f"conf-{v}")
    for v in ("0.3.1", "1.0.0")
]
NOT_ASKED = [
    pytest.param(None, id="stdin-devnull"),
    pytest.param(CLOSED, id="stdin-closed"),
    pytest.param(b"", id="stdin-empty"),
    pytest.param(b"\x00garbage{", id="stdin-garbage"),
    pytest.param(b'{"cniVersion": "9.9.9"}', id="unknown-version"),
    pytest.param(b'{"cniVersion": 1}', id="version-not-a-string"),
    pytest.param(b"[1, 2]", id="not-an-object"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stdin,asked", ASKED)
def test_version_echoes_the_asked_version(dist: Path, name: str, stdin: bytes, asked: str) -> None:
    assert version(dist / name, stdin)["cniVersion"] == asked


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stdin", NOT_ASKED)
def test_version_never_fails(dist: Path, name: str, stdin: Optional[bytes]) -> None:
    assert version(dist / name, stdin)["cniVersion"] == LATEST


def test_version_without_cniversion_means_0_1_0(dist: Path) -> None:
    assert version(dist / "loopback", b'{"name": "n", "type": "loopback"}')["cniVersion"] == "0.1.0"


# --- layout -------------------------------------------------------------------------------------

def test_layout_is_one_bundle_and_five_entries(dist: Path) -> None:
    entries = sorted(p.name for p in dist.iterdir())
    assert entries == sorted([*NAMES, BUNDLE, "flanneld"])
    inodes = {(dist / n).stat().st_ino for n in NAMES}
    assert len(inodes) == 1, "the five entries should be hard links of one client"
    # flanneld is the PyInstaller entry itself (the daemon has no agent to hand off to)
    assert (dist / "flanneld").stat().st_ino == (dist / BUNDLE / "cni-flannel").stat().st_ino
    build = dict(line.split("=", 1) for line in (dist / BUNDLE / "BUILD").read_text().splitlines())
    assert build["PLUGINS"].split() == list(NAMES)
    import hashlib
    assert build["ENTRY_SHA256"] == hashlib.sha256((dist / "flannel").read_bytes()).hexdigest()
    # the entries are the static hand-off client; the PyInstaller entry lives in the bundle and
    # finds it through the bundle's link to itself
    python_entry = dist / BUNDLE / "cni-flannel"
    assert build["PYTHON_ENTRY_SHA256"] == hashlib.sha256(python_entry.read_bytes()).hexdigest()
    assert os.readlink(dist / BUNDLE / BUNDLE) == "."
    headers = subprocess.run(["readelf", "-lW", str(dist / "flannel")], capture_output=True, text=True, check=True)
    assert "INTERP" not in headers.stdout and "LOAD" in headers.stdout, "the client must be static"
    dynamic = subprocess.run(["readelf", "-lW", str(python_entry)], capture_output=True, text=True, check=True)
    assert "INTERP" in dynamic.stdout  # (the check above can tell the two apart)


# --- the plugin is chosen by the invoked name ----------------------------------------------------
# A known name with CNI_COMMAND=ADD and nothing else gives the CNI error for the missing
# environment (code 4, JSON on stdout); an unknown name without CNI_COMMAND gives the usage text
# and exit 2.  That difference shows which name the frozen program saw in argv[0].

def _is_plugin(binary: Path, argv0: Optional[str] = None) -> bool:
    proc = run(binary, b"", _env(), argv0=argv0)
    if proc.returncode == 2:
        return False
    assert proc.returncode == 1, proc
    assert json.loads(proc.stdout)["code"] == 4, proc
    return True


def test_unknown_name_gives_usage(dist: Path) -> None:
    proc = run(dist / "loopback", b"", _env(), argv0="not-a-plugin")
    assert proc.returncode == 2
    assert b"run me as one of" in proc.stderr
    assert proc.stdout == b""


@pytest.mark.parametrize("how", ["hardlink", "copy", "symlink", "relative-argv0"])
def test_invoked_name_selects_the_plugin(dist: Path, tmp_path: Path, how: str) -> None:
    (tmp_path / BUNDLE).symlink_to(dist / BUNDLE)
    target = tmp_path / "loopback"
    if how == "hardlink":
        try:
            os.link(dist / "bridge", target)
        except OSError as exc:  # tmp on another file system
            pytest.skip(f"cannot hard-link into {tmp_path}: {exc}")
    elif how == "copy":
        shutil.copy2(dist / "bridge", target)
    else:
        target.symlink_to(dist / "bridge")  # resolves into dist/cni, next to the real bundle
    argv0 = "loopback" if how == "relative-argv0" else None
    assert _is_plugin(target, argv0=argv0)
    assert not _is_plugin(target, argv0=str(tmp_path / "cni-flannel"))


def test_multicall_argument_form(dist: Path) -> None:
    """`<entry> <plugin>` works even under a name that is not a plugin."""
    proc = run(dist / "flannel", b"", _env(CNI_COMMAND="VERSION"), argv0="cni-flannel", args=["loopback"])
    assert proc.returncode == 0 and json.loads(proc.stdout)["supportedVersions"] == SUPPORTED


# --- copies ------------------------------------------------------------------------------------

def test_whole_directory_copied_with_cp_a(dist: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "cni"
    copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(dist), str(copy)], check=True)
    for name in NAMES:
        assert version(copy / name, b'{"cniVersion": "1.0.0"}')["cniVersion"] == "1.0.0"
    # ... and it runs from its own bundle, not from dist/cni's (VERSION needs no bundle: the
    # client answers it; a request it passes on does)
    (copy / BUNDLE).rename(copy / "moved-away")
    proc = run(copy / "loopback", b"", _env(CNI_COMMAND="ADD", CNI_FLANNEL_AGENT="off"))
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 999, proc
    assert f"{copy}/{BUNDLE}/cni-flannel" in json.loads(proc.stdout)["msg"]


def test_copy_does_not_depend_on_dist(dist: Path, tmp_path: Path) -> None:
    """An entry copied alone plus the bundle directory (the initContainer's copy) is complete."""
    bindir = tmp_path / "opt-cni-bin"
    bindir.mkdir()
    subprocess.run(["cp", str(dist / "flannel"), str(bindir / "flannel")], check=True)
    subprocess.run(["cp", "-r", str(dist / BUNDLE), str(bindir / BUNDLE)], check=True)
    assert version(bindir / "flannel", b'{"cniVersion": "0.4.0"}')["cniVersion"] == "0.4.0"
    assert _is_plugin(bindir / "flannel")


def test_entry_without_its_bundle_fails_loudly(dist: Path, tmp_path: Path) -> None:
    """The client copied alone answers VERSION (no exec needed) but fails any real request with
    the spec's error naming what is missing; the PyInstaller entry alone fails at once."""
    lonely = tmp_path / "loopback"
    shutil.copy2(dist / "loopback", lonely)
    assert version(lonely, b'{"cniVersion":"0.3.1"}')["cniVersion"] == "0.3.1"
    proc = run(lonely, b"{}", _env(CNI_COMMAND="ADD", CNI_FLANNEL_AGENT="off"))
    assert proc.returncode == 1, proc
    error = json.loads(proc.stdout)
    assert error["code"] == 999 and f"{tmp_path}/{BUNDLE}/cni-flannel" in error["msg"], error
    assert "No such file or directory" in error["msg"]
    python_alone = tmp_path / "bridge"
    shutil.copy2(dist / BUNDLE / "cni-flannel", python_alone)
    proc = run(python_alone, b"", _env(CNI_COMMAND="VERSION"))
    assert proc.returncode != 0 and proc.stdout == b""
    assert BUNDLE.encode() in proc.stderr


# --- the environment children see ----------------------------------------------------------------
# flannel's STATUS runs its delegate; a delegate type we do not implement in-process is exec'd from
# CNI_PATH, so a small script there records the environment it got.

PROBE = """#!/bin/sh
env > "{out}"
exit 0
"""
SUBNET_ENV = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"


def _child_env(dist: Path, tmp_path: Path, **extra: str) -> Dict[str, str]:
    cni_path = tmp_path / "bin"
    cni_path.mkdir()
    out = tmp_path / "probe.env"
    probe = cni_path / "envprobe"
    probe.write_text(PROBE.format(out=out))
    probe.chmod(0o755)
    subnet = tmp_path / "subnet.env"
    subnet.write_text(SUBNET_ENV)
    conf = {
        "cniVersion": "1.1.0", "name": "probe-net", "type": "flannel",
        "subnetFile": str(subnet), "dataDir": str(tmp_path / "data"),
        "delegate": {"type": "envprobe"},
    }
    env = _env(CNI_COMMAND="STATUS", CNI_PATH=str(cni_path), **extra)
    proc = run(dist / "flannel", json.dumps(conf).encode(), env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert out.exists(), f"flannel STATUS did not run its delegate: {proc}"
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


def test_child_gets_no_bundle_library_path(dist: Path, tmp_path: Path) -> None:
    child = _child_env(dist, tmp_path)
    assert "LD_LIBRARY_PATH" not in child, child.get("LD_LIBRARY_PATH")
    assert not [k for k in child if k.startswith(("_PYI", "_MEI"))], sorted(child)
    assert child["CNI_COMMAND"] == "STATUS"


def test_child_gets_the_callers_library_path_back(dist: Path, tmp_path: Path) -> None:
    child = _child_env(dist, tmp_path, LD_LIBRARY_PATH="/node/lib")
    assert child.get("LD_LIBRARY_PATH") == "/node/lib"
    assert "LD_LIBRARY_PATH_ORIG" not in child
    assert BUNDLE not in "".join(child.values())
