"""bridge macspoofchk: the nftables rule set for one attachment, names and
comments as upstream pkg/link/spoofcheck.go, and the plans for apply, check,
teardown (also of the older ``bridge nat`` layout) and GC (pure, no root)."""
from __future__ import annotations

import pytest

from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.firewall import IptablesFirewall, NftChainName, NftFirewall, Rule
from cni_flannel.firewall._nft import parse_list, plan_apply, plan_check, plan_remove
from cni_flannel.plugins import bridge_spoofchk as sc

CID, IFNAME, VETH, MAC = "container99", "net1", "veth1234abcd", "02:00:00:00:12:34"
REF = "container99-net1"
C = f'comment "macspoofchk-{REF}"'

# upstream spoofcheck_test.go's nftRules, as `nft -a list` prints them
LISTED = f"""table bridge cni_spoofcheck {{ # handle 1
	chain prerouting {{ # handle 1
		type filter hook prerouting priority dstnat; policy accept;
		iifname "other0" jump cni-br-iface-other-eth0 comment "macspoofchk-other-eth0" # handle 9
		iifname "{VETH}" jump cni-br-iface-{REF} {C} # handle 4
	}}

	chain cni-br-iface-{REF} {{ # handle 2
		jump cni-br-iface-{REF}-mac {C} # handle 5
	}}

	chain cni-br-iface-{REF}-mac {{ # handle 3
		ether saddr {MAC} return {C} # handle 6
		drop {C} # handle 7
	}}

	chain cni-br-iface-other-eth0 {{ # handle 8
		jump cni-br-iface-other-eth0-mac comment "macspoofchk-other-eth0" # handle 10
	}}
}}
"""


def test_names_and_comment_as_upstream():
    assert sc.ref_id(CID, IFNAME) == REF
    assert sc.iface_chain(REF) == "cni-br-iface-container99-net1"
    assert sc.mac_chain(REF) == "cni-br-iface-container99-net1-mac"
    assert sc.comment(REF) == "macspoofchk-container99-net1"
    assert (sc.TABLE, sc.BASE_CHAIN, sc.PRIORITY) == ("cni_spoofcheck", "prerouting", -300)


def test_rule_set_for_one_attachment_in_an_empty_node():
    rs = sc.ruleset(CID, IFNAME, VETH, MAC)
    assert (rs.family, rs.table, rs.comment) == ("bridge", "cni_spoofcheck", f"macspoofchk-{REF}")
    p = "bridge cni_spoofcheck"
    assert plan_apply(rs, None) == [
        f"add table {p}",
        f"create chain {p} prerouting {{ type filter hook prerouting priority -300; policy accept; }}",
        f"create chain {p} cni-br-iface-{REF}",
        f"create chain {p} cni-br-iface-{REF}-mac",
        f'add rule {p} prerouting iifname "{VETH}" jump cni-br-iface-{REF} {C}',
        f"add rule {p} cni-br-iface-{REF} jump cni-br-iface-{REF}-mac {C}",
        f"add rule {p} cni-br-iface-{REF}-mac ether saddr {MAC} return {C}",
        f"add rule {p} cni-br-iface-{REF}-mac drop {C}",
    ]


def test_second_pod_reuses_table_and_base_chain():
    state = parse_list(LISTED)
    plan = plan_apply(sc.ruleset("c2", "eth0", "veth0000ffff", "0a:58:0a:f4:01:05"), state)
    assert not any("add table" in line or " prerouting {" in line for line in plan)
    assert plan[:2] == ["create chain bridge cni_spoofcheck cni-br-iface-c2-eth0",
                        "create chain bridge cni_spoofcheck cni-br-iface-c2-eth0-mac"]
    assert 'add rule bridge cni_spoofcheck prerouting iifname "veth0000ffff" jump cni-br-iface-c2-eth0 ' \
           'comment "macspoofchk-c2-eth0"' in plan
    assert "ether saddr 0a:58:0a:f4:01:05 return" in plan[-2]


def test_mac_is_written_in_lower_case():
    rs = sc.ruleset(CID, IFNAME, VETH, "0A:58:0A:F4:01:02")
    assert "ether saddr 0a:58:0a:f4:01:02 return" in "\n".join(plan_apply(rs, None))


def test_re_adding_the_same_attachment_changes_nothing():
    assert plan_apply(sc.ruleset(CID, IFNAME, VETH, MAC), parse_list(LISTED)) == []


