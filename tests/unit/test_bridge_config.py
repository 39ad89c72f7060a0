"""bridge: config validation (every bad value -> code 7 before any change), MAC
precedence, VLAN trunks, and the gateway/route computation of ADD (pure)."""
from __future__ import annotations

import json

import pytest

from cni_flannel.cni.config import parse_netconf
from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.cni.result import IPConfig, Result, Route
from cni_flannel.plugins.bridge_config import parse
from cni_flannel.plugins.bridge_link import gateways

IPAM = {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}


def netconf(**over):
    d = {"cniVersion": "1.0.0", "name": "cbr", "type": "bridge", "ipam": IPAM}
    d.update(over)
    d = {k: v for k, v in d.items() if v is not ...}
    return parse_netconf(json.dumps(d).encode())


BAD = [
    ({"vlan": 5000}, "invalid VLAN ID 5000"),
    ({"vlan": -1}, "invalid VLAN ID -1"),
    ({"vlan": "10"}, "'vlan' must be an integer"),
    ({"vlan": 10, "vlanTrunk": [{"id": 20}]}, "cannot set vlan and vlanTrunk at the same time"),
    ({"vlanTrunk": [{"minID": 10, "maxID": 20}, {"id": 15}]}, "vlanTrunk entries overlap: VLAN 15"),
    ({"vlanTrunk": [{"minID": 10, "maxID": 20}, {"minID": 20, "maxID": 30}]}, "overlap: VLAN 20"),
    ({"vlanTrunk": [{"minID": 30, "maxID": 20}]}, "minID is greater than maxID"),
    ({"vlanTrunk": [{"minID": 0, "maxID": 20}]}, "incorrect trunk minID"),
    ({"vlanTrunk": [{"minID": 1, "maxID": 4095}]}, "incorrect trunk maxID"),
    ({"vlanTrunk": [{"maxID": 20}]}, "minID is missing"),
    ({"vlanTrunk": [{"minID": 20}]}, "maxID is missing"),
    ({"vlanTrunk": [{"id": 0}]}, "incorrect trunk id"),
    ({"vlanTrunk": [{}]}, "names no VLAN"),
    ({"vlanTrunk": {"id": 3}}, "vlanTrunk must be a list"),
    ({"hairpinMode": True, "promiscMode": True}, "cannot set hairpin mode and promiscuous mode"),
    ({"mtu": 10}, "invalid MTU 10"),
    ({"mtu": 70000}, "invalid MTU 70000"),
    ({"mtu": "1450"}, "'mtu' must be an integer"),
    ({"bridge": "a-bridge-name-16"}, "interface name is too long"),
    ({"bridge": "br/0"}, "invalid bridge name"),
    ({"bridge": "br 0"}, "invalid bridge name"),
    ({"bridge": ".."}, "invalid bridge name"),
    ({"bridge": 7}, "bridge name must be a string"),
    # the fuzzer's name: 6 characters, 11 bytes, three C1 controls (the kernel takes it, ip shows "뤫,v")
    ({"bridge": "\u0083\u0094\ub92b,\u0093v"}, "unprintable character '\\x83'"),
    ({"bridge": "br\u200b0"}, "unprintable character"),      # zero-width space (format char)
    ({"bridge": "br\x7f"}, "unprintable character"),
    ({"bridge": "\u00e9" * 8}, "too long (16 > 15 bytes)"),   # 8 characters, 16 bytes
    ({"bridge": "br\u0120"}, "invalid character"),             # U+0120 is C4 A0: the kernel's 0xa0 space
    ({"bridge": "br\u00a0"}, "invalid character"),
    ({"bridge": "br\ud800"}, "lone surrogate"),
    ({"isGateway": "yes"}, "'isGateway' must be true or false"),
    ({"ipMasq": 1}, "'ipMasq' must be true or false"),
    ({"hairpinMode": "true"}, "'hairpinMode' must be true or false"),
    ({"ipMasqBackend": "pf"}, "invalid ipMasqBackend 'pf'"),
    ({"ipam": {"subnet": "10.0.0.0/8"}}, "ipam section has no type"),
    ({"ipam": {"type": ""}}, "ipam section has no type"),
    ({"disableContainerInterface": True}, "disableContainerInterface cannot be used with IPAM"),
    ({"runtimeConfig": {"mac": "zz:zz:zz:zz:zz:zz"}}, "invalid MAC address 'zz:zz:zz:zz:zz:zz' in runtimeConfig.mac"),
    ({"args": {"cni": {"mac": "01:00:5e:00:00:01"}}}, "is a multicast address"),
    ({"runtimeConfig": {"mac": "0a:58:0a:f4:01:02\n"}}, "invalid MAC address"),  # "$" lets "\n" through
]


