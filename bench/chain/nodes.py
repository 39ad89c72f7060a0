"""The two bench nodes (ours, go), their timing workers, and the agent's CPU meter.

Each node is a harness Node (network + mount namespace, its own /opt/cni/bin,
/etc/cni/net.d, /var/lib/cni, /run/flannel on tmpfs).  Ours gets the frozen
dist/cni plugins, subnet.env and the seed conflist; go gets Debian's plugins.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from bench.chain import configs
from tests.conftest import agent_requests, start_agent
from tests.harness import drivers
from tests.harness.exec import BASE_ENV
from tests.harness.netns import Lab, Node, Pod

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
WORKER = str(Path(__file__).with_name("worker.py"))
OURS_DIR = REPO / "dist" / "cni"
GO_DIR = "/usr/lib/cni"
OURS_PLUGINS = ("flannel", "bridge", "host-local", "portmap", "loopback")
GO_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CPUACCT = "/sys/fs/cgroup/cpuacct"


class Worker:
    """A worker.py process inside a node; run() sends jobs and returns its reply."""

    def __init__(self, lab: Lab, node: Node):
        tmp = tempfile.mkdtemp(prefix=f"{lab.prefix}-worker-")  # a harness name: cleanup.py knows it
        lab.add_finalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
        self.proc = node.popen([PYTHON, WORKER, tmp], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lab.add_finalizer(self.close)

    def run(self, jobs: List[Dict]) -> Dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"jobs": jobs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench worker died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin
                self.proc.stdin.write('{"quit": true}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()


class CpuMeter:
    """CPU used by a process and everything it forks, exited or not (cgroup v1 cpuacct).

    The agent ignores SIGCHLD, so its workers' CPU never reaches its own
    cutime; a cgroup of its own (named with the lab prefix, removed at the
    end) counts it.  Unavailable -> read() is None."""

    def __init__(self, lab: Lab, pid: int):
        self.path: Optional[str] = None
        if not os.path.isdir(CPUACCT):
            return
        path = os.path.join(CPUACCT, f"{lab.prefix}-agent")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError:
            if os.path.isdir(path):
                os.rmdir(path)
            return
        self.path = path

    def read(self) -> Optional[float]:
        """Seconds of CPU so far."""
        if self.path is None:
            return None
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9

    def remove(self) -> None:
        """Kill what is left in the cgroup, then remove it."""
        if self.path is None:
            return
        for _ in range(50):
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            import time

            time.sleep(0.05)
        os.rmdir(self.path)
        self.path = None


class Bench:
    """Both nodes set up; pods for single operations; the sides to time."""

    SIDES = ("go", "ours", "agent")  # ours = in-process (CNI_FLANNEL_AGENT=off), agent = via the agent

    def __init__(self, lab: Lab):
        self.lab = lab
        self.cnitool = drivers.driver_path("cnitool-libcni")
        self.nodes = {"ours": lab.add_node("ours"), "go": lab.add_node("go")}
        self.nodes["ours"].install_plugins(OURS_DIR, OURS_PLUGINS)
        self.nodes["go"].install_plugins(GO_DIR, GO_PLUGINS)
        for side, node in self.nodes.items():
            for path, text in configs.files(side).items():
                node.write_file(path, text)
        agent = start_agent(self.nodes["ours"], stderr=subprocess.DEVNULL)  # its request log: agent_log()
        self.agent_cpu = CpuMeter(lab, agent.pid)
        lab.add_finalizer(lambda: self._stop(agent))
        self.workers = {side: Worker(lab, node) for side, node in self.nodes.items()}
        self.pods: Dict[str, Pod] = {side: node.add_pod("single") for side, node in self.nodes.items()}
        self._pod_seq = 0

    def delegate_difference(self) -> Dict:
        """ADD one pod on ours, and compare the delegate config flannel saved with the bridge
        config the Go side runs (configs.seed_delegate); {} when they agree."""
        pod, cid = self.pods["ours"], "delegate-check"
        caps = configs.port_mapping(0)
        self.run("ours", [self.libcni_job("ours", "add", configs.SEED, pod, cid, caps)])
        try:
            saved = json.loads(self.nodes["ours"].read_file(f"/var/lib/cni/flannel/{cid}"))
        finally:
            self.run("ours", [self.libcni_job("ours", "del", configs.SEED, pod, cid, caps)])
        ignore = {"cniVersion", "runtimeConfig"}  # the runtime's, not the network's
        want = configs.seed_delegate()
        keys = (set(saved) | set(want)) - ignore
        return {k: {"ours": saved.get(k), "go": want.get(k)} for k in sorted(keys) if saved.get(k) != want.get(k)}

    def agent_log(self) -> List[str]:
        """The agent's request log (tests.conftest.agent_requests): one line per request."""
        return agent_requests(self.nodes["ours"])

    def _stop(self, agent: subprocess.Popen) -> None:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        self.agent_cpu.remove()

    @staticmethod
    def node_of(side: str) -> str:
        return "go" if side == "go" else "ours"

    def env(self, side: str) -> Dict[str, str]:
        env = dict(BASE_ENV, CNI_PATH="/opt/cni/bin")
        if side == "ours":
            env["CNI_FLANNEL_AGENT"] = "off"
        return env

    def libcni_job(self, side: str, cmd: str, net: str, pod: Pod, cid: str,
                   caps: Optional[Dict] = None) -> Dict:
        argv = [self.cnitool, cmd, net, pod.path, "--id", cid, "--ifname", "eth0"]
        if caps is not None:
            argv += ["--capability-args", json.dumps(caps)]
        return {"argv": argv, "env": self.env(side)}

    def run(self, side: str, jobs: List[Dict]) -> Dict:
        """Run jobs at once in side's node; fail loudly on any error."""
        reply = self.workers[self.node_of(side)].run(jobs)
        for job, r in zip(jobs, reply["runs"]):
            if r["rc"] != 0:
                raise RuntimeError(f"{side}: {' '.join(job['argv'])} exited {r['rc']}\n"
                                   f"stdout: {r['out']}\nstderr: {r['err']}")
        return reply

    def new_pods(self, side: str, count: int) -> List[Pod]:
        node = self.nodes[self.node_of(side)]
        pods = []
        for _ in range(count):
            self._pod_seq += 1
            pods.append(node.add_pod(f"q{self._pod_seq}"))
        return pods

    def drop_pods(self, pods: List[Pod]) -> None:
        for pod in pods:
            pod.delete()
            del pod.node.pods[pod.name]
