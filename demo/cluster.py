"""The demo's cluster: etcd on the underlay, three namespace nodes with our flanneld, pods via go-cni.

    etcd 198.18.0.254:2379 (in the underlay namespace, on its bridge)
      node1 198.18.0.1 eth0   node2 198.18.0.2 eth0   node3 198.18.0.3 eth0
      pods a, b               pod c (hostPort)        pod d

Everything lives in namespaces of one tests.harness.netns.Lab (prefix cft<hex>) and its run
directory /run/cft<hex>; Lab.close() removes it all (processes in the namespaces are killed).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from demo.initcontainers import run_init_containers
from demo.progress import DemoError, Progress
from tests.harness import drivers
from tests.harness.netns import Lab, Node, Pod, run

ROOT = Path(__file__).resolve().parents[1]
FLANNELD = ROOT / "dist" / "cni" / "flanneld"
SEED_CONFLIST = ROOT / "tests" / "fixtures" / "seed-10-flannel-0.3.1.conflist"
ETCD_IP = "198.18.0.254"
ETCD_URL = f"http://{ETCD_IP}:2379"
ETCD_PREFIX = "/coreos.com/network"
NETWORK = "10.244.0.0/16"
HEALTHZ_PORT = 8471  # on each node's own 127.0.0.1
AGENT_SOCKET = "/run/flannel/cni-agent.sock"
HOST_PORT, CONTAINER_PORT = 30080, 8080
PLACEMENT = {"a": "node1", "b": "node1", "c": "node2", "d": "node3"}
HOSTPORT_POD = "c"
PLUGINS = "flannel bridge host-local portmap loopback"
READYZ = """
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
            if r.status == 200: sys.exit(0)
    except OSError: pass
    if time.monotonic() > deadline: sys.exit(1)
    time.sleep(0.1)
