"""portmap configuration: the reference's validation and backend rules, our stricter
checks on values the reference passes to iptables unchecked, conditions."""
from __future__ import annotations

import json

import pytest

from cni_flannel.cni.config import parse_netconf
from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.portmap import conditions
from cni_flannel.portmap.config import PortMapping, container_nets, parse

PREV = {"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.244.1.5/24", "interface": 2}, {"address": "fd00::5/64", "interface": 2}]}


def conf(**extra):
    doc = {"cniVersion": "1.0.0", "name": "test", "type": "portmap", "prevResult": PREV}
    doc.update(extra)
    return parse_netconf(json.dumps(doc).encode())


def both(backend: str) -> bool:
    return True


def parsed(usable=both, ifname="eth0", **extra):
    return parse(conf(**extra), ifname, usable)


def mappings(*entries):
    return {"runtimeConfig": {"portMappings": list(entries)}}


def rejected(**extra) -> str:
    with pytest.raises(InvalidConfig) as err:
        parsed(**extra)
    assert err.value.code == 7
    return str(err.value)


# --- defaults and options ------------------------------------------------------------------

def test_defaults():
    c = parsed()
    assert (c.snat, c.masq_all, c.mark_bit, c.mark, c.external_set_mark_chain) == (True, False, 13, 0x2000, None)
    assert c.backend == "iptables" and c.mappings == ()
    assert str(c.container_nets["ipv4"]) == "10.244.1.5/24" and str(c.container_nets["ipv6"]) == "fd00::5/64"


def test_default_backend_is_nftables_only_when_iptables_is_missing():
    assert parsed(usable=lambda b: b == "nftables").backend == "nftables"
    assert parsed(usable=lambda b: False).backend == "iptables"
    assert parsed(usable=lambda b: b == "iptables").backend == "iptables"


def test_options():
    c = parsed(snat=False, masqAll=True, markMasqBit=31, backend="nftables")
    assert (c.snat, c.masq_all, c.mark, c.backend) == (False, True, 0x80000000, "nftables")
    assert parsed(markMasqBit=0).mark == 1
    assert parsed(externalSetMarkChain="KUBE-MARK-MASQ").external_set_mark_chain == "KUBE-MARK-MASQ"


@pytest.mark.parametrize("extra, message", [
    ({"markMasqBit": 5, "externalSetMarkChain": "KUBE-MARK-MASQ"}, "Cannot specify externalSetMarkChain and markMasqBit"),
    ({"markMasqBit": 32}, "MasqMarkBit must be between 0 and 31"),
    ({"markMasqBit": -1}, "MasqMarkBit must be between 0 and 31"),
    ({"markMasqBit": "13"}, "MasqMarkBit must be between 0 and 31"),
    ({"backend": "pf"}, "unrecognized backend 'pf'"),
    ({"backend": "iptables", "conditionsV4": ["aaa", "bbbb"], "conditionsV6": ["ccc"]},
     "iptables backend was requested but configuration contains nftables-specific options [conditionsV4 conditionsV6]"),
    ({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ", "conditionsV4": ["-a", "b"],
      "conditionsV6": ["-c", "d"]},
     "nftables backend was requested but configuration contains iptables-specific options "
     "[externalSetMarkChain conditionsV4 conditionsV6]"),
    ({"snat": "yes"}, "snat must be true or false"),
    ({"masqAll": 1}, "masqAll must be true or false"),
])
def test_reference_errors(extra, message):
    assert message in rejected(**extra)


def test_default_backend_follows_conditions_syntax_like_upstream():
    # no backend: iptables is chosen, so nft-looking conditions are an error (as upstream)
    assert "nftables-specific options [conditionsV4]" in rejected(conditionsV4=["ip daddr 10.0.0.1"])


# --- port mappings ---------------------------------------------------------------------

def test_mappings_are_parsed_and_normalized():
    c = parsed(**mappings({"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
                          {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": ""},
                          {"hostPort": 9, "containerPort": 9, "protocol": "sctp", "hostIP": "2001:DB8::1"}))
    assert c.mappings == (PortMapping(8080, 80, "tcp"), PortMapping(53, 53, "udp"),
                          PortMapping(9, 9, "sctp", "2001:db8::1"))
    assert c.udp_host_ports() == [53]


@pytest.mark.parametrize("entry, message", [
    ({"hostPort": 0, "containerPort": 80, "protocol": "tcp"}, "Invalid host port number: 0"),
    ({"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}, "Invalid host port number: 70000"),
    ({"hostPort": 8080, "containerPort": 0, "protocol": "tcp"}, "Invalid container port number: 0"),
    ({"hostPort": 8080, "containerPort": 65536, "protocol": "tcp"}, "Invalid container port number: 65536"),
    ({"hostPort": "8080", "containerPort": 80, "protocol": "tcp"}, "Invalid host port number: '8080'"),
    ({"hostPort": True, "containerPort": 80, "protocol": "tcp"}, "Invalid host port number: True"),
    ({"hostPort": 8080.0, "containerPort": 80, "protocol": "tcp"}, "Invalid host port number"),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp -j ACCEPT"}, "invalid protocol 'tcp -j ACCEPT'"),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "icmp"}, "invalid protocol 'icmp'"),
    ({"hostPort": 8080, "containerPort": 80}, "invalid protocol None"),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "1.2.3.4 -j DROP"},
     "invalid hostIP '1.2.3.4 -j DROP'"),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "10.0.0.0/8"}, "invalid hostIP"),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "fe80::1%eth0"}, "invalid hostIP"),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "::ffff:1.2.3.4"}, "IPv4-mapped"),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "localhost"}, "invalid hostIP"),
    ("8080:80", "invalid port mapping"),
])
def test_bad_mappings(entry, message):
    assert message in rejected(**mappings(entry))