@pytest.mark.parametrize("over,msg", BAD, ids=[m for _, m in BAD])
def test_bad_config_is_invalid_config(over, msg):
    with pytest.raises(InvalidConfig) as info:
        parse(netconf(**over))
    assert info.value.code == 7
    assert msg in info.value.msg
    assert info.value.details  # every error says what to do


def test_macspoofchk_is_accepted():
    assert parse(netconf(macspoofchk=True)).macspoofchk is True
    assert parse(netconf()).macspoofchk is False


@pytest.mark.parametrize("over", [{"vlan": 10, "isGateway": True}])
def test_not_yet_supported_options_are_refused(over):
    from cni_flannel.cni.errors import UnsupportedField

    with pytest.raises(UnsupportedField) as info:
        parse(netconf(**over))
    assert info.value.code == 2


def test_bad_mac_in_cni_args():
    with pytest.raises(InvalidConfig, match="CNI_ARGS MAC"):
        parse(netconf(), {"MAC": "0a:58:00"})


def test_defaults():
    c = parse(netconf(ipam=...))
    assert (c.bridge, c.mtu, c.vlan, c.vlans, c.preserve_default_vlan) == ("cni0", 0, 0, (), True)
    assert not (c.is_gateway or c.ip_masq or c.hairpin or c.layer3)
    c = parse(netconf(isDefaultGateway=True))
    assert c.is_gateway and c.is_default_gateway and c.layer3 and c.ipam_type == "host-local"


def test_mac_precedence():
    over = {"args": {"cni": {"mac": "0A:58:00:00:00:02"}}}
    assert parse(netconf(), {"MAC": "0a:58:00:00:00:01"}).mac == "0a:58:00:00:00:01"
    assert parse(netconf(**over), {"MAC": "0a:58:00:00:00:01"}).mac == "0a:58:00:00:00:02"
    over["runtimeConfig"] = {"mac": "0a:58:00:00:00:03"}
    assert parse(netconf(**over), {"MAC": "0a:58:00:00:00:01"}).mac == "0a:58:00:00:00:03"


def test_trunk_expansion():
    c = parse(netconf(vlanTrunk=[{"id": 7}, {"minID": 100, "maxID": 102}, {"id": 5}]))
    assert c.vlans == (5, 7, 100, 101, 102) and c.vlan_filtering


def test_gateways_and_default_routes():
    conf = parse(netconf(isDefaultGateway=True))
    alloc = Result(ips=[IPConfig("10.244.1.5/24"), IPConfig("fd00::5/64", gateway="fd00::fe")],
                   routes=[Route("10.244.0.0/16")])
    res, bridge_addrs = gateways(alloc, conf)
    assert [(i.address, i.gateway, i.interface) for i in res.ips] == [
        ("10.244.1.5/24", "10.244.1.1", 2), ("fd00::5/64", "fd00::fe", 2)]
    assert [(r.dst, r.gw) for r in res.routes] == [("10.244.0.0/16", None), ("0.0.0.0/0", "10.244.1.1"),
                                                   ("::/0", "fd00::fe")]
    assert bridge_addrs == ["10.244.1.1/24", "fd00::fe/64"]


def test_no_gateway_without_is_gateway_and_existing_default_kept():
    conf = parse(netconf())
    res, bridge_addrs = gateways(Result(ips=[IPConfig("10.244.1.5/24")]), conf)
    assert res.ips[0].gateway is None and bridge_addrs == [] and res.routes == []
    conf = parse(netconf(isDefaultGateway=True))
    alloc = Result(ips=[IPConfig("10.244.1.5/24")], routes=[Route("0.0.0.0/0", gw="10.244.1.254")])
    res, _ = gateways(alloc, conf)
    assert [(r.dst, r.gw) for r in res.routes] == [("0.0.0.0/0", "10.244.1.254")]


@pytest.mark.parametrize("name", ["cni0", "\ub92b,v", "\u00e9" * 7, "br-x.100"])
def test_printable_bridge_names_the_kernel_takes_are_accepted(name):
    assert parse(netconf(bridge=name)).bridge == name


def test_rollback_keeps_a_bridge_another_pod_joined():
    """The bridge an ADD made is deleted on rollback only while no link is its port."""
    from cni_flannel.net.types import Link
    from cni_flannel.plugins.bridge_link import bridge_unused

    br = Link(index=5, name="cni0", kind="bridge")
    assert bridge_unused(5, [br, Link(index=6, name="veth0", kind="veth")])
    assert not bridge_unused(5, [br, Link(index=6, name="veth0", kind="veth", master=5)])
