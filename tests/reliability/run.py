"""`make reliability`: fuzzing, crash injection and the reboot/GC check at full size, ours beside
Debian's Go plugins where they apply; prints one table and saves it under reliability/results/.

    .venv/bin/python -m tests.reliability.run [--fuzz N] [--crashes N] [--quick]

Runs as root (test namespaces only, like the integration suite).  Budget: --crashes is the number
of injected crashes for our plugins (split between the self-contained path and the agent hand-off);
Go's plugins get a tenth of that in random-delay kills.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

from tests.harness.netns import Lab
from tests.harness.plugins import REPO_ROOT, plugin_dir, reference_dir
from tests.reliability import daemon_restart
from tests.reliability import storm as storm_part
from tests.reliability.crashes import CrashLab
from tests.reliability.guard import Stopped, guard_labs

RESULTS = REPO_ROOT / "reliability" / "results"
PODS = 8


FUZZ_RUNS = [["tests/unit/test_fuzz_daemon_inputs.py"], ["tests/unit/test_fuzz_udp.py"]] + [
    ["tests/integration/test_fuzz_plugins.py", "-k", plugin] for plugin in ("flannel", "bridge", "host", "portmap", "loopback")]


def fuzz(examples: int, exec_examples: int, plugin_examples: int = 0) -> List[Dict[str, Any]]:
    """Run the fuzz tests with the given case counts, one pytest per target group side by side;
    their counts come back through CNI_FUZZ_REPORT."""
    rows: List[Dict[str, Any]] = []
    procs = []
    for n, selection in enumerate(FUZZ_RUNS):
        report = tempfile.mktemp(prefix=f"cnif-fuzz-{n}-", suffix=".jsonl")
        cases = plugin_examples if plugin_examples and "plugins" in selection[0] else examples
        env = dict(os.environ, CNI_FUZZ_EXAMPLES=str(cases), CNI_FUZZ_EXEC_EXAMPLES=str(exec_examples),
                   CNI_FUZZ_REPORT=report)
        procs.append((report, subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                "--timeout=7200", *selection], cwd=REPO_ROOT, env=env,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    try:
        outs = [proc.communicate()[0] for _, proc in procs]
    except BaseException:  # stopped (guard.Stopped): the fuzz runs unwind their labs too
        for _, proc in procs:
            proc.send_signal(signal.SIGINT)
        for _, proc in procs:
            proc.wait(120)
        raise
    for (report, proc), out in zip(procs, outs):
        print(out[-2000:], file=sys.stderr)
        got = [json.loads(l) for l in open(report)] if os.path.exists(report) else []
        rows += [dict(row, pytest_rc=proc.returncode) for row in got]
    return rows


def crashes(path: str, target: int, seed: int, minutes: float = 0, pods: int = PODS) -> Dict[str, Any]:
    """Rounds of `pods` crashed pods until `target` crashes were injected on one path (or, with
    `minutes`, until that time is up: the row then shows how many were reached)."""
    from tests.conftest import agent_requests, forbid_fallback, start_agent

    started = time.monotonic()
    with Lab() as lab:
        node = lab.add_node()
        node.install_plugins(reference_dir() if path == "go" else plugin_dir())
        agent = start_agent(node) if path == "agent" else None
        if agent:  # the row must prove the agent did the work: no silent self-contained fallback
            forbid_fallback(node)
        cl = CrashLab(node, kind="bridge" if path == "go" else "flannel", ours=path != "go",
                      agent_pid=agent.pid if agent else None, rng=random.Random(seed))
        number = 0
        deadline = started + minutes * 60 if minutes else float("inf")
        while cl.counts["crashes"] < target and time.monotonic() < deadline:
            cl.round(pods, number)
            number += 1
        final = {k: len(v) for k, v in cl.leftovers().items() if v}  # what is left at the end
        reboot = cl.reboot_round(pods) if path != "go" else None
        served = agent_requests(node) if agent else []
    counts = cl.counts
    refusals = [x for x in served if x.startswith("refused")]  # a caller killed before it sent, ...
    agent_row = {"agent_served": len(served) - len(refusals), "agent_refused": len(refusals),
                 "agent_refusals": sorted(set(refusals))[:5]} if path == "agent" else {}
    return {"path": path, **agent_row, "pods": pods, "crashes": counts["crashes"], "rounds": counts["rounds"],
            "rounds_with_leftovers": len(cl.leftover_rounds),
            "leftovers": sum(final.values()), "leftover_kinds": final,
            "failures": {k: v for k, v in counts.items() if k.startswith(("del_failure:", "gc_failure:", "add_failure:"))},
            "del_failures": counts["del_failures"], "gc_failures": counts["gc_failures"],
            "add_failures": counts["add_failures"],
            "tracebacks": counts["tracebacks"], "hangs": counts["hangs"], "reboot_leftovers": reboot,
            "by_step": {k[6:]: v for k, v in counts.items() if k.startswith("crash:")},
            "first_leftovers": cl.leftover_rounds[:3], "seconds": round(time.monotonic() - started),
            "load": [round(x, 1) for x in os.getloadavg()]}  # at the end (1, 5, 15 min)


def table(fuzz_rows: List[Dict[str, Any]], crash_rows: List[Dict[str, Any]]) -> str:
    lines = ["| crash injection | crashes | rounds (pods each) | rounds with leftovers | left at the end | DEL/GC/reboot-ADD failures "
             "| tracebacks | hangs (> 120 s, killed) | after reboot + GC |", "|---|---|---|---|---|---|---|---|---|"]
    for r in crash_rows:
        name = {"self-contained": "ours, self-contained", "agent": "ours, agent hand-off",
                "go": "Go (Debian), bridge chain, random-delay kills"}[r["path"]]
        if r["path"] == "agent":
            name += f" ({r.get('agent_served', '?')} requests served, {r.get('agent_refused', '?')} refused, fallback forbidden)"
        kinds = ", ".join(f"{k} {v}" for k, v in r["leftover_kinds"].items())
        lines.append(f"| {name} | {r['crashes']} | {r['rounds']} ({r.get('pods', PODS)}) | {r['rounds_with_leftovers']} "
                     f"| {r['leftovers']}{f' ({kinds})' if kinds else ''} "
                     f"| {r['del_failures'] + r['gc_failures'] + r.get('add_failures', 0)} | {r['tracebacks']} "
                     f"| {r.get('hangs', 0)} "
                     f"| {'—' if r['reboot_leftovers'] is None else r['reboot_leftovers']} |")
    lines += ["", "| fuzz target | cases | results | clean errors | tracebacks | node changed by a failure | leaks |",
              "|---|---|---|---|---|---|---|"]
    for r in fuzz_rows:
        lines.append(f"| {r['target']} | {r.get('cases', 0)} | {r.get('ok', 0)} | {r.get('errors', 0)} "
                     f"| {r.get('tracebacks', 0)} | {r.get('changed', '—')} | {r.get('leaks', '—')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzz", type=int, default=1000, help="cases per fuzz target (in-process / pure)")
    ap.add_argument("--fuzz-plugins", type=int, default=0, help="in-process cases per plugin (default: --fuzz)")
    ap.add_argument("--fuzz-exec", type=int, default=50, help="cases per plugin through the frozen binaries")
    ap.add_argument("--crashes", type=int, default=1000, help="injected crashes for our plugins")
    ap.add_argument("--self-contained-share", type=float, default=0.5,
                    help="part of --crashes on the self-contained path (the rest through the agent)")
    ap.add_argument("--path", choices=["self-contained", "agent", "go"], help="with --part crashes: this path only")
    ap.add_argument("--pods", type=int, default=PODS, help="with --part crashes: pods crashed at once per round")
    ap.add_argument("--minutes", type=float, default=0, help="with --part crashes: stop each path after this long")
    ap.add_argument("--part", choices=["all", "crashes", "fuzz", "storm", "restart", "table"], default="all",
                    help="run one part (its rows go to reliability/results/<part>.json; 'table' joins them) "
                         "so the two can run side by side")
    ap.add_argument("--quick", action="store_true", help="100 fuzz cases, 60 crashes: a smoke run")
    ap.add_argument("--restart-rounds", type=int, default=5,
                    help="daemon crash-while-peers-left rounds per backend (vxlan, host-gw, udp)")
    ap.add_argument("--rounds", type=int, default=10, help="storm rounds per row (implementation x backend)")
    ap.add_argument("--storm-pods", type=int, default=110, help="storm pods per round (the kubelet's maximum: 110)")
    ap.add_argument("--storm-minutes", type=float, default=20,
                    help="start no new storm round in a row after this long (0: never; keeps make reliability bounded)")
    ap.add_argument("--impl", action="append", choices=list(storm_part.IMPLEMENTATIONS), help="storm rows of these only")
    ap.add_argument("--backend", action="append", choices=["iptables-nft", "iptables-legacy", "nftables"],
                    help="storm rows on these firewall backends only")
    args = ap.parse_args()
    if args.quick:
        args.fuzz, args.fuzz_exec, args.crashes, args.restart_rounds = 100, 5, 60, 1
    started = time.monotonic()
    seed = int(os.environ.get("CNI_RELIABILITY_SEED", str(int(time.time()))))
    RESULTS.mkdir(parents=True, exist_ok=True)
    crash_rows: List[Dict[str, Any]] = []
    fuzz_rows: List[Dict[str, Any]] = []
    if args.part in ("all", "crashes"):
        own = int(args.crashes * args.self_contained_share)
        targets = {"self-contained": own, "agent": args.crashes - own, "go": max(20, args.crashes // 10)}
        for n, path in enumerate(targets):
            if args.path in (None, path):
                crash_rows.append(crashes(path, targets[path], seed + n, args.minutes, args.pods))
        name = f"crashes-{args.path}.json" if args.path else "crashes.json"
        (RESULTS / name).write_text(json.dumps(crash_rows, indent=1, default=str))
    if args.part in ("all", "fuzz"):
        fuzz_rows = fuzz(args.fuzz, args.fuzz_exec, args.fuzz_plugins)
        (RESULTS / "fuzz.json").write_text(json.dumps(fuzz_rows, indent=1, default=str))
    storm_rows: List[Dict[str, Any]] = []
    if args.part in ("all", "storm"):  # each row saved as reliability/results/storm-<impl>-<backend>.json
        storm_rows = storm_part.run_rows(RESULTS, args.rounds, args.storm_pods, seed, args.storm_minutes,
                                         args.impl, args.backend)
    restart_rows: List[Dict[str, Any]] = []
    if args.part in ("all", "restart"):
        restart_rows = [daemon_restart.rounds(b, args.restart_rounds) for b in daemon_restart.BACKENDS]
        (RESULTS / "restart.json").write_text(json.dumps(restart_rows, indent=1))
    if args.part == "restart":
        print(daemon_restart.table(restart_rows))
        return 1 if any(daemon_restart.bad(r) for r in restart_rows) else 0
    if args.part == "storm":
        print(storm_part.table(storm_rows))
        return 1 if any(storm_part.bad(r) for r in storm_rows if r["impl"] != "go") else 0
    if args.part in ("crashes", "fuzz"):
        return 0
    if args.part == "table":
        for part in sorted(RESULTS.glob("crashes*.json"), key=lambda p: p.name):
            crash_rows += json.loads(part.read_text())
        order = ["self-contained", "agent", "go"]
        crash_rows.sort(key=lambda r: order.index(r["path"]))
        fuzz_rows = json.loads((RESULTS / "fuzz.json").read_text())
        storm_rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("storm-*.json"))]
        if (RESULTS / "restart.json").exists():
            restart_rows = json.loads((RESULTS / "restart.json").read_text())
    text = table(fuzz_rows, crash_rows)
    if restart_rows:
        text += "\n\n" + daemon_restart.table(restart_rows)
    if storm_rows:
        text += "\n\n" + storm_part.table(storm_rows)
    minutes = (time.monotonic() - started) / 60
    header = (f"`make reliability` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{minutes:.0f} min, seed {seed}, load {os.getloadavg()[0]:.1f}; command: .venv/bin/python -m "
              f"tests.reliability.run --fuzz {args.fuzz} --fuzz-plugins {args.fuzz_plugins or args.fuzz} "
              f"--fuzz-exec {args.fuzz_exec} --crashes {args.crashes} --pods {args.pods} --restart-rounds {args.restart_rounds}"
              f"{' --part ' + args.part if args.part != 'all' else ''})")
    print(header + "\n\n" + text)
    (RESULTS / "latest.md").write_text(header + "\n\n" + text + "\n")
    (RESULTS / "latest.json").write_text(json.dumps({"crashes": crash_rows, "fuzz": fuzz_rows, "storm": storm_rows,
                                                        "restart": restart_rows}, indent=1, default=str))
    ours = [r for r in crash_rows if r["path"] != "go"]
    # (a refused request fails the plugin, fallback forbidden: the failure counts are where it shows)
    agent_unproven = sum(1 for r in ours if r["path"] == "agent" and not r.get("agent_served"))
    bad = (agent_unproven + sum(r["rounds_with_leftovers"] + r["leftovers"] + r.get("hangs", 0) + r.get("add_failures", 0) + r["del_failures"] + r["gc_failures"] + r["tracebacks"] + (r["reboot_leftovers"] or 0)
               for r in ours)
           + sum(r.get("tracebacks", 0) + r.get("changed", 0) + r.get("leaks", 0) for r in fuzz_rows)
           + sum(1 for r in fuzz_rows if r.get("pytest_rc")))
    bad += sum(storm_part.bad(r) for r in storm_rows if r["impl"] != "go")
    bad += sum(daemon_restart.bad(r) for r in restart_rows)  # Go's rows: measured, not judged
    enough = sum(r["crashes"] for r in ours) >= args.crashes and all(
        r.get("cases", 0) >= (args.fuzz_plugins or args.fuzz if r["target"].startswith("plugin:") else args.fuzz) * 0.9
        for r in fuzz_rows if "exec" not in r["target"])
    print(f"reliability: {'OK' if not bad and enough and fuzz_rows else 'FAILED'}")
    return 0 if not bad and enough and fuzz_rows else 1


if __name__ == "__main__":
    guard_labs()  # labs removed on every exit: signals unwind them, a guardian covers SIGKILL
    try:
        sys.exit(main())
    except Stopped as stop:
        print(f"reliability: {stop}; labs removed", file=sys.stderr)
        sys.exit(128 + stop.signum)
