"""Crash injection: SIGKILL plugins mid-ADD (and mid-DEL) on a node, then do what a runtime does
next, and count what is left behind.

A round starts K pods' ADDs of a chain at once, each killed either at a named crash point
(CNI_FLANNEL_CRASH_AT, ours only) or after a random delay, by SIGKILL to the process the runtime
started (as a runtime's timeout does; the plugin's own children are not signalled).  The chain
goes on (portmap with the prevResult) for the pods whose ADD survived.  Then, as a runtime would,
either a DEL of the chain for every pod (its namespace still there or already removed; DELs may
themselves be killed once and retried), or — the pods' sandboxes gone — a GC of the chain that
names only the surviving attachments.  After every round the node must be back at its baseline
(the long-lived survivor pod included): IP files (empty ones too), links, addresses, saved flannel
configs, firewall rules (iptables legacy+nft, nft), spoof-check rules, TCP/UDP conntrack entries of pod addresses (a pod's own IGMP
reports are the kernel's, not a leak), agent
workers still away serving (in a caller's namespaces; idle pooled ones are home).  The same rounds run on Debian's Go plugins (no crash points there: random delays only).
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

from tests.harness.exec import BASE_ENV
from tests.harness.netns import Node, Pod

NET = "crash"
SUBNET_ENV = "FLANNEL_NETWORK=10.246.0.0/16\nFLANNEL_SUBNET=10.246.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
MAPPINGS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 18053, "containerPort": 53, "protocol": "udp"}]

#: the crash points an ADD of our flannel chain passes (cni_flannel grep "reached(")
ADD_STEPS = ["host-local.reserve-tmp-written", "host-local.reserved", "flannel.saved", "bridge.veth",
             "bridge.spoofchk", "bridge.ipam", "bridge.container", "bridge.masq", "bridge.done"]
DEL_STEPS = ["bridge.del-iface"]


def chain(kind: str) -> Dict[str, Any]:
    """The conflist: "flannel" (ours: flannel delegating to bridge + host-local, then portmap) or
    "bridge" (bridge + host-local + portmap: the chain Debian's Go plugins can run)."""
    if kind == "flannel":
        first: Dict[str, Any] = {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True,
                                                                "macspoofchk": True}}
    else:
        first = {"type": "bridge", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
                 "hairpinMode": True, "macspoofchk": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.246.1.0/24"}]]}}
    # Debian's Go plugins speak up to 1.0.0 (no GC there)
    return {"cniVersion": "1.1.0" if kind == "flannel" else "1.0.0", "name": NET, "plugins": [first, {"type": "portmap", "capabilities":
                                                                      {"portMappings": True}}]}


def plugin_conf(conflist: Dict[str, Any], index: int, prev: Optional[Dict[str, Any]] = None,
                valid: Optional[List[Tuple[str, str]]] = None) -> Dict[str, Any]:
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][index]}
    if conf["type"] == "portmap":
        conf["runtimeConfig"] = {"portMappings": MAPPINGS}
    if prev is not None:
        conf["prevResult"] = prev
    if valid is not None:
        conf["cni.dev/valid-attachments"] = [{"containerID": c, "ifname": i} for c, i in valid]
    return conf


