"""host-local config: defaults and every validation rule (no disk, no root)."""

from __future__ import annotations

import ipaddress

import pytest

from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.ipam.config import DEFAULT_DATA_DIR, parse_ipam


def parse(ipam, version="1.0.0", network="net", **kw):
    return parse_ipam(ipam, network, version, **kw)


def one(subnet, **extra):
    return {"ranges": [[dict(subnet=subnet, **extra)]]}


def bad(ipam, *needles, version="1.0.0", network="net", **kw):
    with pytest.raises(InvalidConfig) as exc:
        parse(ipam, version=version, network=network, **kw)
    text = str(exc.value)
    for needle in needles:
        assert needle in text, text
    assert exc.value.code == 7
    return text


# -- defaults ---------------------------------------------------------------


def test_v4_defaults_gateway_start_end():
    r = parse(one("10.1.2.0/24")).range_sets[0].ranges[0]
    assert str(r.gateway) == "10.1.2.1"
    assert str(r.addr(r.start)) == "10.1.2.1"  # the gateway is skipped by the iterator, not here
    assert str(r.addr(r.end)) == "10.1.2.254"  # broadcast excluded
    assert str(r) == "10.1.2.1-10.1.2.254"


def test_v6_end_is_last_address():
    r = parse(one("fd00::/120")).range_sets[0].ranges[0]
    assert str(r.gateway) == "fd00::1"
    assert str(r.addr(r.end)) == "fd00::ff"


def test_explicit_values_kept():
    r = parse(one("10.1.2.0/24", rangeStart="10.1.2.10", rangeEnd="10.1.2.20", gateway="10.1.2.254")).range_sets[0].ranges[0]
    assert (str(r.addr(r.start)), str(r.addr(r.end)), str(r.gateway)) == ("10.1.2.10", "10.1.2.20", "10.1.2.254")


def test_data_dir_default_and_normalised():
    assert parse(one("10.1.2.0/24")).data_dir == DEFAULT_DATA_DIR
    assert parse(dict(one("10.1.2.0/24"), dataDir="/tmp/x/")).data_dir == "/tmp/x"


