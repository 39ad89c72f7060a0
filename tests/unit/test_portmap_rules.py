"""Rule sets portmap generates, compared with what the reference generates.

The expected rules are written down from containernetworking/plugins
plugins/meta/portmap (portmap.go fillDnatRules/genSetMarkChain/genMarkMasqChain,
portmap_iptables_test.go, portmap_nftables.go/_test.go), in the canonical form
iptables-save and `nft list` print them: e.g. upstream's
``-p tcp --dport 8080 -s 10.0.0.2/24 -j CNI-HOSTPORT-SETMARK`` is saved as
``-s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK``.
"""
from __future__ import annotations

import json
from typing import List

from cni_flannel.cni.config import parse_netconf
from cni_flannel.firewall import _iptables, _nft
from cni_flannel.portmap import iptables, nftables
from cni_flannel.portmap.config import parse
from tests.portmap_samples import UPSTREAM_MAPPINGS

CID = ("icee6giejonei6sohng6ahngee7laquohquee9shiGo7fohferakah3Feiyoolu2pei7ciPhoh7shaoX6vai3vuf0"
       "ahfaeng8yohb9ceu0daez5hashee8ooYai5wa3y")
DN = "CNI-DN-67e92b96e692a494b6b85"  # upstream test vector for ("test", CID)
COMMENT = f'"dnat name: \\"test\\" id: \\"{CID}\\""'


def config(mappings=UPSTREAM_MAPPINGS, ips=("10.0.0.2/24", "2001:db8::2/64"), **extra):
    doc = {"cniVersion": "1.0.0", "name": "test", "type": "portmap",
           "runtimeConfig": {"portMappings": mappings},
           "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": a} for a in ips]}}
    doc.update(extra)
    return parse(parse_netconf(json.dumps(doc).encode()), "eth0", lambda b: True)


def saved(rs) -> List[str]:
    """The rule set as iptables-save lines, in chain order."""
    return [f"-A {c.name} {_iptables.rule_spec(r)}" for c in rs.chains for r in c.rules]


def chain(rs, name) -> List[str]:
    return [line for line in saved(rs) if line.startswith(f"-A {name} ")]


# --- iptables ---------------------------------------------------------------------------------

def test_dnat_chain_name_matches_upstream_vectors():
    from cni_flannel.firewall import dnat_chain_name

    assert dnat_chain_name("testNetName", CID) == "CNI-DN-bfd599665540dd91d5d28"
    assert dnat_chain_name("test", CID) == DN


def test_iptables_ipv4_upstream_example():
    rs = iptables.container_ruleset(config(), "ipv4", CID)
    assert (rs.family, rs.table) == ("ipv4", "nat")
    sm = "CNI-HOSTPORT-SETMARK"
    assert chain(rs, DN) == [
        f"-A {DN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j {sm}",
        f"-A {DN} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j {sm}",
        f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
        f"-A {DN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8081 -j {sm}",
        f"-A {DN} -s 127.0.0.1/32 -p tcp -m tcp --dport 8081 -j {sm}",
        f"-A {DN} -p tcp -m tcp --dport 8081 -j DNAT --to-destination 10.0.0.2:80",
        f"-A {DN} -s 10.0.0.0/24 -p udp -m udp --dport 8080 -j {sm}",
        f"-A {DN} -s 127.0.0.1/32 -p udp -m udp --dport 8080 -j {sm}",
        f"-A {DN} -p udp -m udp --dport 8080 -j DNAT --to-destination 10.0.0.2:81",
        f"-A {DN} -s 10.0.0.0/24 -p udp -m udp --dport 8082 -j {sm}",
        f"-A {DN} -s 127.0.0.1/32 -p udp -m udp --dport 8082 -j {sm}",
        f"-A {DN} -p udp -m udp --dport 8082 -j DNAT --to-destination 10.0.0.2:82",
        f"-A {DN} -s 10.0.0.0/24 -d 192.168.0.2/32 -p tcp -m tcp --dport 8083 -j {sm}",
        f"-A {DN} -s 127.0.0.1/32 -d 192.168.0.2/32 -p tcp -m tcp --dport 8083 -j {sm}",
        f"-A {DN} -d 192.168.0.2/32 -p tcp -m tcp --dport 8083 -j DNAT --to-destination 10.0.0.2:83",
        f"-A {DN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8084 -j {sm}",
        f"-A {DN} -s 127.0.0.1/32 -p tcp -m tcp --dport 8084 -j {sm}",
        f"-A {DN} -p tcp -m tcp --dport 8084 -j DNAT --to-destination 10.0.0.2:84",
    ]
    # entry rules list every port of the protocol, the IPv6-only 8085/8086 too (as upstream)
    assert chain(rs, "CNI-HOSTPORT-DNAT") == [
        f"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {COMMENT} -m multiport "
        f"--dports 8080,8081,8083,8084,8085,8086 -j {DN}",
        f"-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {COMMENT} -m multiport --dports 8080,8082 -j {DN}",
    ]
    assert chain(rs, "PREROUTING") == ["-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"]
    assert chain(rs, "OUTPUT") == ["-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"]
    assert chain(rs, "POSTROUTING") == [
        '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ']
    assert chain(rs, "CNI-HOSTPORT-SETMARK") == [
        '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000']
    assert chain(rs, "CNI-HOSTPORT-MASQ") == ["-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE"]
    owned = {c.name for c in rs.chains if c.owned}
    assert owned == {DN}  # the shared chains are never declared (flushed)
    post = next(c for c in rs.chains if c.name == "POSTROUTING").rules[0]
    assert post.insert and post.keep  # prepended, as upstream's prependEntry


