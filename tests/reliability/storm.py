"""The storm: up to 110 pods (the kubelet's per-node maximum) on one node, through both real runtime
drivers at once (libcni's cnitool and containerd's go-cni: even pods one, odd pods the other), each
pod with its own hostPort, while kube-proxy rewrites its chains and flanneld resyncs its masquerade.

A round: all pods ADDed in parallel -> check; all DELed in parallel -> check clean; an interleaved
random mix (every pod ADDed after a random delay, half of them DELed as soon as their ADD is done,
while other ADDs still run) -> check; the rest DELed -> check clean.

"check" looks at the pods themselves: each live pod's address read inside its namespace (unique,
equal to what the runtime got back), its hostPort answering from the node with the pod's own
server's token, host-local's files naming exactly the live pods, one veth per live pod.  "check
clean" compares the whole node with the baseline taken before the storm (IP files, links, saved
flannel configs, iptables legacy + nft, nft): anything extra is a leftover, anything missing (the
daemon's masquerade rules clobbered) is counted too.

Implementations: "ours" (the frozen bundle, self-contained), "agent" (the same through the resident
agent, fallback forbidden) and "go" (Debian's Go bridge + host-local + portmap, the equivalent of
the flannel delegate's bridge conf: Debian has no flannel plugin, and its 1.1.1 portmap has no
nftables backend, so "go" runs on the two iptables backends only).
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

from tests.harness import drivers
from tests.harness.netns import Lab, Node, Pod
from tests.harness.plugins import plugin_dir, reference_dir
from tests.reliability import storm_node as sn

NET = "cbr0"
SUBNET_ENV = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
HOST_PORT_BASE = 20000
IMPLEMENTATIONS = ("ours", "agent", "go")
BREAKS = ("skip-portmap", "skip-del", "portmap-backend")  # deliberate faults: the storm must count them


def conflist(impl: str, backend: str, break_: Optional[str] = None) -> Dict[str, Any]:
    """The seed's flannel + portmap conflist (ours), or the bridge conf flannel delegates, written out
    for Debian's Go plugins.  nftables: portmap's "backend" (flanneld's side is EnableNFTables)."""
    portmap: Dict[str, Any] = {"type": "portmap", "capabilities": {"portMappings": True}}
    if backend == "nftables" and break_ != "portmap-backend":  # the fault: portmap on its default backend
        portmap["backend"] = "nftables"
    if impl == "go":
        first: Dict[str, Any] = {
            "type": "bridge", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True, "hairpinMode": True,
            "ipMasq": False, "mtu": 1450,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "routes": [{"dst": "10.244.0.0/16"}]}}
    else:
        first = {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
    return {"name": NET, "cniVersion": "0.3.1", "plugins": [first, portmap]}


class Slot:
    """One pod position: its namespace, hostPort, driver and current container ID."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.host_port = HOST_PORT_BASE + index
        self.driver = "libcni" if index % 2 == 0 else "gocni"
        self.pod: Optional[Pod] = None
        self.cid = ""
        self.result_ip: Optional[str] = None


class StormLab:
    def __init__(self, node: Node, impl: str, backend: str, pods: int, agent_pid: Optional[int] = None,
                 break_: Optional[str] = None, rng: Optional[random.Random] = None) -> None:
        if impl == "go" and backend == "nftables":
            raise ValueError("Debian's Go portmap (1.1.1) has no nftables backend")
        self.node, self.impl, self.backend, self.agent_pid = node, impl, backend, agent_pid
        self.break_ = break_
        self.rng = rng or random.Random()
        self.counts: Counter = Counter()
        self.failures: Counter = Counter()
        self.findings: List[Dict[str, Any]] = []
        self.round_seconds: List[float] = []
        self._lock = threading.Lock()
        self.slots = [Slot(i) for i in range(pods)]
        self.servers = sn.PodServers()
        sn.select_backend(node, backend)
        node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
        node.write_file(f"/etc/cni/net.d/10-{NET}.conflist", json.dumps(conflist(impl, backend, break_), indent=1))
        self.masq = sn.MasqResync(node, nftables=backend == "nftables")
        self.kube_proxy = sn.KubeProxy(node, backend)
        # a first pod up and down, so the chains portmap keeps for good exist in the baseline
        warm = self.slots[0]
        self._add(warm, "warm", 0)
        self._del(warm)
        self.baseline = sn.node_state(node)
        self.kube_proxy.start()

    # --- pods through the runtime drivers -------------------------------------------------------------
    def _mappings(self, slot: Slot) -> List[Dict[str, Any]]:
        if self.break_ == "skip-portmap" and slot.index == 1:
            return []  # the fault: this pod's runtime forgets its hostPort
        return [{"hostPort": slot.host_port, "containerPort": sn.CONTAINER_PORT, "protocol": "tcp"}]

    def _drive(self, slot: Slot, cmd: str) -> Optional[Any]:
        maps = self._mappings(slot)
        if slot.driver == "libcni":
            return drivers.libcni(self.node, cmd, NET, slot.pod, cid=slot.cid, timeout=300,
                                  capability_args={"portMappings": maps})
        gomaps = [{"HostPort": m["hostPort"], "ContainerPort": m["containerPort"], "Protocol": m["protocol"]}
                  for m in maps]
        return drivers.gocni(self.node, cmd, slot.pod, cid=slot.cid, pod_name=f"storm-{slot.index}",
                             pod_uid=f"00000000-0000-0000-0000-{slot.index:012d}", portmap=gomaps, timeout=300)

    def _fail(self, what: str, slot: Slot, exc: Exception) -> None:
        text = str(exc)
        with self._lock:
            self.counts[f"{what}_failures"] += 1
            self.failures[f"{what} {slot.driver}: {sn.split_error(getattr(exc, 'stderr', '') or text)}"] += 1

    def _add(self, slot: Slot, tag: str, number: int) -> bool:
        slot.cid = f"storm-{number}-{tag}-{slot.index}"
        slot.pod = self.node.add_pod(f"{tag[0]}{number % 10}x{slot.index}")
        self.servers.listen(slot.pod.path, slot.cid)
        try:
            out = self._drive(slot, "add")
        except Exception as exc:  # noqa: BLE001 - counted; then what a kubelet does: DEL
            self._fail("add", slot, exc)
            self._del(slot)
            return False
        slot.result_ip = _result_ip(out)
        return True

    def _del(self, slot: Slot) -> None:
        try:
            if not (self.break_ == "skip-del" and slot.index == 2):  # the fault: one DEL never sent
                self._drive(slot, "del")
        except Exception as exc:  # noqa: BLE001 - counted
            self._fail("del", slot, exc)
        self.servers.close(slot.cid)
        slot.pod.delete()
        self.node.pods.pop(slot.pod.name, None)
        slot.pod, slot.result_ip = None, None

    # --- checks -----------------------------------------------------------------------------------------
    def check_live(self, live: List[Slot], phase: str, number: int) -> Dict[str, int]:
        """Unique in-pod addresses, equal to the runtime's result; hostPorts answer with the pod's token;
        host-local's files = the live pods; one veth per live pod."""
        inside = {s.index: sn.in_netns(s.pod.path, sn.ipv4_of) for s in live}
        by_ip = Counter(ip for ip in inside.values() if ip)
        found = {
            "no_address": sum(1 for ip in inside.values() if not ip),
            "duplicates": sum(n - 1 for n in by_ip.values() if n > 1),
            "result_mismatch": sum(1 for s in live if inside[s.index] != s.result_ip),
        }
        answers = sn.probe_hostports(self.node.path, self.node.underlay_ip, {s.host_port: s.cid for s in live})
        lost = [s for s in live if answers[s.host_port] != s.cid]
        if lost:  # one more try before counting (a probe is a single SYN on a loaded machine)
            time.sleep(0.5)
            again = sn.probe_hostports(self.node.path, self.node.underlay_ip, {s.host_port: s.cid for s in lost})
            self.counts["hostport_retries"] += len(lost)
            lost = [s for s in lost if again[s.host_port] != s.cid]
        found["lost_hostports"] = len(lost)
        files = sn.ipam_files(self.node)
        want = {inside[s.index]: s.cid for s in live if inside[s.index]}
        found["ipam_mismatch"] = len(set(files.items()) ^ set(want.items()))
        veths = [l for l in self.node.run(["ip", "-o", "link", "show", "master", "cni0", "type", "veth"]).stdout.splitlines() if l]
        found["veth_mismatch"] = abs(len(veths) - len(live))
        rules = sn.hostports_in(self.node, self.backend)  # in the backend this row names, nowhere else
        found["not_in_backend"] = sum(1 for s in live if not rules.get(s.host_port)) + (0 if rules.get(0) else 1)
        self._record(phase, number, found, {"lost": [f"{s.host_port}: {answers[s.host_port]}" for s in lost][:5]})
        return found

    def check_clean(self, phase: str, number: int) -> Dict[str, List[str]]:
        left = sn.diff(sn.node_state(self.node), self.baseline)
        self._record(phase, number, {"leftovers": sum(len(v) for v in left.values())},
                     {k: v[:5] for k, v in left.items()})
        return left

    def _record(self, phase: str, number: int, found: Dict[str, int], detail: Dict[str, Any]) -> None:
        for key, value in found.items():
            self.counts[key] += value
        if any(found.values()):
            self.findings.append({"round": number, "phase": phase, **found, **{k: v for k, v in detail.items() if v}})

    # --- a round ------------------------------------------------------------------------------------------
    def round(self, number: int) -> None:
        started = time.monotonic()
        slots = self.slots
        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            ok = list(pool.map(lambda s: self._add(s, "add", number), slots))
            live = [s for s, added in zip(slots, ok) if added]
            self.counts["adds"] += len(slots)
            self.check_live(live, "parallel ADD", number)
            list(pool.map(self._del, live))
            self.counts["dels"] += len(live)
            self.check_clean("parallel DEL", number)
            live = self._mix(pool, number)
            self.check_live(live, "interleaved ADD/DEL", number)
            list(pool.map(self._del, live))
            self.counts["dels"] += len(live)
            self.check_clean("final DEL", number)
        self.counts["rounds"] += 1
        self.round_seconds.append(round(time.monotonic() - started, 1))

    def _mix(self, pool: ThreadPoolExecutor, number: int) -> List[Slot]:
        """Every pod ADDed after a random delay; about half DELed right after their ADD, while the
        others' ADDs still run.  Returns the pods left live."""
        plan = [(s, self.rng.uniform(0, 2.0), self.rng.random() < 0.5) for s in self.slots]

        def life(item: Tuple[Slot, float, bool]) -> bool:
            slot, delay, dies = item
            time.sleep(delay)
            if not self._add(slot, "mix", number):
                return False
            if dies:
                self._del(slot)
                with self._lock:
                    self.counts["dels"] += 1
                return False
            return True
        alive = list(pool.map(life, plan))
        self.counts["adds"] += len(plan)
        return [s for s, a in zip(self.slots, alive) if a]

    # --- the end ------------------------------------------------------------------------------------------
    def finish(self) -> Dict[str, Any]:
        """Stop the writers, then the node must be exactly at its baseline (masquerade rules included)."""
        self.kube_proxy.stop()
        masq = self.masq.stop()
        self.servers.stop()
        left = sn.diff(sn.node_state(self.node), self.baseline)
        idle, busy = 0, 0
        if self.agent_pid:  # a worker still busy after a bounded wait is a stuck one
            sn.wait_until(lambda: sn.agent_workers(self.node, self.agent_pid)[1] == 0, 15)
            idle, busy = sn.agent_workers(self.node, self.agent_pid)
        return {"end_leftovers": sum(len(v) for v in left.values()), "end_leftover_kinds": {k: v[:5] for k, v in left.items()},
                "stuck_agent_workers": busy, "idle_agent_workers": idle, "masq": masq,
                "kube_proxy": {"writes": self.kube_proxy.writes, "errors": len(self.kube_proxy.errors),
                               "lock_timeouts": self.kube_proxy.lock_timeouts,
                               "first_errors": self.kube_proxy.errors[:3]}}


def _result_ip(out: Any) -> Optional[str]:
    """The pod's IPv4 address from either driver's output (libcni: the CNI result; go-cni: Interfaces)."""
    if isinstance(out, dict) and "ips" in out:
        for ip in out["ips"]:
            if ":" not in ip["address"]:
                return ip["address"].split("/")[0]
    if isinstance(out, dict) and "Interfaces" in out:
        for name, iface in out["Interfaces"].items():
            if name == "eth0":
                for cfg in iface.get("IPConfigs") or []:
                    if ":" not in cfg["IP"]:
                        return cfg["IP"]
    return None


def storm(impl: str, backend: str, rounds: int, pods: int, seed: int, break_: Optional[str] = None,
          minutes: float = 0) -> Dict[str, Any]:
    """One row: `rounds` storm rounds (fewer if `minutes` runs out: the row says how many ran)."""
    from tests.conftest import agent_requests, forbid_fallback, start_agent

    started = time.monotonic()
    with Lab() as lab:
        node = lab.add_node(underlay=True)
        node.install_plugins(reference_dir() if impl == "go" else plugin_dir())
        agent = start_agent(node) if impl == "agent" else None
        if agent:  # the row must prove the agent did the work
            forbid_fallback(node)
        sl = StormLab(node, impl, backend, pods, agent_pid=agent.pid if agent else None, break_=break_,
                      rng=random.Random(seed))
        deadline = started + minutes * 60 if minutes else float("inf")
        try:
            for number in range(rounds):
                if time.monotonic() > deadline:
                    break
                sl.round(number)
        finally:
            end = sl.finish()
        served = agent_requests(node) if agent else []
    refused = [x for x in served if x.startswith("refused")]
    c = sl.counts
    return {"impl": impl, "backend": backend, "pods": pods, "rounds": c["rounds"], "rounds_asked": rounds,
            "adds": c["adds"], "dels": c["dels"], "duplicates": c["duplicates"], "no_address": c["no_address"],
            "result_mismatch": c["result_mismatch"], "lost_hostports": c["lost_hostports"],
            "hostport_retries": c["hostport_retries"], "ipam_mismatch": c["ipam_mismatch"],
            "veth_mismatch": c["veth_mismatch"], "not_in_backend": c["not_in_backend"], "round_leftovers": c["leftovers"],
            "add_failures": c["add_failures"], "del_failures": c["del_failures"],
            "failure_kinds": dict(sl.failures.most_common(5)), **end,
            **({"agent_served": len(served) - len(refused), "agent_refused": len(refused)} if agent else {}),
            "round_seconds": sl.round_seconds, "findings": sl.findings[:10], "break": break_,
            "seconds": round(time.monotonic() - started)}


def problems(row: Dict[str, Any]) -> Dict[str, Any]:
    """Everything a row must have 0 of, with its count where it is not 0 (the agent row must also
    prove the agent served)."""
    keys = ("not_in_backend", "duplicates", "no_address", "result_mismatch", "lost_hostports", "ipam_mismatch",
            "veth_mismatch", "round_leftovers", "add_failures", "del_failures", "end_leftovers", "stuck_agent_workers")
    found: Dict[str, Any] = {k: row[k] for k in keys if row.get(k)}
    for part, key in (("masq", "errors"), ("masq", "found_missing"), ("kube_proxy", "errors")):
        if row[part][key]:
            found[f"{part}_{key}"] = row[part][key]
    if row["impl"] == "agent" and (not row.get("agent_served") or row.get("agent_refused")):
        found["agent_unproven"] = 1
    if row["rounds"] < 1:
        found["no_round"] = 1
    if found:  # what to look at first
        found["detail"] = {k: row[k] for k in ("failure_kinds", "end_leftover_kinds", "findings") if row.get(k)}
        found["detail"].update({k: row[k]["stderr" if k == "masq" else "first_errors"] for k in ("masq", "kube_proxy")})
    return found


def bad(row: Dict[str, Any]) -> int:
    return sum(v for k, v in problems(row).items() if k != "detail")


ROWS = [(impl, backend) for backend in sn.BACKENDS for impl in IMPLEMENTATIONS
        if not (impl == "go" and backend == "nftables")]
NAMES = {"ours": "ours, self-contained", "agent": "ours, agent hand-off (fallback forbidden)",
         "go": "Go (Debian 1.1.1), bridge + host-local + portmap"}


def run_rows(results: Any, rounds: int, pods: int, seed: int, minutes: float = 0,
             impls: Optional[List[str]] = None, backends: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """The storm part of `make reliability`: each (implementation, backend) row, saved as soon as it
    ends in results/storm-<impl>-<backend>.json (so a long run stopped midway keeps its rows)."""
    rows = []
    for n, (impl, backend) in enumerate(ROWS):
        if (impls and impl not in impls) or (backends and backend not in backends):
            continue
        row = storm(impl, backend, rounds, pods, seed + n, minutes=minutes)
        row["load"] = [round(x, 1) for x in os.getloadavg()]
        (results / f"storm-{impl}-{backend}.json").write_text(json.dumps(row, indent=1, default=str))
        print(f"storm {impl} {backend}: {row['rounds']} rounds, {bad(row)} bad, {row['seconds']} s", flush=True)
        rows.append(row)
    return rows


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| storm (libcni + go-cni, hostPort each) | backend | rounds × pods | ADD / DEL | duplicate IPs "
             "| lost hostPorts | IPAM/veth/backend mismatches | leftovers (rounds / end) | ADD/DEL failures "
             "| masq clobbered / kube-proxy errors (xtables lock waits > 5 s) | s per round (median) | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        secs = sorted(r["round_seconds"])
        median = secs[len(secs) // 2] if secs else "—"
        name = NAMES[r["impl"]]
        if r["impl"] == "agent":
            name += f", {r.get('agent_served', 0)} served / {r.get('agent_refused', 0)} refused"
        short = f" (asked {r['rounds_asked']})" if r["rounds"] < r["rounds_asked"] else ""
        stuck = f", {r['stuck_agent_workers']} stuck workers" if r.get("stuck_agent_workers") else ""
        lines.append(
            f"| {name} | {r['backend']} | {r['rounds']}{short} × {r['pods']} | {r['adds']} / {r['dels']} "
            f"| {r['duplicates'] + r['no_address'] + r['result_mismatch']} | {r['lost_hostports']} "
            f"| {r['ipam_mismatch']} / {r['veth_mismatch']} / {r['not_in_backend']} "
            f"| {r['round_leftovers']} / {r['end_leftovers']}{stuck} | {r['add_failures']} / {r['del_failures']} "
            f"| {r['masq']['found_missing'] + r['masq']['errors']} / {r['kube_proxy']['errors']} "
            f"({r['kube_proxy'].get('lock_timeouts', 0)}) "
            f"| {median} | {r.get('load', ['—'])[0]} |")
    return "\n".join(lines)
