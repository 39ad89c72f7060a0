"""After a daemon crash while peers left, start-up reconcile leaves 0 stale entries.

Three frozen flanelds (tests/integration/flanneld_lab.py) on a real etcd, one backend.  A round:
peers join (leases written as our daemons write them, at unused underlay addresses), n1 programs
them; n1 is SIGKILLed; while it is down one peer's lease is deleted, one expires (an etcd lease
with a 2 s TTL), one joins, and every other round (the first included) the real node n3 leaves too (stopped, its lease
deleted); n1 restarts.  Once n1 holds every live peer, after one more resync, whatever it still
holds for a departed peer is counted stale:

* vxlan: permanent neighbours, FDB entries and routes on flannel.1;
* host-gw: cluster routes on eth0;
* udp (its peer table lives in the process, flannel0 goes with it): the flannel_peers gauge
  beyond the live count, and a departed peer's subnet not answered "net unreachable".
"""
from __future__ import annotations

import ipaddress
import json
import re
import signal
import time
from typing import Any, Callable, Dict, List, Set, Tuple

from tests.harness.etcd import EtcdServer
from tests.harness.netns import Lab, Node
from tests.integration.flannel_node import flannel_node
from tests.integration.flanneld_lab import PREFIX, EtcdNode, Flanneld, http_get, subnet_env, vtep
from tests.harness.wait import wait_until

BACKENDS = ("vxlan", "host-gw", "udp")
NETWORK = ipaddress.IPv4Network("10.244.0.0/16")
Entries = Set[Tuple[str, ...]]


def conf(backend: str) -> str:
    return json.dumps({"Network": str(NETWORK), "Backend": {"Type": backend}})