def test_iptables_ipv6_upstream_example():
    rs = iptables.container_ruleset(config(), "ipv6", CID)
    sm = "CNI-HOSTPORT-SETMARK"
    assert chain(rs, DN) == [
        f"-A {DN} -s 2001:db8::/64 -p tcp -m tcp --dport 8080 -j {sm}",
        f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [2001:db8::2]:80",
        f"-A {DN} -s 2001:db8::/64 -p tcp -m tcp --dport 8081 -j {sm}",
        f"-A {DN} -p tcp -m tcp --dport 8081 -j DNAT --to-destination [2001:db8::2]:80",
        f"-A {DN} -s 2001:db8::/64 -p udp -m udp --dport 8080 -j {sm}",
        f"-A {DN} -p udp -m udp --dport 8080 -j DNAT --to-destination [2001:db8::2]:81",
        f"-A {DN} -s 2001:db8::/64 -p udp -m udp --dport 8082 -j {sm}",
        f"-A {DN} -p udp -m udp --dport 8082 -j DNAT --to-destination [2001:db8::2]:82",
        f"-A {DN} -s 2001:db8::/64 -d 2001:db8:a::1/128 -p tcp -m tcp --dport 8085 -j {sm}",
        f"-A {DN} -d 2001:db8:a::1/128 -p tcp -m tcp --dport 8085 -j DNAT --to-destination [2001:db8::2]:85",
        f"-A {DN} -s 2001:db8::/64 -p tcp -m tcp --dport 8086 -j {sm}",
        f"-A {DN} -p tcp -m tcp --dport 8086 -j DNAT --to-destination [2001:db8::2]:86",
    ]


def test_iptables_without_snat_has_only_dnat():
    rs = iptables.container_ruleset(config(snat=False), "ipv4", CID)
    assert chain(rs, DN) == [
        f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
        f"-A {DN} -p tcp -m tcp --dport 8081 -j DNAT --to-destination 10.0.0.2:80",
        f"-A {DN} -p udp -m udp --dport 8080 -j DNAT --to-destination 10.0.0.2:81",
        f"-A {DN} -p udp -m udp --dport 8082 -j DNAT --to-destination 10.0.0.2:82",
        f"-A {DN} -d 192.168.0.2/32 -p tcp -m tcp --dport 8083 -j DNAT --to-destination 10.0.0.2:83",
        f"-A {DN} -p tcp -m tcp --dport 8084 -j DNAT --to-destination 10.0.0.2:84",
    ]
    assert {c.name for c in rs.chains} == {DN, "CNI-HOSTPORT-DNAT", "PREROUTING", "OUTPUT"}


def test_iptables_external_set_mark_chain():
    rs = iptables.container_ruleset(config(mappings=UPSTREAM_MAPPINGS[:1], externalSetMarkChain="PLZ-SET-MARK"),
                                    "ipv4", CID)
    assert chain(rs, DN) == [
        f"-A {DN} -s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j PLZ-SET-MARK",
        f"-A {DN} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j PLZ-SET-MARK",
        f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
    ]
    assert "CNI-HOSTPORT-SETMARK" not in {c.name for c in rs.chains}


