"""route_localnet=1 on the interface that routes to the pod (IPv4 only).

Connections to 127.0.0.1:<hostPort> are DNATed to the pod and must leave
through the bridge with a 127/8 source, which the kernel drops as martian
unless route_localnet is set there (upstream: getRoutableHostIF +
enableLocalnetRouting).  The interface is found in /proc/net/route — the
main table's longest match — so the plugin needs no netlink socket.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Optional

from cni_flannel.net import sysctl

PROC_ROUTE = "/proc/net/route"


def _addr(hex_le: str) -> int:
    """/proc/net/route prints addresses as host-order hex of network-order bytes."""
    return struct.unpack("!I", struct.pack("=I", int(hex_le, 16)))[0]


def routable_interface(ip: str, table: str) -> Optional[str]:
    """The interface of the most specific (then lowest-metric) route covering ip."""
    target = int(ipaddress.IPv4Address(ip))
    best = None
    for line in table.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            dest, flags, metric, mask = _addr(cols[1]), int(cols[3], 16), int(cols[6]), _addr(cols[7])
        except ValueError:
            continue
        if not flags & 0x1 or target & mask != dest:  # RTF_UP
            continue
        key = (bin(mask).count("1"), -metric)
        if best is None or key > best[0]:
            best = (key, cols[0])
    return best[1] if best else None


def enable_for(ip: str) -> Optional[str]:
    """Set route_localnet on the interface routing to ip; return its name."""
    try:
        with open(PROC_ROUTE) as f:
            table = f.read()
    except OSError:
        return None
    name = routable_interface(ip, table)
    if name:
        sysctl.write(f"net/ipv4/conf/{name}/route_localnet", "1")
    return name