class RestartLab:
    """etcd + n1..n3 running flanneld with one backend, in `lab`."""

    def __init__(self, lab: Lab, backend: str) -> None:
        self.lab, self.backend = lab, backend

        def make_node(name: str, underlay: bool = False, plugins: Any = False) -> Node:
            return lab.add_node(name, underlay=underlay)

        def etcd_factory(**kw: Any) -> EtcdServer:
            server = EtcdServer(**kw)
            lab.add_finalizer(server.close)
            return server

        self.etcd = EtcdNode(make_node, etcd_factory, conf=conf(backend))
        self.nodes = [flannel_node(make_node(f"n{i}", underlay=True), subnet_env=None) for i in (1, 2, 3)]
        self.daemons = [Flanneld(n, self.etcd.endpoint).start() for n in self.nodes]
        for d in self.daemons:
            d.ready()
        self.fakes = 0

    # --- leases -----------------------------------------------------------------------------------
    def key_of(self, node: Node) -> str:
        net = ipaddress.IPv4Interface(subnet_env(node)["FLANNEL_SUBNET"]).network
        return f"{net.network_address}-{net.prefixlen}"

    def add_peer(self, ttl: int = 0) -> str:
        """A peer lease as n2's daemon writes them, at an underlay address nobody holds."""
        self.fakes += 1
        n = self.fakes
        value = json.loads(self.etcd.leases()[self.key_of(self.nodes[1])]["value"])
        value["PublicIP"] = f"198.18.1.{n % 250 + 1}"
        if (value.get("BackendData") or {}).get("VtepMAC"):
            value["BackendData"]["VtepMAC"] = "0a:58:0a:f4:%02x:%02x" % (n // 256 % 256, n % 256)
        key = f"10.244.{200 + n % 50}.0-24"  # beyond what the daemons lease (first free from .1 up)
        lease = self.etcd.server.grant(ttl) if ttl else 0
        self.etcd.server.put(f"{PREFIX}/subnets/{key}", json.dumps(value, separators=(",", ":")), lease=lease)
        return key

    def delete(self, key: str) -> None:
        self.etcd.server.delete(f"{PREFIX}/subnets/{key}")

    def peer_keys(self, node: Node) -> Set[str]:
        return set(self.etcd.leases()) - {self.key_of(node)}

    # --- what n1 holds ----------------------------------------------------------------------------
    def held(self, node: Node) -> Dict[str, Entries]:
        """Per kind, what the node holds for peers (keyed by what identifies the peer)."""
        if self.backend == "vxlan":
            v = vtep(node)
            return {"neigh": {(n,) for n, _ in v["neigh"]}, "fdb": {(m,) for m, _ in v["fdb"]},
                    "routes": {(d,) for d, _ in v["routes"]}}
        if self.backend == "host-gw":
            routes = json.loads(node.run(["ip", "-4", "-j", "route", "show", "dev", "eth0"]).stdout)
            return {"routes": {(r["dst"],) for r in routes if r.get("gateway") and r["dst"] != "default"
                               and ipaddress.IPv4Network(r["dst"]).subnet_of(NETWORK)}}
        code, text = http_get(node, "/metrics")
        assert code == 200, text
        found = re.search(r"^flannel_peers (\S+)$", text, re.M)
        assert found, "no flannel_peers in /metrics"
        return {"peers": {(str(i),) for i in range(int(float(found.group(1))))}}

    def expected(self, node: Node) -> Dict[str, Entries]:
        keys = self.peer_keys(node)
        if self.backend == "vxlan":
            values = {k: json.loads(v["value"]) for k, v in self.etcd.leases().items() if k in keys}
            return {"neigh": {(k.split("-")[0],) for k in keys},
                    "fdb": {(v["BackendData"]["VtepMAC"],) for v in values.values()},
                    "routes": {(k.replace("-", "/"),) for k in keys}}
        if self.backend == "host-gw":
            return {"routes": {(k.replace("-", "/"),) for k in keys}}
        return {"peers": {(str(i),) for i in range(len(keys))}}

    def stale(self, node: Node, departed: List[str]) -> Dict[str, int]:
        held, want = self.held(node), self.expected(node)
        out = {kind: len(held[kind] - want[kind]) for kind in held}
        if self.backend == "udp":  # a departed subnet must get "net unreachable", not be sent on
            out["not_unreachable"] = sum(1 for key in departed if not unreachable(node, key))
        return out

    def converged(self, node: Node) -> bool:
        held, want = self.held(node), self.expected(node)
        return all(want[k] <= held[k] for k in want)


CONNECT = ("import errno, socket, sys\ns = socket.socket()\ns.settimeout(2)\n"
           "try:\n    s.connect((sys.argv[1], 80))\nexcept socket.timeout:\n    print('timeout')\n"
           "except OSError as e:\n    print(errno.errorcode.get(e.errno, e.errno))\nelse:\n    print('connected')\n")


def unreachable(node: Node, key: str) -> bool:
    """A TCP connect into the subnet fails at once with ENETUNREACH (the forwarder's ICMP net
    unreachable; a ping would not do: never ICMP about ICMP)."""
    addr = str(ipaddress.IPv4Network(key.replace("-", "/"))[5])
    return node.run(["python3", "-c", CONNECT, addr], check=False).stdout.strip() == "ENETUNREACH"


def one_round(rl: RestartLab, number: int) -> Dict[str, Any]:
    n1, d1 = rl.nodes[0], rl.daemons[0]
    stays, deleted, expires = rl.add_peer(), rl.add_peer(), rl.add_peer(ttl=2)
    wait_until(lambda: rl.converged(n1), 20, f"round {number}: n1 programs the joined peers")
    d1.signal(signal.SIGKILL)
    d1.wait()
    departed = [deleted, expires]
    rl.delete(deleted)
    joined = rl.add_peer()
    n3_left = number % 2 == 0
    if n3_left:
        gone = rl.key_of(rl.nodes[2])
        rl.daemons[2].signal(signal.SIGTERM)  # a clean stop keeps the lease: it is deleted by hand
        rl.daemons[2].wait()
        rl.delete(gone)
        departed.append(gone)
    wait_until(lambda: expires not in rl.etcd.leases(), 15, f"round {number}: the 2 s lease to expire")
    d1.start().ready()
    wait_until(lambda: rl.converged(n1), 20, f"round {number}: restarted n1 programs the live peers")
    time.sleep(1.5)  # one more resync (1 s): what is still there now, stays
    stale = rl.stale(n1, departed)
    for key in (stays, joined):
        rl.delete(key)
    if n3_left:
        rl.daemons[2].start().ready()
    try:  # stale entries never go away by themselves: then the rounds end here, counted
        wait_until(lambda: rl.held(n1) == rl.expected(n1), 20, f"round {number}: back to the real nodes only")
        back = True
    except AssertionError:
        back = False
    return {"round": number, "departed": len(departed), "stale": stale, "back": back}


def rounds(backend: str, count: int, lab_factory: Callable[[], Lab] = Lab) -> Dict[str, Any]:
    """`count` rounds on one backend in a fresh lab: the reliability table's row."""
    started = time.monotonic()
    with lab_factory() as lab:
        rl = RestartLab(lab, backend)
        done: List[Dict[str, Any]] = []
        while len(done) < count and (not done or done[-1]["back"]):
            done.append(one_round(rl, len(done)))
        logs = "".join(d.log() for d in rl.daemons)
    stale: Dict[str, int] = {}
    for r in done:
        for kind, n in r["stale"].items():
            stale[kind] = stale.get(kind, 0) + n
    return {"backend": backend, "rounds": len(done), "asked": count, "not_back": sum(not r["back"] for r in done), "departed": sum(r["departed"] for r in done),
            "stale": stale, "stale_total": sum(stale.values()), "tracebacks": logs.count("Traceback"),
            "seconds": round(time.monotonic() - started)}


def bad(row: Dict[str, Any]) -> int:
    return row["stale_total"] + row["tracebacks"] + row["not_back"] + (row["asked"] - row["rounds"])


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| daemon crash while peers left (SIGKILL, peers deleted/expired/joined, a node gone, restart) "
             "| backend | rounds | peers departed while down | stale entries after start-up reconcile | tracebacks |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in r["stale"].items())
        lines.append(f"| flanneld (etcd), 3 nodes | {r['backend']} | {r['rounds']} | {r['departed']} "
                     f"| {r['stale_total']} ({kinds}) | {r['tracebacks']} |")
    return "\n".join(lines)
