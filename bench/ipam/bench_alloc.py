#!/work/main/.venv/bin/python
"""host-local allocation latency on a /16 at 0 %, 50 % and 99 % fullness, ours vs Go.

Each sample is one exec of the plugin, as a runtime does it: ADD for a new
container (timed), then DEL of it (timed separately) so the fullness stays put.
The two implementations alternate on the *same* directory, so they see the
same state.  The pool is pre-filled with reservation files in the reference's
format at random (seeded) addresses, so the round-robin scan meets the
density of taken addresses the fullness implies.  Also timed: our allocator
in-process (the library path bridge/flannel use), which is the algorithm
without interpreter start-up.

    bench/ipam/bench_alloc.py [--samples 15] [--ours dist/cni/host-local | --source] [--dir /var/tmp]

Writes bench/results/ipam_alloc.json and prints a table with ratios (ours/Go).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SUBNET = "10.128.0.0/16"
NETWORK = "benchnet"
GO = "/usr/lib/cni/host-local"
LEVELS = (0, 50, 99)


def default_ours() -> str:
    frozen = REPO / "dist" / "cni" / "host-local"
    return str(frozen) if frozen.exists() else ""


def source_wrapper(tmp: Path) -> str:
    wrapper = tmp / "host-local"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {REPO}/.venv/bin/python {REPO}/plugins/cni-flannel.py host-local \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def fill(data_dir: Path, percent: int, seed: int = 42) -> int:
    """Reserve ``percent`` of the pool at random addresses; returns how many."""
    d = data_dir / NETWORK
    d.mkdir(parents=True)
    net = ipaddress.ip_network(SUBNET)
    pool = [int(net.network_address) + i for i in range(2, net.num_addresses - 1)]  # .0.2 .. .255.254
    count = len(pool) * percent // 100
    rng = random.Random(seed)
    for i, value in enumerate(rng.sample(pool, count)):
        fd = os.open(str(d / str(ipaddress.IPv4Address(value))), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, f"{i:064x}\r\neth0".encode())
        os.close(fd)
    # resume the scan from a random point, as a long-lived node would
    (d / "last_reserved_ip.0").write_text(str(ipaddress.IPv4Address(rng.choice(pool))))
    return count


def exec_once(plugin: str, command: str, conf: bytes, cid: str) -> float:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": "/proc/self/ns/net", "CNI_NETNS_OVERRIDE": "1", "CNI_IFNAME": "eth0",
           "CNI_PATH": os.path.dirname(plugin), "CNI_FLANNEL_LOG": "/dev/null"}
    start = time.perf_counter()
    done = subprocess.run([plugin], input=conf, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{plugin} {command} failed: {done.stdout!r} {done.stderr!r}")
    return elapsed * 1000


def in_process_once(ipam: dict, cid: str) -> float:
    from cni_flannel.ipam import host_local

    start = time.perf_counter()
    host_local.allocate(ipam, NETWORK, cid, "eth0")
    elapsed = time.perf_counter() - start
    host_local.release(ipam, NETWORK, cid, "eth0")
    return elapsed * 1000


def summary(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "min_ms": round(ordered[0], 2),
        "n": len(ordered),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--ours", default=default_ours(), help="our host-local executable (default: dist/cni, else source)")
    ap.add_argument("--source", action="store_true", help="run ours from the source tree (the .venv python)")
    ap.add_argument("--dir", default="/var/tmp", help="where the temporary dataDir lives (a disk, like /var/lib/cni)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ipam_alloc.json"))
    opts = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-hl-", dir=opts.dir))
    try:
        ours = source_wrapper(tmp) if opts.source or not opts.ours else opts.ours
        report = {"subnet": SUBNET, "ours": ours, "go": GO, "samples": opts.samples, "data_dir_fs": opts.dir,
                  "python": sys.version.split()[0], "levels": {}}
        print(f"ours: {ours}\ngo:   {GO}\n")
        print(f"{'full':>5} {'reserved':>8} | {'ADD go':>8} {'ADD ours':>9} {'ratio':>6} | "
              f"{'DEL go':>8} {'DEL ours':>9} {'ratio':>6} | {'lib ADD':>8}")
        for level in LEVELS:
            data_dir = tmp / f"fill{level}"
            reserved = fill(data_dir, level)
            ipam = {"type": "host-local", "dataDir": str(data_dir), "ranges": [[{"subnet": SUBNET}]]}
            conf = json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "type": "host-local", "ipam": ipam}).encode()
            times: Dict[str, List[float]] = {"add_go": [], "add_ours": [], "del_go": [], "del_ours": [], "lib_add": []}
            for i in range(opts.samples + 1):  # the first round warms the page cache and is dropped
                for who, plugin in (("go", GO), ("ours", ours)):
                    cid = f"bench{level}{who}{i}"
                    add_ms = exec_once(plugin, "ADD", conf, cid)
                    del_ms = exec_once(plugin, "DEL", conf, cid)
                    if i:
                        times[f"add_{who}"].append(add_ms)
                        times[f"del_{who}"].append(del_ms)
                lib_ms = in_process_once(ipam, f"bench{level}lib{i}")
                if i:
                    times["lib_add"].append(lib_ms)
            stats = {k: summary(v) for k, v in times.items()}
            add_ratio = stats["add_ours"]["median_ms"] / stats["add_go"]["median_ms"]
            del_ratio = stats["del_ours"]["median_ms"] / stats["del_go"]["median_ms"]
            report["levels"][str(level)] = dict(stats, reserved=reserved, add_ratio_ours_over_go=round(add_ratio, 2),
                                                del_ratio_ours_over_go=round(del_ratio, 2))
            print(f"{level:>4}% {reserved:>8} | {stats['add_go']['median_ms']:>8.1f} {stats['add_ours']['median_ms']:>9.1f} "
                  f"{add_ratio:>6.2f} | {stats['del_go']['median_ms']:>8.1f} {stats['del_ours']['median_ms']:>9.1f} "
                  f"{del_ratio:>6.2f} | {stats['lib_add']['median_ms']:>8.1f}")
            shutil.rmtree(data_dir)
        print("\nmedians in ms; ratio = ours / Go (below 1: ours faster)")
        out = Path(opts.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
