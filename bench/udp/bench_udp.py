"""Cross-node pod-to-pod throughput and latency: udp vs vxlan vs host-gw vs a bare veth.

    .venv/bin/python bench/udp/bench_udp.py [--seconds 5] [--runs 2] [--quick] [--profile]
            [--out bench/results/udp.json]

Each backend gets a fresh Lab: two harness nodes on the underlay bridge (MTU 1500), the frozen
flannel plugin chain, the backend driven by ``python -m cni_flannel.daemon.backends`` (as in
tests/integration/test_daemon_backends.py), one pod per node.  "veth" is the floor: two
namespaces joined by one veth pair, no bridge, no encapsulation.  iperf3 (one TCP stream, pod 1
-> pod 2, ``--runs`` runs of ``--seconds``) and ping (50 x 10 ms, pod 1 -> pod 2).

``--profile`` also runs the udp pair once more with the forwarding thread under cProfile
(CNI_FLANNEL_UDP_PROFILE) and prints where each thread's time goes (bench/results/profile/udp.*).
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness.netns import Lab, Node  # noqa: E402
from tests.harness.plugins import plugin_dir  # noqa: E402
from tests.integration import test_daemon_backends as tdb  # noqa: E402
from tests.integration.udp_helpers import EnvBackendProc, set_subnet_env  # noqa: E402

EXTRA_ENV: Dict[str, str] = {}  # --env KEY=VALUE for the backend processes (experiments)
PROFILE_DIR = REPO / "bench" / "results" / "profile"
BACKENDS = {"host-gw": {"Type": "host-gw"}, "vxlan": {"Type": "vxlan", "VNI": 1}, "udp": {"Type": "udp"},
            "udp-plain": {"Type": "udp"}}
KIND_ENV = {"udp-plain": {"FLANNELD_UDP_OFFLOAD": "0"}}  # the fallback path, measured too


def iperf(client: Any, server: Any, ip: str, seconds: int) -> Dict[str, float]:
    server.run(["iperf3", "-s", "-D", "-1", "-p", "5201"])
    time.sleep(0.3)
    out = json.loads(client.run(["iperf3", "-c", ip, "-p", "5201", "-t", str(seconds), "-J"],
                                timeout=seconds + 30).stdout)
    end = out["end"]
    return {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
            "retransmits": end["sum_sent"].get("retransmits", 0),
            "cpu_sender_pct": end["cpu_utilization_percent"]["host_total"],
            "cpu_receiver_pct": end["cpu_utilization_percent"]["remote_total"]}


def ping_rtt(client: Any, ip: str, count: int = 50) -> Dict[str, float]:
    out = client.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.01", ip], timeout=60).stdout
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    assert m, out
    return {"rtt_min_ms": float(m.group(1)), "rtt_avg_ms": float(m.group(2)), "rtt_max_ms": float(m.group(3))}


def losses(node: Any) -> Dict[str, int]:
    """Where a udp node dropped packets during the run: flannel0's transmit queue full (the
    forwarder did not read in time) and the UDP socket's receive buffer full."""
    link = json.loads(node.run(["ip", "-s", "-j", "link", "show", "flannel0"]).stdout)[0]
    snmp = node.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    udp = [line.split()[1:] for line in snmp if line.startswith("Udp:")]
    fields = dict(zip(udp[0], map(int, udp[1])))
    return {"flannel0_tx_dropped": link["stats64"]["tx"]["dropped"],
            "udp_rcvbuf_errors": fields["RcvbufErrors"], "udp_sndbuf_errors": fields["SndbufErrors"]}


def node_maker(lab: Lab) -> Callable[..., Node]:
    plugins = plugin_dir()

    def make(name: Optional[str] = None, underlay: bool = False) -> Node:
        node = lab.add_node(name, underlay=underlay)
        node.install_plugins(plugins)
        return node
    return make