def test_port_mappings_must_be_a_list():
    assert "must be a list" in rejected(runtimeConfig={"portMappings": {"hostPort": 1}})


def test_mapping_family_and_destination():
    assert PortMapping(1, 1, "tcp").applies_to("ipv4") and PortMapping(1, 1, "tcp").applies_to("ipv6")
    v6 = PortMapping(1, 1, "tcp", "2001:db8::1")
    assert not v6.applies_to("ipv4") and v6.applies_to("ipv6") and v6.dst == "2001:db8::1"
    assert PortMapping(1, 1, "tcp", "0.0.0.0").dst is None and PortMapping(1, 1, "tcp", "::").dst is None


# --- container addresses (upstream's sandbox-interface rule) ----------------------------

def test_container_nets_skip_host_side_interfaces_and_take_the_first_per_family():
    prev = dict(PREV, ips=[{"address": "10.0.0.1/24", "interface": 0},  # the bridge: no sandbox
                           {"address": "10.244.1.5/24", "interface": 2},
                           {"address": "10.244.1.6/24", "interface": 2},
                           {"address": "fd00::7/64"}])  # no interface index: taken
    nets = parse(conf(prevResult=prev), "eth0", both).container_nets
    assert {f: str(n) for f, n in nets.items()} == {"ipv4": "10.244.1.5/24", "ipv6": "fd00::7/64"}


def test_container_nets_other_ifname_is_skipped():
    assert parse(conf(), "net1", both).container_nets == {}
    assert container_nets(None, "eth0") == {}


# --- conditions -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, version, expected", [
    (["-d", "192.0.2.1"], 4, {"dst": "192.0.2.1/32"}),
    (["!", "-d", "10.0.0.0/8", "-i", "eth0"], 4, {"dst": "!10.0.0.0/8", "iif": "eth0"}),
    (["--source", "10.1.2.3/16", "!", "--out-interface", "cni0"], 4, {"src": "10.1.0.0/16", "oif": "!cni0"}),
    (["-s", "fd00::/8"], 6, {"src": "fd00::/8"}),
    (["ip daddr != 10.0.0.0/8"], 4, {"dst": "!10.0.0.0/8"}),
    (["ip6", "saddr", "fd00::1", 'iifname "eth0"'], 6, {"src": "fd00::1/128", "iif": "eth0"}),
    (["oifname != cni0"], 4, {"oif": "!cni0"}),
    ([], 4, {}),
    ([""], 4, {}),
])
def test_conditions_accepted(value, version, expected):
    assert conditions.parse("conditionsV4", value, version).fields() == expected


@pytest.mark.parametrize("value, version", [
    (["-a", "b"], 4),                       # upstream's test placeholder: not a known match
    (["-j", "ACCEPT"], 4),
    (["-d", "1.2.3.4", "-j", "DROP"], 4),
    (["-d", "1.2.3.4 -j DROP"], 4),
    (["-m", "comment", "--comment", "x"], 4),
    (["-d", "fd00::1"], 4),                 # wrong family
    (["-s", "10.0.0.1"], 6),
    (["-i", "eth+"], 4),                    # wildcard
    (["-i", "eth0", "-i", "eth1"], 4),      # twice
    (["-d"], 4),
    (["!"], 4),
    (["ip daddr 10.0.0.1 accept"], 4),
    (["ip daddr 10.0.0.1; add rule ip filter input drop"], 4),
    (["ip6 daddr fd00::1"], 4),
    (["meta mark 0x1"], 4),
    (["iifname"], 4),
    (['iifname "eth0\ndrop"'], 4),
    ("-d 10.0.0.1", 4),                     # not a list
    ([1, 2], 4),
])
def test_conditions_rejected(value, version):
    with pytest.raises(InvalidConfig) as err:
        conditions.parse("conditionsV4", value, version)
    assert err.value.code == 7


def test_conditions_syntax_detection():
    assert conditions.syntax_of(["-d", "x"]) == "iptables"
    assert conditions.syntax_of(["!", "-d", "x"]) == "iptables"  # ours; upstream says nftables
    assert conditions.syntax_of(["ip daddr x"]) == "nftables"
    assert conditions.syntax_of([]) == "" and conditions.syntax_of(None) == "" and conditions.syntax_of([""]) == ""


def test_unsupported_conditions_are_code_7_with_the_reason():
    msg = rejected(conditionsV4=["-m", "set", "--match-set", "x", "src"])
    assert "unsupported conditionsV4" in msg and "can be validated" in msg


def test_keys_match_case_insensitively_like_go():
    # containerd's go-cni marshals its PortMapping struct without JSON tags
    c = parsed(runtimeConfig={"portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "TCP",
                                                "HostIP": ""}]}, SNAT=False)
    assert c.mappings == (PortMapping(8080, 80, "tcp"),) and c.snat is False
    # the exact key wins over a case variant
    assert parsed(snat=True, Snat=False).snat is True