def test_iptables_mark_bit():
    rs = iptables.container_ruleset(config(markMasqBit=5), "ipv4", CID)
    assert chain(rs, "CNI-HOSTPORT-SETMARK")[0].endswith("-j MARK --set-xmark 0x20/0x20")
    assert chain(rs, "CNI-HOSTPORT-MASQ") == ["-A CNI-HOSTPORT-MASQ -m mark --mark 0x20/0x20 -j MASQUERADE"]


def test_iptables_masq_all_marks_every_source():
    rs = iptables.container_ruleset(config(mappings=UPSTREAM_MAPPINGS[:1], masqAll=True), "ipv4", CID)
    assert chain(rs, DN) == [  # -s 0.0.0.0/0 is saved as no -s at all
        f"-A {DN} -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
        f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
    ]


def test_iptables_entry_rules_split_at_15_ports_and_carry_conditions():
    maps = [{"hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp"} for i in range(17)]
    rs = iptables.container_ruleset(config(mappings=maps, conditionsV4=["!", "-d", "10.0.0.0/8", "-i", "eth0"]),
                                    "ipv4", CID)
    assert chain(rs, "CNI-HOSTPORT-DNAT") == [
        f"-A CNI-HOSTPORT-DNAT ! -d 10.0.0.0/8 -i eth0 -p tcp -m comment --comment {COMMENT} -m multiport "
        f"--dports {','.join(str(9000 + i) for i in range(15))} -j {DN}",
        f"-A CNI-HOSTPORT-DNAT ! -d 10.0.0.0/8 -i eth0 -p tcp -m comment --comment {COMMENT} -m multiport "
        f"--dports 9015,9016 -j {DN}",
    ]
    assert len(chain(rs, DN)) == 17 * 3


def test_iptables_batch_on_an_empty_table_creates_then_fills():
    rs = iptables.container_ruleset(config(mappings=UPSTREAM_MAPPINGS[:1]), "ipv4", "c1")
    dn = rs.chains[-1].name
    lines = _iptables.plan_apply(rs, {"PREROUTING": [], "INPUT": [], "OUTPUT": [], "POSTROUTING": []})
    assert lines[0] == f":{dn} - [0:0]"
    assert lines[1:4] == ["-N CNI-HOSTPORT-SETMARK", "-N CNI-HOSTPORT-MASQ", "-N CNI-HOSTPORT-DNAT"]
    assert any(line.startswith("-I POSTROUTING 1 -m comment") for line in lines)
    assert not any(line.startswith(":CNI-HOSTPORT") for line in lines)


def _state_from(*rulesets):
    state = {"PREROUTING": [], "INPUT": [], "OUTPUT": [], "POSTROUTING": []}
    for rs in rulesets:
        for c in rs.chains:
            specs = state.setdefault(c.name, [])
            for r in c.rules:
                spec = _iptables.rule_spec(r)
                if spec not in specs:
                    specs.append(spec)
    return state


def test_iptables_apply_is_idempotent_and_remove_spares_other_containers():
    a = iptables.container_ruleset(config(), "ipv4", "aaaa")
    b = iptables.container_ruleset(config(), "ipv4", "bbbb")
    state = _state_from(a, b)
    assert _iptables.plan_apply(a, state) == []
    assert _iptables.plan_check(a, state) == []
    lines = _iptables.plan_remove(iptables.owner_ruleset("ipv4", "test", "aaaa"), state)
    dn_a = a.chains[-1].name
    assert all("aaaa" in line or dn_a in line for line in lines)
    assert f"-X {dn_a}" in lines and sum(line.startswith("-D CNI-HOSTPORT-DNAT") for line in lines) == 2
    assert not any("bbbb" in line for line in lines)
    assert not any("SETMARK -m" in line or "addrtype" in line for line in lines)  # infrastructure stays


def test_iptables_owner_ruleset_covers_the_old_snat_chain():
    rs = iptables.owner_ruleset("ipv6", "test", CID)
    assert [c.name for c in rs.chains] == [DN, "CNI-SN-" + DN[len("CNI-DN-"):]]  # same hash, old prefix
    assert rs.comment == f'dnat name: "test" id: "{CID}"' and all(c.owned for c in rs.chains)


def test_owner_of_comment():
    assert iptables.owner_of('dnat name: "cbr0" id: "abc"') == ("cbr0", "abc")
    assert iptables.owner_of('name: "cbr0" id: "abc"') == ("", "")
    assert iptables.owner_of("CNI portfwd masquerade mark") == ("", "")


# --- nftables ---------------------------------------------------------------------------------

def nft_lines(rs) -> List[str]:
    fam = {"ipv4": "ip", "ipv6": "ip6"}[rs.family]
    return sorted(f"add rule {fam} {rs.table} {c.name} {_nft.rule_text(r, fam)}" for c in rs.chains for r in c.rules)


