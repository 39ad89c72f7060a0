"""What bench/daemon/scale.py (etcd) and kube_scale.py (--kube-subnet-mgr) share: the peers'
addresses, the command line, the measurements (convergence, deletions, peak RSS) and the report."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

ROOT = Path(__file__).resolve().parents[2]
FLANNELD = ROOT / "dist" / "cni" / "flanneld"
CONF = '{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}}'
GOALS = {"converge_s": 10.0, "delete_s": 5.0, "peak_rss_mb": 100.0}


def peer_subnet(i: int) -> str:
    return f"10.{1 + i // 256}.{i % 256}.0/24"


def peer_public_ip(i: int) -> str:
    return f"198.19.{i // 250}.{1 + i % 250}"


def peer_vtep_mac(i: int) -> str:
    return f"0a:00:00:00:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}"


def parse_args(default_out: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=2000)
    ap.add_argument("--delete", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / default_out))
    ap.add_argument("--log", default="", help="keep flanneld's log here")
    args = ap.parse_args()
    if not FLANNELD.exists():
        raise SystemExit(f"bench: {FLANNELD} missing: run 'make binaries'")
    return args


def route_count(node) -> int:
    out = node.run(["ip", "-4", "route", "show", "dev", "flannel.1"], check=False).stdout
    return sum(1 for line in out.splitlines() if " via " in line)


def wait(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"bench: timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def measure(lab, node, argv: list, env: Any, log_path: str, args: argparse.Namespace,
            delete: Callable[[], None], timeout: float) -> Dict[str, float]:
    """Start flanneld; time it until it routes to every peer, then time ``delete`` (which
    removes the first args.delete peers) until their routes are gone; its peak RSS."""
    with open(log_path, "w") as log:
        started = time.monotonic()
        proc = node.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    lab.add_finalizer(lambda: (proc.kill(), proc.wait()))
    wait(lambda: route_count(node) >= args.peers or proc.poll() is not None, timeout, "convergence")
    converge = time.monotonic() - started
    if proc.poll() is not None:
        raise SystemExit(f"bench: flanneld exited {proc.returncode}:\n{Path(log_path).read_text()}")
    started = time.monotonic()
    delete()
    wait(lambda: route_count(node) <= args.peers - args.delete, timeout, "deletions")
    removed = time.monotonic() - started
    with open(f"/proc/{proc.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    return {"converge_s": round(converge, 2), "delete_s": round(removed, 2), "peak_rss_mb": round(hwm / 1024, 1)}


def report(args: argparse.Namespace, got: Dict[str, float], script: str, **extra: Any) -> int:
    result = {"peers": args.peers, "deleted": args.delete, **got, **extra, "goals": GOALS,
              "met": {k: got[k] <= GOALS[k] for k in GOALS},
              "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
              "command": f"bench/daemon/{script} " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0
