"""The portmap plugin through the dispatcher, with the firewall, conntrack and
sysctl replaced by recorders: command flow, pass-through, errors, and that
injection attempts fail with code 7 before any process runs."""
from __future__ import annotations

import json
import subprocess

import pytest

from cni_flannel.cni import skel
from cni_flannel.plugins import portmap

PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/p"}],
        "ips": [{"address": "10.244.1.5/24", "interface": 0}, {"address": "fd00::5/64", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}], "dns": {"nameservers": ["10.96.0.10"]}}
MAPS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.10"}]


class FakeFirewall:
    name = "fake"

    def __init__(self, problems=(), comments=()):
        self.calls = []
        self.problems = list(problems)
        self._comments = list(comments)

    def apply(self, rs):
        self.calls.append(("apply", rs))

    def remove(self, rs):
        self.calls.append(("remove", rs))

    def check(self, rs):
        self.calls.append(("check", rs))
        return self.problems

    def comments(self, family, table):
        self.calls.append(("comments", family, table))
        return self._comments


@pytest.fixture
def env(monkeypatch):
    fw = FakeFirewall()
    record = {"fw": fw, "conntrack": [], "localnet": [], "backends": []}

    def firewall(backend):
        record["backends"].append(backend)
        return record["fw"]

    monkeypatch.setattr(portmap, "firewall", firewall)
    monkeypatch.setattr(portmap, "usable", lambda backend: True)
    monkeypatch.setattr(portmap, "families_on_node", lambda: ["ipv4", "ipv6"])
    monkeypatch.setattr(portmap.conntrack, "flush_udp",
                        lambda ports, families: record["conntrack"].append((list(ports), list(families))))
    monkeypatch.setattr(portmap.localnet, "enable_for", lambda ip: record["localnet"].append(ip))
    monkeypatch.setenv("CNI_FLANNEL_LOG", "/dev/null")
    return record


def invoke(command, maps=MAPS, prev=PREV, version="1.0.0", cid="c1", **extra):
    conf = {"cniVersion": version, "name": "test", "type": "portmap", **extra}
    if maps is not None:
        conf["runtimeConfig"] = {"portMappings": maps}
    if prev is not None:
        conf["prevResult"] = prev
    environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/proc/self/ns/net",
               "CNI_NETNS_OVERRIDE": "1", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    return skel.run("portmap", environ, json.dumps(conf).encode())


def test_add_applies_both_families_and_passes_prev_result_through(env):
    code, out = invoke("ADD")
    assert code == 0 and out == PREV
    applied = [c[1] for c in env["fw"].calls if c[0] == "apply"]
    assert [(rs.family, rs.table) for rs in applied] == [("ipv4", "nat"), ("ipv6", "nat")]
    assert env["localnet"] == ["10.244.1.5"]
    assert env["conntrack"] == [([5353], ["ipv4", "ipv6"])]


def test_add_nftables(env):
    code, _ = invoke("ADD", backend="nftables")
    assert code == 0 and env["backends"] == ["nftables"]
    assert [(c[1].family, c[1].table) for c in env["fw"].calls] == [("ipv4", "cni_hostport"), ("ipv6", "cni_hostport")]


def test_add_without_mappings_passes_through_and_touches_nothing(env):
    for maps in (None, []):
        code, out = invoke("ADD", maps=maps, version="0.4.0")
        assert code == 0 and out == dict(PREV, cniVersion="0.4.0",
                                          ips=[dict(ip, version=v) for ip, v in zip(PREV["ips"], "46")])
    assert env["fw"].calls == [] and env["conntrack"] == []


def test_add_without_snat_leaves_route_localnet(env):
    assert invoke("ADD", snat=False)[0] == 0
    assert env["localnet"] == []


def test_add_ipv6_only_pod(env):
    prev = dict(PREV, ips=[PREV["ips"][1]])
    assert invoke("ADD", prev=prev)[0] == 0
    assert [c[1].family for c in env["fw"].calls] == ["ipv6"] and env["localnet"] == []


def test_add_must_be_chained(env):
    code, out = invoke("ADD", prev=None)
    assert code == 1 and out["code"] == 7 and out["msg"] == "must be called as chained plugin"


def test_del_without_runtime_config_removes_by_name_and_comment(env):
    code, out = invoke("DEL", maps=None, prev=None)
    assert (code, out) == (0, None)
    removed = [c[1] for c in env["fw"].calls if c[0] == "remove"]
    assert sorted(rs.family for rs in removed) == ["ipv4", "ipv6"]  # (each family in a thread of its own)
    assert all(rs.comment == 'dnat name: "test" id: "c1"' for rs in removed)
    assert env["conntrack"] == [([], ["ipv4", "ipv6"])]


def test_del_flushes_conntrack_of_mapped_udp_ports(env):
    assert invoke("DEL")[0] == 0
    assert env["conntrack"] == [([5353], ["ipv4", "ipv6"])]


