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

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.daemon.scale import route_count, wait  # noqa: E402
from tests.harness.kubeapi import KubeAPI  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402

FLANNELD = ROOT / "dist" / "cni" / "flanneld"
CONF = '{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}}'
P = "flannel.alpha.coreos.com/"
GOALS = {"converge_s": 10.0, "delete_s": 5.0, "peak_rss_mb": 100.0}


def peer_annotations(i: int) -> dict:
    mac = f"0a:00:00:00:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}"
    return {P + "kube-subnet-manager": "true", P + "backend-type": "vxlan",
            P + "public-ip": f"198.19.{i // 250}.{1 + i % 250}",
            P + "backend-data": '{"VNI":1,"VtepMAC":"%s"}' % mac}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=2000)
    ap.add_argument("--delete", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "daemon_kube_scale.json"))
    args = ap.parse_args()
    if not FLANNELD.exists():
        raise SystemExit(f"bench: {FLANNELD} missing: run 'make binaries'")
    with Lab() as lab:
        api_node = lab.add_node("api", underlay=True)
        node = lab.add_node("n1", underlay=True)
        node.run(["ip", "route", "add", "default", "via", api_node.underlay_ip])
        api = KubeAPI(host=api_node.underlay_ip, port=6443, netns=api_node.netns, bookmark_interval=60)
        api.start()
        lab.add_finalizer(api.stop)
        for i in range(args.peers):
            api.add_node(f"peer-{i:05d}", pod_cidrs=[f"10.{1 + i // 256}.{i % 256}.0/24"],
                         annotations=peer_annotations(i))
        api.add_node("n1", pod_cidrs=["10.250.0.0/24"], addresses=[node.underlay_ip])
        list_bytes = len(json.dumps(api.list()))
        node.write_file("/run/flannel/net-conf.json", CONF)
        log_path = f"{lab.run_dir}/flanneld.log"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NODE_NAME": "n1", "POD_NAME": "kube-flannel-ds-n1",
               "POD_NAMESPACE": "kube-flannel", "EVENT_QUEUE_DEPTH": "5000"}
        with open(log_path, "w") as log:
            started = time.monotonic()
            proc = node.popen([str(FLANNELD), "--ip-masq", "--kube-subnet-mgr", f"--kube-api-url={api.url}",
                               "--net-config-path=/run/flannel/net-conf.json"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
        lab.add_finalizer(lambda: (proc.kill(), proc.wait()))
        wait(lambda: route_count(node) >= args.peers or proc.poll() is not None, 180, "convergence")
        converge = time.monotonic() - started
        if proc.poll() is not None:
            raise SystemExit(f"bench: flanneld exited {proc.returncode}:\n{Path(log_path).read_text()}")
        started = time.monotonic()
        for i in range(args.delete):
            api.delete(f"peer-{i:05d}")
        wait(lambda: route_count(node) <= args.peers - args.delete, 180, "deletions")
        delete = time.monotonic() - started
        with open(f"/proc/{proc.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    got = {"converge_s": round(converge, 2), "delete_s": round(delete, 2), "peak_rss_mb": round(hwm / 1024, 1)}
    result = {"peers": args.peers, "deleted": args.delete, **got, "list_bytes": list_bytes, "goals": GOALS,
              "met": {k: got[k] <= GOALS[k] for k in GOALS},
              "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
              "command": "bench/daemon/kube_scale.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