def test_legacy_range_is_prepended_and_runtime_ranges_before_it():
    conf = parse(
        {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.100", "ranges": [[{"subnet": "fd00::/64"}]]},
        runtime_config={"ipRanges": [[{"subnet": "10.9.0.0/24"}]]},
    )
    assert [str(s.ranges[0].subnet) for s in conf.range_sets] == ["10.9.0.0/24", "10.1.2.0/24", "fd00::/64"]
    assert str(conf.range_sets[1].ranges[0].addr(conf.range_sets[1].ranges[0].start)) == "10.1.2.100"


def test_slash_30_is_enough():
    r = parse(one("10.1.2.0/30")).range_sets[0].ranges[0]
    assert (str(r.addr(r.start)), str(r.addr(r.end))) == ("10.1.2.1", "10.1.2.2")


def test_disjoint_ranges_in_one_subnet_are_fine():
    parse({"ranges": [[{"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10", "rangeEnd": "10.1.2.20"},
                       {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.30", "rangeEnd": "10.1.2.40"}]]})


def test_dual_stack_on_020_is_allowed_one_per_family():
    parse({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/64"}]]}, version="0.2.0")


def test_routes_parsed():
    conf = parse(dict(one("10.1.2.0/24"), routes=[{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.2.1", "priority": 5}]))
    assert conf.routes[0].dst == "0.0.0.0/0" and conf.routes[0].gw is None
    assert conf.routes[1].gw == "10.1.2.1" and conf.routes[1].priority == 5


# -- requested addresses -------------------------------------------------------


def test_requested_from_all_three_sources_in_order_deduplicated():
    conf = parse(
        one("10.1.2.0/24"),
        cni_args={"IP": "10.1.2.7, fd00::7", "K8S_POD_NAME": "x"},
        conf_args={"cni": {"ips": ["10.1.2.8/24", "10.1.2.7"]}},
        runtime_config={"ips": ["10.1.2.9"]},
    )
    assert [str(i) for i in conf.requested] == ["10.1.2.7", "fd00::7", "10.1.2.8", "10.1.2.9"]


def test_requested_ipv4_mapped_becomes_ipv4():
    conf = parse(one("10.1.2.0/24"), cni_args={"IP": "::ffff:10.1.2.7"})
    assert conf.requested == (ipaddress.ip_address("10.1.2.7"),)


@pytest.mark.parametrize("value", ["bogus", "10.1.2.300", "10.1.2.7/33", "10.1.2.7/", "", "fe80::1%eth0"])
def test_requested_garbage_in_cni_args(value):
    bad(one("10.1.2.0/24"), "CNI_ARGS IP", cni_args={"IP": f"10.1.2.5,{value}"})


def test_requested_not_a_list():
    bad(one("10.1.2.0/24"), "runtimeConfig.ips", runtime_config={"ips": "10.1.2.5"})
    bad(one("10.1.2.0/24"), "args.cni.ips", conf_args={"cni": {"ips": [5]}})


# -- every validation rule --------------------------------------------------------


def test_no_ranges():
    bad({}, "no IP ranges specified")
    bad({"ranges": []}, "no IP ranges specified")


def test_empty_range_set():
    bad({"ranges": [[]]}, "range set 0", "empty range set")


def test_range_set_not_a_list():
    bad({"ranges": [{"subnet": "10.1.2.0/24"}]}, "range set 0", "expected a list")
    bad({"ranges": "10.1.2.0/24"}, "ipam.ranges")


def test_range_not_an_object_or_no_subnet():
    bad({"ranges": [["10.1.2.0/24"]]}, "range set 0")
    bad({"ranges": [[{"rangeStart": "10.1.2.5"}]]}, 'missing "subnet"')


@pytest.mark.parametrize("subnet", ["bogus", "10.1.2.0", "10.1.2.0/255.255.255.0", "10.1.2.0/33", "fd00::/129",
                                    "10.1.2.0/-1", "10.1.2.0/24/1", "300.1.2.0/24", " 10.1.2.0/24", 24])
def test_bad_cidr(subnet):
    bad(one(subnet), "subnet", repr(subnet) if not isinstance(subnet, int) else "24")


def test_host_bits_set():
    bad(one("10.1.2.5/24"), "10.1.2.5/24", "host bits set", "network address is 10.1.2.0")
    bad(one("fd00::5/64"), "fd00::5/64", "host bits set", "fd00::")


@pytest.mark.parametrize("subnet", ["10.1.2.0/31", "10.1.2.1/32", "fd00::/127", "fd00::1/128"])
def test_network_too_small(subnet):
    bad(one(subnet), "too small to allocate from")


def test_ipv4_mapped_subnet_rejected():
    bad(one("::ffff:10.1.2.0/120"), "::ffff:10.1.2.0/120")


@pytest.mark.parametrize("key", ["rangeStart", "rangeEnd", "gateway"])
def test_member_outside_subnet(key):
    bad(one("10.1.2.0/24", **{key: "10.1.3.5"}), key, "10.1.3.5", "not in network 10.1.2.0/24")


@pytest.mark.parametrize("key", ["rangeStart", "rangeEnd", "gateway"])
def test_member_other_family(key):
    bad(one("10.1.2.0/24", **{key: "fd00::5"}), key, "fd00::5", "same family")


@pytest.mark.parametrize("key", ["rangeStart", "rangeEnd", "gateway"])
def test_member_not_an_ip(key):
    bad(one("10.1.2.0/24", **{key: "10.1.2"}), key, "'10.1.2'")


@pytest.mark.parametrize("key,value", [("rangeStart", "10.1.2.0"), ("rangeEnd", "10.1.2.255"), ("gateway", "10.1.2.255")])
def test_network_and_broadcast_addresses_refused(key, value):
    bad(one("10.1.2.0/24", **{key: value}), key, value, "network or broadcast")


def test_start_after_end():
    bad(one("10.1.2.0/24", rangeStart="10.1.2.50", rangeEnd="10.1.2.40"), "rangeStart 10.1.2.50 is after rangeEnd 10.1.2.40")


def test_mixed_families_in_a_set():
    bad({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "fd00::/64"}]]}, "range set 0", "mixed address families", "fd00::/64")


def test_overlap_within_a_set():
    bad({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.1.2.0/25"}]]},
        "subnets 10.1.2.1-10.1.2.254 and 10.1.2.1-10.1.2.126 overlap")


def test_overlap_within_a_set_partial_range():
    bad({"ranges": [[{"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10", "rangeEnd": "10.1.2.30"},
                     {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.30", "rangeEnd": "10.1.2.40"}]]}, "overlap")


def test_overlap_between_sets():
    bad({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.2.128/25"}]]}, "range set 0 overlaps with 1")


def test_overlap_with_runtime_ranges():
    bad(one("10.1.2.0/24"), "range set 0 overlaps with 1", runtime_config={"ipRanges": [[{"subnet": "10.1.2.0/24"}]]})


def test_more_than_one_address_per_family_before_030():
    bad({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]},
        "CNI version 0.2.0 does not support more than 1 address per family", version="0.2.0")
    parse({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]}, version="0.3.0")


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../etc", "", "-x", "a b", None, "x\0y"])
def test_network_name_cannot_escape_data_dir(name):
    bad(one("10.1.2.0/24"), "network name", network=name)


@pytest.mark.parametrize("data_dir", ["relative/dir", 5, "/a\0b"])
def test_data_dir_must_be_absolute(data_dir):
    bad(dict(one("10.1.2.0/24"), dataDir=data_dir), "dataDir")


@pytest.mark.parametrize("routes", ["0.0.0.0/0", [{"gw": "10.1.2.1"}], [{"dst": "bogus"}], [{"dst": "0.0.0.0/0", "gw": "x"}],
                                    [{"dst": "0.0.0.0/0", "mtu": "1500"}]])
def test_bad_routes(routes):
    bad(dict(one("10.1.2.0/24"), routes=routes), "routes")


def test_ipam_not_an_object():
    bad([1], "ipam")


def test_runtime_ip_ranges_not_a_list():
    bad(one("10.1.2.0/24"), "runtimeConfig.ipRanges", runtime_config={"ipRanges": {"subnet": "10.1.2.0/24"}})


def test_resolv_conf_not_a_string():
    bad(dict(one("10.1.2.0/24"), resolvConf=["/etc/resolv.conf"]), "resolvConf")


def test_release_parse_ignores_broken_ranges():
    conf = parse_ipam({"ranges": [[{"subnet": "bogus"}]], "dataDir": "/tmp/d"}, "net", "1.0.0", ranges=False)
    assert (conf.network, conf.data_dir) == ("net", "/tmp/d")


# Go's net.IP.String() for each input, printed by go1.19 (the file names the reference writes).
GO_TEXT = [
    ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"), ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
    ("2001:db8::1:0:0:1", "2001:db8::1:0:0:1"), ("fd00:0:0:0:0:0:0:ff", "fd00::ff"), ("::ffff:1.2.3.4", "1.2.3.4"),
    ("::1.2.3.4", "::102:304"), ("1:0:0:2:0:0:0:3", "1:0:0:2::3"), ("FD00::AB", "fd00::ab"), ("0::1:0:0:0:0", "0:0:0:1::"),
]


@pytest.mark.parametrize("given,go_text", GO_TEXT)
def test_address_text_matches_go(given, go_text):
    from cni_flannel.ipam.config import parse_ip

    assert str(parse_ip(given, "x")) == go_text
