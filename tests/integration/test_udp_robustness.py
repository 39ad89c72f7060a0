"""The udp backend against what the network and the node can throw at it, and against an
independent implementation of upstream's wire format (raw IPv4 packet in UDP 8285)."""
from __future__ import annotations

import select
import subprocess
import sys

import pytest

from tests.harness import drivers
from tests.integration.flannel_node import flannel_node
from tests.integration.udp_helpers import MODES, MTU, counters, python, set_subnet_env, transfer, udp_cluster

# Datagrams sent to 198.18.0.1:8285.  argv: source address.  Prints nothing; raises on failure.
CSUM = r"""
import random, socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
"""

GARBAGE = CSUM + r"""
def pkt(dst, ttl=9, payload=b"x" * 12, tot=None):
    total = tot if tot is not None else 20 + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, ttl, 17, 0, bytes([10, 244, 2, 9]), bytes(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload
rng = random.Random(7)
own = [10, 244, 1, 77]
good = pkt(own)
datagrams = {
    "short": [b"", b"\x45" * 10, good[:19]],
    "not_ipv4": [b"\x13" + rng.randbytes(199), b"\x60" + rng.randbytes(59)],
    "bad_header": [pkt(own, tot=100)[:20], b"\x4f" + good[1:], good + b"trailing"],
    "bad_checksum": [good[:10] + b"\x12\x34" + good[12:]],
    "oversized": [pkt(own, payload=rng.randbytes(9000))],
    "not_for_us": [pkt([10, 244, 2, 5]), pkt([198, 51, 100, 7])],
    "ttl_expired": [pkt(own, ttl=1), pkt(own, ttl=0)],
}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
for group in datagrams.values():
    for d in group:
        s.sendto(d, ("198.18.0.1", 8285))
"""
EXPECTED_UDP_DROPS = {"short": 3, "not_ipv4": 2, "bad_header": 3, "bad_checksum": 1, "oversized": 1,
                      "not_for_us": 2, "ttl_expired": 2}

# Malformed frames written into flannel0 by the node itself (AF_PACKET: no IP stack checks).
INTO_TUN = CSUM + r"""
def pkt(dst, proto=17):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 9, proto, 0, bytes([10, 244, 1, 99]), bytes(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + b"\0" * 8
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
for frame in (b"\x45" * 10, b"\x60" + b"\0" * 59, pkt([198, 51, 100, 7]), pkt([10, 244, 77, 1]),
              pkt([10, 244, 77, 1], proto=1)):
    s.sendto(frame, ("flannel0", 0x0800))
"""
EXPECTED_TUN_DROPS = {"short": 1, "not_ipv4": 1, "no_route": 1, "unreachable": 2}


def delta(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before) if after.get(k, 0) != before.get(k, 0)}


@pytest.mark.parametrize("mode", MODES)
def test_udp_garbage_from_the_network_and_the_node_is_dropped_and_counted(make_node, mode):
    c = udp_cluster(make_node, count=2, mode=mode)
    c.add_pods()
    n1, n2 = c.members
    (p1, ips1), (p2, ips2) = n1.pods[0], n2.pods[0]
    before = counters(n1)
    python(n2.node, GARBAGE, n2.public)  # a known peer sending garbage
    n2.node.run(["ip", "addr", "add", "198.18.0.50/15", "dev", "eth0"])
    python(n2.node, GARBAGE, "198.18.0.50")  # a stranger: everything dropped before parsing
    python(n1.node, INTO_TUN)
    assert p1.ping(ips2[0]) and p2.ping(ips1[0]), "forwarding stopped after garbage"
    after = counters(n1)
    unknown = sum(EXPECTED_UDP_DROPS.values())
    assert delta(after["udp_to_tun"]["drops"], before["udp_to_tun"]["drops"]) == {
        **EXPECTED_UDP_DROPS, "unknown_source": unknown}
    assert delta(after["tun_to_udp"]["drops"], before["tun_to_udp"]["drops"]) == EXPECTED_TUN_DROPS


# An independent, minimal implementation of upstream's udp wire format: its own TUN set-up, a
# /24 dict for peers, full header checksum recomputation after the TTL change, one select loop.
UPSTREAM = r"""
import fcntl, os, select, socket, struct, subprocess, sys
own, subnet, peers = sys.argv[1], sys.argv[2], dict(p.split("=") for p in sys.argv[3].split(","))
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"flannel0", 0x0001 | 0x1000))
for cmd in (f"ip addr add {subnet}/32 dev flannel0", "ip link set flannel0 mtu 1472 up",
            "ip route add 10.244.0.0/16 dev flannel0"):
    subprocess.check_call(cmd.split())
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((own, 8285))
def fix(p):
    if p[8] <= 1:
        return None
    p[8] -= 1
    p[10:12] = b"\0\0"
    n = (p[0] & 15) * 4
    s = sum(struct.unpack("!%dH" % (n // 2), bytes(p[:n])))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    p[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return p
print("ready", flush=True)
while True:
    r, _, _ = select.select([fd, sock], [], [])
    if fd in r:
        p = bytearray(os.read(fd, 2048))
        peer = peers.get(".".join(str(b) for b in p[16:19]))
        if peer and fix(p):
            sock.sendto(p, (peer, 8285))
    if sock in r:
        p = fix(bytearray(sock.recv(2048)))
        if p:
            os.write(fd, p)
"""


@pytest.mark.parametrize("mode", MODES)
def test_udp_interoperates_with_upstreams_wire_format(make_node, mode):
    c = udp_cluster(make_node, count=2, mode=mode)
    n3 = make_node("n3", underlay=True)
    flannel_node(n3)
    set_subnet_env(n3, 3)
    proc = n3.popen([sys.executable, "-c", UPSTREAM, n3.underlay_ip, "10.244.3.0",
                     ",".join(f"10.244.{m.n}={m.public}" for m in c.members)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    n3.lab.add_finalizer(lambda: (proc.kill(), proc.wait()))
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    assert ready and proc.stdout.readline().strip() == "ready", proc.stderr.read()
    upstream_lease = {"Subnet": "10.244.3.0/24", "PublicIP": n3.underlay_ip}  # no BackendType: upstream's form
    for m in c.members:
        m.proc.ok("handle", events=[{"type": "added", "lease": {**upstream_lease, "BackendType": ""}}])
    c.add_pods()
    pod3 = n3.add_pod("p1")
    ip3 = drivers.libcni(n3, "add", "cbr0", pod3, cid="n3-p1")["ips"][0]["address"].split("/")[0]
    for m in c.members:
        pod, ips = m.pods[0]
        assert pod.ping(ip3), f"{m.node.name} -> upstream node"
        assert pod3.ping(ips[0]), f"upstream node -> {m.node.name}"
    (p1, ips1) = c.members[0].pods[0]
    transfer(p1, pod3, ip3, 8 << 20)        # ours -> upstream's, full-size packets
    transfer(pod3, p1, ips1[0], 8 << 20, port=5002)  # and back
    got = counters(c.members[0])
    assert got["udp_to_tun"]["packets"] > (8 << 20) // MTU
    assert got["tun_to_udp"]["partial_checksum"] == 0, got  # upstream's lease: full checksums only
