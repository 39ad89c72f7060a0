"""`make demo` (demo/demo.py): the seed walkthrough, run for real, checked from what it prints.

One run shows all three modes (module fixture); the tests read the facts back from its transcript
with demo/transcript.py: the command blocks (`[where]$ cmd` + indented output) and the closing
table.  Two more runs are interrupted (SIGTERM) or made to fail midway (DEMO_FAIL_AT) once the
daemons run, and must leave nothing behind either: no namespace, no /run/<prefix>, no process.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Set

import pytest

from demo import transcript as T
from tests.harness.netns import netns_names, run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODES = ("vxlan", "host-gw", "udp")
NETWORK = ipaddress.ip_network("10.244.0.0/16")
NODE_IP = {"node1": "198.18.0.1", "node2": "198.18.0.2", "node3": "198.18.0.3"}
ETCD_ENDPOINT = "198.18.0.254:2379"
PREFIX_RE = re.compile(r"\(prefix (cft[0-9a-f]{4});")


def demo_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "demo.demo", *args]


def our_processes(prefix: str) -> Set[int]:
    """Processes that belong to a demo run: etcd/flanneld (their etcd endpoint) or the run's prefix."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(pid) != os.getpid() and (prefix in cmdline or ETCD_ENDPOINT in cmdline) and "pytest" not in cmdline:
            found.add(int(pid))
    return found


def assert_clean(prefix: str, out: str) -> None:
    assert f"cleanup: no namespace {prefix}-* and no /run/{prefix} left" in out, out[-3000:]
    assert not [n for n in netns_names() if n.startswith(prefix)]
    assert not os.path.exists(f"/run/{prefix}")
    assert not our_processes(prefix), f"processes left: {our_processes(prefix)}"


