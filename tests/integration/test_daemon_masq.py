"""flanneld masquerade/forward rules against the real tools, in a test node namespace.

For iptables-nft, iptables-legacy and nftables: apply -> exactly upstream's rules (beside
another writer's, untouched throughout); apply again -> nothing written; the lease moves
10.244.1.0/24 -> 10.244.7.0/24 -> only the new rules; remove -> nothing of ours.  Plus
takeover of upstream flanneld's leftovers, and real traffic: a pod behind the node is
masqueraded towards the outside and not towards the Network.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Dict, List

import pytest

from cni_flannel.daemon.masq import MasqConfig, MasqManager
from cni_flannel.firewall import Firewall, IptablesFirewall, NftFirewall, Runner
from cni_flannel.firewall import _iptables as ipt
from tests.harness.netns import Node, run
from tests.unit.test_daemon_masq import (NET4, NET6, NEW4, NEW6, SUB4, SUB6, expected_filter, expected_nat,
                                         expected_nft)

BACKENDS = ["iptables-nft", "iptables-legacy", "nftables"]
DUAL, MOVED = ((NET4, NET6), (SUB4, SUB6)), ((NET4, NET6), (NEW4, NEW6))

FOREIGN_IPT = {  # (family, table) -> another writer's rules in the shared built-in chains
    ("ipv4", "nat"): ['-A POSTROUTING -s 192.0.2.0/24 -m comment --comment "other writer" -j MASQUERADE'],
    ("ipv4", "filter"): ['-A FORWARD -d 192.0.2.0/24 -m comment --comment "other writer" -j ACCEPT'],
    ("ipv6", "nat"): ['-A POSTROUTING -s 2001:db8::/64 -m comment --comment "other writer" -j MASQUERADE'],
    ("ipv6", "filter"): ['-A FORWARD -d 2001:db8::/64 -m comment --comment "other writer" -j ACCEPT'],
}
FOREIGN_NFT = """table ip kube-proxy {
    chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept;
        ip saddr 192.0.2.0/24 masquerade
    }
    chain filter-forward { type filter hook forward priority filter; policy accept;
        ip daddr 192.0.2.0/24 accept
    }
}
"""


def conf(fw: Firewall, pair) -> MasqConfig:
    return MasqConfig(*pair, enable_nftables=isinstance(fw, NftFirewall))


def sh(node: Node, argv: List[str], stdin: str = "") -> str:
    return node.run(argv, input=stdin or None).stdout


def firewalls(node: Node, backend: str):
    """(our backend, the other one) in the node's namespace; a backend the node cannot run fails
    the test (a skip would hide the path it names)."""
    runner = Runner.in_netns(node.netns)
    probe = ["nft", "list", "ruleset"] if backend == "nftables" else [
        ipt.tool(backend.split("-")[1], "ipv4", "save"), "-t", "nat"]
    done = node.run(probe, check=False)
    if done.returncode:
        pytest.fail(f"{backend} unusable here: {done.stderr.strip()}")
    if backend == "nftables":
        return NftFirewall(runner), IptablesFirewall("nft", runner)
    return IptablesFirewall(backend.split("-")[1], runner), NftFirewall(runner)


def ipt_rules(node: Node, fw: IptablesFirewall, family: str, table: str) -> List[str]:
    text = sh(node, [ipt.tool(fw.mode, family, "save"), "-t", table])
    return [line for line in text.splitlines() if line.startswith("-A ")]


def add_foreign(node: Node, fw: Firewall) -> None:
    if isinstance(fw, NftFirewall):
        sh(node, ["nft", "-f", "-"], FOREIGN_NFT)
        return
    for (family, table), lines in FOREIGN_IPT.items():
        sh(node, [ipt.tool(fw.mode, family, "restore"), "--noflush", "-w", "5"],
           "\n".join([f"*{table}", *lines, "COMMIT", ""]))


def foreign_intact(node: Node, fw: Firewall) -> None:
    if isinstance(fw, NftFirewall):
        listed = " ".join(sh(node, ["nft", "list", "table", "ip", "kube-proxy"]).split())
        assert "ip saddr 192.0.2.0/24 masquerade" in listed and "ip daddr 192.0.2.0/24 accept" in listed
        return
    for (family, table), lines in FOREIGN_IPT.items():
        assert ipt_rules(node, fw, family, table)[:1] == lines, (family, table)


def state(node: Node, fw: Firewall) -> Dict[str, object]:
    """Everything of ours the backend shows, per family and table."""
    if isinstance(fw, NftFirewall):
        return {f: fw.rules(f, "flannel-" + f) for f in ("ipv4", "ipv6")}
    return {f"{f} {t}": ipt_rules(node, fw, f, t)[len(FOREIGN_IPT[(f, t)]):] for f, t in FOREIGN_IPT}


def expected(fw: Firewall, pair) -> Dict[str, object]:
    (n4, n6), (s4, s6) = pair
    if isinstance(fw, NftFirewall):
        return {"ipv4": expected_nft(n4, s4), "ipv6": expected_nft(n6, s6)}
    return {"ipv4 nat": expected_nat(n4, s4), "ipv4 filter": expected_filter(n4),
            "ipv6 nat": expected_nat(n6, s6), "ipv6 filter": expected_filter(n6)}


@pytest.fixture
def node(make_node) -> Node:
    return make_node(plugins=False)  # rules only: no plugins needed


@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_reapply_lease_change_remove(node, backend):
    fw, other = firewalls(node, backend)
    add_foreign(node, fw)
    mgr = MasqManager(conf(fw, DUAL), fw, other=other)

    mgr.reconcile()
    assert state(node, fw) == expected(fw, DUAL)
    assert mgr.check() == []
    foreign_intact(node, fw)

    snapshot, calls = state(node, fw), fw.runner.calls
    mgr.apply()
    assert fw.runner.calls - calls == (2 if backend == "nftables" else 4), "only the snapshots"
    assert state(node, fw) == snapshot

    mgr.update(conf(fw, MOVED))
    assert state(node, fw) == expected(fw, MOVED)
    assert SUB4 not in str(state(node, fw)) and SUB6 not in str(state(node, fw))
    foreign_intact(node, fw)

    mgr.remove()
    left = state(node, fw)
    assert all(not v for v in left.values()), left
    if isinstance(fw, IptablesFirewall):
        chains = {c for f in ("ipv4", "ipv6") for t in ("nat", "filter") for c in fw.chains(f, t, "FLANNEL")}
        assert chains == set()
    else:  # no empty table left behind either
        assert "flannel" not in node.run(["nft", "list", "tables"]).stdout
    foreign_intact(node, fw)
    mgr.remove()


UPSTREAM_LEFTOVERS_IPT = f"""*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -s {NET4} -d {NET4} -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
""" + "\n".join(expected_nat(NET4, SUB4)[1:]) + f"""
-A FLANNEL-POSTRTG -s {NET4} ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE
COMMIT
*filter
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.0.0.0/8 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
"""
UPSTREAM_LEFTOVERS_NFT = f"""table ip flannel-ipv4 {{
    comment "rules for flannel-ipv4";
    chain postrtg {{ comment "chain to manage traffic masquerading by flannel";
        type nat hook postrouting priority srcnat; policy accept;
        meta mark 0x4000 return
        ip saddr {SUB4} ip daddr {NET4} return
        ip saddr {NET4} ip daddr {SUB4} return
        ip saddr != {SUB4} ip daddr {NET4} return
        ip saddr {NET4} ip daddr != 224.0.0.0/4 masquerade fully-random
        ip saddr != {NET4} ip daddr {NET4} masquerade fully-random
    }}
    chain forward {{ type filter hook forward priority filter; policy accept;
        ip saddr 10.0.0.0/8 accept
    }}
    chain masqueradeTest {{ }}
}}
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_reconcile_takes_over_what_upstream_and_older_leases_left(node, backend):
    """Old lease, a duplicate uncommented mark rule (flannel#1702), a rule straight in
    POSTROUTING (flannel <= 0.14), an old Network in FLANNEL-FWD; nftables: upstream's
    table with its comments and a stray chain.  reconcile -> exactly the current rules."""
    fw, other = firewalls(node, backend)
    add_foreign(node, fw)
    if isinstance(fw, NftFirewall):
        sh(node, ["nft", "-f", "-"], UPSTREAM_LEFTOVERS_NFT)
    else:
        sh(node, [ipt.tool(fw.mode, "ipv4", "restore"), "--noflush", "-w", "5"], UPSTREAM_LEFTOVERS_IPT)
    MasqManager(conf(fw, ((NET4,), (NEW4,))), fw, other=other).reconcile()
    if isinstance(fw, NftFirewall):
        assert fw.rules("ipv4", "flannel-ipv4") == expected_nft(NET4, NEW4)
    else:
        assert ipt_rules(node, fw, "ipv4", "nat")[1:] == expected_nat(NET4, NEW4)
        assert ipt_rules(node, fw, "ipv4", "filter")[1:] == expected_filter(NET4)
    foreign_intact(node, fw)


