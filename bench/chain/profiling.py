#!/work/main/.venv/bin/python
"""Where one in-process seed-chain ADD spends its time (bench/run.sh --profile).

In a throw-away test node set up like the bench's "ours" node:
  1. source, ``python -X importtime``: flannel ADD and portmap ADD exec'd as
     libcni would (same config, prevResult for portmap) -> imports by cost;
  2. source, ``python -m cProfile``: the same two ADDs -> time in imports,
     netlink, child processes (iptables & co.), the rest;
  3. frozen, ``strace -f`` (execve/exit_group/socket/connect/fork only,
     seccomp-bpf) of one ``cnitool-libcni add`` and ``del`` each: ours
     in-process (CNI_FLANNEL_AGENT=off), Go's chain, ours via the agent ->
     every process with its lifetime, and per plugin process the time until
     its first netlink socket / first child / agent connect (start-up +
     imports + config) vs after it (the work, or waiting for the agent);
  4. frozen, ``strace -f -c`` of one in-process ADD -> syscall totals.
Raw outputs go to bench/results/profile/, the summary to profile.json and stdout.
"""

from __future__ import annotations

import io
import json
import os
import pstats
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)

from bench.chain import configs, stats  # noqa: E402
from bench.chain.nodes import GO_DIR, OURS_DIR, OURS_PLUGINS, PYTHON  # noqa: E402
from tests.conftest import start_agent  # noqa: E402
from tests.harness import drivers  # noqa: E402
from tests.harness.exec import BASE_ENV  # noqa: E402
from tests.harness.netns import Lab, Node, Pod  # noqa: E402

OUT = REPO / "bench" / "results" / "profile"
ENTRY = str(REPO / "plugins" / "cni-flannel.py")


def plugin_confs(prev: Dict = None) -> Tuple[Dict, Dict]:
    """The flannel and portmap configs libcni would send for the seed conflist."""
    seed = configs.seed_ours()
    flannel = dict(seed["plugins"][0], name=seed["name"], cniVersion=seed["cniVersion"])
    portmap = {k: v for k, v in seed["plugins"][1].items() if k != "capabilities"}
    portmap.update(name=seed["name"], cniVersion=seed["cniVersion"], runtimeConfig=configs.port_mapping(0))
    if prev is not None:
        portmap["prevResult"] = prev
    return flannel, portmap


def env(cmd: str, cid: str, pod: Pod) -> Dict[str, str]:
    return dict(BASE_ENV, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=pod.path, CNI_IFNAME="eth0",
                CNI_PATH="/opt/cni/bin", CNI_FLANNEL_AGENT="off", PYTHONPATH=str(REPO))