def bench_backend(kind: str, seconds: int, runs: int, profile: str = "") -> Dict[str, Any]:
    env = {**EXTRA_ENV, **KIND_ENV.get(kind, {})}
    with Lab() as lab:
        if kind == "veth":
            a, b = lab.add_node("a"), lab.add_node("b")
            subprocess.run(["ip", "-n", a.netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
                            "netns", b.netns], check=True)
            for node, ip, dev in ((a, "192.0.2.1/24", "v0"), (b, "192.0.2.2/24", "v1")):
                node.run(["ip", "addr", "add", ip, "dev", dev])
                node.run(["ip", "link", "set", dev, "up"])
            client, server, ip = a, b, "192.0.2.2"
        else:
            orig = tdb.BackendProc
            if profile or env:
                tdb.BackendProc = lambda node, backend, nets: EnvBackendProc(node, backend, nets, {
                    **env, **({"CNI_FLANNEL_UDP_PROFILE": f"{profile}.{node.name}"} if profile else {})})
            try:
                c = tdb.Cluster(node_maker(lab), BACKENDS[kind], count=2)
            finally:
                tdb.BackendProc = orig
            if kind.startswith("udp"):
                for m in c.members:
                    set_subnet_env(m.node, m.n)
            c.add_pods()
            (client, _), (server, ips) = c.members[0].pods[0], c.members[1].pods[0]
            ip = ips[0]
        assert client.ping(ip), f"{kind}: no connectivity"
        before = [m.proc.ok("counters") for m in c.members] if kind.startswith("udp") else []
        samples = [iperf(client, server, ip, seconds) for _ in range(runs)]
        result: Dict[str, Any] = {"runs": samples, "gbps": max(s["gbps"] for s in samples),
                                  **ping_rtt(client, ip)}
        if kind.startswith("udp"):
            after = [m.proc.ok("counters") for m in c.members]
            sender, receiver = (a["counters"] for a in after)
            # each node's whole forwarder process (all threads), per data packet of the runs:
            # exact (the kernel's run time), unlike the per-direction split of one thread's time
            sent = sender["tun_to_udp"]["packets"] - before[0]["counters"]["tun_to_udp"]["packets"]
            result["process_cpu_us_per_packet"] = {
                m.node.name: round((a["process_cpu_seconds"] - b["process_cpu_seconds"]) / max(sent, 1) * 1e6, 2)
                for m, a, b in zip(c.members, after, before)}
            result["forwarder"] = {"sender": sender, "receiver": receiver}
            out, inn = sender["tun_to_udp"], receiver["udp_to_tun"]
            # CPU per packet, independent of how busy the machine is
            result["cpu_us_per_packet"] = {
                "encapsulate": round(out["cpu_seconds"] / max(out["packets"], 1) * 1e6, 2),
                "decapsulate": round(inn["cpu_seconds"] / max(inn["packets"], 1) * 1e6, 2)}
            # of which in the kernel (syscalls: copies, the stack the packet crosses in them)
            result["kernel_us_per_packet"] = {
                "encapsulate": round(out["system_seconds"] / max(out["packets"], 1) * 1e6, 2),
                "decapsulate": round(inn["system_seconds"] / max(inn["packets"], 1) * 1e6, 2)}
            result["losses"] = {m.node.name: losses(m.node) for m in c.members}
            result["batched_share"] = {"encapsulate": round(out["batched"] / max(out["packets"], 1), 3),
                                       "decapsulate": round(inn["batched"] / max(inn["packets"], 1), 3)}
            # What one core per direction would carry at that cost (an estimate, not a measurement:
            # on a shared machine the threads get what the other processes leave).
            worst = max(result["cpu_us_per_packet"].values()) or 1
            result["cpu_bound_gbps_estimate"] = round(out["bytes"] / max(out["packets"], 1) * 8 / worst / 1e3, 2)
        if profile:
            for m in c.members:
                m.proc.finish()
        return result


