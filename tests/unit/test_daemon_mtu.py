"""FLANNEL_MTU from the underlay MTU, per backend and family."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cni_flannel.daemon import mtu, netconf
from cni_flannel.daemon.mtu import MTUError


@pytest.mark.parametrize("backend, underlay, ipv4, ipv6, expected", [
    ("vxlan", 1500, True, False, 1450),  # the familiar flannel.1 MTU
    ("vxlan", 1500, False, True, 1430),  # IPv6 underlay: 40-byte outer header (flannel#1781)
    ("vxlan", 1500, True, True, 1430),  # one MTU for both: the smaller
    ("vxlan", 9000, True, False, 8950),
    ("host-gw", 1500, True, False, 1500),
    ("host-gw", 1500, True, True, 1500),
    ("udp", 1500, True, False, 1472),
    ("udp", 1400, True, False, 1372),
])
def test_flannel_mtu(backend: str, underlay: int, ipv4: bool, ipv6: bool, expected: int) -> None:
    assert mtu.flannel_mtu(backend, underlay, ipv4, ipv6) == expected


def conf(**backend: Any) -> netconf.NetConf:
    backend.setdefault("Type", "vxlan")
    return netconf.parse(json.dumps({"Network": "10.244.0.0/16", "Backend": backend}))


def test_backend_mtu_overrides_the_interface() -> None:
    assert mtu.for_netconf(conf(), 1500) == 1450
    assert mtu.for_netconf(conf(MTU=9000), 1500) == 8950
    assert mtu.for_netconf(conf(MTU=1400), None) == 1350
    dual = netconf.parse(json.dumps({"Network": "10.244.0.0/16", "EnableIPv6": True,
                                     "IPv6Network": "fd00::/56", "Backend": {"Type": "vxlan"}}))
    assert mtu.for_netconf(dual, 1500) == 1430
    assert mtu.for_netconf(netconf.parse('{"Network": "10.244.0.0/16"}'), 1500) == 1472  # no Backend: udp


@pytest.mark.parametrize("args, words", [
    (("vxlan", 100, True, False), ["MTU of 50", "IPv4", "at least 118"]),
    (("vxlan", 1340, True, True), ["MTU of 1270", "IPv6", "1280", "at least 1350"]),
    (("host-gw", 1200, False, True), ["IPv6", "at least 1280"]),
    (("udp", 1500, True, True), ["udp", "IPv6"]),
    (("vxlan", 0, True, False), ["unknown", "Backend.MTU"]),
    (("vxlan", 1500, False, False), ["no address family"]),
    (("ipip", 1500, True, False), ["ipip"]),
])
def test_unusable(args: tuple, words: list) -> None:
    with pytest.raises(MTUError) as info:
        mtu.flannel_mtu(*args)
    for word in words:
        assert word in str(info.value)


def test_no_interface_mtu_and_no_backend_mtu() -> None:
    with pytest.raises(MTUError):
        mtu.for_netconf(conf(), None)
