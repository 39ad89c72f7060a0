"""net-conf.json: flannel's defaults and checks (pkg/subnet/config.go, config_test.go)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.daemon import netconf
from cni_flannel.daemon.errors import ConfigError
from cni_flannel.daemon.netconf import NetConfError


def parse(obj: Any, kube: bool = False) -> netconf.NetConf:
    return netconf.parse(obj if isinstance(obj, str) else json.dumps(obj), kube=kube)


def rejected(obj: Any, *words: str) -> str:
    with pytest.raises(NetConfError) as info:
        parse(obj)
    text = str(info.value)
    for word in words:
        assert word in text, text
    return text


# --- defaults -----------------------------------------------------------------------------

def test_upstream_config_defaults() -> None:
    # config_test.go TestConfigDefaults: lower-case key, /16 -> /24, 10.3.1.0 .. 10.3.255.0
    conf = parse('{ "network": "10.3.0.0/16" }')
    pool = conf.ipv4
    assert pool is not None
    assert str(pool.network) == "10.3.0.0/16"
    assert pool.subnet_len == 24
    assert str(pool.subnet_min) == "10.3.1.0"
    assert str(pool.subnet_max) == "10.3.255.0"
    assert conf.ipv6 is None and conf.enable_ipv4 and not conf.enable_ipv6


def test_upstream_ipv6_config_defaults() -> None:
    # config_test.go TestIPv6ConfigDefaults
    conf = parse('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false, '
                 '"Backend": {"Type": "vxlan"} }')
    assert conf.ipv4 is None
    pool = conf.ipv6
    assert pool is not None and pool.subnet_len == 64
    assert str(pool.subnet_min) == "fc00:0:0:1::"
    assert str(pool.subnet_max) == "fc00:0:0:ffff::"


def test_upstream_overrides() -> None:
    # config_test.go TestConfigOverrides / TestIPv6ConfigOverrides
    pool = parse({"Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28}).ipv4
    assert pool is not None
    assert (pool.subnet_len, str(pool.subnet_min), str(pool.subnet_max)) == (28, "10.3.5.0", "10.3.8.0")
    pool6 = parse({"EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::",
                   "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": False,
                   "Backend": {"Type": "host-gw"}}).ipv6
    assert pool6 is not None
    assert (pool6.subnet_len, str(pool6.subnet_min), str(pool6.subnet_max)) == (124, "fc00:0:0:1::", "fc00:0:0:f::")


@pytest.mark.parametrize("network, subnet_len, lo, hi", [
    ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
    ("10.244.0.0/22", 24, "10.244.1.0", "10.244.3.0"),  # /22: still /24s, exactly four
    ("10.244.0.0/23", 25, "10.244.0.128", "10.244.1.128"),  # smaller than /22: prefix + 2
    ("10.244.0.0/24", 26, "10.244.0.64", "10.244.0.192"),
    ("10.244.0.0/28", 30, "10.244.0.4", "10.244.0.12"),  # the smallest accepted
    ("10.244.1.7/16", 24, "10.244.1.0", "10.244.255.0"),  # host bits masked, as net.ParseCIDR does
])
def test_subnet_len_and_range_defaults(network: str, subnet_len: int, lo: str, hi: str) -> None:
    pool = parse({"Network": network}).ipv4
    assert pool is not None
    assert (pool.subnet_len, str(pool.subnet_min), str(pool.subnet_max)) == (subnet_len, lo, hi)


@pytest.mark.parametrize("network, subnet_len, lo", [
    ("fd00::/56", 64, "fd00:0:0:1::"),
    ("fd00::/62", 64, "fd00:0:0:1::"),  # /62: still /64s
    ("fd00::/63", 65, "fd00::8000:0:0:0"),  # prefix + 2
    ("fd00::/124", 126, "fd00::4"),
])
def test_ipv6_subnet_len_defaults(network: str, subnet_len: int, lo: str) -> None:
    pool = parse({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": network, "Backend": {"Type": "vxlan"}}).ipv6
    assert pool is not None and (pool.subnet_len, str(pool.subnet_min)) == (subnet_len, lo)


def test_subnet_len_zero_means_default() -> None:
    pool = parse({"Network": "10.0.0.0/16", "SubnetLen": 0}).ipv4
    assert pool is not None and pool.subnet_len == 24


def test_no_backend_is_udp_not_vxlan() -> None:
    # parseBackendType: an absent Backend is "udp" (the docs claim vxlan)
    backend = parse({"Network": "10.0.0.0/16"}).backend
    assert backend.type == "udp" and backend.effective_port == 8285
    assert parse({"Network": "10.0.0.0/16", "Backend": None}).backend.type == "udp"


def test_backend_fields_and_defaults() -> None:
    b = parse({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan"}}).backend
    assert (b.vni, b.port, b.effective_port, b.mtu, b.direct_routing, b.gbp, b.learning) == (1, 0, 8472, 0, False, False, False)
    b = parse({"Network": "10.0.0.0/16", "Backend": {"type": "vxlan", "vni": 4096, "port": 4789, "MTU": 9000,
                                                     "DirectRouting": True, "GBP": True, "Learning": True}}).backend
    assert (b.vni, b.effective_port, b.mtu, b.direct_routing, b.gbp, b.learning) == (4096, 4789, 9000, True, True, True)
    assert b.raw["vni"] == 4096


def test_keys_case_insensitive_last_wins_and_unknown_listed() -> None:
    conf = parse('{"network": "10.1.0.0/16", "NETWORK": "10.2.0.0/16", "SubnetLength": 25}')
    assert conf.ipv4 is not None and str(conf.ipv4.network) == "10.2.0.0/16"
    assert conf.unknown_keys == ("SubnetLength",)  # flannel ignores the typo silently; we can warn


def test_dual_stack_and_nftables() -> None:
    conf = parse({"Network": "10.244.0.0/16", "EnableIPv6": True, "IPv6Network": "fd00:10:244::/56",
                  "EnableNFTables": True, "Backend": {"Type": "vxlan"}})
    assert [p.version for p in conf.pools] == [4, 6]
    assert conf.pool(6) is conf.ipv6 and conf.enable_nftables


def test_ipv6_network_ignored_when_ipv6_disabled() -> None:
    assert parse({"Network": "10.0.0.0/16", "IPv6Network": "fd00::/56"}).ipv6 is None


def test_frozen_and_hashable() -> None:
    conf = parse({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan"}})
    with pytest.raises(AttributeError):
        conf.ipv4 = None  # type: ignore[misc]
    assert hash(conf) == hash(parse({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan"}}))


def test_pool_helpers() -> None:
    pool = parse({"Network": "10.244.0.0/16"}).ipv4
    assert pool is not None
    assert pool.version == 4 and pool.subnet_size == 256
    assert str(pool.first) == "10.244.1.0/24" and str(pool.last) == "10.244.255.0/24"
    assert pool.subnet_at(ipaddress.ip_address("10.244.7.9")) == ipaddress.ip_network("10.244.7.0/24")


# --- validation ---------------------------------------------------------------------------

def test_errors_are_the_daemons_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse({})
    assert info.value.exit_code == 1 and not isinstance(info.value, InvalidConfig)


@pytest.mark.parametrize("obj, words", [
    ({"Network": "10.0.0.0/29"}, ["Network=10.0.0.0/29", "too small", "/28"]),
    ({"Network": "10.0.0.0/16", "SubnetLen": 31}, ["SubnetLen=31", "30 or less"]),
    ({"Network": "10.0.0.0/16", "SubnetLen": 17}, ["SubnetLen=17", "four subnets", "18 or more"]),
    ({"Network": "10.0.0.0/16", "SubnetMin": "10.1.0.0"}, ["SubnetMin=10.1.0.0", "outside"]),
    ({"Network": "10.0.0.0/16", "SubnetMax": "10.1.0.0"}, ["SubnetMax=10.1.0.0", "outside"]),
    ({"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.128"}, ["SubnetMin=10.0.1.128", "boundary", "10.0.1.0"]),
    ({"Network": "10.0.0.0/16", "SubnetMax": "10.0.9.1"}, ["SubnetMax=10.0.9.1", "boundary"]),
    ({"Network": "10.0.0.0/16", "SubnetMin": "10.0.9.0", "SubnetMax": "10.0.3.0"}, ["above"]),
    ({}, ["Network is missing", "10.244.0.0/16"]),
    ({"Network": "10.0.0.0"}, ["Network=", "prefix"]),
    ({"Network": "fd00::/56"}, ["IPv4"]),
    ({"Network": "banana"}, ["Network=\"banana\"", "CIDR"]),
    ({"Network": 10}, ["Network=10", "string"]),
    ({"Network": "10.0.0.0/16", "SubnetLen": "24"}, ["SubnetLen=\"24\"", "number"]),
    ({"Network": "10.0.0.0/16", "SubnetLen": -1}, ["SubnetLen=-1"]),
    ({"Network": "10.0.0.0/16", "SubnetLen": 24.5}, ["SubnetLen=24.5"]),
    ({"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.0/24"}, ["SubnetMin", "no /len"]),
    ({"Network": "10.0.0.0/16", "EnableIPv4": "true"}, ["EnableIPv4=\"true\"", "boolean"]),
    ({"EnableIPv4": False}, ["both false"]),
    ({"EnableIPv6": True, "Network": "10.0.0.0/16", "Backend": {"Type": "vxlan"}}, ["IPv6Network is missing"]),
    ({"EnableIPv6": True, "IPv6Network": "fd00::/125", "EnableIPv4": False, "Backend": {"Type": "vxlan"}},
     ["too small", "/124"]),
    ({"EnableIPv6": True, "IPv6Network": "fd00::/56", "IPv6SubnetLen": 127, "EnableIPv4": False,
      "Backend": {"Type": "vxlan"}}, ["IPv6SubnetLen=127", "126 or less"]),
    ({"EnableIPv6": True, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "fd01::", "EnableIPv4": False,
      "Backend": {"Type": "vxlan"}}, ["IPv6SubnetMin=fd01::", "outside"]),
    ({"EnableIPv6": True, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "10.0.0.0", "EnableIPv4": False,
      "Backend": {"Type": "vxlan"}}, ["IPv6SubnetMin", "IPv6 address"]),
    ({"EnableIPv6": True, "IPv6Network": "fd00::/56", "Network": "10.0.0.0/16"}, ["udp", "IPv4 only"]),
    ({"Network": "10.0.0.0/16", "Backend": {}}, ["Backend.Type=(missing)"]),
    ({"Network": "10.0.0.0/16", "Backend": {"Type": "VXLAN"}}, ["lower case", '"vxlan"']),
    ({"Network": "10.0.0.0/16", "Backend": {"Type": "wireguard"}}, ["wireguard", "vxlan, host-gw, udp"]),
    ({"Network": "10.0.0.0/16", "Backend": "vxlan"}, ["Backend must be an object"]),
    ({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1 << 24}}, ["VNI=16777216", "24 bits"]),
    ({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "Port": 70000}}, ["Port=70000"]),
    # the VTEP's name would pass the kernel's 15 bytes (the kernel answers ERANGE at creation)
    ({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "VNI": 10000000}}, ["VNI=10000000", "flannel.10000000"]),
    ({"EnableIPv6": True, "IPv6Network": "fd00::/56", "Network": "10.0.0.0/16",
      "Backend": {"Type": "vxlan", "VNI": 10000}}, ["VNI=10000", "flannel-v6.10000", "9999"]),
    ({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "MTU": 40}}, ["MTU=40", "68 to 65535"]),
    ({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": 1}}, ["Backend.DirectRouting=1"]),
])
def test_rejected(obj: Any, words: list) -> None:
    rejected(obj, *words)


def test_largest_vnis_whose_vtep_names_fit() -> None:
    assert parse({"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "VNI": 9999999}}).backend.vni == 9999999
    assert parse({"EnableIPv6": True, "IPv6Network": "fd00::/56", "Network": "10.0.0.0/16",
                  "Backend": {"Type": "vxlan", "VNI": 9999}}).backend.vni == 9999
    assert parse({"Network": "10.0.0.0/16", "Backend": {"Type": "host-gw", "VNI": 10000000}})  # no VTEP


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"x"'])
def test_not_an_object(text: str) -> None:
    with pytest.raises(NetConfError):
        netconf.parse(text)


def test_kube_mode_skips_range_checks() -> None:
    # flannel runs CheckNetworkConfig only for the etcd manager: kube nodes lease their podCIDR
    for obj in ({"Network": "10.0.0.0/30"}, {"Network": "10.0.0.0/16", "SubnetLen": 31},
                {"Network": "10.0.0.0/16", "SubnetLen": 8}, {"Network": "10.0.0.0/16", "SubnetMin": "10.9.0.0"}):
        conf = parse(obj, kube=True)
        assert conf.ipv4 is not None and str(conf.ipv4.network) == obj["Network"]
    # the rest is still checked
    with pytest.raises(NetConfError):
        parse({}, kube=True)
    with pytest.raises(NetConfError):
        parse({"Network": "10.0.0.0/16", "Backend": {"Type": "bogus"}}, kube=True)


def test_load_missing_file(tmp_path: Any) -> None:
    with pytest.raises(NetConfError) as info:
        netconf.load(str(tmp_path / "nope.json"))
    assert "nope.json" in str(info.value)


def test_load_reads_the_file(tmp_path: Any) -> None:
    path = tmp_path / "net-conf.json"
    # the kube-flannel.yml ConfigMap's net-conf.json
    path.write_text('{\n  "Network": "10.244.0.0/16",\n  "EnableNFTables": false,\n  "Backend": {\n    "Type": "vxlan"\n  }\n}\n')
    conf = netconf.load(str(path))
    assert conf.backend.type == "vxlan" and conf.ipv4 is not None and conf.ipv4.subnet_len == 24
