#!/work/main/.venv/bin/python
"""make bench: our frozen plugins vs Debian's Go reference, same run, same machine.

Two test nodes (namespaces, tests/harness): "ours" with dist/cni, subnet.env,
the seed conflist and the resident agent; "go" with /usr/lib/cni.  Every
timed operation is one process, started by a worker inside the node: the
VERSION exec itself, or ``cnitool-libcni`` (libcni, what containerd runs)
driving a conflist.  Three sides, interleaved sample by sample so load
changes hit all of them alike:

  go     Debian's Go plugins
  ours   our frozen binaries in-process (CNI_FLANNEL_AGENT=off)
  agent  our frozen binaries handing the work to the agent in the node

    bench/chain/driver.py [--quick] [--samples N] [--rounds N] [--parallel N] [--out FILE]

See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)  # not bench/chain: its module names must not shadow anything

from bench.chain import configs, stats  # noqa: E402
from bench.chain.nodes import Bench, GO_DIR  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402

SIDES = Bench.SIDES


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- 1. VERSION start-up -------------------------------------------------------------------

def bench_version(b: Bench, runs: int) -> Dict:
    """hyperfine (no shell) in the ours node: our frozen loopback vs Go's, VERSION."""
    node = b.nodes["ours"]
    out = f"/tmp/{b.lab.prefix}-version.json"
    cmds = {"ours": "/opt/cni/bin/loopback", "go": f"{GO_DIR}/loopback"}
    try:
        if subprocess.run(["which", "hyperfine"], capture_output=True).returncode == 0:
            argv = ["hyperfine", "-N", "--style", "none", "--warmup", "3", "--runs", str(runs),
                    "--export-json", out]
            for name, cmd in cmds.items():
                argv += ["-n", name, cmd]
            node.run(argv, env={"PATH": os.environ["PATH"], "CNI_COMMAND": "VERSION"}, timeout=600)
            with open(out) as f:
                data = json.load(f)
            res = {}
            for r in data["results"]:
                # hyperfine gives only the mean user/sys; use it as the CPU figure
                cpu = [r["user"] + r["system"]] * len(r["times"])
                res[r["command"]] = stats.summary(r["times"], cpu)
            res["tool"] = "hyperfine -N"
            return res
    finally:
        if os.path.exists(out):
            os.unlink(out)
    # Fallback: our own timer, interleaved.
    samples: Dict[str, List] = {name: [[], []] for name in cmds}
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION"}
    for i in range(runs + 3):
        for name, cmd in cmds.items():
            r = b.run("go" if name == "go" else "ours", [{"argv": [cmd], "env": env}])["runs"][0]
            if i >= 3:
                samples[name][0].append(r["wall"])
                samples[name][1].append(r["user"] + r["sys"])
    res = {name: stats.summary(*s) for name, s in samples.items()}
    res["tool"] = "worker timer"
    return res


# --- client time: what a plugin exec that hands off costs besides the agent's own work -------

STATUS_CONF = '{"cniVersion": "1.1.0", "name": "cbr0", "type": "flannel"}'


def bench_client(b: Bench, samples: int) -> Dict:
    """flannel STATUS through the agent, exec'd by the worker in the ours node, sample by sample:
    the static client (/opt/cni/bin/flannel) against the PyInstaller entry's own hand-off
    (what NATIVE=0 installs).  client time = exec wall - the agent's time for that request
    (accept -> answer, from its request log): exec, connect, send, receive, print."""
    env = dict(b.env("agent"), CNI_COMMAND="STATUS")
    jobs = {"client": {"argv": ["/opt/cni/bin/flannel"], "env": env, "stdin": STATUS_CONF},
            "python": {"argv": ["flannel"], "executable": "/opt/cni/bin/.cni-flannel/cni-flannel", "env": env,
                       "stdin": STATUS_CONF}}
    data: Dict[str, Dict[str, List[float]]] = {k: {"wall": [], "cpu": [], "client": []} for k in jobs}
    for i in range(samples + 3):
        for kind, job in jobs.items():
            seen = len(b.agent_log())
            r = b.run("agent", [job])["runs"][0]
            new = [line for line in b.agent_log()[seen:] if line.startswith("flannel STATUS")]
            if len(new) != 1:
                raise RuntimeError(f"{kind}: the agent did not serve this STATUS: {b.agent_log()[seen:]}")
            agent_ms = [float(x) for x in re.findall(r"([0-9.]+) ms", new[0])]
            if i >= 3:
                data[kind]["wall"].append(r["wall"])
                data[kind]["cpu"].append(r["user"] + r["sys"])
                data[kind]["client"].append(r["wall"] - sum(agent_ms) / 1000)
    out = {}
    for kind, d in data.items():
        res = stats.summary(d["wall"], d["cpu"])
        res["client_p50_ms"] = round(stats.percentile(d["client"], 50) * 1000, 2)
        res["client_p95_ms"] = round(stats.percentile(d["client"], 95) * 1000, 2)
        out[kind] = res
    return out


