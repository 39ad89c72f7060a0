"""Nodes running the frozen flanneld (dist/cni/flanneld) against a real etcd in the lab.

An etcd node ("etcd", on the underlay) runs Debian's etcd; every flannel node runs
``dist/cni/flanneld --etcd-endpoints=http://<etcd node>:2379 --iface=eth0 ...`` in its own
network and mount namespaces (its own /run/flannel), with /healthz on 127.0.0.1 of that node.
Every wait has a deadline and fails the test when it passes.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tests.harness.etcd import EtcdServer, in_netns
from tests.harness.netns import Node
from tests.harness.plugins import FROZEN_DIR
from tests.harness.state import link
from tests.harness.wait import wait_until

FLANNELD = FROZEN_DIR / "flanneld"
PREFIX = "/coreos.com/network"
HEALTHZ_PORT = 9899
VXLAN_CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'


def http_get(node: Node, path: str, port: int = HEALTHZ_PORT) -> Tuple[int, str]:
    """GET http://127.0.0.1:<port><path> from inside the node; (0, why) when nothing listens."""
    try:
        with in_netns(node.netns):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


class Flanneld:
    """One flanneld process in ``node``; its stderr goes to a log file in the lab's run dir."""

    def __init__(self, node: Node, endpoint: str, extra: Sequence[str] = (), ttl: int = 0,
                 env: Sequence[str] = ()) -> None:
        """``env``: KEY=VALUE settings for this flanneld only (run through env(1))."""
        if not FLANNELD.exists():
            raise AssertionError(f"{FLANNELD} is missing: run 'make binaries'")
        self.node = node
        self.argv = [*(["env", *env] if env else []), str(FLANNELD), f"--etcd-endpoints={endpoint}", "--iface=eth0", "--ip-masq",
                     "--iptables-resync=1", "--healthz-ip=127.0.0.1", f"--healthz-port={HEALTHZ_PORT}",
                     "--startup-timeout=20", *([f"--subnet-lease-ttl={ttl}"] if ttl else []), *extra]
        self.runs = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = ""
        node.lab.add_finalizer(self.kill)

    def start(self) -> "Flanneld":
        self.runs += 1
        self.log_path = f"{self.node.lab.run_dir}/{self.node.name}-flanneld.{self.runs}.log"
        with open(self.log_path, "w") as log:
            self.proc = self.node.popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def ready(self, timeout: float = 30) -> "Flanneld":
        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"flanneld on {self.node.name} exited {self.proc.returncode}:\n{self.log()}")
            return http_get(self.node, "/readyz")[0] == 200
        try:
            wait_until(check, timeout, f"flanneld on {self.node.name} to be ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)  # nsenter passes it on to flanneld

    def wait(self, timeout: float = 15) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"flanneld on {self.node.name} still running after {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL (nsenter execs flanneld, so the process we started is flanneld itself)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class EtcdNode:
    """etcd inside its own lab node on the underlay (flannel nodes reach it at <ip>:2379)."""

    def __init__(self, make_node: Callable[..., Node], etcd_factory: Callable[..., EtcdServer],
                 conf: str = VXLAN_CONF) -> None:
        self.node = make_node("etcd", underlay=True, plugins=False)
        assert self.node.underlay_ip
        self.server = etcd_factory(netns=self.node.netns, host=self.node.underlay_ip)
        self.endpoint = self.server.endpoint
        if conf is not None:
            self.server.put(f"{PREFIX}/config", conf)

    def leases(self) -> Dict[str, Dict[str, Any]]:
        """{"10.244.1.0-24": {"value": <raw text>, "lease": <etcd lease id or 0>}}."""
        out = {}
        for kv in self.server.get_prefix(f"{PREFIX}/subnets/"):
            out[kv["key"].rsplit("/", 1)[1]] = kv
        return out


def subnet_env(node: Node) -> Dict[str, str]:
    text = node.read_file("/run/flannel/subnet.env")
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def vtep(node: Node, dev: str = "flannel.1") -> Dict[str, List[Tuple[str, ...]]]:
    """Permanent neighbours, FDB entries and non-kernel routes on the VTEP."""
    neigh = json.loads(node.run(["ip", "-j", "neigh", "show", "dev", dev, "nud", "permanent"]).stdout)
    fdb = json.loads(node.run(["bridge", "-j", "fdb", "show", "dev", dev]).stdout)
    routes = [r for r in json.loads(node.run(["ip", "-4", "-j", "route", "show", "dev", dev]).stdout)
              if r.get("protocol") != "kernel"]
    return {"neigh": sorted((n["dst"], n["lladdr"]) for n in neigh),
            "fdb": sorted((f["mac"], f.get("dst", "")) for f in fdb if f.get("dst")),
            "routes": sorted((r["dst"], r.get("gateway", "")) for r in routes)}


def link_mac(node: Node, dev: str = "flannel.1") -> Optional[str]:
    found = link(node, dev)  # None only when the device does not exist; other failures raise
    return found["address"] if found else None


class Monitor:
    """``ip monitor route neigh`` in a node: every deletion the kernel reports, none missed."""

    def __init__(self, node: Node) -> None:
        self.path = f"{node.lab.run_dir}/{node.name}-monitor.log"
        self._out = open(self.path, "w")
        self.proc = node.popen(["ip", "monitor", "route", "neigh"], stdout=self._out, stderr=subprocess.STDOUT)
        node.lab.add_finalizer(self.stop)
        time.sleep(0.3)  # let it subscribe before the test acts

    def stop(self) -> List[str]:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self._out.close()
        with open(self.path) as f:
            return f.read().splitlines()