class CrashLab:
    def __init__(self, node: Node, kind: str = "flannel", ours: bool = True, agent_pid: Optional[int] = None,
                 rng: Optional[random.Random] = None) -> None:
        self.node, self.kind, self.ours, self.agent_pid = node, kind, ours, agent_pid
        self.conflist = chain(kind)
        self.rng = rng or random.Random()
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self.leftover_rounds: List[Dict[str, Any]] = []
        node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
        self.survivor = node.add_pod("keep")
        out = self._chain_add(self.survivor, "keep")
        assert isinstance(out, dict) and "code" not in out, f"the survivor pod's ADD failed: {out}"
        self.baseline = self.state()

    def count(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self.counts[key] += 1

    # --- running plugins like a runtime ---------------------------------------------------------
    def _env(self, command: str, cid: str, netns: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        return {**BASE_ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
                "CNI_PATH": "/opt/cni/bin", "CNI_FLANNEL_LOG": "/var/log/cni.log", **(extra or {})}

    def _start(self, index: int, command: str, cid: str, netns: str, conf: Dict[str, Any],
               extra: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        proc = self.node.popen(["/opt/cni/bin/" + conf["type"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=self._env(command, cid, netns, extra))
        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        proc.stdin = None  # written: communicate() only reads
        return proc

    def _finish(self, proc: subprocess.Popen, kill_after: Optional[float]) -> Tuple[int, Optional[Dict[str, Any]]]:
        if kill_after is not None:
            try:
                proc.wait(kill_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)  # the runtime's timeout: the process it started, nothing else
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # a hang is a finding, not the end of the run
            proc.kill()
            out, err = proc.communicate()
            self.count("hangs")
        if b"Traceback" in err:
            self.count("tracebacks")
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError:
            doc = None
        return proc.returncode, doc

    def _run(self, index: int, command: str, cid: str, netns: str, conf: Dict[str, Any]) -> Tuple[int, Any]:
        return self._finish(self._start(index, command, cid, netns, conf), None)

    def _chain_add(self, pod: Pod, cid: str) -> Optional[Dict[str, Any]]:
        rc, prev = self._run(0, "ADD", cid, pod.path, plugin_conf(self.conflist, 0))
        if rc != 0:
            return prev
        return self._run(1, "ADD", cid, pod.path, plugin_conf(self.conflist, 1, prev=prev))[1]

    def _chain_del(self, cid: str, netns: str, crash_step: Optional[str] = None) -> bool:
        for index in (1, 0):
            conf = plugin_conf(self.conflist, index)
            if crash_step and index == 0:
                proc = self._start(index, "DEL", cid, netns, conf, {"CNI_FLANNEL_CRASH_AT": crash_step})
                if self._finish(proc, None)[0] == -9:
                    self.count("crashes", f"crash:{crash_step}")
            rc, out = self._run(index, "DEL", cid, netns, conf)
            if rc != 0:
                self.count("del_failures", f"del_failure:{(out or {}).get('msg', '')[:60]}")
                return False
        return True

    # --- one round --------------------------------------------------------------------------------
    def round(self, pods: int, number: int, max_delay: float = 0.4) -> Dict[str, int]:
        pending = []
        for i in range(pods):
            pod = self.node.add_pod(f"r{number % 100}x{i}")
            cid = f"crash-{number}-{i}"
            step = self.rng.choice(ADD_STEPS) if self.ours and self.rng.random() < 0.6 else None
            extra = {"CNI_FLANNEL_CRASH_AT": step} if step else None
            delay = None if step else self.rng.uniform(0.0, max_delay)
            pending.append((pod, cid, step, delay, self._start(0, "ADD", cid, pod.path,
                                                                plugin_conf(self.conflist, 0), extra)))
        started = time.monotonic()
        added = []
        for pod, cid, step, delay, proc in pending:
            left = None if delay is None else max(0.0, delay - (time.monotonic() - started))
            rc, prev = self._finish(proc, left)
            if rc == -9:
                self.counts["crashes"] += 1
                self.counts[f"crash:{step or 'random-delay'}"] += 1
            elif rc == 0:
                added.append((pod, cid, prev))
        # the chain goes on; a third of the portmap ADDs get killed too
        procs = [(self._start(1, "ADD", cid, pod.path, plugin_conf(self.conflist, 1, prev=prev)),
                  self.rng.uniform(0.0, max_delay) if self.rng.random() < 0.33 else None) for pod, cid, prev in added]
        for proc, kill in procs:
            if self._finish(proc, kill)[0] == -9:
                self.counts["crashes"] += 1
                self.counts["crash:portmap-random-delay"] += 1
        # what the runtime does next (for many pods at once, as a kubelet does)
        if self.rng.random() < 0.5 or self.conflist["cniVersion"] < "1.1.0":
            self.counts["next:del"] += 1
            plans = []
            for pod, cid, *_ in pending:
                how = self.rng.choice(["netns", "deleted"])
                step = self.rng.choice(DEL_STEPS) if self.ours and self.rng.random() < 0.25 else None
                plans.append((cid, pod.netns_for_del(how), step))
            with ThreadPoolExecutor(max_workers=len(plans) or 1) as pool:
                list(pool.map(lambda plan: self._chain_del(*plan), plans))
            for pod, *_ in pending:
                pod.delete()
        else:
            self.counts["next:gc"] += 1
            for pod, *_ in pending:
                pod.delete()
            self.gc([("keep", "eth0")])
        for pod, *_ in pending:
            self.node.pods.pop(pod.name, None)
        left = self.leftovers()
        if any(left.values()):
            self.leftover_rounds.append({"round": number, **left})
        for key, value in left.items():
            self.counts[f"leftover:{key}"] += len(value)
        self.counts["rounds"] += 1
        return left

    def reboot_round(self, pods: int) -> int:
        """A simulated reboot: pods fully added, then their namespaces (and so their veths) gone
        while every state file stays; one GC naming the valid attachments must leave nothing."""
        made = []
        for i in range(pods):
            pod = self.node.add_pod(f"boot{i}")
            out = self._chain_add(pod, f"boot-{i}")
            if not isinstance(out, dict) or "code" in out:  # counted: an ADD that fails outside a crash
                self.count("add_failures", f"add_failure:{str(out)[:80]}")
            made.append(pod)
        for pod in made:
            pod.delete()
            self.node.pods.pop(pod.name, None)
        self.gc([("keep", "eth0")])
        left = self.leftovers()
        if any(left.values()):
            self.leftover_rounds.append({"round": "reboot", **left})
        return sum(len(v) for v in left.values())

    def gc(self, valid: List[Tuple[str, str]]) -> None:
        for index in (1, 0):
            rc, out = self._run(index, "GC", "", "", plugin_conf(self.conflist, index, valid=valid))
            if rc != 0:
                self.counts["gc_failures"] += 1
                self.counts[f"gc_failure:{(out or {}).get('msg', '')[:60]}"] += 1

    # --- what is on the node ---------------------------------------------------------------------
    def state(self) -> Dict[str, Counter]:
        # pipefail, and a grep that selects nothing is not an error: a failing tool fails the
        # round (CommandError) instead of reading as "nothing there" on both sides of a compare
        script = r"""set -eo pipefail
keep() { grep "$@" || test $? = 1; }
d=/var/lib/cni/networks/crash; if test -d $d; then find $d -type f ! -name lock ! -name 'last_reserved_ip*' -printf 'f %f %s\n'; fi
echo ==; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'
echo ==; ip -o addr show | awk '{print $2, $4}' | keep -v ' fe80::'
echo ==; if test -d /var/lib/cni/flannel; then ls -A /var/lib/cni/flannel; fi
echo ==; iptables-save | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//'; ip6tables-save | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//'
iptables-legacy-save | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//'
echo ==; nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/' | keep -v -e '^table bridge cni_spoofcheck' -e '^\s*$'
echo ==; if ! spoof=$(nft list table bridge cni_spoofcheck 2>&1); then
  case "$spoof" in *"No such file or directory"*) spoof="";; *) echo "$spoof" >&2; exit 1;; esac
fi
printf '%s\n' "$spoof" | keep -e 'cni-br-iface' -e 'macspoofchk'
echo ==; { conntrack -L -p udp; conntrack -L -p tcp; } 2>/dev/null | keep -c 'src=10\.246\.'
"""
        if self.agent_pid:
            script += "echo ==; " + self._away_script()
        out = self.node.run(["bash", "-c", script]).stdout.split("==\n")
        keys = ["ip_files", "links", "addresses", "saved_configs", "firewall_rules", "nft_rules", "spoofchk",
                "conntrack"] + (["agent_workers"] if self.agent_pid else [])
        state = {k: Counter(l for l in part.splitlines() if l.strip()) for k, part in zip(keys, out)}
        for k in ("conntrack", "agent_workers"):
            if k in state:
                state[k] = Counter({"entries": int((list(state[k]) or ["0"])[0])})
        return state

    def _away_script(self) -> str:
        """Prints how many agent workers are away from the agent's namespaces: serving a request
        (its caller's namespaces) — after a round, a worker left running for a killed caller.
        Idle workers wait at home (the pool keeps 2..4 of them, reused: their number is no leak)."""
        pid = self.agent_pid
        return (f"a=$(readlink /proc/{pid}/ns/net)$(readlink /proc/{pid}/ns/mnt); n=0\n"
                f"for c in $(pgrep -P {pid} || test $? = 1); do\n"
                "  w=$(readlink /proc/$c/ns/net 2>/dev/null)$(readlink /proc/$c/ns/mnt 2>/dev/null) || continue\n"
                '  if [ "$w" != "$a" ]; then n=$((n+1)); fi\n'
                "done; echo $n\n")

    def workers_away(self) -> int:
        return int(self.node.run(["bash", "-c", "set -eo pipefail\n" + self._away_script()]).stdout.strip())

    def leftovers(self) -> Dict[str, List[str]]:
        if self.agent_pid:  # a worker that just answered goes home in a moment: give it 5 s
            deadline = time.monotonic() + 5
            while self.workers_away() and time.monotonic() < deadline:
                time.sleep(0.1)
        now = self.state()  # (then counted, whatever it is)
        out: Dict[str, List[str]] = {}
        for key, counts in now.items():
            if key in ("conntrack", "agent_workers"):
                extra = counts["entries"] - self.baseline[key]["entries"]
                out[key] = [f"{extra} more"] if extra > 0 else []
            else:
                out[key] = sorted((counts - self.baseline[key]).elements())
        return out