# --- 2-4. single operations through libcni --------------------------------------------------

def bench_single(b: Bench, net: str, samples: int, ports: bool) -> Dict[str, Dict]:
    """ADD then DEL of a fresh container, per sample and side; returns {ADD: {...}, DEL: {...}}."""
    data = {cmd: {side: [[], []] for side in SIDES} for cmd in ("ADD", "DEL")}
    agent_cpu = {"ADD": 0.0, "DEL": 0.0}
    for warm in range(1):  # untimed: the bridge, chains and caches exist, as on a working node
        for side in SIDES:
            _add_del(b, side, net, f"{net}-warm{warm}-{side}", ports)
    for s in range(samples):
        order = SIDES[s % 3:] + SIDES[:s % 3]  # rotate who goes first
        for side in order:
            times = _add_del(b, side, net, f"{net}-{s}-{side}", ports)
            for cmd, (wall, cpu, acpu) in times.items():
                data[cmd][side][0].append(wall)
                data[cmd][side][1].append(cpu + (acpu or 0.0))
                if side == "agent" and acpu is not None:
                    agent_cpu[cmd] += acpu
    out = {}
    for cmd, per_side in data.items():
        res = {side: stats.summary(*per_side[side]) for side in SIDES}
        res["agent_side_cpu_mean_ms"] = round(agent_cpu[cmd] * 1000 / samples, 2) if b.agent_cpu.path else None
        out[cmd] = res
    return out


def _add_del(b: Bench, side: str, net: str, cid: str, ports: bool):
    pod = b.pods[b.node_of(side)]
    caps = configs.port_mapping(0) if ports else None
    times = {}
    for cmd in ("add", "del"):
        before = b.agent_cpu.read() if side == "agent" else None
        r = b.run(side, [b.libcni_job(side, cmd, net, pod, cid, caps)])["runs"][0]
        acpu = b.agent_cpu.read() - before if before is not None else None
        times[cmd.upper()] = (r["wall"], r["user"] + r["sys"], acpu)
    return times


# --- 5. parallel ADDs ----------------------------------------------------------------------

def bench_parallel(b: Bench, count: int, rounds: int) -> Dict:
    res: Dict = {side: {"add_wall_s": [], "del_wall_s": [], "cpu_s": [], "duplicates": [], "failures": []}
                 for side in SIDES}
    for rnd in range(rounds):
        order = SIDES[rnd % 3:] + SIDES[:rnd % 3]
        for side in order:
            pods = b.new_pods(side, count)
            try:
                cids = [f"par{rnd}-{side}-{i}" for i in range(count)]
                jobs = [b.libcni_job(side, "add", configs.SEED, pod, cid, configs.port_mapping(i))
                        for i, (pod, cid) in enumerate(zip(pods, cids))]
                before = b.agent_cpu.read() if side == "agent" else None
                reply = b.workers[b.node_of(side)].run(jobs)
                acpu = (b.agent_cpu.read() - before) if before is not None else 0.0
                addrs, failures = [], 0
                for r in reply["runs"]:
                    if r["rc"] != 0:
                        failures += 1
                        log(f"  {side} parallel ADD failed: {r['out'].strip()[:300]}")
                        continue
                    addrs += [ip["address"] for ip in json.loads(r["out"]).get("ips", [])]
                row = res[side]
                row["add_wall_s"].append(reply["wall"])
                row["cpu_s"].append(sum(r["user"] + r["sys"] for r in reply["runs"]) + acpu)
                row["duplicates"].append(len(addrs) - len(set(addrs)))
                row["failures"].append(failures)
                dels = [b.libcni_job(side, "del", configs.SEED, pod, cid, configs.port_mapping(i))
                        for i, (pod, cid) in enumerate(zip(pods, cids))]
                row["del_wall_s"].append(b.run(side, dels)["wall"])
            finally:
                b.drop_pods(pods)
    for side in SIDES:
        row = res[side]
        row["add_p50_ms"] = round(stats.percentile(row["add_wall_s"], 50) * 1000, 1)
        row["del_p50_ms"] = round(stats.percentile(row["del_wall_s"], 50) * 1000, 1)
        row["cpu_p50_ms"] = round(stats.percentile(row["cpu_s"], 50) * 1000, 1)
    return res


