"""Shared fixtures for the host-local integration tests (this module has no tests).

host-local touches no network, so the plugins run as plain processes in the
test's namespaces; CNI_NETNS is a throwaway namespace the fixture creates
(the dispatcher refuses our own), and every dataDir is a fresh temp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.harness.exec import BASE_ENV, PluginRun, run_plugin
from tests.harness.netns import temp_netns
from tests.harness.plugins import PluginsNotBuilt, plugin_dir, reference_dir

NETWORK = "hlnet"


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    with temp_netns("hl") as name:
        yield f"/run/netns/{name}"


@pytest.fixture(scope="module")
def ours() -> str:
    try:
        return str(plugin_dir() / "host-local")
    except PluginsNotBuilt as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def go() -> str:
    path = reference_dir() / "host-local"
    if not path.exists():
        pytest.fail(f"{path} missing: apt-get install containernetworking-plugins")
    return str(path)


def net_config(data_dir: Path, ranges: List[List[Dict[str, Any]]], version: str = "1.0.0", **ipam: Any) -> Dict[str, Any]:
    section: Dict[str, Any] = {"type": "host-local", "dataDir": str(data_dir), "ranges": ranges}
    section.update(ipam)
    return {"cniVersion": version, "name": NETWORK, "type": "host-local", "ipam": section}


def call(plugin: str, command: str, conf: Any, netns: str, cid: str = "c1", ifname: str = "eth0",
         cni_args: Optional[str] = None, env: Optional[Dict[str, Optional[str]]] = None) -> PluginRun:
    extra: Dict[str, Optional[str]] = {"CNI_FLANNEL_LOG": "/dev/null"}
    extra.update(env or {})
    return run_plugin(plugin, command, conf, container_id=cid, netns=netns, ifname=ifname,
                      cni_args=cni_args, env_extra=extra)


def addresses(result: PluginRun) -> List[str]:
    assert result.rc == 0, (result.stdout, result.stderr)
    return [ip["address"] for ip in result.json["ips"]]


def state(data_dir: Path) -> Dict[str, bytes]:
    """The network's directory as {name: content} (the lock's content is always empty)."""
    d = data_dir / NETWORK
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


def tree(root: Path) -> List[Tuple[str, int, int, bytes]]:
    """Everything under root: path, mode, mtime, content — to prove nothing changed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            out.append((str(p), st.st_mode, st.st_mtime_ns, p.read_bytes() if p.is_file() else b""))
    return sorted(out)


def spawn(plugin: str, command: str, conf: Dict[str, Any], netns: str, cid: str,
          ifname: str = "eth0") -> subprocess.Popen:
    """Start one plugin process (for the parallel tests); stdin already written."""
    env = dict(BASE_ENV, CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME=ifname,
               CNI_PATH=os.path.dirname(plugin), CNI_FLANNEL_LOG="/dev/null")
    proc = subprocess.Popen([plugin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd="/")
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    proc.stdin = None  # so communicate() does not flush it again
    return proc
