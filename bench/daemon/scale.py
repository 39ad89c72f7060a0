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

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness.etcd import EtcdServer  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402

FLANNELD = ROOT / "dist" / "cni" / "flanneld"
PREFIX = "/coreos.com/network"
CONF = '{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}}'
GOALS = {"converge_s": 10.0, "delete_s": 5.0, "peak_rss_mb": 100.0}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def peer(i: int):
    """Lease i: 10.<1 + i // 256>.<i % 256>.0/24 at 198.19.<i // 250>.<1 + i % 250>."""
    key = f"{PREFIX}/subnets/10.{1 + i // 256}.{i % 256}.0-24"
    mac = f"0a:00:00:00:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}"
    value = ('{"PublicIP":"198.19.%d.%d","PublicIPv6":null,"BackendType":"vxlan",'
             '"BackendData":{"VNI":1,"VtepMAC":"%s"}}' % (i // 250, 1 + i % 250, mac))
    return key, value


def txn(server: EtcdServer, ops) -> None:
    for start in range(0, len(ops), 100):  # etcd's default limit is 128 operations per txn
        server.call("/kv/txn", {"success": ops[start:start + 100]})


def route_count(node) -> int:
    out = node.run(["ip", "-4", "route", "show", "dev", "flannel.1"], check=False).stdout
    return sum(1 for line in out.splitlines() if " via " in line)


def wait(cond, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"bench: timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=2000)
    ap.add_argument("--delete", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "daemon_scale.json"))
    ap.add_argument("--log", default="", help="keep flanneld's log here")
    args = ap.parse_args()
    if not FLANNELD.exists():
        raise SystemExit(f"bench: {FLANNELD} missing: run 'make binaries'")
    with Lab() as lab:
        etcd_node = lab.add_node("etcd", underlay=True)
        node = lab.add_node("n1", underlay=True)
        server = EtcdServer(netns=etcd_node.netns, host=etcd_node.underlay_ip)
        lab.add_finalizer(server.close)
        server.put(f"{PREFIX}/config", CONF)
        leases = [peer(i) for i in range(args.peers)]
        txn(server, [{"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in leases])
        log_path = args.log or f"{lab.run_dir}/flanneld.log"
        with open(log_path, "w") as log:
            started = time.monotonic()
            proc = node.popen([str(FLANNELD), f"--etcd-endpoints={server.endpoint}", "--iface=eth0",
                               "--ip-masq"], stdout=log, stderr=subprocess.STDOUT)
        lab.add_finalizer(lambda: (proc.kill(), proc.wait()))
        wait(lambda: route_count(node) >= args.peers or proc.poll() is not None, 120, "convergence")
        converge = time.monotonic() - started
        if proc.poll() is not None:
            raise SystemExit(f"bench: flanneld exited {proc.returncode}:\n{Path(log_path).read_text()}")
        gone = leases[:args.delete]
        started = time.monotonic()
        txn(server, [{"requestDeleteRange": {"key": b64(k)}} for k, _ in gone])
        wait(lambda: route_count(node) <= args.peers - args.delete, 120, "deletions")
        delete = time.monotonic() - started
        with open(f"/proc/{proc.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    result = {"peers": args.peers, "deleted": args.delete, "converge_s": round(converge, 2),
              "delete_s": round(delete, 2), "peak_rss_mb": round(hwm / 1024, 1), "goals": GOALS,
              "met": {k: (round(converge, 2), round(delete, 2), round(hwm / 1024, 1))[i] <= GOALS[k]
                      for i, k in enumerate(("converge_s", "delete_s", "peak_rss_mb"))},
              "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
              "command": "bench/daemon/scale.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
