"""flanneld --kube-subnet-mgr at scale: one node joins a cluster of 2,000 Node objects.

    .venv/bin/python bench/daemon/kube_scale.py [--peers 2000] [--delete 1000] [--out FILE]

The kube twin of bench/daemon/scale.py (etcd), same shape and numbers: in a test lab, the test
API server (tests/harness/kubeapi.py) on its own node holds 2,000 flannel-managed Nodes
(podCIDR 10.<1 + i // 256>.<i % 256>.0/24, public-ip in 198.19.0.0/16, a VtepMAC; nothing is
sent to them) plus the joining node; the frozen dist/cni/flanneld runs there with the
DaemonSet's args (--ip-masq --kube-subnet-mgr) and --kube-api-url.  Measured:

    converge_s   flanneld started -> flannel.1 holds a route for every peer
    delete_s     1,000 Node objects deleted -> their routes gone
    peak_rss_mb  VmHWM of the flanneld process at the end
    list_bytes   size of the API server's NodeList answer (what one re-list costs)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.daemon.common import (CONF, FLANNELD, measure, parse_args, peer_public_ip, peer_subnet,  # noqa: E402
                                 peer_vtep_mac, report)
from tests.harness.kubeapi import KubeAPI  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402

P = "flannel.alpha.coreos.com/"


def peer_annotations(i: int) -> dict:
    return {P + "kube-subnet-manager": "true", P + "backend-type": "vxlan",
            P + "public-ip": peer_public_ip(i),
            P + "backend-data": '{"VNI":1,"VtepMAC":"%s"}' % peer_vtep_mac(i)}


def main() -> int:
    args = parse_args("daemon_kube_scale.json")
    with Lab() as lab:
        api_node = lab.add_node("api", underlay=True)
        node = lab.add_node("n1", underlay=True)
        node.run(["ip", "route", "add", "default", "via", api_node.underlay_ip])
        api = KubeAPI(host=api_node.underlay_ip, port=6443, netns=api_node.netns, bookmark_interval=60)
        api.start()
        lab.add_finalizer(api.stop)
        for i in range(args.peers):
            api.add_node(f"peer-{i:05d}", pod_cidrs=[peer_subnet(i)], annotations=peer_annotations(i))
        api.add_node("n1", pod_cidrs=["10.250.0.0/24"], addresses=[node.underlay_ip])
        list_bytes = len(json.dumps(api.list()))
        node.write_file("/run/flannel/net-conf.json", CONF)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NODE_NAME": "n1", "POD_NAME": "kube-flannel-ds-n1",
               "POD_NAMESPACE": "kube-flannel", "EVENT_QUEUE_DEPTH": "5000"}
        argv = [str(FLANNELD), "--ip-masq", "--kube-subnet-mgr", f"--kube-api-url={api.url}",
                "--net-config-path=/run/flannel/net-conf.json"]

        def delete() -> None:
            for i in range(args.delete):
                api.delete(f"peer-{i:05d}")

        got = measure(lab, node, argv, env, args.log or f"{lab.run_dir}/flanneld.log", args, delete, 180)
    return report(args, got, "kube_scale.py", list_bytes=list_bytes)


if __name__ == "__main__":
    sys.exit(main())