# --- driver -------------------------------------------------------------------------------

def targets(results: Dict) -> List[Dict]:
    out = []

    def check(name: str, side: str, value: Optional[float], limit: float, extra_ok: bool = True) -> None:
        ok = value is not None and value <= limit and extra_ok
        out.append({"target": name, "side": side, "value": value, "limit": limit,
                    "verdict": "PASS" if ok else "MISS"})

    version = results["version"]
    check("VERSION p50 / Go's start-up", "ours", stats.ratio(version["ours"]["p50_ms"], version["go"]["p50_ms"]), 2.0)
    check("client time p50 ms (hand-off exec - agent's time)", "agent", results["client"]["client"]["client_p50_ms"],
          3.0)
    for side in ("ours", "agent"):
        seed = results["seed_chain"]
        check("seed ADD p50 / Go", side, stats.ratio(seed["ADD"][side]["p50_ms"], seed["ADD"]["go"]["p50_ms"]), 0.7)
        check("seed DEL p50 / Go", side, stats.ratio(seed["DEL"][side]["p50_ms"], seed["DEL"]["go"]["p50_ms"]), 0.5)
        par = results["parallel"]
        dup = sum(par[side]["duplicates"]) + sum(par[side]["failures"])
        check(f"{len(par[side]['add_wall_s'])}x{par['count']} parallel ADD wall / Go (0 dup, 0 fail)", side,
              stats.ratio(par[side]["add_p50_ms"], par["go"]["add_p50_ms"]), 0.7, dup == 0)
    served = results["agent_log"]
    check("agent requests refused (the agent side really handed off)", "agent", served["refused"], 0,
          served["served"] >= served["expected_at_least"])
    return out


