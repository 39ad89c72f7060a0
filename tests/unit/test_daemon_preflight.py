"""Preflight checks: br_netfilter (unless EnableNFTables), forwarding, backend kernel support."""
from __future__ import annotations

import pytest

from cni_flannel.daemon import netconf
from cni_flannel.daemon.errors import PreflightError
from cni_flannel.daemon.preflight import check
from tests.unit.daemon_doubles import probe

VX = netconf.parse('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')


def test_all_present_changes_nothing():
    p = probe()
    assert check(VX, p) == [] and p.written == []


def test_missing_br_netfilter_refused_unless_nftables():
    with pytest.raises(PreflightError, match="modprobe br_netfilter"):
        check(VX, probe(bridge_nf=False))
    nft = netconf.parse('{"Network": "10.244.0.0/16", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}')
    assert check(nft, probe(bridge_nf=False)) == []


def test_forwarding_off_is_switched_on_per_family():
    dual = netconf.parse('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56",'
                         ' "Backend": {"Type": "vxlan"}}')
    p = probe(forward="0")
    notes = check(dual, p)
    assert p.written == ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] and len(notes) == 2


def test_forwarding_that_cannot_be_set_fails_with_the_command():
    p = probe(forward="0")

    def deny(key):
        raise PermissionError(13, "Permission denied")
    p.sysctl_set = deny
    with pytest.raises(PreflightError, match="sysctl -w net.ipv4.ip_forward=1"):
        check(VX, p)


def test_missing_kernel_support_names_the_module():
    with pytest.raises(PreflightError, match="modprobe vxlan"):
        check(VX, probe(kernel=False))
    hostgw = netconf.parse('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}')
    assert check(hostgw, probe(kernel=False)) == []