def test_nftables_ipv4_upstream_example():
    cid = "icee6giejonei6so"
    rs = nftables.container_ruleset(config(backend="nftables"), "ipv4", cid)
    c = f'comment "{cid}"'
    assert nft_lines(rs) == sorted([
        f"add rule ip cni_hostport hostip_hostports ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 {c}",
        f"add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 {c}",
        f"add rule ip cni_hostport hostports tcp dport 8081 dnat to 10.0.0.2:80 {c}",
        f"add rule ip cni_hostport hostports udp dport 8080 dnat to 10.0.0.2:81 {c}",
        f"add rule ip cni_hostport hostports udp dport 8082 dnat to 10.0.0.2:82 {c}",
        f"add rule ip cni_hostport hostports tcp dport 8084 dnat to 10.0.0.2:84 {c}",
        f"add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade {c}",
        f"add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade {c}",
        "add rule ip cni_hostport output jump hostip_hostports",
        "add rule ip cni_hostport output fib daddr type local jump hostports",
        "add rule ip cni_hostport prerouting jump hostip_hostports",
        # upstream (GHSA-jv3w-x3r3-g6rm) jumps to hostports for any destination here
        "add rule ip cni_hostport prerouting fib daddr type local jump hostports",
    ])
    hooks = {ch.name: (ch.hook.type, ch.hook.hook, ch.hook.priority) for ch in rs.chains if ch.hook}
    assert hooks == {"prerouting": ("nat", "prerouting", "dstnat"), "output": ("nat", "output", -100),
                     "masquerading": ("nat", "postrouting", "srcnat")}


def test_nftables_ipv6_without_snat_upstream_example():
    cid = "icee6giejonei6so"
    rs = nftables.container_ruleset(config(backend="nftables", snat=False), "ipv6", cid)
    c = f'comment "{cid}"'
    assert nft_lines(rs) == sorted([
        f"add rule ip6 cni_hostport hostip_hostports ip6 daddr 2001:db8:a::1 tcp dport 8085 dnat to [2001:db8::2]:85 {c}",
        f"add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [2001:db8::2]:80 {c}",
        f"add rule ip6 cni_hostport hostports tcp dport 8081 dnat to [2001:db8::2]:80 {c}",
        f"add rule ip6 cni_hostport hostports udp dport 8080 dnat to [2001:db8::2]:81 {c}",
        f"add rule ip6 cni_hostport hostports udp dport 8082 dnat to [2001:db8::2]:82 {c}",
        f"add rule ip6 cni_hostport hostports tcp dport 8086 dnat to [2001:db8::2]:86 {c}",
        "add rule ip6 cni_hostport output jump hostip_hostports",
        "add rule ip6 cni_hostport output fib daddr type local jump hostports",
        "add rule ip6 cni_hostport prerouting jump hostip_hostports",
        "add rule ip6 cni_hostport prerouting fib daddr type local jump hostports",
    ])
    assert "masquerading" not in {ch.name for ch in rs.chains}


def test_nftables_conditions_go_on_the_hook_rules():
    rs = nftables.container_ruleset(config(backend="nftables", conditionsV4=["ip daddr != 10.0.0.0/8"]), "ipv4", "c")
    lines = [line for line in nft_lines(rs) if " prerouting " in line]
    assert lines == ["add rule ip cni_hostport prerouting fib daddr type local ip daddr != 10.0.0.0/8 jump hostports",
                     "add rule ip cni_hostport prerouting ip daddr != 10.0.0.0/8 jump hostip_hostports"]


def test_nftables_remove_deletes_only_this_containers_rules():
    listed = {
        "hostports": [('tcp dport 80 dnat to 10.0.0.2:80 comment "aaaa"', 5),
                      ('tcp dport 81 dnat to 10.0.0.3:80 comment "bbbb"', 6)],
        "hostip_hostports": [],
        "prerouting": [("jump hostip_hostports", 2), ("fib daddr type local jump hostports", 3)],
        "masquerading": [('ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "aaaa"', 9)],
    }
    lines = _nft.plan_remove(nftables.owner_ruleset("ipv4", "aaaa"), listed)
    assert lines == ["delete rule ip cni_hostport hostports handle 5",
                     "delete rule ip cni_hostport masquerading handle 9"]
    assert _nft.plan_remove(nftables.owner_ruleset("ipv4", "aaaa"), None) == []
