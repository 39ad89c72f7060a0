"""External interface choice (pure): --iface by name or address, --iface-regex, --iface-can-reach,
the default route, public addresses, IPv4 and IPv6 alike."""
from __future__ import annotations

import ipaddress

import pytest

from cni_flannel.daemon.errors import ConfigError, PreflightError
from cni_flannel.daemon.iface import Host, Iface, Request, RouteInfo, choose, route_to

A = ipaddress.ip_address
N = ipaddress.ip_network

LO = Iface(1, "lo", 65536, ())
ETH0 = Iface(2, "eth0", 1500, (A("192.0.2.10"), A("2001:db8::10")))
ETH1 = Iface(3, "eth1", 9000, (A("198.51.100.10"),))
V6 = Iface(4, "ens6", 1500, (A("2001:db8:6::1"),))
HOST = Host((LO, ETH0, ETH1, V6), (
    RouteInfo(N("0.0.0.0/0"), 2, 100), RouteInfo(N("0.0.0.0/0"), 3, 200), RouteInfo(N("198.51.100.0/24"), 3),
    RouteInfo(N("198.18.0.0/15"), 3), RouteInfo(N("198.18.7.0/24"), 2), RouteInfo(N("::/0"), 4),
))


def test_default_route_interface_and_its_first_address():
    c = choose(HOST, Request())
    assert (c.iface.name, c.public_ip, c.how) == ("eth0", A("192.0.2.10"), "IPv4 default route")


def test_ipv6_only_uses_the_ipv6_default_route():
    c = choose(HOST, Request(ipv4=False, ipv6=True))
    assert (c.iface.name, c.public_ip, c.public_ipv6) == ("ens6", None, A("2001:db8:6::1"))


def test_dual_stack_needs_both_families_on_the_interface():
    c = choose(HOST, Request(ipv6=True))
    assert (c.iface.name, c.public_ip, c.public_ipv6) == ("eth0", A("192.0.2.10"), A("2001:db8::10"))
    with pytest.raises(PreflightError, match=r"eth1 \(no IPv6 address\)"):
        choose(HOST, Request(ifaces=["eth1"], ipv6=True))
    assert choose(HOST, Request(ifaces=["eth1"], ipv6=True, public_ipv6="2001:db8::99")).public_ipv6 == A("2001:db8::99")


def test_iface_by_name_or_address_first_that_works():
    assert choose(HOST, Request(ifaces=["eth1"])).iface.name == "eth1"
    assert choose(HOST, Request(ifaces=["198.51.100.10"])).iface.name == "eth1"
    assert choose(HOST, Request(ifaces=["nope", "ens6", "eth1"])).iface.name == "eth1"  # ens6 has no IPv4
    with pytest.raises(PreflightError, match="nope .no such interface or address."):
        choose(HOST, Request(ifaces=["nope"]))


def test_iface_regex_names_then_addresses():
    assert choose(HOST, Request(regexes=["^eth1$"])).iface.name == "eth1"
    assert choose(HOST, Request(regexes=["xx", r"^198\.51\."])).how == r"--iface-regex ^198\.51\. (address)"
    with pytest.raises(PreflightError, match="no interface matches"):
        choose(HOST, Request(regexes=["^wlan"]))
    with pytest.raises(ConfigError, match="not a regular expression"):
        choose(HOST, Request(regexes=["("]))


def test_iface_can_reach_is_a_longest_prefix_lookup():
    assert choose(HOST, Request(can_reach="198.18.0.1")).iface.name == "eth1"
    assert choose(HOST, Request(can_reach="198.18.7.1")).iface.name == "eth0"
    assert choose(HOST, Request(can_reach="203.0.113.1")).iface.name == "eth0"  # lowest-metric default
    assert route_to(Host((ETH0,), ()), A("192.0.2.1")) is None
    with pytest.raises(PreflightError, match="no route"):
        choose(Host((ETH0,), ()), Request(can_reach="192.0.2.1"))
    with pytest.raises(ConfigError, match="not an IP address"):
        choose(HOST, Request(can_reach="example"))


def test_public_ip_overrides_and_is_checked():
    c = choose(HOST, Request(public_ip="203.0.113.7"))
    assert (c.iface.name, c.public_ip) == ("eth0", A("203.0.113.7"))
    with pytest.raises(ConfigError, match="not an IPv4"):
        choose(HOST, Request(public_ip="2001:db8::1"))


def test_no_default_route_says_to_name_an_interface():
    with pytest.raises(PreflightError, match="--iface"):
        choose(Host((LO, ETH0), ()), Request())
