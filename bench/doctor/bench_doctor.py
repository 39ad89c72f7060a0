#!/work/main/.venv/bin/python
"""How long `flannel doctor` takes on a busy healthy node: 110 pods (the kubelet's default
maximum), two vxlan peers, the daemon's masquerade rules, etcd leases; target < 2 s.

Each sample is one exec of the frozen binary inside the node, as an operator runs it
(interpreter start, netlink dumps, finding the 110 pod namespaces among every namespace on
the machine, iptables/nft snapshots, etcd, the peer probe).  The doctor's own measure of its
collection + checks (``elapsed_seconds``) is reported next to the wall time.

    bench/doctor/bench_doctor.py [--pods 110] [--samples 7] [--source]

Writes bench/results/doctor.json.  There is no reference to compare with: upstream flannel
has no such command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.harness import drivers  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402
from tests.harness.plugins import plugin_dir  # noqa: E402
from tests.integration.doctor_lab import ETCD_URL, NET_CONF_PATH, etcd_with_leases, make_cluster  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--samples", type=int, default=7)
    ap.add_argument("--source", action="store_true", help="run the source tree instead of dist/cni")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of one run from source")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "doctor.json"))
    args = ap.parse_args()
    if args.source:
        os.environ["CNI_TEST_FROM_SOURCE"] = "1"
    lab = Lab()
    try:
        def make_node(name=None, underlay=False):
            node = lab.add_node(name, underlay=underlay)
            node.install_plugins(plugin_dir())
            return node

        t0 = time.monotonic()
        c = make_cluster(make_node, count=3, pods=0)
        n1 = c.members[0].node
        etcd_with_leases(c)
        for i in range(args.pods):
            pod = n1.add_pod(f"p{i + 1}")
            drivers.libcni(n1, "add", "cbr0", pod, cid=f"pod-{i + 1}")
        print(f"set-up: 3 nodes, {args.pods} pods on n1 in {time.monotonic() - t0:.1f} s", flush=True)
        argv = ["/opt/cni/bin/flannel", "doctor", "--json", "--net-config-path", NET_CONF_PATH,
                "--etcd-endpoints", ETCD_URL, "--node-name", "n1"]
        walls, inner = [], []
        for _ in range(args.samples):
            start = time.monotonic()
            done = n1.run(argv, check=False)
            walls.append(time.monotonic() - start)
            doc = json.loads(done.stdout)
            inner.append(doc["elapsed_seconds"])
            bad = [ch["id"] for ch in doc["checks"] if ch["status"] == "fail"]
            if done.returncode != 0 or bad:
                print(f"doctor found problems on the bench node: {bad}\n{done.stdout}", file=sys.stderr)
                return 1
            held = [ch for ch in doc["checks"] if ch["id"] == "ipam"][0]["evidence"]
        if args.profile:
            import pstats

            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": ROOT}
            out = f"{lab.run_dir}/doctor.prof"
            n1.run([sys.executable, "-m", "cProfile", "-o", out, "-m", "cni_flannel.doctor", *argv[2:]],
                   env=env, check=False)
            pstats.Stats(out).sort_stats("cumulative").print_stats(45)
        with open("/proc/loadavg") as fh:
            load = fh.read().split()[:3]
        result = {"pods": args.pods, "samples": args.samples, "wall_p50_s": statistics.median(walls),
                  "wall_max_s": max(walls), "inner_p50_s": statistics.median(inner), "target_s": 2.0,
                  "source": bool(args.source), "loadavg": load, "ipam_evidence": held}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"doctor on a {args.pods}-pod node: wall p50 {result['wall_p50_s']:.2f} s, max {result['wall_max_s']:.2f} s "
              f"(collection + checks p50 {result['inner_p50_s']:.2f} s); target < 2 s: "
              f"{'met' if result['wall_max_s'] < 2.0 else 'MISSED'}; load {' '.join(load)}")
        return 0
    finally:
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
