"""demo/transcript.py: reading the demo's transcript and the tools' output (ping, tcpdump, iperf3)."""
from __future__ import annotations

import json

import pytest

from demo import transcript as T

TRANSCRIPT = """\
\033[1m== mode vxlan: the seed's vxlan section, live\033[0m
[   1.0s] step ...
\033[2m[node1]$\033[0m ip r
    10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
    10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1
[pod a]$ ping -c 4 10.244.1.3
    64 bytes from 10.244.1.3: icmp_seq=1 ttl=64 time=0.1 ms
    64 bytes from 10.244.1.3: icmp_seq=2 ttl=64 time=0.1 ms
check ok: something
[node1]$ true
== mode host-gw: the seed's host-gw section, live
[node1]$ tcpdump -n -l -i eth0 -c 1 icmp
    tcpdump: listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes
    0 packets captured
"""


def test_commands_and_their_output() -> None:
    cmds = T.commands(TRANSCRIPT)
    assert [(c.where, c.cmd) for c in cmds] == [("node1", "ip r"), ("pod a", "ping -c 4 10.244.1.3"),
                                               ("node1", "true"), ("node1", "tcpdump -n -l -i eth0 -c 1 icmp")]
    assert cmds[0].output.splitlines()[0] == "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
    assert cmds[2].output == ""  # a command with no output; "check ok" is not part of the ping's
    assert "check" not in cmds[1].output
    assert T.find(cmds, "node1", "tcpdump") == [cmds[3]]


def test_modes_cut_at_their_headings() -> None:
    parts = T.modes(TRANSCRIPT)
    assert list(parts) == ["vxlan", "host-gw"]
    assert "flannel.1" in parts["vxlan"] and "flannel.1" not in parts["host-gw"]


def test_ping_ttls_and_capture_counts() -> None:
    assert T.ping_ttls(T.commands(TRANSCRIPT)[1].output) == [64, 64]
    assert T.packets_captured("listening on x\n0 packets captured\n1 packet received by filter") == 0
    assert T.packets_captured("4 packets captured\n") == 4
    assert T.packets_captured("tcpdump: eth9: No such device exists") is None


def test_iperf3_and_subnet_env() -> None:
    assert T.iperf3_receiver_bps(json.dumps({"end": {"sum_received": {"bits_per_second": 2.5e9}}})) == 2.5e9
    with pytest.raises(ValueError, match="unable to connect"):
        T.iperf3_receiver_bps(json.dumps({"error": "unable to connect to server"}))
    env = T.subnet_env("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n")
    assert env == {"FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_SUBNET": "10.244.1.1/24"}


ROUTES = """\
10.244.0.0/16 dev flannel0 scope link
10.244.30.0/24 via 198.18.0.2 dev eth0
10.244.75.0/24 dev cni0 proto kernel scope link src 10.244.75.1
10.244.78.0/24 via 10.244.78.0 dev flannel.1 onlink
198.18.0.0/15 dev eth0 proto kernel scope link src 198.18.0.1
"""


def test_stale_routes_are_the_other_backends_pod_subnet_routes() -> None:
    from demo.modes import stale_routes

    assert stale_routes("udp", ROUTES) == ["10.244.30.0/24 via 198.18.0.2 dev eth0",
                                           "10.244.78.0/24 via 10.244.78.0 dev flannel.1 onlink"]
    assert stale_routes("host-gw", ROUTES) == ["10.244.78.0/24 via 10.244.78.0 dev flannel.1 onlink"]
    assert stale_routes("vxlan", ROUTES) == ["10.244.30.0/24 via 198.18.0.2 dev eth0"]


def test_closing_table_puts_the_seed_beside_ours_and_says_what_was_done_by_hand() -> None:
    from demo.modes import ModeResult
    from demo.report import table

    lines = table([ModeResult("vxlan", same_ttl=64, cross_ttl=62, wire="UDP 8472", gbps=2.5, hostport="hello"),
                   ModeResult("udp", same_ttl=64, cross_ttl=60, wire="UDP 8285", gbps=0.25, hostport="hello",
                              by_hand=6),
                   ModeResult("host-gw", status="unavailable: no backend")])
    assert lines[1].split() == ["vxlan", "64", "(64)", "62", "(62)", "UDP", "8472", "2.50", "Gbit/s", "ok"]
    assert lines[2].split()[:5] == ["udp", "64", "(-)", "60", "(60)"]
    assert lines[3].split() == ["host-gw", "unavailable:", "no", "backend"]
    assert lines[-1] == "udp: flanneld left 6 route(s) of the previous backend; the demo removed them by hand."
