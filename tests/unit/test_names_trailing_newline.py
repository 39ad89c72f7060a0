"""A name with a trailing newline is refused ("$" in re.match lets one through; fullmatch does not)."""

from __future__ import annotations

import pytest

from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.firewall import _model
from cni_flannel.ipam.config import check_network_name
from cni_flannel.portmap import conditions


@pytest.mark.parametrize("check, good", [
    (_model.check_chain_name, "CNI-DN-1"),
    (_model.check_table_name, "nat"),
    (_model.check_comment, "cni portmap"),
    (lambda v: _model.check_chain_name(_model.NftChainName(v)), "cni-br-iface-x"),
    (lambda v: _model._ifname("iif", v), "eth0"),
    (check_network_name, "cbr0"),
])
def test_trailing_newline_is_refused(check, good: str) -> None:
    check(good)
    with pytest.raises(InvalidConfig):
        check(good + "\n")


def test_mac_and_conditions_interface_with_trailing_newline_are_refused() -> None:
    with pytest.raises(InvalidConfig):
        _model.Rule(target="ACCEPT", ether_src="0a:58:0a:f4:01:02\n")
    conditions._interface("k", "eth0", "eth0")
    with pytest.raises(InvalidConfig):
        conditions._interface("k", "eth0\n", "eth0\n")
