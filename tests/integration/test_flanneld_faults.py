"""flanneld when the world misbehaves: etcd restarted or unreachable from one node while a
peer joins, two daemons racing for the last subnet, and bad input — invalid network configs,
flag combinations, unreachable etcd, TLS misconfiguration — each a clear message, an exit
code, no traceback, no subnet.env and nothing on the node, after a bounded retry."""
from __future__ import annotations

import json
import time

import pytest

from tests.harness.etcd import etcd_factory  # noqa: F401 - fixture
from tests.harness.state import iptables_save, link
from tests.integration.flannel_node import flannel_node
from tests.integration.flanneld_lab import (FLANNELD, PREFIX, EtcdNode, Flanneld, subnet_env, vtep,
                                            wait_until)

PEER = ('{"PublicIP":"198.18.0.%d","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"a2:31:74:e2:0c:%02x"}}')


def peer_routes(node):
    return sorted(dst for dst, _ in vtep(node)["routes"])


def test_etcd_restart_and_a_node_cut_off_while_a_peer_joins(make_node, etcd_factory):
    etcd = EtcdNode(make_node, etcd_factory)
    nodes = [flannel_node(make_node(f"n{i}", underlay=True), subnet_env=None) for i in (1, 2, 3)]
    n1, n2, n3 = nodes
    d1, d2 = Flanneld(n1, etcd.endpoint).start(), Flanneld(n2, etcd.endpoint).start()
    d1.ready(), d2.ready()
    keys = sorted(etcd.leases())
    # etcd restarted: both daemons reconnect, keep their leases, and see what is written next.
    etcd.server.stop()
    time.sleep(2)
    etcd.server.start()
    # 10.244.180.0/24: beyond the first 100 free subnets, so no node of ours can hold it
    etcd.server.put(f"{PREFIX}/subnets/10.244.180.0-24", PEER % (80, 80))
    for n, d in ((n1, d1), (n2, d2)):
        try:
            wait_until(lambda n=n: "10.244.180.0/24" in peer_routes(n), 20, f"{n.name} sees the lease written after the restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{d.log()}") from None
    assert sorted(etcd.leases()) == sorted(keys + ["10.244.180.0-24"])
    assert d1.proc.poll() is None and d2.proc.poll() is None
    # n1 cut off from etcd (connections reset, new ones refused) while n3 joins: seen once back.
    ip = etcd.node.underlay_ip
    n1.run(["iptables", "-I", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", "2379", "-j", "REJECT",
            "--reject-with", "tcp-reset"])
    n1.run(["ss", "-K", "dst", ip, "dport", "=", "2379"])
    d3 = Flanneld(n3, etcd.endpoint).start().ready()
    new = sorted(set(etcd.leases()) - set(keys) - {"10.244.180.0-24"})
    assert len(new) == 1
    wait_until(lambda: new[0].replace("-", "/") in peer_routes(n2), 10, "n2 sees n3")
    time.sleep(1)
    assert new[0].replace("-", "/") not in peer_routes(n1), "n1 was not cut off"
    n1.run(["iptables", "-D", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", "2379", "-j", "REJECT",
            "--reject-with", "tcp-reset"])
    wait_until(lambda: new[0].replace("-", "/") in peer_routes(n1), 30, "n1 sees n3 after reconnecting")
    assert all(d.proc.poll() is None for d in (d1, d2, d3))
    assert "Traceback" not in d1.log() + d2.log() + d3.log()


def test_two_daemons_race_for_the_last_subnet(make_node, etcd_factory):
    conf = '{"Network": "10.244.0.0/16", "SubnetMin": "10.244.5.0", "SubnetMax": "10.244.5.0", "Backend": {"Type": "vxlan"}}'
    etcd = EtcdNode(make_node, etcd_factory, conf=conf)
    nodes = [flannel_node(make_node(f"n{i}", underlay=True), subnet_env=None) for i in (1, 2)]
    daemons = [Flanneld(n, etcd.endpoint, extra=["--startup-timeout=5"]) for n in nodes]
    for d in daemons:
        d.start()
    wait_until(lambda: any(d.proc.poll() is not None for d in daemons), 30, "one daemon to give up")
    loser = next(d for d in daemons if d.proc.poll() is not None)
    winner = next(d for d in daemons if d is not loser)
    winner.ready()
    assert loser.proc.returncode == 1
    last = loser.log().strip().splitlines()[-1]
    assert "out of subnets" in last.lower() or "no free subnet" in last.lower(), loser.log()
    assert list(etcd.leases()) == ["10.244.5.0-24"]
    assert subnet_env(winner.node)["FLANNEL_SUBNET"] == "10.244.5.1/24"
    assert not loser.node.exists("/run/flannel/subnet.env")
    assert "Traceback" not in loser.log()


# --- bad input -------------------------------------------------------------------------------

