"""Minimal ICMP echo (IPv4 and IPv6) for namespaces without iputils-ping.

Run inside a namespace as a script: ``python icmp.py ADDR [TIMEOUT]`` exits 0
when ADDR answers one echo request, 1 otherwise. Stdlib only, needs root.
"""
from __future__ import annotations

import ipaddress
import os
import select
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo's package
from cni_flannel.net.icmp import echo_reply, echo_request  # noqa: E402


def ping(addr: str, timeout: float = 2.0) -> bool:
    """Send one echo request to addr; True when the matching reply arrives."""
    version = ipaddress.ip_address(addr).version
    family, proto = (socket.AF_INET, socket.IPPROTO_ICMP) if version == 4 else (
        socket.AF_INET6, socket.IPPROTO_ICMPV6)
    ident, seq = os.getpid() & 0xFFFF, 1
    packet = echo_request(version, ident, seq, b"cni-flannel-harness")
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        try:
            sock.sendto(packet, (addr, 0))
        except OSError:  # e.g. network unreachable
            return False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                return False
            data, _ = sock.recvfrom(65535)
            if echo_reply(version, data) == (ident, seq):
                return True
    return False


if __name__ == "__main__":
    sys.exit(0 if ping(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 2.0) else 1)