def test_switching_backend_leaves_nothing_on_the_old_one(node):
    ipt_fw, nft_fw = firewalls(node, "iptables-nft")
    firewalls(node, "nftables")
    mgr = MasqManager(MasqConfig(*MOVED), ipt_fw, other=nft_fw)
    mgr.reconcile()
    mgr.update(MasqConfig(*MOVED, enable_nftables=True))
    assert all(not ipt_rules(node, ipt_fw, f, t) for f in ("ipv4", "ipv6") for t in ("nat", "filter"))
    assert nft_fw.rules("ipv4", "flannel-ipv4") == expected_nft(NET4, NEW4)


# --- real traffic ------------------------------------------------------------------------------

SERVER = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999)); s.settimeout(10)
print("ready", flush=True)
print(s.recvfrom(64)[1][0], flush=True)
"""
CLIENT = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', (sys.argv[1], 9999))"


def source_seen(sender: str, receiver: str, dst: str) -> str:
    """The source address a UDP datagram from netns sender to dst arrives with in receiver."""
    server = subprocess.Popen(["ip", "netns", "exec", receiver, sys.executable, "-c", SERVER, dst],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        run(["ip", "netns", "exec", sender, sys.executable, "-c", CLIENT, dst])
        out, _ = server.communicate(timeout=15)
        return out.strip()
    finally:
        server.kill()
        server.wait()


def wire(node: Node, name: str, node_addr: str, addr: str) -> str:
    """A namespace behind the node on a veth; its default route points at the node."""
    ns = node.add_pod(name).netns
    run(["ip", "-n", node.netns, "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0",
         "netns", ns])
    run(["ip", "-n", node.netns, "addr", "add", node_addr, "dev", f"v{name}"])
    run(["ip", "-n", node.netns, "link", "set", f"v{name}", "up"])
    for argv in (["addr", "add", addr, "dev", "eth0"], ["link", "set", "eth0", "up"],
                 ["link", "set", "lo", "up"], ["route", "add", "default", "via", node_addr.split("/")[0]]):
        run(["ip", "-n", ns, *argv])
    return ns


@pytest.mark.parametrize("backend", BACKENDS)
def test_pod_traffic_is_masqueraded_outside_the_network_only(node, backend):
    fw, other = firewalls(node, backend)
    pod = wire(node, "pod", "10.244.1.1/24", "10.244.1.2/24")
    peer = wire(node, "peer", "10.244.2.1/24", "10.244.2.2/24")  # another podCIDR of the Network
    out = wire(node, "out", "198.51.100.1/24", "198.51.100.2/24")  # no route back to the Network
    node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])  # the node's own namespace only
    mgr = MasqManager(conf(fw, ((NET4,), (SUB4,))), fw, other=other)

    assert source_seen(pod, out, "198.51.100.2") == "10.244.1.2"  # without rules: not masqueraded
    mgr.reconcile()
    assert source_seen(pod, out, "198.51.100.2") == "198.51.100.1"
    assert source_seen(pod, peer, "10.244.2.2") == "10.244.1.2"
    assert source_seen(out, pod, "10.244.1.2") == "198.51.100.2"  # clients keep their address
    mgr.remove()
    assert source_seen(pod, out, "198.51.100.2") == "10.244.1.2"
