"""The storm's pure checks (tests/reliability/storm_node.py, storm.py): what they keep and drop
decides whether a leftover can be seen at all."""
from __future__ import annotations

from collections import Counter

from tests.reliability.storm import _result_ip, conflist
from tests.reliability.storm_node import _nft_tables, diff, kube_proxy_iptables, kube_proxy_nft

RULESET = """table ip nat {
\tchain POSTROUTING {
\t\tcounter jump CNI-HOSTPORT-MASQ
\t}
}
table ip kube-proxy {
\tchain services {
\t\tip daddr 10.96.0.10 tcp dport 53 goto service-dns
\t}
}
table ip cni_hostport {
\tchain hostports {
\t\ttcp dport 20001 ip daddr 10.244.1.7 comment "storm-0-add-1" dnat to 10.244.1.7:8080
\t}
}
table ip6 flannel-ipv6 {
\tchain postrtg {
\t}
}
"""


def test_nft_listing_keeps_our_rules_and_drops_kube_proxy_and_iptables_nft_tables() -> None:
    lines = _nft_tables(RULESET)
    assert any("dport 20001" in l and l.startswith("ip cni_hostport/hostports:") for l in lines), lines
    assert any(l.startswith("ip6 flannel-ipv6") for l in lines), lines
    assert not any("kube-proxy" in l or "services" in l for l in lines), lines  # its writer churns these
    assert not any(l.startswith("ip nat") for l in lines), lines  # read through iptables-nft-save instead


def test_diff_reports_extra_and_lost() -> None:
    base = {"ip_files": Counter(), "nft_rules": Counter({"masq": 1})}
    now = {"ip_files": Counter({"10.244.1.9": 1}), "nft_rules": Counter()}
    assert diff(now, base) == {"ip_files": ["10.244.1.9"], "lost:nft_rules": ["masq"]}
    assert diff(base, base) == {}


def test_result_ip_from_both_drivers() -> None:
    libcni = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.244.1.5/24"}]}
    gocni = {"Interfaces": {"lo": {"IPConfigs": [{"IP": "127.0.0.1"}]}, "eth0": {"IPConfigs": [{"IP": "10.244.1.6"}]}}}
    assert _result_ip(libcni) == "10.244.1.5"
    assert _result_ip(gocni) == "10.244.1.6"
    assert _result_ip({"ips": []}) is None


def test_kube_proxy_writes_only_its_own_chains() -> None:
    for endpoints in range(4):
        text = kube_proxy_iptables(endpoints)
        chains = [l.split()[0][1:] for l in text.splitlines() if l.startswith(":")]
        assert chains and all(c.startswith("KUBE-") for c in chains), chains
        assert "flush" not in text and "-F" not in text.split()
        assert kube_proxy_nft(endpoints).startswith("add table ip kube-proxy\nflush table ip kube-proxy\n")


def test_conflists() -> None:
    assert conflist("ours", "nftables")["plugins"][1]["backend"] == "nftables"
    assert "backend" not in conflist("ours", "nftables", "portmap-backend")["plugins"][1]
    assert conflist("go", "iptables-nft")["plugins"][0]["type"] == "bridge"
