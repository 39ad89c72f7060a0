"""Shared by the udp backend's integration tests: a Cluster of udp nodes, counters, pod tools."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, Tuple

from tests.harness.netns import Node, Pod
from tests.harness.plugins import REPO_ROOT
from tests.integration import test_daemon_backends as tdb
from tests.integration.test_daemon_backends import NETWORK, Cluster

UDP = {"Type": "udp"}
MTU = 1472  # underlay 1500 - 28


# The forwarder's two paths: TSO from flannel0 + UDP GSO/GRO where the kernel has them (this
# one does), and the plain path every kernel has.
MODES = {"offload": {}, "plain": {"FLANNELD_UDP_OFFLOAD": "0"}}


class EnvBackendProc(tdb.BackendProc):
    """test_daemon_backends' driver process with extra environment (the forwarder's switches)."""

    def __init__(self, node: Node, backend: Dict[str, Any], networks: Tuple[str, ...],
                 extra_env: Dict[str, str]) -> None:
        self.node = node
        self.log_path = f"{node.lab.run_dir}/{node.name}-backend.log"
        argv = [sys.executable, "-m", "cni_flannel.daemon.backends", "--backend", json.dumps(backend)]
        for net in networks:
            argv += ["--network", net]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), **extra_env}
        self._log = open(self.log_path, "w")
        self.proc = node.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                               env=env, text=True)
        node.lab.add_finalizer(self.stop)

    def finish(self) -> None:
        """End as the daemon does on SIGTERM-less shutdown: stdin closed, backend closed."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def udp_cluster(make_node: Any, count: int = 3, mode: str = "offload", **kwargs: Any) -> Cluster:
    env = MODES[mode]
    orig = tdb.BackendProc
    tdb.BackendProc = lambda node, backend, nets: EnvBackendProc(node, backend, nets, env)  # type: ignore
    try:
        c = Cluster(make_node, UDP, count=count, **kwargs)
    finally:
        tdb.BackendProc = orig
    for m in c.members:  # the Cluster writes vxlan's/host-gw's MTU; the udp one is 1472
        set_subnet_env(m.node, m.n)
    return c


def set_subnet_env(node: Node, n: int) -> None:
    node.write_file("/run/flannel/subnet.env", f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET=10.244.{n}.1/24\n"
                    f"FLANNEL_MTU={MTU}\nFLANNEL_IPMASQ=true\n")


def mode_of(member: Any) -> str:
    """Which path the node's forwarder took, from its log line."""
    text = member.proc.log()
    return "offload" if "offloads: UDP GSO/GRO" in text else "plain" if "plain path" in text else "?"


def counters(member: Any) -> Dict[str, Any]:
    return member.proc.ok("counters")["counters"]


def drops(member: Any, direction: str) -> Dict[str, int]:
    return counters(member)[direction]["drops"]


def ping(pod: Any, ip: str, *args: str) -> Any:
    """iputils ping, one packet; the CompletedProcess (check=False)."""
    return pod.run(["ping", "-n", "-c", "1", "-W", "2", *args, ip], check=False)


def python(ns: Any, script: str, *args: str, timeout: float = 120) -> str:
    """Run a Python snippet in a node or pod; its stdout."""
    return ns.run([sys.executable, "-c", script, *args], timeout=timeout).stdout


SEND_FILE = r"""
import hashlib, random, socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1234)
h = hashlib.sha256()
s = socket.create_connection((host, port), timeout=30)
left = size
while left:
    chunk = rng.randbytes(min(left, 1 << 20))
    h.update(chunk)
    s.sendall(chunk)
    left -= len(chunk)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(h.hexdigest())
"""

RECV_FILE = r"""
import hashlib, socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(1)
srv.settimeout(60)
print("ready", flush=True)
c, _ = srv.accept()
c.settimeout(60)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
c.close()
print(n, h.hexdigest(), flush=True)
"""


def transfer(src: Pod, dst: Pod, dst_ip: str, size: int, port: int = 5001) -> None:
    """``size`` seeded random bytes over TCP from ``src`` to ``dst``; assert the hashes match."""
    import subprocess
    recv = subprocess.Popen(["ip", "netns", "exec", dst.netns, sys.executable, "-c", RECV_FILE, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready", recv.stderr.read() if recv.stderr else ""
        sent = python(src, SEND_FILE, dst_ip, str(port), str(size), timeout=300).strip()
        out, err = recv.communicate(timeout=60)
        got_n, got_hash = out.split()
        assert (int(got_n), got_hash) == (size, sent), err
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