def root_netns_state() -> Dict[str, str]:
    """The machine's own network namespace: links, addresses, routes, firewall (tools must succeed)."""
    state = {}
    for argv in (["ip", "-o", "link", "show"], ["ip", "-o", "addr", "show"], ["ip", "route", "show", "table", "all"],
                 ["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        out = run(argv).stdout
        # without iptables-save's timestamp comments and packet counters
        state[" ".join(argv)] = re.sub(r"\[\d+:\d+\]", "", "\n".join(l for l in out.splitlines() if not l.startswith("#")))
    return state


@pytest.fixture(scope="module")
def run_all() -> Dict[str, object]:
    before = root_netns_state()
    done = subprocess.run(demo_argv("--modes", ",".join(MODES)), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    out = T.plain(done.stdout + done.stderr)
    m = PREFIX_RE.search(out)
    assert m, out[:2000]
    return {"rc": done.returncode, "out": out, "prefix": m.group(1), "modes": T.modes(out),
            "root_before": before, "root_after": root_netns_state()}


def section(run_all, mode: str) -> str:
    assert mode in run_all["modes"], f"no `== mode {mode}:` section:\n{run_all['out'][-3000:]}"
    text = run_all["modes"][mode]
    assert "unavailable:" not in text, text[:500]
    return text


def one(cmds: List[T.Command], where: str, cmd: str) -> T.Command:
    found = [c for c in T.find(cmds, where, cmd) if c.cmd == cmd or c.cmd.startswith(cmd + " ")]  # whole words
    assert len(found) == 1, f"{len(found)} blocks `[{where}]$ {cmd}`"
    return found[0]


def leases(text: str) -> Dict[str, ipaddress.IPv4Network]:
    """node IP -> subnet, from the `etcdctl get --prefix .../subnets` block."""
    block = one(T.commands(text), "etcd", "etcdctl --endpoints=http://198.18.0.254:2379 get --prefix").output
    lines = block.splitlines()
    out = {}
    for key, value in zip(lines[::2], lines[1::2]):
        subnet = ipaddress.ip_network(key.rsplit("/", 1)[1].replace("-", "/"))
        out[json.loads(value)["PublicIP"]] = subnet
    assert set(out) == set(NODE_IP.values()), block
    return out


def pod_ips(text: str) -> Dict[str, str]:
    return dict(re.findall(r"pod (\w) on node\d: eth0 ([\d.]+)", text))


def captures(cmds: List[T.Command], dev: str) -> List[T.Command]:
    return [c for c in cmds if c.where == "node1" and c.cmd.startswith("tcpdump") and f" -i {dev} " in c.cmd]


def count(c: T.Command) -> int:
    n = T.packets_captured(c.output)
    assert n is not None, c.output
    return n


# --- the whole run ----------------------------------------------------------------------------

def test_demo_exits_zero(run_all) -> None:
    assert run_all["rc"] == 0, run_all["out"][-4000:]


def test_demo_leaves_nothing_behind(run_all) -> None:
    assert_clean(run_all["prefix"], run_all["out"])


def test_root_network_namespace_untouched(run_all) -> None:
    assert run_all["root_after"] == run_all["root_before"]


def test_plugins_installed_by_the_init_containers_with_the_seed_conflist(run_all) -> None:
    cmds = T.commands(run_all["out"])
    for node in NODE_IP:
        plugin = one(cmds, f"{node} initContainer install-cni-plugin", "/bin/sh /opt/cni-flannel/packaging/install.sh")
        assert "installed /opt/cni/bin/flannel" in plugin.output
        one(cmds, f"{node} initContainer install-cni", "/bin/sh -ec 'cp -f /etc/kube-flannel/cni-conf.json")
    conflist = one(cmds, "node1", "cat /etc/cni/net.d/10-flannel.conflist").output
    assert json.loads(conflist) == json.loads((REPO / "tests/fixtures/seed-10-flannel-0.3.1.conflist").read_text())


def test_progress_names_each_step_with_its_time(run_all) -> None:
    steps = re.findall(r"^\[\s*[\d.]+s\] done (.+) \(([\d.]+) s\)$", run_all["out"], re.M)
    names = [name for name, _ in steps]
    assert any(n.startswith("etcd on the underlay") for n in names), names
    assert names.count("flanneld ready on every node (/readyz)") == len(MODES)


# --- per mode ---------------------------------------------------------------------------------

def common_facts(text: str, mtu: int) -> Dict[str, str]:
    """subnet.env, the bridge and its two veths on node1; returns the pods' addresses."""
    cmds = T.commands(text)
    env = T.subnet_env(one(cmds, "node1", "cat /run/flannel/subnet.env").output)
    own = leases(text)[NODE_IP["node1"]]
    assert env == {"FLANNEL_NETWORK": str(NETWORK), "FLANNEL_SUBNET": f"{own.network_address + 1}/24",
                   "FLANNEL_MTU": str(mtu), "FLANNEL_IPMASQ": "true"}
    veths = [line for line in one(cmds, "node1", "bridge link show").output.splitlines() if "master cni0" in line]
    assert len(veths) == 2, veths  # pods a and b
    cni0 = one(cmds, "node1", "ip -d link show cni0").output
    assert f" mtu {mtu} " in cni0 and "\n    bridge " in cni0, cni0
    ips = pod_ips(text)
    assert ipaddress.ip_address(ips["a"]) in own and ipaddress.ip_address(ips["b"]) in own
    return ips


def pings(text: str, pod: str, addr: str) -> List[int]:
    block = one(T.commands(text), f"pod {pod}", f"ping -c 4 -i 0.2 -W 2 {addr}")
    ttls = T.ping_ttls(block.output)
    assert len(ttls) == 4, block.output
    return ttls


def icmp_between(output: str, a: str, b: str) -> bool:
    return f"IP {a} > {b}: ICMP echo request" in output and f"IP {b} > {a}: ICMP echo reply" in output


def node1_routes(text: str, route: Callable[[ipaddress.IPv4Network, str], str]) -> str:
    """node1's `ip r`, checked to hold route(peer subnet, peer node IP) for node2 and node3."""
    routes = one(T.commands(text), "node1", "ip r").output
    subnets = leases(text)
    for peer in ("node2", "node3"):
        assert route(subnets[NODE_IP[peer]], NODE_IP[peer]) in routes, routes
    return routes


def test_vxlan(run_all) -> None:
    text = section(run_all, "vxlan")
    ips = common_facts(text, 1450)
    cmds = T.commands(text)
    dev = one(cmds, "node1", "ip -d link show flannel.1").output
    assert re.search(r"vxlan id 1 local 198\.18\.0\.1 dev eth0 .*dstport 8472 nolearning", dev), dev
    node1_routes(text, lambda net, _: f"{net} via {net.network_address} dev flannel.1 onlink")
    assert pings(text, "a", ips["b"]) == [64] * 4
    assert pings(text, "a", ips["c"]) == [62] * 4

    cni0, fl, eth0 = captures(cmds, "cni0"), captures(cmds, "flannel.1"), captures(cmds, "eth0")
    # same node: the ICMP on cni0, nothing on flannel.1, no VXLAN on eth0
    assert count(cni0[0]) == 4 and icmp_between(cni0[0].output, ips["a"], ips["b"])
    assert [c.cmd for c in fl] == ["tcpdump -n -l -i flannel.1 -c 1 icmp", "tcpdump -n -l -i flannel.1 -c 4 icmp"]
    assert count(fl[0]) == 0 and "listening on flannel.1" in fl[0].output
    assert eth0[0].cmd == "tcpdump -n -l -i eth0 -c 1 'udp port 8472'" and count(eth0[0]) == 0
    # other node: the inner ICMP on flannel.1; VXLAN (UDP 8472, VNI 1) around it on eth0
    assert count(fl[1]) == 4 and icmp_between(fl[1].output, ips["a"], ips["c"])
    wire = eth0[1].output
    assert count(eth0[1]) == 2
    assert re.search(r"198\.18\.0\.1\.\d+ > 198\.18\.0\.2\.8472: OTV, flags \[I\] \(0x08\), overlay 0, instance 1", wire), wire
    assert re.search(r"198\.18\.0\.2\.\d+ > 198\.18\.0\.1\.8472: OTV.*instance 1", wire), wire
    assert f"{ips['a']} > {ips['c']}: ICMP echo request" in wire and f"{ips['c']} > {ips['a']}: ICMP echo reply" in wire


def test_host_gw(run_all) -> None:
    text = section(run_all, "host-gw")
    ips = common_facts(text, 1500)
    cmds = T.commands(text)
    routes = node1_routes(text, lambda net, node_ip: f"{net} via {node_ip} dev eth0")
    assert "flannel.1" not in routes  # the vxlan routes were replaced, not left beside
    assert pings(text, "a", ips["b"]) == [64] * 4
    assert pings(text, "a", ips["c"]) == [62] * 4  # the seed's 61: its cloud underlay routes once more
    eth0 = captures(cmds, "eth0")
    assert count(eth0[0]) == 0  # same node: no ICMP on eth0
    assert count(eth0[1]) == 4 and icmp_between(eth0[1].output, ips["a"], ips["c"])  # plain, no tunnel


def test_udp(run_all) -> None:
    text = section(run_all, "udp")
    ips = common_facts(text, 1472)
    cmds = T.commands(text)
    own = leases(text)[NODE_IP["node1"]]
    link = one(cmds, "node1", "ip -d link show flannel0").output
    assert re.search(r"flannel0: <[A-Z_,]*POINTOPOINT[A-Z_,]*> mtu 1472 ", link) and "\n    tun " in link, link
    assert f"inet {own.network_address}/32 scope global flannel0" in one(cmds, "node1", "ip addr show flannel0").output
    routes = one(cmds, "node1", "ip r").output
    assert f"{NETWORK} dev flannel0" in routes, routes
    assert not [r for r in routes.splitlines() if "via" in r and r.startswith("10.244.")], routes
    assert pings(text, "a", ips["b"]) == [64] * 4
    cross = pings(text, "a", ips["c"])
    assert cross == [60] * 4  # as the seed: forwarded on node1 and node2, and the TTL decremented by each flanneld
    tun, eth0 = captures(cmds, "flannel0"), captures(cmds, "eth0")
    assert count(tun[0]) == 0 and count(eth0[0]) == 0  # same node: nothing through flannel0 nor over UDP 8285
    assert count(tun[1]) == 4 and icmp_between(tun[1].output, ips["a"], ips["c"])
    wire = eth0[1].output
    assert count(eth0[1]) == 4
    assert re.search(r"IP 198\.18\.0\.1\.8285 > 198\.18\.0\.2\.8285: UDP, length 84", wire), wire
    assert re.search(r"IP 198\.18\.0\.2\.8285 > 198\.18\.0\.1\.8285: UDP, length 84", wire), wire
    assert "8472" not in wire


# After host-gw (the seed's order), host-gw's '<peer subnet> via <peer IP> dev eth0' routes outlive the
# restart (upstream's do) and would shadow udp's '10.244.0.0/16 dev flannel0'.  Our udp backend removes
# them; were they left, the demo would remove them as a printed step, and this test fails.
def test_udp_switch_needs_no_hand_cleanup(run_all) -> None:
    text = section(run_all, "udp")
    assert "removed by hand" not in text, [c.cmd for c in T.commands(text) if c.cmd.startswith("ip route del")]


def test_leftover_routes_are_removed_in_the_open(run_all) -> None:
    """Where the demo removes a previous backend's routes, it prints each command, and only those."""
    text = section(run_all, "udp")
    deleted = [c for c in T.commands(text) if c.cmd.startswith("ip route del")]
    if "removed by hand" in text:
        assert deleted and all(re.fullmatch(r"ip route del 10\.244\.\d+\.0/24 via 198\.18\.0\.\d dev eth0", c.cmd)
                               for c in deleted), [c.cmd for c in deleted]
    else:
        assert not deleted


@pytest.mark.parametrize("mode", MODES)
def test_hostport_and_throughput(run_all, mode) -> None:
    text = section(run_all, mode)
    assert "check ok: hostPort 198.18.0.2:30080 reached pod c from node3" in text
    reply = one(T.commands(text), "node3", "python3 -c '<connect>' 198.18.0.2 30080").output
    assert reply.startswith("hello from the pod")
    gbps = re.search(r"receiver: ([\d.]+) Gbit/s", text)
    assert gbps and float(gbps.group(1)) > 0
    row = re.search(rf"^   {re.escape(mode)}\s+64 \(\S+\)\s+(\d+) \((\S+)\).*Gbit/s\s+ok$", run_all["out"], re.M)
    assert row, run_all["out"][-1500:]


# --- interrupted or failed midway: still nothing left ---------------------------------------

def start(*args: str, env: Dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(demo_argv(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **env})


def read_until(proc: subprocess.Popen, text: str, timeout: float) -> str:
    out, deadline = "", time.monotonic() + timeout
    while text not in out:
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{out}"
        line = proc.stdout.readline()
        assert line, f"demo ended before {text!r}:\n{out}"
        out += line
    return out


def test_sigterm_while_the_daemons_start_removes_everything() -> None:
    proc = start("--modes", "vxlan", env={})
    try:
        out = read_until(proc, "flanneld ready on every node (/readyz) ...", 120)
        prefix = PREFIX_RE.search(out).group(1)
        assert our_processes(prefix), "flanneld/etcd should be running at this point"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    out = T.plain(out + rest)
    assert proc.returncode == 130 and "interrupted (SIGTERM)" in out, out[-2000:]
    assert_clean(prefix, out)


def test_failure_midway_removes_everything() -> None:
    proc = start("--modes", "vxlan", env={"DEMO_FAIL_AT": "pods created"})
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    out = T.plain(out)
    assert proc.returncode == 1, out[-2000:]
    assert "demo FAILED: DEMO_FAIL_AT=pods created: failing step" in out
    assert "done flanneld ready on every node" in out  # it failed with the daemons up
    assert_clean(PREFIX_RE.search(out).group(1), out)
