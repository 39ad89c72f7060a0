"""Shared set-up for the doctor tests: a small vxlan cluster as flanneld leaves it, real etcd,
and running ``flannel doctor`` inside a node the way an operator would.

Each node: the shipped conflist, subnet.env, net-conf.json (at /run/flannel/net-conf.json:
/etc/kube-flannel is not one of the node's private directories), flannel.1 with every peer
programmed by the daemon's vxlan backend (``python -m cni_flannel.daemon.backends``), the
daemon's masquerade rules (MasqManager, as the daemon applies them), and pods made through
libcni with the plugins under test.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Tuple

from cni_flannel.daemon.masq import MasqConfig, MasqManager
from cni_flannel.doctor.model import JSON_SCHEMA, schema_errors
from cni_flannel.firewall import Runner
from tests.harness.netns import Node
from tests.integration.test_daemon_backends import NETWORK, NETWORK6, VXLAN, Cluster, Member

NET_CONF_PATH = "/run/flannel/net-conf.json"
NET_CONF = {"Network": NETWORK, "Backend": {"Type": "vxlan"}}
ETCD_URL = "http://127.0.0.1:2379"
ETCD_PREFIX = "/coreos.com/network"


def node_runner(node: Node) -> Runner:
    return Runner(("nsenter", f"--net={node.path}"))


def make_cluster(make_node, count: int = 2, pods: int = 1, masq: bool = True, dual: bool = False,
                 backend: Optional[Dict[str, Any]] = None) -> Cluster:
    backend = backend or VXLAN
    c = Cluster(make_node, backend, count=count, dual=dual)
    conf = {**NET_CONF, "Backend": {"Type": backend["Type"]}}
    if dual:
        conf.update({"EnableIPv6": True, "IPv6Network": NETWORK6})
    for m in c.members:
        m.node.write_file(NET_CONF_PATH, json.dumps(conf))
        m.node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])  # as kube-proxy leaves a node, pods or not
        if dual:
            m.node.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        if masq:
            apply_masq(m, dual)
    if pods:
        c.add_pods(pods)
    return c


def apply_masq(m: Member, dual: bool = False) -> None:
    cfg = MasqConfig(networks=(NETWORK, NETWORK6) if dual else (NETWORK,),
                     subnets=(f"10.244.{m.n}.0/24", f"fd00:10:244:{m.n}::/64") if dual else (f"10.244.{m.n}.0/24",))
    MasqManager(cfg, runner=node_runner(m.node)).reconcile()


class Report:
    """One doctor run: exit status, the JSON document (schema-checked), the table."""

    def __init__(self, rc: int, doc: Dict[str, Any], text: str) -> None:
        self.rc, self.doc, self.text = rc, doc, text
        self.checks = {c["id"]: c for c in doc["checks"]}

    def status(self, check: str) -> str:
        return self.checks[check]["status"]

    def failing(self) -> List[str]:
        return sorted(i for i, c in self.checks.items() if c["status"] == "fail")

    def __getitem__(self, check: str) -> Dict[str, Any]:
        return self.checks[check]

    def __repr__(self) -> str:  # what an assertion shows: the table, or every check that is not ok
        return self.text or "\n".join(f"{c['status']} {c['id']}: {c['evidence']} {c['items']}"
                                      for c in self.doc["checks"] if c["status"] != "ok")


def doctor(node: Node, *args: str, table: bool = False, binary: str = "/opt/cni/bin/flannel") -> Report:
    """Run ``<binary> doctor --json`` (and the table form) in node; the JSON must match the schema.
    binary: the plugin (``cni-flannel doctor``) or dist/cni/flanneld (``flanneld doctor``)."""
    base = [binary, "doctor", "--net-config-path", NET_CONF_PATH, "--node-name", node.name,
            "--probe-timeout", "0.5", *args]
    done = node.run([*base, "--json"], check=False)
    assert done.returncode in (0, 1, 2), f"doctor crashed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    doc = json.loads(done.stdout)
    errors = schema_errors(doc, JSON_SCHEMA)
    assert not errors, errors
    assert doc["exit_code"] == done.returncode
    text = node.run(base, check=False).stdout if table else ""
    return Report(done.returncode, doc, text)


# --- etcd ---------------------------------------------------------------------------------------

def start_etcd(node: Node, timeout: float = 20.0) -> None:
    """A real etcd (Debian's etcd-server) inside node, on 127.0.0.1 there, until the lab closes."""
    data = "/run/flannel/etcd-data"
    argv = ["etcd", "--name", "doctor", "--data-dir", data, "--listen-client-urls", ETCD_URL,
            "--advertise-client-urls", ETCD_URL, "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "doctor=http://127.0.0.1:2380"]
    log = open(f"{node.lab.run_dir}/{node.name}-etcd.log", "w")
    proc = node.popen(argv, stdout=log, stderr=log)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    node.lab.add_finalizer(stop)
    deadline = time.monotonic() + timeout
    while etcdctl(node, "endpoint", "health", check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"etcd did not start in {node.name}; see {log.name}")
        time.sleep(0.1)


def etcdctl(node: Node, *args: str, check: bool = True):
    return node.run(["etcdctl", "--endpoints", ETCD_URL, *args], env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
                    check=check)


def put_lease(node: Node, subnet: str, public_ip: str, vtep_mac: Optional[str], ttl: int = 86400) -> None:
    """A lease as flanneld's etcd manager writes it: the subnet key bound to an etcd lease."""
    granted = etcdctl(node, "lease", "grant", str(ttl)).stdout.split()
    lease_id = granted[1]
    value: Dict[str, Any] = {"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "vxlan" if vtep_mac else "host-gw",
                             "BackendData": {"VNI": 1, "VtepMAC": vtep_mac} if vtep_mac else None}
    key = f"{ETCD_PREFIX}/subnets/{subnet.replace('/', '-')}"
    etcdctl(node, "put", f"--lease={lease_id}", key, json.dumps(value))


def etcd_with_leases(c: Cluster, ttl: int = 86400, extra: Tuple[Tuple[str, str, str], ...] = ()) -> Node:
    """etcd on the first node holding every member's lease (+ extra (subnet, ip, mac))."""
    n1 = c.members[0].node
    start_etcd(n1)
    for m in c.members:
        put_lease(n1, f"10.244.{m.n}.0/24", m.public, (m.data.get("BackendData") or {}).get("VtepMAC"), ttl)
    for subnet, ip, mac in extra:
        put_lease(n1, subnet, ip, mac, ttl)
    return n1
