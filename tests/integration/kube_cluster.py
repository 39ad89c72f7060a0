"""Nodes as the seed's DaemonSet leaves them, against the test API server (tests/harness/kubeapi.py).

Each node is a Lab node on the underlay (198.18.0.0/15) with:
- the ConfigMap kube-flannel-cfg from deploy/kube-flannel.yml: net-conf.json mounted at
  /etc/kube-flannel/ (a tmpfs in the node's mount namespace) and cni-conf.json installed as
  /etc/cni/net.d/10-flannel.conflist (what the install-cni initContainer does);
- the frozen bundle in /opt/cni/bin (flanneld is one of its entries);
- flanneld run with the DaemonSet container's command and args (``--ip-masq --kube-subnet-mgr
  --healthz-port=8081``) and env (NODE_NAME, POD_NAME, POD_NAMESPACE, EVENT_QUEUE_DEPTH), plus what
  the kubelet gives a pod: KUBERNETES_SERVICE_HOST/PORT and the service account (token, ca.crt,
  namespace) under /var/run/secrets/kubernetes.io/serviceaccount -- the in-cluster config, over
  https with a self-signed cluster CA and a required bearer token.
The API server listens on its own underlay node ("api", 198.18.0.1:6443); every node's
default route points there (flanneld picks the default route's interface, as on a real node).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

from tests.harness.kubeapi import KubeAPI, self_signed
from tests.harness.netns import Lab, Node, Pod
from tests.harness.plugins import REPO_ROOT
from tests.harness.wait import wait_until

MANIFEST = REPO_ROOT / "deploy" / "kube-flannel.yml"
P = "flannel.alpha.coreos.com/"
API_PORT = 6443
SA_TOKEN = "flannel-service-account-token"
HEALTHZ_PORT = 8081  # the manifest's --healthz-port and probe port


def manifest() -> Dict[str, Any]:
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kube-flannel-cfg")
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    container = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "kube-flannel")
    return {"config": cm["data"], "container": container}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """check() until truthy; fails the test (AssertionError) after timeout."""
    return wait_until(check, timeout, what, interval)


class Daemon:
    def __init__(self, cluster: "KubeCluster", node: Node, extra: List[str], env: Dict[str, str]) -> None:
        self.node = node
        self.log_path = Path(cluster.lab.run_dir) / f"flanneld-{node.name}-{time.monotonic_ns()}.log"
        c = cluster.spec["container"]
        argv = ["/opt/cni/bin/flanneld", *c["args"], *extra]
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "POD_NAME": f"kube-flannel-ds-{node.name}",
                "POD_NAMESPACE": "kube-flannel", "NODE_NAME": node.name,
                # what the kubelet gives every pod: the in-cluster API service
                "KUBERNETES_SERVICE_HOST": cluster.api.host, "KUBERNETES_SERVICE_PORT": str(API_PORT)}
        base.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        base.update(env)
        with open(self.log_path, "wb") as log:
            self.proc = node.popen(argv, env=base, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"flanneld on {self.node.name} still running after {timeout}s:\n{self.log()}") from None


class KubeCluster:
    def __init__(self, lab: Lab, make_node: Callable[..., Node], names: List[str],
                 pod_cidrs: Dict[str, Optional[List[str]]], net_conf: Optional[str] = None,
                 ipv6: bool = False) -> None:
        self.lab, self.spec = lab, manifest()
        self.net_conf = net_conf if net_conf is not None else self.spec["config"]["net-conf.json"]
        api_node = make_node("api", underlay=True, plugins=False)
        self.ca, key = self_signed(lab.run_dir, api_node.underlay_ip)
        self.api = KubeAPI(host=api_node.underlay_ip, port=API_PORT, netns=api_node.netns, bookmark_interval=1.0,
                           token=SA_TOKEN, tls=(self.ca, key))
        self.api.start()
        lab.add_finalizer(self.api.stop)
        if ipv6:
            api_node.run(["ip", "addr", "add", "2001:db8::ff/64", "dev", "eth0", "nodad"])
        self.nodes: Dict[str, Node] = {}
        self.daemons: Dict[str, Daemon] = {}
        lab.add_finalizer(self._kill_all)
        for i, name in enumerate(names):
            node = make_node(name, underlay=True)
            node.run(["ip", "route", "add", "default", "via", api_node.underlay_ip])
            if ipv6:
                node.run(["ip", "addr", "add", f"2001:db8::{i + 1}/64", "dev", "eth0", "nodad"])
                node.run(["ip", "-6", "route", "add", "default", "via", "2001:db8::ff"])
            node.run(["sh", "-ec", "mkdir -p /etc/kube-flannel && mount -t tmpfs -o mode=0755 cfg /etc/kube-flannel"])
            node.write_file("/etc/kube-flannel/net-conf.json", self.net_conf)
            node.write_file("/etc/cni/net.d/10-flannel.conflist", self.spec["config"]["cni-conf.json"])
            self._service_account(node)
            self.nodes[name] = node
            self.api.add_node(name, pod_cidrs=pod_cidrs.get(name), addresses=[node.underlay_ip])

    def _service_account(self, node: Node) -> None:
        """The flannel ServiceAccount's token, the cluster CA and the namespace, where the kubelet
        mounts them (/var/run/secrets/kubernetes.io/serviceaccount; a tmpfs in the node)."""
        os.makedirs("/run/secrets", exist_ok=True)  # the mount point (an empty directory on the host)
        node.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "secrets", "/run/secrets"])
        for name, text in (("token", SA_TOKEN), ("namespace", "kube-flannel"), ("ca.crt", Path(self.ca).read_text())):
            node.write_file(f"/var/run/secrets/kubernetes.io/serviceaccount/{name}", text)

    def _kill_all(self) -> None:
        for d in self.daemons.values():
            d.kill()

    def start(self, name: str, *extra: str, **env: str) -> Daemon:
        d = self.daemons[name] = Daemon(self, self.nodes[name], list(extra), env)
        return d

    def wait_ready(self, name: str, timeout: float = 30.0) -> Dict[str, str]:
        """Until this daemon's /readyz (the manifest's readiness probe) answers 200; subnet.env."""
        node, d = self.nodes[name], self.daemons[name]

        def ready() -> Any:
            if d.proc.poll() is not None:
                raise AssertionError(f"flanneld on {name} exited {d.proc.returncode}:\n{d.log()}")
            return readyz(node) == 200
        wait_for(f"/readyz on {name}", ready, timeout, interval=0.2)
        return subnet_env(node)

    def annotations(self, name: str) -> Dict[str, str]:
        return {k[len(P):]: v for k, v in self.api.get(name)["metadata"].get("annotations", {}).items()
                if k.startswith(P)}


READYZ = """
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen("http://127.0.0.1:%d/readyz", timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)
"""


def readyz(node: Node) -> int:
    """HTTP status of the node's flanneld /readyz (0: nothing listening)."""
    return int(node.run([sys.executable, "-c", READYZ % HEALTHZ_PORT]).stdout.strip())


def subnet_env(node: Node) -> Dict[str, str]:
    text = node.read_file("/run/flannel/subnet.env")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def vtep_mac(node: Node, dev: str = "flannel.1") -> str:
    return json.loads(node.run(["ip", "-j", "link", "show", dev]).stdout)[0]["address"]


def ping_ttl(pod: Pod, addr: str) -> Optional[int]:
    """The TTL of one echo reply (iputils ping), None when it went unanswered."""
    out = pod.run(["ping", "-n", "-c", "1", "-W", "2", addr], check=False).stdout
    m = re.search(r"ttl=(\d+)", out)
    return int(m.group(1)) if m else None