BAD_CONFIGS = [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"Backend": {"Type": "vxlan"}}', "Network is missing"),
    ('{"Network": "10.244.0.0"}', "prefix length"),
    ('{"Network": "10.244.0.0/29"}', "too small"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 31}', "too long"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 17}', "fewer than"),
    ('{"Network": "10.244.0.0/16", "SubnetMin": "10.245.0.0"}', "outside"),
    ('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.7"}', "boundary"),
    ('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.9.0", "SubnetMax": "10.244.2.0"}', "above"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "VXLAN"}}', "lower case"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "gre"}}', "Backend.Type=gre"),
    ('{"Network": "10.244.0.0/16", "Backend": "vxlan"}', "Backend must be an object"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}', "24 bits"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Port": 70000}}', "not a UDP port"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "MTU": 40}}', "not a valid MTU"),
    ('{"Network": "10.244.0.0/16", "EnableIPv4": "yes"}', "true or false"),
    ('{"Network": "10.244.0.0/16", "EnableIPv4": false}', "both false"),
    ('{"Network": "10.244.0.0/16", "EnableIPv6": true, "Backend": {"Type": "vxlan"}}', "IPv6Network is missing"),
    ('{"Network": "fd00::/48", "Backend": {"Type": "vxlan"}}', "IPv4 CIDR"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": "true"}}', "true or false"),
]

BAD_FLAGS = [
    (["--bogus-flag"], 2, "No such option"),
    (["--subnet-lease-renew-margin=0"], 2, "1 to 1439"),
    (["--ip-masq=perhaps"], 2, "invalid boolean"),
    (["--public-ip=10.0.0.1.2"], 2, "not an IPv4 address"),
    (["--kube-subnet-mgr"], 2, "contradicts --etcd-endpoints"),
    (["--etcd-certfile=/nonexistent.pem"], 2, "go together"),
    (["--iface=nonexistent0"], 1, "nonexistent0 (no such interface"),
    (["--iface-regex=^wlan"], 1, "no interface matches"),
    (["--etcd-prefix=relative/key"], 1, "absolute key path"),
    (["--healthz-port=70000"], 2, "not a TCP port"),
]


def run_flanneld(node, endpoint, extra, timeout=30):
    iface = [] if any(e.startswith("--iface") for e in extra) else ["--iface=eth0"]
    argv = [str(FLANNELD), f"--etcd-endpoints={endpoint}", *iface, "--startup-timeout=3", *extra]
    started = time.monotonic()
    res = node.run(argv, check=False, timeout=timeout)
    return res, time.monotonic() - started


def assert_clean_failure(node, res, code, needle):
    out = res.stdout + res.stderr
    assert res.returncode == code, out
    lines = [l for l in out.splitlines() if l.strip()]
    errors = [l for l in lines if " E " in l or l.startswith("flanneld: error:")]
    assert len(errors) == 1 and needle in errors[0], out
    assert "Traceback" not in out
    assert not node.exists("/run/flannel/subnet.env")
    assert link(node, "flannel.1") is None
    assert "FLANNEL" not in iptables_save(node)


def test_bad_input_is_one_clear_line_and_changes_nothing(make_node, etcd_factory):
    etcd = EtcdNode(make_node, etcd_factory, conf=None)
    node = flannel_node(make_node("n1", underlay=True), subnet_env=None)
    key = f"{PREFIX}/config"
    for text, needle in BAD_CONFIGS:
        etcd.server.put(key, text)
        res, _ = run_flanneld(node, etcd.endpoint, [])
        assert_clean_failure(node, res, 1, needle)
    etcd.server.put(key, '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    for extra, code, needle in BAD_FLAGS:
        res, _ = run_flanneld(node, etcd.endpoint, extra)
        assert_clean_failure(node, res, code, needle)
    assert etcd.leases() == {}


def test_unreachable_etcd_and_tls_misconfiguration_retry_boundedly(make_node, etcd_factory):
    etcd_node = make_node("etcd", underlay=True, plugins=False)
    server = etcd_factory(tls=True, netns=etcd_node.netns, host=etcd_node.underlay_ip)
    server.put(f"{PREFIX}/config", '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    node = flannel_node(make_node("n1", underlay=True), subnet_env=None)
    # Nothing listens on the node's own 127.0.0.1:1: refused at once, retried with backoff.
    res, took = run_flanneld(node, "http://127.0.0.1:1", [])
    assert_clean_failure(node, res, 1, "gave up after")
    assert 2 <= took < 20
    retries = [l for l in res.stderr.splitlines() if "retrying" in l]
    assert 1 <= len(retries) <= 15, res.stderr  # bounded: no busy loop
    opts = server.options()
    tls = [f"--etcd-certfile={opts['certfile']}", f"--etcd-keyfile={opts['keyfile']}"]
    cases = [
        (["--etcd-cafile=/nonexistent/ca.pem", *tls], "does not exist"),
        ([f"--etcd-cafile={opts['certfile']}", *tls], "certificate"),  # a leaf is not a CA
        ([f"--etcd-cafile={opts['cafile']}"], "certificate"),           # no client certificate
    ]
    for extra, needle in cases:
        res, took = run_flanneld(node, server.endpoint, extra)
        assert_clean_failure(node, res, 1, needle)
        assert took < 20
    # And the right files work.
    d = Flanneld(node, server.endpoint, extra=[f"--etcd-cafile={opts['cafile']}", *tls]).start().ready()
    assert json.loads(server.get(f"{PREFIX}/subnets/{list_key(server)}")["value"])["PublicIP"] == node.underlay_ip
    assert d.proc.poll() is None


def list_key(server):
    kvs = server.get_prefix(f"{PREFIX}/subnets/")
    assert len(kvs) == 1
    return kvs[0]["key"].rsplit("/", 1)[1]
