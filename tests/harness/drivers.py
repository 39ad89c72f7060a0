"""Run the Go drivers (tests/drivers) inside a node, as a runtime would:
``cnitool-libcni`` on libcni, ``gocni-tool`` on containerd's go-cni. Both use
the node's default paths (/etc/cni/net.d, /opt/cni/bin, /var/lib/cni)."""
from __future__ import annotations

import functools
import json
from typing import Any, Mapping, Optional, Union

from tests.harness.exec import BASE_ENV, format_cni_args
from tests.harness.netns import Node, Pod, run
from tests.harness.plugins import REPO_ROOT

DRIVERS = REPO_ROOT / "tests" / "drivers"
Netns = Union[Pod, str, None]  # a pod, a netns path, or None for "" (e.g. DEL after the pod is gone)


class DriverError(RuntimeError):
    def __init__(self, argv, rc: int, stdout: str, stderr: str):
        super().__init__(f"{' '.join(argv)} exited {rc}\nstdout: {stdout}\nstderr: {stderr}")
        self.rc, self.stdout, self.stderr = rc, stdout, stderr

    @property
    def cni_error(self) -> Optional[dict]:
        """The plugin's CNI error ({code, msg, details}) when cnitool-libcni printed one."""
        try:
            error = json.loads(self.stdout)
        except ValueError:
            return None
        return error if isinstance(error, dict) and "code" in error else None


@functools.lru_cache(maxsize=None)
def build() -> None:
    """Build the drivers (quick when they are up to date)."""
    run(["bash", str(DRIVERS / "build.sh")], timeout=600)


def driver_path(name: str) -> str:
    build()
    return str(DRIVERS / "bin" / name)


def libcni(node: Node, cmd: str, netname: str, pod: Netns, ifname: str = "eth0", cid: str = "cid",
           args: Union[str, Mapping[str, str], None] = None, capability_args: Optional[dict] = None,
           env: Optional[Mapping[str, str]] = None, timeout: float = 60) -> Optional[Any]:
    """cnitool-libcni <cmd> in node; the result JSON for add, else None."""
    argv = [driver_path("cnitool-libcni"), cmd, netname, _netns(pod), "--ifname", ifname, "--id", cid]
    if args is not None:
        argv += ["--args", format_cni_args(args)]
    if capability_args is not None:
        argv += ["--capability-args", json.dumps(capability_args)]
    return _run(node, argv, env, timeout)


def gocni(node: Node, cmd: str, pod: Netns, cid: str = "sandbox0", pod_name: str = "pod0",
          pod_namespace: str = "default", pod_uid: str = "00000000-0000-0000-0000-000000000000",
          portmap: Optional[list] = None, confdir: Optional[str] = None, bindir: Optional[str] = None,
          env: Optional[Mapping[str, str]] = None, timeout: float = 60) -> Optional[Any]:
    """gocni-tool <cmd> in node; for add the go-cni Result containerd records
    ({Interfaces: {name: {IPConfigs, Mac, Sandbox}}, DNS, Routes, Raw}), else None."""
    argv = [driver_path("gocni-tool"), cmd, _netns(pod), "--id", cid, "--pod-name", pod_name,
            "--pod-namespace", pod_namespace, "--pod-uid", pod_uid]
    if portmap is not None:
        argv += ["--portmap", json.dumps(portmap)]
    if confdir is not None:
        argv += ["--confdir", confdir]
    if bindir is not None:
        argv += ["--bindir", bindir]
    return _run(node, argv, env, timeout)


def _netns(pod: Netns) -> str:
    return pod.path if isinstance(pod, Pod) else (pod or "")


def _run(node: Node, argv, env: Optional[Mapping[str, str]], timeout: float) -> Optional[Any]:
    # A runtime's plugins inherit its environment: keep it as plain as containerd's.
    done = node.run(argv, env={**BASE_ENV, **(env or {})}, check=False, timeout=timeout)
    if done.returncode != 0:
        raise DriverError(argv, done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout) if done.stdout.strip() else None
