#!/work/main/.venv/bin/python
"""portmap ADD and DEL latency with 1, 10 and 100 mappings, ours vs Debian's Go portmap.

Everything runs inside a throw-away test node (network + mount namespace from
tests/harness); nothing touches the host's firewall.  Each sample is one exec
of the plugin as a runtime does it: ADD of a container (timed), then DEL of it
(timed).  Ours and Go alternate on the same node, so both see the same table
(the shared CNI-HOSTPORT-* chains exist after the first ADD, as on a real node).
Half the mappings are TCP, half UDP (so conntrack flushing is exercised).

    bench/portmap/bench_portmap.py [--samples 5] [--ours dist/cni/portmap | --source] [--dual] [--backend iptables]
                                   [--agent]

With --agent ours is also timed handing its requests to the resident agent
(cni_flannel.agent, started inside the bench node), which saves the imports.

Writes bench/results/portmap.json and prints medians and ratios (ours/Go).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cni_flannel.net import ns  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402

GO = "/usr/lib/cni/portmap"
COUNTS = (1, 10, 100)


def mappings(n: int) -> list:
    return [{"hostPort": 10000 + i, "containerPort": 80 + i % 1000, "protocol": "tcp" if i % 2 == 0 else "udp"}
            for i in range(n)]


def config(n: int, dual: bool, backend: str) -> bytes:
    ips = [{"address": "10.244.1.5/24", "interface": 0}]
    if dual:
        ips.append({"address": "fd00:10:244:1::5/64", "interface": 0})
    conf = {"cniVersion": "1.0.0", "name": "benchnet", "type": "portmap",
            "runtimeConfig": {"portMappings": mappings(n)},
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}], "ips": ips}}
    if backend:
        conf["backend"] = backend
    return json.dumps(conf).encode()


def source_wrapper(tmp: Path) -> str:
    wrapper = tmp / "portmap"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {REPO}/.venv/bin/python "
                       f"{REPO}/plugins/cni-flannel.py portmap \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def exec_once(plugin: str, command: str, conf: bytes, cid: str, netns: str, agent: str = "") -> float:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": os.path.dirname(plugin),
           "CNI_FLANNEL_LOG": "/dev/null"}
    env.update({"CNI_FLANNEL_AGENT_SOCKET": agent} if agent else {"CNI_FLANNEL_AGENT": "off"})
    start = time.perf_counter()
    done = subprocess.run([plugin], input=conf, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{plugin} {command} failed: {done.stdout!r} {done.stderr!r}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--ours", default="")
    ap.add_argument("--source", action="store_true", help="run ours from source instead of dist/cni")
    ap.add_argument("--dual", action="store_true", help="dual-stack pod (IPv4 + IPv6 rules)")
    ap.add_argument("--backend", default="", help="our backend option (iptables|nftables); Go 1.1.1 has iptables only")
    ap.add_argument("--agent", action="store_true", help="also time ours through the resident agent")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "portmap.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: the benchmark runs inside a test network namespace")

    tmp = Path(tempfile.mkdtemp(prefix="bench-portmap-"))
    frozen = REPO / "dist" / "cni" / "portmap"
    ours = args.ours or (source_wrapper(tmp) if args.source or not frozen.exists() else str(frozen))
    results: Dict[str, Dict] = {}
    with Lab() as lab:
        node = lab.add_node("bench")
        pod = node.add_pod("p")
        # The plugins inherit the node's network namespace from this thread (setns), so
        # no nsenter/ip-netns-exec start-up lands in the timings.
        with ns.enter(node.path):
            runs = [("ours", ours, args.backend, ""), ("go", GO, "", "")]
            if args.agent:
                sock = str(tmp / "agent.sock")
                agent = subprocess.Popen([f"{REPO}/.venv/bin/python", f"{REPO}/plugins/cni-flannel.py", "agent",
                                          "--socket", sock], env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"],
                                                                 "CNI_FLANNEL_LOG": "/dev/null"},
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                lab.add_finalizer(lambda: (agent.kill(), agent.wait()))
                while not os.path.exists(sock):
                    time.sleep(0.05)
                runs.insert(1, ("agent", ours, args.backend, sock))
            for n in COUNTS:
                row: Dict[str, List[float]] = {f"{w}_{c}": [] for w, *_ in runs for c in ("add", "del")}
                for s in range(args.samples):
                    for who, plugin, backend, sock in runs:
                        conf = config(n, args.dual, backend)
                        cid = f"bench{n}x{s}{who}"
                        row[f"{who}_add"].append(exec_once(plugin, "ADD", conf, cid, pod.path, sock))
                        row[f"{who}_del"].append(exec_once(plugin, "DEL", conf, cid, pod.path, sock))
                med = {k: statistics.median(v) for k, v in row.items()}
                r = results[str(n)] = {"samples_s": row, "median_ms": {k: round(v * 1000, 2) for k, v in med.items()}}
                line = f"{n:>4} mappings  go ADD {med['go_add'] * 1000:7.1f} DEL {med['go_del'] * 1000:6.1f} ms"
                for who, *_ in runs[:-1]:
                    r[f"ratio_add_{who}"] = round(med[f"{who}_add"] / med["go_add"], 4)
                    r[f"ratio_del_{who}"] = round(med[f"{who}_del"] / med["go_del"], 4)
                    line += (f" | {who} ADD {med[f'{who}_add'] * 1000:6.1f} ({r[f'ratio_add_{who}']:.3f}x)"
                             f" DEL {med[f'{who}_del'] * 1000:6.1f} ({r[f'ratio_del_{who}']:.3f}x)")
                print(line, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ours": ours, "go": GO, "dual_stack": args.dual, "backend": args.backend or "default",
                               "samples": args.samples, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
