"""FLANNEL_MTU: the pod MTU, from the underlay MTU minus what the backend wraps around a packet.

The underlay MTU is Backend.MTU when net-conf.json gives one, else the external interface's.

    vxlan   underlay - 50 over IPv4 (inner Ethernet 14 + VXLAN 8 + UDP 8 + IPv4 20)
            underlay - 70 over IPv6 (the outer IPv6 header is 40 bytes)
    host-gw underlay (plain routing, nothing added)
    udp     underlay - 28 (IPv4 20 + UDP 8; the TUN device carries bare IP packets)

flannel subtracts 50 whatever the family (flannel#1781: full-size packets over an IPv6
underlay are lost).  Pods get one MTU for both families, so dual stack takes the smaller.
"""

from __future__ import annotations

from typing import Dict, Optional

from .netconf import NetConf

OVERHEAD: Dict[str, Dict[int, int]] = {
    "vxlan": {4: 50, 6: 70},
    "host-gw": {4: 0, 6: 0},
    "udp": {4: 28},  # flannel's udp backend is IPv4 only
}
MIN_MTU = {4: 68, 6: 1280}  # RFC 791 / RFC 8200: below this the family does not work at all


class MTUError(ValueError):
    """No usable pod MTU: the message says which number is wrong and what to do."""


def overhead(backend_type: str, version: int) -> int:
    try:
        return OVERHEAD[backend_type][version]
    except KeyError:
        raise MTUError(f"backend {backend_type!r} cannot carry IPv{version}") from None


def flannel_mtu(backend_type: str, underlay_mtu: int, ipv4: bool = True, ipv6: bool = False) -> int:
    """The MTU for pods of the enabled families over an underlay of ``underlay_mtu``."""
    versions = [v for v, on in ((4, ipv4), (6, ipv6)) if on]
    if not versions:
        raise MTUError("no address family enabled")
    if underlay_mtu <= 0:
        raise MTUError(f"underlay MTU {underlay_mtu} is unknown: set Backend.MTU in net-conf.json")
    mtu = min(underlay_mtu - overhead(backend_type, v) for v in versions)
    for v in versions:
        if mtu < MIN_MTU[v]:
            raise MTUError(
                f"{backend_type} over an underlay MTU of {underlay_mtu} leaves pods an MTU of {mtu}, "
                f"below IPv{v}'s minimum {MIN_MTU[v]}: raise the underlay MTU (or Backend.MTU) to at least "
                f"{MIN_MTU[v] + max(overhead(backend_type, x) for x in versions)}")
    return mtu


def for_netconf(conf: NetConf, interface_mtu: Optional[int]) -> int:
    """FLANNEL_MTU for this config on a node whose external interface has ``interface_mtu``."""
    underlay = conf.backend.mtu or interface_mtu or 0
    return flannel_mtu(conf.backend.type, underlay, conf.enable_ipv4, conf.enable_ipv6)