def test_del_nftables_finds_rules_by_container_id(env):
    assert invoke("DEL", backend="nftables", maps=None)[0] == 0
    assert [(c[1].table, c[1].comment) for c in env["fw"].calls] == [("cni_hostport", "c1")] * 2


def test_check(env):
    assert invoke("CHECK") == (0, None)
    assert [c[0] for c in env["fw"].calls] == ["check", "check"]
    env["fw"].problems = ["rule missing in nat CNI-DN-x: ..."]
    code, out = invoke("CHECK")
    assert code == 1 and out["code"] == 999 and "missing or wrong" in out["msg"]
    code, out = invoke("CHECK", prev=None)
    assert out["code"] == 7 and out["msg"] == "Required prevResult missing"


def test_gc_removes_only_this_networks_stale_containers(env):
    env["fw"] = FakeFirewall(comments=['dnat name: "test" id: "live"', 'dnat name: "test" id: "gone"',
                                       'dnat name: "other" id: "gone2"', "CNI portfwd masquerade mark"])
    code, _ = invoke("GC", maps=None, prev=None, version="1.1.0",
                     **{"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]})
    assert code == 0
    removed = [c[1] for c in env["fw"].calls if c[0] == "remove"]
    assert [rs.family for rs in removed] == ["ipv4", "ipv6"]
    from cni_flannel.firewall import dnat_chain_name

    assert all([c.name for c in rs.chains] == [dnat_chain_name("test", "gone")] for rs in removed)


def test_gc_without_a_keep_list_or_on_nftables_does_nothing(env):
    assert invoke("GC", maps=None, prev=None, version="1.1.0")[0] == 0
    assert invoke("GC", maps=None, prev=None, version="1.1.0", backend="nftables",
                  **{"cni.dev/valid-attachments": []})[0] == 0
    assert env["fw"].calls == []


def test_status(env, monkeypatch):
    assert invoke("STATUS", maps=None, prev=None, version="1.1.0") == (0, None)
    monkeypatch.setattr(portmap, "usable", lambda backend: False)
    code, out = invoke("STATUS", maps=None, prev=None, version="1.1.0")
    assert code == 1 and out["code"] == 50 and "not usable" in out["msg"]


# --- injection: code 7, and no process, no firewall ------------------------------------------

INJECTIONS = [
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp -j ACCEPT"}]}}, {}),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp",
                                          "hostIP": "1.2.3.4 -j DROP"}]}}, {}),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]}}, {}),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}]}}, {}),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 70000, "protocol": "udp"}]}}, {}),
    ({"conditionsV4": ["-d", "1.2.3.4", "-j", "ACCEPT"]}, {}),
    ({"conditionsV4": ["ip daddr 1.2.3.4 accept"], "backend": "nftables"}, {}),
    ({"externalSetMarkChain": "X\n-A INPUT -j DROP"}, {}),
    ({"externalSetMarkChain": "KUBE-MARK-MASQ -j DROP"}, {}),
    ({"name": "net\n-A INPUT -j DROP"}, {}),  # newline in a comment source: the network name
    ({"name": 'net" -j DROP "'}, {}),
]


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize("extra, _", INJECTIONS)
def test_injection_is_rejected_before_anything_runs(env, monkeypatch, command, extra, _):
    def forbidden(*a, **k):
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(portmap, "firewall", forbidden)
    extra = dict(extra)
    conf_extra = {k: v for k, v in extra.items() if k not in ("runtimeConfig", "name")}
    maps = extra.get("runtimeConfig", {}).get("portMappings", MAPS)
    if "name" in extra:
        conf = {"cniVersion": "1.0.0", "name": extra["name"], "type": "portmap",
                "runtimeConfig": {"portMappings": maps}, "prevResult": PREV}
        environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net",
                   "CNI_NETNS_OVERRIDE": "1", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
        code, out = skel.run("portmap", environ, json.dumps(conf).encode())
    else:
        code, out = invoke(command, maps=maps, **conf_extra)
    assert code == 1 and out["code"] == 7, out


def test_newline_in_container_id_never_reaches_a_comment(env, monkeypatch):
    monkeypatch.setattr(portmap, "firewall", lambda b: (_ for _ in ()).throw(AssertionError("ran")))
    code, out = invoke("ADD", cid="c1\n-A INPUT -j DROP")
    assert code == 1 and out["code"] == 4  # rejected by the dispatcher as a bad CNI_CONTAINERID


def test_del_tries_every_family_and_reports_the_first_ones_error() -> None:
    from cni_flannel.plugins.portmap import _each_at_once

    tried = []

    def remove(family: str) -> None:
        tried.append(family)
        if family != "ipv6":
            raise ValueError(f"{family} failed")

    with pytest.raises(ValueError, match="ipv4 failed"):
        _each_at_once(remove, ["ipv4", "ipv6", "third"])
    assert sorted(tried) == ["ipv4", "ipv6", "third"]
    _each_at_once(remove, [])
