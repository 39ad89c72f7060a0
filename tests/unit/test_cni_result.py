"""Result conversion between every pair of spec versions (pkg/types/{100,040,020} semantics)."""

from __future__ import annotations

import itertools

import pytest

from cni_flannel.cni.errors import DecodeFailure, IncompatibleVersion
from cni_flannel.cni.result import DNS, Interface, IPConfig, Result, Route
from cni_flannel.cni.version import SUPPORTED_VERSIONS, at_least

FULL = Result(
    interfaces=[
        Interface(name="cni0", mac="0a:58:0a:f4:01:01", mtu=1450),
        Interface(name="veth1234abcd", mac="3a:11:22:33:44:55"),
        Interface(name="eth0", mac="0a:58:0a:f4:01:05", mtu=1450, sandbox="/var/run/netns/p1"),
    ],
    ips=[
        IPConfig(address="10.244.1.5/24", gateway="10.244.1.1", interface=2),
        IPConfig(address="10.244.1.6/24", gateway="10.244.1.1", interface=2),
        IPConfig(address="fd00:10:244:1::5/64", gateway="fd00:10:244:1::1", interface=2),
    ],
    routes=[
        Route(dst="10.244.0.0/16", gw="10.244.1.1", mtu=1400),
        Route(dst="0.0.0.0/0"),
        Route(dst="fd00:10:244::/56", gw="fd00:10:244:1::1", priority=10, table=100, scope=0),
    ],
    dns=DNS(nameservers=["10.96.0.10"], domain="cluster.local", search=["svc.cluster.local"], options=["ndots:5"]),
)

PAIRS = list(itertools.product(SUPPORTED_VERSIONS, SUPPORTED_VERSIONS))


@pytest.mark.parametrize("src,dst", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_version_pair_keeps_what_both_versions_can_express(src: str, dst: str) -> None:
    out = Result.from_dict(FULL.to_dict(src)).to_dict(dst)
    assert out["cniVersion"] == dst
    oldest = src if not at_least(src, dst) else dst
    back = Result.from_dict(out)
    if at_least(oldest, "0.3.0"):
        assert [ip.address for ip in back.ips] == [ip.address for ip in FULL.ips]
        assert [i.name for i in back.interfaces] == ["cni0", "veth1234abcd", "eth0"]
        assert [ip.interface for ip in back.ips] == [2, 2, 2]
    else:  # 0.1/0.2 keep the first address of each family and no interfaces
        assert [ip.address for ip in back.ips] == ["10.244.1.5/24", "fd00:10:244:1::5/64"]
        assert back.interfaces == []
    assert [(r.dst, r.gw) for r in back.routes] == [(r.dst, r.gw) for r in FULL.routes]
    assert back.dns == FULL.dns
    kept_1_1 = at_least(oldest, "1.1.0")
    assert (back.routes[0].mtu == 1400) is kept_1_1
    assert (back.routes[2].table == 100) is kept_1_1


def test_1_1_keeps_the_1_1_only_fields() -> None:
    out = FULL.to_dict("1.1.0")
    assert out["interfaces"][0]["mtu"] == 1450
    assert out["routes"][0] == {"dst": "10.244.0.0/16", "gw": "10.244.1.1", "mtu": 1400}
    assert out["routes"][2]["table"] == 100 and out["routes"][2]["scope"] == 0


def test_1_0_drops_the_1_1_only_fields() -> None:
    out = FULL.to_dict("1.0.0")
    assert "mtu" not in out["interfaces"][0]
    assert out["routes"][0] == {"dst": "10.244.0.0/16", "gw": "10.244.1.1"}
    assert out["ips"][0] == {"interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"}
    assert "version" not in out["ips"][0]


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_0_3_and_0_4_add_ip_version(version: str) -> None:
    out = FULL.to_dict(version)
    assert [ip["version"] for ip in out["ips"]] == ["4", "4", "6"]
    assert out["interfaces"][2]["sandbox"] == "/var/run/netns/p1"


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_0_2_keeps_first_address_per_family_and_splits_routes(version: str) -> None:
    out = FULL.to_dict(version)
    assert set(out) == {"cniVersion", "ip4", "ip6", "dns"}
    assert out["ip4"] == {
        "ip": "10.244.1.5/24",
        "gateway": "10.244.1.1",
        "routes": [{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}, {"dst": "0.0.0.0/0"}],
    }
    assert out["ip6"]["ip"] == "fd00:10:244:1::5/64"
    assert out["ip6"]["routes"] == [{"dst": "fd00:10:244::/56", "gw": "fd00:10:244:1::1"}]


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_0_2_without_any_ip_fails_clearly(version: str) -> None:
    with pytest.raises(IncompatibleVersion, match="no IP address"):
        Result(interfaces=[Interface(name="lo")]).to_dict(version)


def test_empty_result_always_carries_dns_like_go() -> None:
    assert Result().to_dict("1.0.0") == {"cniVersion": "1.0.0", "dns": {}}


def test_0_2_input_becomes_1_x() -> None:
    parsed = Result.from_dict(
        {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0"}]}}
    )
    assert parsed.ips == [IPConfig("10.1.2.3/24", "10.1.2.1", None)]
    assert parsed.routes == [Route("0.0.0.0/0")]


def test_result_without_version_is_0_1_0() -> None:
    assert Result.from_dict({"ip4": {"ip": "10.1.2.3/24"}}).ips[0].address == "10.1.2.3/24"


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"cniVersion": "1.0.0", "ips": [{"address": "not-an-ip"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": -1}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "x"}]},
        {"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]},
        {"cniVersion": "1.0.0", "interfaces": [{"mac": "aa"}]},
        {"cniVersion": "1.0.0", "dns": "8.8.8.8"},
    ],
)
def test_malformed_results_are_decode_failures(doc: object) -> None:
    with pytest.raises(DecodeFailure):
        Result.from_dict(doc)


def test_unknown_result_version_is_incompatible() -> None:
    with pytest.raises(IncompatibleVersion):
        Result.from_dict({"cniVersion": "2.0.0"})
