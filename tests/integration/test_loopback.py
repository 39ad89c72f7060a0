"""loopback in a node + pod, exec'd like a runtime, through libcni and go-cni,
and side by side with Debian's Go loopback."""
from __future__ import annotations

import json

import pytest

from tests.harness import drivers
from tests.harness.exec import run_plugin
from tests.harness.plugins import reference_dir

CONF = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
CONTAINERD_ARGS = ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod0;"
                   "K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=00000000-0000-0000-0000-000000000000")


def _lo_up(pod) -> bool:
    out = pod.run(["ip", "-j", "link", "show", "lo"]).stdout
    return "UP" in json.loads(out)[0]["flags"]


def _expected(netns: str) -> dict:
    return {"cniVersion": "1.0.0",
            "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns}],
            "ips": [{"interface": 0, "address": "127.0.0.1/8"},
                    {"interface": 0, "address": "::1/128"}],
            "dns": {}}


def test_add_check_del_check(node, pod):
    p = pod()
    assert not _lo_up(p)
    add = run_plugin("loopback", "ADD", CONF, netns=p.path, node=node, cni_args=CONTAINERD_ARGS)
    assert add.rc == 0, add
    assert add.json == _expected(p.path)
    assert _lo_up(p)
    assert p.ping("127.0.0.1")
    check = run_plugin("loopback", "CHECK", CONF, netns=p.path, node=node)
    assert check.rc == 0 and check.stdout == "", check
    dele = run_plugin("loopback", "DEL", CONF, netns=p.path, node=node)
    assert dele.rc == 0 and dele.stdout == "", dele
    assert not _lo_up(p)
    check = run_plugin("loopback", "CHECK", CONF, netns=p.path, node=node)
    assert check.rc == 1 and check.json["msg"] == "loopback interface is down", check


def test_same_result_as_go_reference(node, pod):
    mine, theirs = pod(), pod()
    ours = run_plugin("loopback", "ADD", CONF, netns=mine.path, node=node)
    ref = run_plugin(str(reference_dir() / "loopback"), "ADD", CONF, netns=theirs.path, node=node)
    assert ref.rc == 0, ref
    assert ours.json == dict(ref.json, interfaces=[dict(ref.json["interfaces"][0], sandbox=mine.path)])


@pytest.mark.parametrize("version,expected", [
    ("0.3.1", {"cniVersion": "0.3.1",
               "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": None}],
               "ips": [{"version": "4", "interface": 0, "address": "127.0.0.1/8"},
                       {"version": "6", "interface": 0, "address": "::1/128"}],
               "dns": {}}),
    ("0.2.0", {"cniVersion": "0.2.0", "ip4": {"ip": "127.0.0.1/8"}, "ip6": {"ip": "::1/128"},
               "dns": {}}),
])
def test_older_result_versions(node, pod, version, expected):
    p = pod()
    add = run_plugin("loopback", "ADD", dict(CONF, cniVersion=version), netns=p.path, node=node)
    assert add.rc == 0, add
    if "interfaces" in expected:
        expected["interfaces"][0]["sandbox"] = p.path
    assert add.json == expected


def test_chained_prev_result_passes_through(node, pod):
    p = pod()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": p.path}],
            "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.96.0.10"]}}
    add = run_plugin("loopback", "ADD", dict(CONF, prevResult=prev), netns=p.path, node=node)
    assert add.rc == 0, add
    assert add.json == prev
    assert _lo_up(p)


def test_non_loopback_address_on_lo_is_refused(node, pod):
    p = pod()
    p.run(["ip", "addr", "add", "192.0.2.7/32", "dev", "lo"])
    add = run_plugin("loopback", "ADD", CONF, netns=p.path, node=node)
    assert add.rc == 1, add
    assert add.json["msg"] == "loopback interface found with non-loopback address '192.0.2.7'"


def test_del_succeeds_without_namespace(node, pod, tmp_path):
    p = pod()
    assert run_plugin("loopback", "ADD", CONF, netns=p.path, node=node).rc == 0
    p.delete()
    for netns in (p.path, ""):
        dele = run_plugin("loopback", "DEL", CONF, netns=netns, node=node)
        assert dele.rc == 0 and dele.stdout == "", dele


def test_libcni_add_check_del_del(node, pod):
    p = pod()
    conflist = {"cniVersion": "1.0.0", "name": "lonet", "plugins": [{"type": "loopback"}]}
    node.write_file("/etc/cni/net.d/99-lo.conflist", json.dumps(conflist))
    result = drivers.libcni(node, "add", "lonet", p, cid="c1")
    assert result["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": p.path}]
    assert _lo_up(p)
    drivers.libcni(node, "check", "lonet", p, cid="c1")
    drivers.libcni(node, "del", "lonet", p, cid="c1")
    assert not _lo_up(p)
    drivers.libcni(node, "del", "lonet", p, cid="c1")
    p.delete()
    drivers.libcni(node, "del", "lonet", p, cid="c1")


def test_gocni_add_del_and_del_after_sandbox_removal(node, pod):
    p = pod()
    # go-cni always adds its own loopback network (0.3.1) before the default conf.
    conflist = {"cniVersion": "1.0.0", "name": "lonet", "plugins": [{"type": "loopback"}]}
    node.write_file("/etc/cni/net.d/10-lo.conflist", json.dumps(conflist))
    result = drivers.gocni(node, "add", p, cid="sb1")
    assert result["Interfaces"]["lo"]["Sandbox"] == p.path
    assert {c["IP"] for c in result["Interfaces"]["lo"]["IPConfigs"]} == {"127.0.0.1", "::1"}
    assert _lo_up(p)
    drivers.gocni(node, "del", p, cid="sb1")
    assert not _lo_up(p)
    p.delete()
    drivers.gocni(node, "del", p, cid="sb1")


def test_add_del_in_process_and_through_agent(node, pod, plugin_path):
    p = pod()
    add = run_plugin("loopback", "ADD", CONF, netns=p.path, node=node)
    assert add.json == _expected(p.path), add
    assert run_plugin("loopback", "DEL", CONF, netns=p.path, node=node).rc == 0
    assert not _lo_up(p)
