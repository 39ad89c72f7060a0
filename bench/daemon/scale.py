"""flanneld at scale: one node joins a network of 2,000 existing leases (Network 10.0.0.0/8).

    .venv/bin/python bench/daemon/scale.py [--peers 2000] [--delete 1000] [--out FILE]

In a test lab (namespaces only): an etcd node with Debian's etcd and one flannel node running
the frozen dist/cni/flanneld.  The leases are written before flanneld starts (upstream's
values: PublicIP in 198.18.0.0/15, BackendData with a VtepMAC; nothing is sent to them).
Measured:

    converge_s   flanneld started -> flannel.1 holds a route for every peer
    delete_s     1,000 lease keys deleted (one etcd transaction per 100) -> their routes gone
    peak_rss_mb  VmHWM of the flanneld process at the end

Goals (issue 11): converge <= 10 s, deletions <= 5 s, RSS <= 100 MB.  Upstream's Go flanneld is
not packaged here, so there is no side-by-side ratio; the numbers stand alone.
"""
from __future__ import annotations

import base64
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.daemon.common import (CONF, FLANNELD, measure, parse_args, peer_public_ip, peer_subnet,  # noqa: E402
                                 peer_vtep_mac, report)
from tests.harness.etcd import EtcdServer  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402

PREFIX = "/coreos.com/network"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def peer(i: int):
    """Lease i: peer_subnet(i) at peer_public_ip(i) (bench/daemon/common.py)."""
    key = f"{PREFIX}/subnets/" + peer_subnet(i).replace("/", "-")
    value = ('{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan",'
             '"BackendData":{"VNI":1,"VtepMAC":"%s"}}' % (peer_public_ip(i), peer_vtep_mac(i)))
    return key, value


def txn(server: EtcdServer, ops) -> None:
    for start in range(0, len(ops), 100):  # etcd's default limit is 128 operations per txn
        server.call("/kv/txn", {"success": ops[start:start + 100]})


def main() -> int:
    args = parse_args("daemon_scale.json")
    with Lab() as lab:
        etcd_node = lab.add_node("etcd", underlay=True)
        node = lab.add_node("n1", underlay=True)
        server = EtcdServer(netns=etcd_node.netns, host=etcd_node.underlay_ip)
        lab.add_finalizer(server.close)
        server.put(f"{PREFIX}/config", CONF)
        leases = [peer(i) for i in range(args.peers)]
        txn(server, [{"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in leases])
        argv = [str(FLANNELD), f"--etcd-endpoints={server.endpoint}", "--iface=eth0", "--ip-masq"]
        delete = lambda: txn(server, [{"requestDeleteRange": {"key": b64(k)}} for k, _ in leases[:args.delete]])  # noqa: E731
        got = measure(lab, node, argv, None, args.log or f"{lab.run_dir}/flanneld.log", args, delete, 120)
    return report(args, got, "scale.py")


if __name__ == "__main__":
    sys.exit(main())
