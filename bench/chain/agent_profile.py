#!/work/main/.venv/bin/python
"""Where a seed-chain ADD/DEL through the agent spends its time (bench/run.sh --agent-profile).

A throw-away node set up like the bench's "ours" node, the frozen agent with --profile-dir and
--request-log; N sequential seed-chain ADD + DEL through libcni (cnitool-libcni), timed by the
bench worker.  Prints per operation: libcni's wall, the agent's "to start" (accept -> plugin
code: setns, decode) and "to run" (the plugin) per request, and the top functions of the
workers' merged cProfile (cumulative), also saved as bench/results/profile/agent-<op>.txt.

    bench/chain/agent_profile.py [N]
"""

from __future__ import annotations

import glob
import io
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)

from bench.chain import configs, stats  # noqa: E402
from bench.chain.nodes import OURS_DIR, OURS_PLUGINS, Worker  # noqa: E402
from tests.conftest import AGENT_LOG, AGENT_SOCKET, agent_requests  # noqa: E402
from tests.harness import drivers  # noqa: E402
from tests.harness.exec import BASE_ENV  # noqa: E402
from tests.harness.netns import Lab  # noqa: E402

OUT = REPO / "bench" / "results" / "profile"


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    profdir = tempfile.mkdtemp(prefix="cft-agentprof-")  # seen from the node (a plain host dir)
    try:
        with Lab() as lab:
            node = lab.add_node("ours")
            node.install_plugins(OURS_DIR, OURS_PLUGINS)
            for path, text in configs.files("ours").items():
                node.write_file(path, text)
            agent = node.popen(["/opt/cni/bin/flannel", "agent", "--socket", AGENT_SOCKET, "--request-log",
                                AGENT_LOG, "--profile-dir", profdir], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            lab.add_finalizer(agent.kill)
            deadline = time.monotonic() + 30
            while not node.exists(AGENT_SOCKET):
                assert agent.poll() is None and time.monotonic() < deadline, "agent did not start"
                time.sleep(0.05)
            worker = Worker(lab, node)
            pod = node.add_pod("p")
            env = dict(BASE_ENV, CNI_PATH="/opt/cni/bin")
            cnitool = drivers.driver_path("cnitool-libcni")
            walls = {"add": [], "del": []}
            for i in range(n + 1):
                for cmd in ("add", "del"):
                    argv = [cnitool, cmd, configs.SEED, pod.path, "--id", f"p{i}", "--ifname", "eth0",
                            "--capability-args", '{"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}']
                    r = worker.run([{"argv": argv, "env": env}])["runs"][0]
                    assert r["rc"] == 0, r
                    if i:  # the first round warms up
                        walls[cmd].append(r["wall"] * 1000)
            log = agent_requests(node)
            pids = set(re.findall(r"^cni-flannel agent\[(\d+)\]", node.read_file(AGENT_LOG), re.M))
    finally:
        kept = sorted(glob.glob(f"{profdir}/*.prof"))
        OUT.mkdir(parents=True, exist_ok=True)
    print(f"seed chain through the agent, {n} samples (load {stats.loadavg()})")
    for cmd in ("add", "del"):
        print(f"  libcni {cmd.upper()} wall p50 {stats.percentile(walls[cmd], 50):.1f} ms")
    print(f"  {len(log)} requests served by {len(pids)} workers (a worker serves callers one after another)")
    per = {}
    for line in log:
        m = re.match(r"(\S+) (\S+) \S+ exit \d+ \(([0-9.]+) ms to start, ([0-9.]+) ms to run\)", line)
        if m:
            per.setdefault(f"{m.group(1)} {m.group(2)}", []).append((float(m.group(3)), float(m.group(4))))
    for key, vals in sorted(per.items()):
        print(f"  agent {key:<16} to start p50 {stats.percentile([v[0] for v in vals], 50):5.1f} ms, "
              f"to run p50 {stats.percentile([v[1] for v in vals], 50):5.1f} ms  (n={len(vals)})")
    for kind in ("flannel-ADD", "portmap-ADD", "flannel-DEL", "portmap-DEL"):
        files = [p for p in kept if os.path.basename(p).startswith(f"{kind}-")]
        if not files:
            continue
        buf = io.StringIO()
        st = pstats.Stats(*files, stream=buf)
        st.sort_stats("cumulative").print_stats(22)
        text = buf.getvalue()
        (OUT / f"agent-{kind}.txt").write_text(text)
        print(f"\n--- {kind}: merged cProfile of {len(files)} workers (cumulative, top) ---")
        print("\n".join(line for line in text.splitlines() if ".prof" not in line)[:3000])
    shutil.rmtree(profdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