def test_check_passes_then_names_what_is_missing_or_different():
    state = parse_list(LISTED)
    assert plan_check(sc.ruleset(CID, IFNAME, VETH, MAC), state) == []
    no_drop = parse_list(LISTED.replace(f"\t\tdrop {C} # handle 7\n", ""))
    problems = plan_check(sc.ruleset(CID, IFNAME, VETH, MAC), no_drop)
    assert problems == [f"rule missing in bridge cni_spoofcheck cni-br-iface-{REF}-mac: drop {C}"]
    other_mac = plan_check(sc.ruleset(CID, IFNAME, VETH, "02:00:00:00:99:99"), state)
    assert any("ether saddr 02:00:00:00:99:99 return" in p for p in other_mac)
    assert any(p.startswith("unexpected rule") and MAC in p for p in other_mac)
    assert plan_check(sc.ruleset(CID, IFNAME, VETH, MAC), None) == ["table bridge cni_spoofcheck is missing"]


def test_teardown_needs_only_id_and_ifname_and_spares_other_pods():
    plan = plan_remove(sc.owner(CID, IFNAME), parse_list(LISTED))
    p = "bridge cni_spoofcheck"
    assert plan == [f"delete rule {p} prerouting handle 4",
                    f"flush chain {p} cni-br-iface-{REF}", f"flush chain {p} cni-br-iface-{REF}-mac",
                    f"delete chain {p} cni-br-iface-{REF}", f"delete chain {p} cni-br-iface-{REF}-mac"]
    assert plan_remove(sc.owner(CID, IFNAME), None) == []  # no table: nothing to do


def test_teardown_of_a_half_made_set_goes_by_comment():
    # a jump whose chains are gone (e.g. removed by hand): found by its comment
    state = {"prerouting": [(f'iifname "{VETH}" jump cni-br-iface-{REF} {C}', 4)]}
    assert plan_remove(sc.owner(CID, IFNAME), state) == [
        "delete rule bridge cni_spoofcheck prerouting handle 4"]


def test_teardown_of_the_older_go_nft_layout():
    legacy = (LISTED.replace("table bridge cni_spoofcheck", "table bridge nat")
              .replace("chain prerouting {", "chain PREROUTING {"))
    plan = plan_remove(sc.owner(CID, IFNAME, sc.LEGACY_TABLE, sc.LEGACY_BASE_CHAIN), parse_list(legacy))
    assert plan[0] == "delete rule bridge nat PREROUTING handle 4"
    assert f"delete chain bridge nat cni-br-iface-{REF}-mac" in plan and len(plan) == 5


def test_gc_finds_stale_refs_and_their_veths():
    rules = {c: [t for t, _ in listed] for c, listed in parse_list(LISTED).items()}
    assert sc._stale(rules, "prerouting", {REF}) == {"other-eth0": "other0"}
    assert sc._stale(rules, "prerouting", set()) == {"other-eth0": "other0", REF: VETH}
    chains_only = {"cni-br-iface-x-eth0": ['jump cni-br-iface-x-eth0-mac comment "macspoofchk-x-eth0"']}
    assert sc._stale(chains_only, "prerouting", set()) == {"x-eth0": None}


@pytest.mark.parametrize("cid,ifname", [("c1", "eth@0"), ("c1", "net+1"), ("c" * 120, "eth0"),
                                        ("c" * 250, "eth0")])
def test_names_nftables_cannot_hold_are_refused_before_any_change(cid, ifname):
    with pytest.raises(InvalidConfig) as info:
        sc.validate(cid, ifname)
    assert info.value.code == 7 and "macspoofchk" in info.value.msg and info.value.details


def test_a_64_hex_container_id_fits():
    cid = "0123456789abcdef" * 4
    sc.validate(cid, "eth0")
    NftFirewall().supports(sc.ruleset(cid, "eth0", VETH, MAC))
    assert len(sc.mac_chain(sc.ref_id(cid, "eth0"))) == 86


def test_model_additions():
    with pytest.raises(InvalidConfig):
        Rule(target="DROP", ether_src="02:00:00:00:12:3")
    with pytest.raises(InvalidConfig):
        Rule(target="DROP", ether_src="02:00:00:00:12:34 drop")
    with pytest.raises(InvalidConfig):
        Rule(target=NftChainName("x" * 10 + " accept"))
    with pytest.raises(InvalidConfig):
        Rule(target="A" * 29)  # plain names keep the iptables limit
    with pytest.raises(InvalidConfig) as info:
        IptablesFirewall("nft").supports(sc.ruleset(CID, IFNAME, VETH, MAC))
    assert "bridge" in info.value.msg