"""


def net_config(backend: str) -> str:
    return json.dumps({"Network": NETWORK, "EnableNFTables": False, "Backend": {"Type": backend}})


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll check() until true; raise DemoError naming what did not happen by the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Cluster:
    def __init__(self, lab: Lab, progress: Progress, node_count: int = 3) -> None:
        self.lab = lab
        self.p = progress
        self.node_count = node_count
        self.nodes: Dict[str, Node] = {}
        self.etcd: Optional[subprocess.Popen] = None
        self.flanneld: Dict[str, subprocess.Popen] = {}
        self.pods: Dict[str, Pod] = {}
        self.pod_ips: Dict[str, str] = {}
        self.generation = 0
        self.work = Path(lab.run_dir)

    # --- nodes and etcd ---------------------------------------------------------------------

    def make_nodes(self) -> None:
        for i in range(1, self.node_count + 1):
            self.nodes[f"node{i}"] = self.lab.add_node(f"node{i}", underlay=True)

    def etcdctl(self, *args: str, show: bool = True, check: bool = True) -> subprocess.CompletedProcess:
        """etcdctl in the underlay namespace (where etcd listens), shown like any command."""
        argv = ["etcdctl", f"--endpoints={ETCD_URL}", *args]
        done = run(["ip", "netns", "exec", self.lab.underlay or "", *argv], check=False,
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"})
        if show:
            self.p.command("etcd", " ".join(shlex.quote(a) for a in argv), done.stdout + done.stderr)
        if check and done.returncode != 0:
            raise DemoError(f"etcdctl {args[0]} failed: {done.stderr.strip()}")
        return done

    def start_etcd(self) -> None:
        """etcd on the underlay bridge's own address, so every node reaches it over eth0."""
        ul = self.lab.underlay
        run(["ip", "-n", ul, "link", "set", "lo", "up"])
        run(["ip", "-n", ul, "addr", "add", f"{ETCD_IP}/15", "dev", "br0"])
        peer = "http://127.0.0.1:2380"
        argv = ["ip", "netns", "exec", ul, "etcd", "--name", "demo", "--data-dir", str(self.work / "etcd"),
                "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"demo={peer}", "--initial-cluster-state", "new"]
        log = open(self.work / "etcd.log", "wb")
        self.etcd = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd="/")
        log.close()
        self.lab.add_finalizer(self.etcd.kill)
        wait_until(lambda: self.etcd.poll() is not None
                   or self.etcdctl("endpoint", "health", show=False, check=False).returncode == 0,
                   15, "etcd answering on " + ETCD_URL)
        if self.etcd.poll() is not None:
            raise DemoError(f"etcd exited {self.etcd.returncode}:\n{self.log_tail(self.work / 'etcd.log')}")
        self.etcdctl("endpoint", "health")

    def put_config(self, backend: str) -> None:
        self.etcdctl("put", f"{ETCD_PREFIX}/config", net_config(backend))

    # --- what the DaemonSet would run ------------------------------------------------------

    def install_cni(self, node: Node) -> None:
        """The initContainers' commands: plugins into /opt/cni/bin, the seed's conflist into /etc/cni/net.d."""
        for proc in run_init_containers(node, self.work / "init", SEED_CONFLIST.read_text(), PLUGINS):
            c = proc.args
            self.p.command(f"{node.name} initContainer {c['name']}",
                           " ".join(shlex.quote(a) for a in c.get("command", []) + c.get("args", [])),
                           proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise DemoError(f"initContainer {c['name']} failed on {node.name} (exit {proc.returncode})")

    def start_agent(self, node: Node) -> None:
        """The DaemonSet's cni-agent container: `flannel agent` from the node's /opt/cni/bin."""
        proc = node.popen(["/opt/cni/bin/flannel", "agent", "--socket", AGENT_SOCKET],
                          stdout=subprocess.DEVNULL, stderr=open(self.work / f"{node.name}-agent.log", "wb"))
        self.lab.add_finalizer(proc.kill)
        wait_until(lambda: proc.poll() is not None or node.exists(AGENT_SOCKET), 20, f"agent on {node.name}")
        if proc.poll() is not None:
            raise DemoError(f"agent on {node.name} exited {proc.returncode}:\n"
                            f"{self.log_tail(self.work / f'{node.name}-agent.log')}")

    # --- flanneld ------------------------------------------------------------------------

    def flanneld_argv(self, node: Node) -> List[str]:
        return [str(FLANNELD), f"--etcd-endpoints={ETCD_URL}", f"--etcd-prefix={ETCD_PREFIX}",
                "--iface=eth0", "--ip-masq", "--subnet-file=/run/flannel/subnet.env",
                "--healthz-ip=127.0.0.1", f"--healthz-port={HEALTHZ_PORT}"]

    def start_flanneld(self, node: Node) -> None:
        argv = self.flanneld_argv(node)
        self.p.command(node.name, " ".join(argv) + " &", "")
        log_path = self.work / f"{node.name}-flanneld.log"
        log = open(log_path, "ab")
        proc = node.popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.flanneld[node.name] = proc
        self.lab.add_finalizer(proc.kill)

    def wait_ready(self, node: Node, timeout: float = 30) -> None:
        """/readyz 200 on the node's loopback; stops waiting as soon as flanneld has died."""
        proc = self.flanneld[node.name]
        url = f"http://127.0.0.1:{HEALTHZ_PORT}/readyz"
        poller = node.popen([sys.executable, "-c", READYZ, url, str(timeout)], stdout=subprocess.DEVNULL)
        try:
            while poller.poll() is None and proc.poll() is None:
                time.sleep(0.05)
        finally:
            poller.kill()
            poller.wait()
        if poller.returncode != 0 or proc.poll() is not None:
            state = f"exited {proc.returncode}" if proc.poll() is not None else f"{url} not 200 within {timeout:.0f} s"
            raise DemoError(f"flanneld on {node.name} {state}; its log:\n"
                            f"{self.log_tail(self.work / f'{node.name}-flanneld.log')}")

    def stop_flanneld(self, node: Node, timeout: float = 15) -> None:
        """SIGTERM, as a DaemonSet rollout does; flanneld leaves its devices, routes and lease."""
        proc = self.flanneld.pop(node.name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise DemoError(f"flanneld on {node.name} did not exit within {timeout:.0f} s of SIGTERM")
        if proc.returncode != 0:
            raise DemoError(f"flanneld on {node.name} exited {proc.returncode} on SIGTERM (upstream: 0):\n"
                            f"{self.log_tail(self.work / f'{node.name}-flanneld.log')}")

    def check_running(self) -> None:
        for name, proc in self.flanneld.items():
            if proc.poll() is not None:
                raise DemoError(f"flanneld on {name} died (exit {proc.returncode}):\n"
                                f"{self.log_tail(self.work / f'{name}-flanneld.log')}")

    # --- pods ----------------------------------------------------------------------------

    def ports(self, name: str) -> Optional[list]:
        if name != HOSTPORT_POD:
            return None
        return [{"HostPort": HOST_PORT, "ContainerPort": CONTAINER_PORT, "Protocol": "tcp"}]

    def create_pods(self) -> None:
        """Sandboxes through containerd's go-cni (loopback + the cbr0 conflist), as the kubelet asks."""
        self.generation += 1
        for name, node_name in PLACEMENT.items():
            if node_name not in self.nodes:
                continue
            node = self.nodes[node_name]
            pod = node.add_pod(name)
            result = drivers.gocni(node, "add", pod, cid=self.cid(name), pod_name=f"ubuntu-{name}",
                                   portmap=self.ports(name))
            self.pods[name] = pod
            self.pod_ips[name] = result["Interfaces"]["eth0"]["IPConfigs"][0]["IP"]
            extra = f", hostPort {HOST_PORT} -> {CONTAINER_PORT}" if self.ports(name) else ""
            self.p.note(f"pod {name} on {node_name}: eth0 {self.pod_ips[name]}{extra}")

    def delete_pods(self) -> None:
        for name, pod in list(self.pods.items()):
            drivers.gocni(pod.node, "del", pod, cid=self.cid(name), pod_name=f"ubuntu-{name}",
                          portmap=self.ports(name))
            pod.delete()
            del self.pods[name], self.pod_ips[name]

    def cid(self, name: str) -> str:
        return f"sandbox-{name}-{self.generation}"

    @staticmethod
    def log_tail(path: Path, lines: int = 20) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"({path} missing)"