def rows(results: Dict) -> List[Dict]:
    out = []
    v = results["version"]
    out.append({"name": "VERSION (exec)", "go": v["go"], "ours": v["ours"], "ratio_ours": stats.ratio(v["ours"]["p50_ms"], v["go"]["p50_ms"])})
    for key, label in (("loopback", "loopback"), ("bridge_host_local", "bridge+host-local"), ("seed_chain", "seed chain")):
        for cmd in ("ADD", "DEL"):
            res = results[key][cmd]
            row = {"name": f"{label} {cmd}", **{s: res[s] for s in SIDES}}
            for s in ("ours", "agent"):
                row["ratio_" + s] = stats.ratio(res[s]["p50_ms"], res["go"]["p50_ms"])
            out.append(row)
    par = results["parallel"]
    for what in ("add", "del"):
        row = {"name": f"{par['count']} parallel {what.upper()} wall"}
        for s in SIDES:
            walls = par[s][f"{what}_wall_s"]
            row[s] = {"p50_ms": par[s][f"{what}_p50_ms"], "p95_ms": round(stats.percentile(walls, 95) * 1000, 1),
                      "cpu_p50_ms": par[s]["cpu_p50_ms"] if what == "add" else None}
            if s != "go":
                row["ratio_" + s] = stats.ratio(par[s][f"{what}_p50_ms"], par["go"][f"{what}_p50_ms"])
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~1 minute: 8 samples, 1 parallel round")
    ap.add_argument("--samples", type=int, help="samples per single operation and side (default 30; quick 8)")
    ap.add_argument("--rounds", type=int, help="rounds of parallel ADDs per side (default 3; quick 1)")
    ap.add_argument("--parallel", type=int, default=20, help="pods added at once (default 20)")
    ap.add_argument("--out", help="JSON output (default bench/results/chain.json, quick: chain-quick.json)")
    args = ap.parse_args()
    samples = args.samples or (8 if args.quick else 30)
    rounds = args.rounds or (1 if args.quick else 3)
    out = Path(args.out or REPO / "bench" / "results" / ("chain-quick.json" if args.quick else "chain.json"))
    if os.geteuid() != 0:
        log("bench: needs root (it creates network namespaces)")
        return 2
    # INT (even when started in the background, where it arrives ignored), TERM and HUP raise
    # KeyboardInterrupt, so the Lab is always torn down.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)

    started = datetime.datetime.now().astimezone()
    meta = {"date": started.isoformat(timespec="seconds"), "nproc": stats.nproc(), "loadavg_start": stats.loadavg(),
            "git_commit": stats.git_commit(), "binaries_build": stats.build_id(), "kernel": os.uname().release,
            "samples": samples, "parallel_rounds": rounds, "parallel_count": args.parallel,
            "driver": "tests/drivers/cnitool-libcni (libcni 1.1.2)", "go_plugins": GO_DIR,
            "sides": {"go": "Debian's Go plugins", "ours": "dist/cni in-process (CNI_FLANNEL_AGENT=off)",
                      "agent": "dist/cni handing off to the agent in the node"}}
    log(f"bench: {meta['date']}  nproc {meta['nproc']}  load {meta['loadavg_start']}  commit {meta['git_commit'][:12]}")
    results: Dict = {}
    with Lab() as lab:
        b = Bench(lab)
        log(f"bench: nodes {lab.prefix}-ours / {lab.prefix}-go ready; agent running in ours")
        meta["delegate_vs_go_bridge"] = diff = b.delegate_difference()
        if diff:
            log(f"bench: WARNING: flannel's delegate differs from the Go side's bridge config: {diff}")
        log(f"1/5 VERSION start-up ({samples} runs each)")
        results["version"] = bench_version(b, samples)
        for key, net, ports, label in (("loopback", configs.LOOPBACK, False, "2/5 loopback ADD/DEL"),
                                       ("bridge_host_local", configs.BRIDGE, False, "3/5 bridge+host-local ADD/DEL"),
                                       ("seed_chain", configs.SEED, True, "4/5 seed chain ADD/DEL")):
            log(f"{label} via libcni ({samples} samples x {len(SIDES)} sides)")
            results[key] = bench_single(b, net, samples, ports)
        log(f"5/5 {args.parallel} parallel seed-chain ADDs ({rounds} rounds x {len(SIDES)} sides)")
        results["parallel"] = bench_parallel(b, args.parallel, rounds)
        results["parallel"]["count"] = args.parallel
        # agent side: loopback 1+1, bridge 1+1, seed 2+2 requests per sample; parallel 2+2 per pod
        expected = samples * 8 + rounds * args.parallel * 4
        log(f"client time: flannel STATUS through the agent ({samples} samples, client vs Python hand-off)")
        results["client"] = bench_client(b, samples)
        log_lines = b.agent_log()
        results["agent_log"] = {"served": sum(1 for line in log_lines if not line.startswith("refused")),
                                "refused": sum(1 for line in log_lines if line.startswith("refused")),
                                "expected_at_least": expected}
    meta["loadavg_end"] = stats.loadavg()
    meta["duration_s"] = round((datetime.datetime.now().astimezone() - started).total_seconds(), 1)
    verdicts = targets(results)
    doc = {"meta": meta, "results": results, "targets": verdicts}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.rename(out)

    print(f"\ncni-flannel bench  {meta['date']}  nproc {meta['nproc']}  load {meta['loadavg_start']} -> "
          f"{meta['loadavg_end']}  commit {meta['git_commit'][:12]}  ({meta['duration_s']} s)")
    print("ratios are p50 ours / p50 go;  ours = in-process, agent = through the resident agent;"
          " cpu = user+sys of the whole driver process tree (+ the agent's cgroup for agent)\n")
    print(stats.table(rows(results), SIDES))
    par = results["parallel"]
    print("\nparallel duplicates/failures per round: " + "; ".join(
        f"{s} {par[s]['duplicates']}/{par[s]['failures']}" for s in SIDES))
    cl = results["client"]
    print("\nhand-off exec (flannel STATUS through the agent), p50: " + "; ".join(
        f"{k} {cl[k]['p50_ms']} ms wall, {cl[k]['cpu_p50_ms']} ms cpu, client time {cl[k]['client_p50_ms']} ms "
        f"(p95 {cl[k]['client_p95_ms']})" for k in ("client", "python")))
    al = results["agent_log"]
    print(f"agent request log: {al['served']} served, {al['refused']} refused (agent side sent at least "
          f"{al['expected_at_least']})")
    print("\ntargets:")
    for t in verdicts:
        print(f"  {t['verdict']}  {t['target']:<48} {t['side']:<6} {t['value']}  (limit {t['limit']})")
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("bench: interrupted; namespaces removed")
        sys.exit(130)