def show_profile(prefix: str, top: int = 14) -> Dict[str, List[str]]:
    """Print and save (bench/results/profile/udp-<node>.<thread>.txt, and all four threads in
    bench/results/udp-profile.txt) each thread's CPU profile; the raw cProfile dumps are removed."""
    out: Dict[str, List[str]] = {}
    combined: List[str] = []
    for path in sorted(Path(prefix).parent.glob(Path(prefix).name + ".*")):
        if path.suffix == ".txt":
            continue
        stats = pstats.Stats(str(path))
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
        lines = [f"{tt / total * 100:5.1f}%  {calls:>9}  {pstats.func_std_string(func)}"
                 for func, (cc, calls, tt, ct, callers) in rows]
        name = path.name.replace("udp.", "udp-", 1)
        head = f"{name}: {total:.2f} s of CPU in the thread (self time, top {top})"
        out[name] = lines
        print(f"\n{head}\n" + "\n".join(lines))
        (PROFILE_DIR / f"{name}.txt").write_text(head + "\n" + "\n".join(lines) + "\n")
        combined += [head, *lines, ""]
        path.unlink()
    note = ("# bench/udp/bench_udp.py --profile: the forwarding thread of each node under cProfile\n"
            "# (CPU time; n1 sends the iperf3 stream and takes its ACKs back, n2 receives it and\n"
            "# sends the ACKs). cProfile inflates the cost of calls into C; the unprofiled CPU per\n"
            "# packet is in the bench JSON.\n")
    (PROFILE_DIR.parent / "udp-profile.txt").write_text(note + "\n".join(combined))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 s, 1 run")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the backend processes")
    ap.add_argument("--only", default="veth,host-gw,vxlan,udp,udp-plain")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "udp.json"))
    args = ap.parse_args()
    EXTRA_ENV.update(e.split("=", 1) for e in args.env)
    if args.quick:
        args.seconds, args.runs = 2, 1
    results: Dict[str, Any] = {}
    for kind in args.only.split(","):
        results[kind] = bench_backend(kind, args.seconds, args.runs)
        r = results[kind]
        cpu = ""
        if "cpu_us_per_packet" in r:
            c, k = r["cpu_us_per_packet"], r["kernel_us_per_packet"]
            cpu = (f"  CPU us/packet: encapsulate {c['encapsulate']} (kernel {k['encapsulate']}), "
                   f"decapsulate {c['decapsulate']} (kernel {k['decapsulate']})")
        if "process_cpu_us_per_packet" in r:
            cpu += f"  process CPU us/packet: {r['process_cpu_us_per_packet']}"
        print(f"{kind:9} {r['gbps']:7.2f} Gbit/s  rtt avg {r['rtt_avg_ms']:.3f} ms{cpu}", flush=True)
        if "losses" in r:
            print(f"{'':9} retransmits {[x['retransmits'] for x in r['runs']]}, drops {r['losses']}", flush=True)
    base = results.get("vxlan", {}).get("gbps")
    ratios = {k: round(v["gbps"] / base, 3) for k, v in results.items()} if base else {}
    print(f"load average at end: {os.getloadavg()}")
    doc: Dict[str, Any] = {"what": "pod-to-pod TCP (iperf3, 1 stream) and ping across two namespace nodes",
                           "seconds": args.seconds, "runs": args.runs, "cpus": os.cpu_count(),
                           "kernel": os.uname().release, "loadavg_at_end": os.getloadavg(),
                           "results": results, "throughput_vs_vxlan": ratios}
    if args.profile:
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        prefix = str(PROFILE_DIR / "udp")
        for old in PROFILE_DIR.glob("udp[.-]*"):
            old.unlink()
        doc["profiled_run"] = bench_backend("udp", args.seconds, 1, profile=prefix)
        doc["profile"] = show_profile(prefix)
    print("throughput vs vxlan:", ratios)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