def source_add(node: Node, pod: Pod, cid: str, wrap: List[str], tag: str) -> None:
    """flannel ADD then portmap ADD from source under wrap (importtime or cProfile), then DEL both."""
    flannel, _ = plugin_confs()
    prev = None
    for plugin in ("flannel", "portmap"):
        conf = flannel if plugin == "flannel" else plugin_confs(prev)[1]
        argv = [a.format(plugin=plugin, tag=tag) for a in wrap] + [ENTRY, plugin]
        done = node.run([PYTHON, *argv], input=json.dumps(conf), env=env("ADD", cid, pod), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{plugin} ADD failed: {done.stdout} {done.stderr[-2000:]}")
        if "-Ximporttime" in wrap:
            (OUT / f"importtime-{plugin}-add.txt").write_text(done.stderr)
        if plugin == "flannel":
            prev = json.loads(done.stdout)
    for plugin in ("portmap", "flannel"):
        conf = flannel if plugin == "flannel" else plugin_confs(prev)[1]
        node.run([PYTHON, ENTRY, plugin], input=json.dumps(conf), env=env("DEL", cid, pod))


def importtime_top(path: Path, n: int = 12) -> Dict:
    """Total import time and the costliest top-level imports (cumulative us -> ms)."""
    rows = []
    for line in path.read_text().splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
    top = [r for r in rows if r[1] == 0]  # depth 0: imported by the entry itself
    total = sum(r[0] for r in top)
    return {"total_ms": round(total / 1000, 1),
            "top": [{"module": name, "cumulative_ms": round(us / 1000, 1)}
                    for us, _, name in sorted(top, reverse=True)[:n]]}


def cprofile_summary(path: Path) -> Dict:
    """Split one run's time: imports, netlink requests, child processes, the rest."""
    text = io.StringIO()
    st = pstats.Stats(str(path), stream=text)
    total = st.total_tt  # type: ignore[attr-defined]
    def cum(pred) -> Tuple[float, int]:
        t, calls = 0.0, 0
        for (file, _, func), (cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
            if pred(file, func):
                t += ct
                calls += cc
        return t, calls

    imports, _ = cum(lambda f, fn: fn == "_find_and_load")
    netlink, nl_calls = cum(lambda f, fn: f.endswith("cni_flannel/net/_nl.py") and fn == "request")
    children, child_calls = cum(lambda f, fn: f.endswith("subprocess.py") and fn == "run")
    st.sort_stats("cumulative").print_stats(r"cni_flannel", 25)
    (path.with_suffix(".txt")).write_text(text.getvalue())
    ms = lambda s: round(s * 1000, 1)  # noqa: E731
    return {"total_ms": ms(total), "imports_ms": ms(imports), "netlink_requests_ms": ms(netlink),
            "netlink_requests": nl_calls, "subprocess_run_ms": ms(children), "subprocess_runs": child_calls,
            "rest_ms": ms(total - imports - netlink - children),
            "note": "cumulative times; imports done lazily inside netlink/firewall code count as imports only"}


def strace_timeline(path: Path) -> Dict:
    """Per process: program, start (ms since the driver's exec), lifetime, and the time from its
    start to its first netlink socket / first child / connect to the agent (for a Python plugin
    that is start-up + imports + config; the rest of its lifetime is the work or the agent)."""
    procs: Dict[str, Dict] = {}
    tried: Dict[str, str] = {}  # pid -> path of its execve in flight (may be split by "unfinished")
    t0 = None
    for line in path.read_text().splitlines():
        m = re.match(r"(\d+)\s+(\d+\.\d+) (.*)", line)
        if not m:
            continue
        pid, ts, rest = m.group(1), float(m.group(2)), m.group(3)
        t0 = ts if t0 is None else t0
        p = procs.setdefault(pid, {"program": "?", "start": ts})
        prog = re.match(r'execve\("([^"]+)"', rest)
        if prog:
            tried[pid] = prog.group(1)
        if ("execve(" in rest or "execve resumed" in rest) and re.search(r"= 0$", rest) and pid in tried:
            p["program"] = tried[pid]
        elif "AF_NETLINK" in rest and "netlink" not in p:
            p["netlink"] = ts
        elif rest.startswith("connect(") and "cni-agent.sock" in rest and "agent" not in p:
            p["agent"] = ts
        elif re.match(r"(vfork|clone3?|fork)\(", rest) and "CLONE_THREAD" not in rest and "spawn" not in p:
            p["spawn"] = ts
        elif rest.startswith("exit_group(") or rest.startswith("+++ exited"):
            p.setdefault("end", ts)
    out = []
    for pid, p in procs.items():
        if p["program"] == "?":  # a thread (Go's runtime threads), not a process
            continue
        row = {"program": os.path.basename(p["program"]), "start_ms": round((p["start"] - t0) * 1000, 1)}
        if "end" in p:
            row["lifetime_ms"] = round((p["end"] - p["start"]) * 1000, 1)
        for mark, label in (("netlink", "first_netlink_socket"), ("spawn", "first_child"),
                            ("agent", "connect_to_agent")):
            if mark in p:
                row[f"until_{label}_ms"] = round((p[mark] - p["start"]) * 1000, 1)
        out.append(row)
    return {"processes": out}


def main() -> int:
    if os.geteuid() != 0:
        print("profile: needs root", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    cnitool = drivers.driver_path("cnitool-libcni")
    summary: Dict = {"meta": {"loadavg_start": stats.loadavg(), "nproc": stats.nproc(),
                              "git_commit": stats.git_commit(), "binaries_build": stats.build_id()}}
    with Lab() as lab:
        node = lab.add_node("prof")
        node.install_plugins(OURS_DIR, OURS_PLUGINS)
        for path, text in configs.files("ours").items():
            node.write_file(path, text)
        pod = node.add_pod("p")
        # warm: the bridge and the shared portmap chains exist, as on a working node
        warm = [cnitool, "add", configs.SEED, pod.path, "--id", "warm", "--capability-args",
                json.dumps(configs.port_mapping(0))]
        lenv = dict(BASE_ENV, CNI_PATH="/opt/cni/bin", CNI_FLANNEL_AGENT="off")
        node.run(warm, env=lenv)
        node.run([cnitool, "del", *warm[2:]], env=lenv)

        source_add(node, pod, "imp", ["-Ximporttime"], "imp")
        summary["importtime"] = {p: importtime_top(OUT / f"importtime-{p}-add.txt") for p in ("flannel", "portmap")}
        node_out = f"/tmp/{lab.prefix}-prof"
        os.makedirs(node_out)
        lab.add_finalizer(lambda: shutil.rmtree(node_out, ignore_errors=True))
        source_add(node, pod, "cprof", ["-m", "cProfile", "-o", node_out + "/cprofile-{plugin}-add.prof"], "cprof")
        summary["cprofile"] = {}
        for p in ("flannel", "portmap"):
            shutil.copy(f"{node_out}/cprofile-{p}-add.prof", OUT / f"cprofile-{p}-add.prof")
            summary["cprofile"][p] = cprofile_summary(OUT / f"cprofile-{p}-add.prof")
            os.unlink(OUT / f"cprofile-{p}-add.prof")  # binary; the .txt stays

        # Frozen runs under strace: ours in-process, ours via the agent, and Go's chain for comparison.
        node.write_file("/etc/cni/net.d/go/10-go.conflist", json.dumps(configs.seed_go()))
        genv = dict(BASE_ENV, CNI_PATH=GO_DIR)
        aenv = dict(BASE_ENV, CNI_PATH="/opt/cni/bin")
        trace = ["--seccomp-bpf", "-f", "-ttt", "-e", "trace=execve,exit_group,socket,connect,vfork,clone,clone3",
                 "-e", "signal=none"]
        summary["timelines"] = {}
        runs = [("ours", lenv, []), ("go", genv, ["--confdir", "/etc/cni/net.d/go", "--path", GO_DIR])]
        for side, e, extra in runs + [("agent", aenv, [])]:
            if side == "agent":
                start_agent(node)
            for cmd in ("add", "del"):
                name = f"strace-{side}-{cmd}.txt"
                argv = [cnitool, cmd, configs.SEED, pod.path, "--id", f"st-{side}", "--capability-args",
                        json.dumps(configs.port_mapping(0)), *extra]
                node.run(["strace", *trace, "-o", f"{node_out}/{name}", *argv], env=e)
                shutil.copy(f"{node_out}/{name}", OUT / name)
                summary["timelines"][f"{side} {cmd.upper()}"] = strace_timeline(OUT / name)["processes"]
            if side == "ours":
                argv = [cnitool, "add", configs.SEED, pod.path, "--id", "st-c", "--capability-args",
                        json.dumps(configs.port_mapping(0))]
                node.run(["strace", "-f", "-c", "-o", f"{node_out}/strace-c.txt", *argv], env=lenv)
                node.run([cnitool, "del", *argv[2:]], env=lenv)
                shutil.copy(f"{node_out}/strace-c.txt", OUT / "strace-c-ours-add.txt")
    summary["meta"]["loadavg_end"] = stats.loadavg()
    (OUT / "profile.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("profile: interrupted; namespaces removed", file=sys.stderr)
        sys.exit(130)
