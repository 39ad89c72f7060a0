"""Hostile values (beyond tests/integration/test_bad_input.py's CNI_* table): path traversal in
dataDir/subnetFile, iptables/nft argument injection through portMappings and conditions,
symlinks planted in /var/lib/cni and /run/flannel, oversized stdin.  Each is refused with the
right code and changes nothing on the node, or is handled without following the planted path."""
from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from tests.harness.etcd import etcd_factory  # noqa: F401 - fixture
from tests.harness.exec import run_plugin
from tests.harness.state import node_state
from tests.harness.wait import wait_until
from tests.integration.flannel_node import SUBNET_ENV, flannel_node
from tests.integration.flanneld_lab import PREFIX, EtcdNode, Flanneld, http_get, subnet_env, vtep

IPAM = {"type": "host-local", "ranges": [[{"subnet": "10.247.0.0/24"}]]}
PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "x"}],
        "ips": [{"address": "10.247.0.9/24", "interface": 0}]}


def flannel_conf(**over: Any) -> Dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel", "delegate": {"isDefaultGateway": True}, **over}


def portmap_conf(mappings: Any = None, **over: Any) -> Dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "pm", "type": "portmap", "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": mappings if mappings is not None else
                              [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": PREV, **over}


def bridge_conf(**over: Any) -> Dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "hb", "type": "bridge", "bridge": "cni0", "isGateway": True,
            "ipMasq": True, "macspoofchk": True, "ipam": IPAM, **over}


HOSTILE = [
    # (id, plugin, config, expected code)
    # a trailing newline passed re's "^...$" (its "$" matches before it): names, comments, nft -f
    ("bridge-network-name-newline", "bridge", bridge_conf(name="hb\n"), 7),
    ("bridge-network-name-comment-injection", "bridge", bridge_conf(name='hb" -j ACCEPT'), 7),
    ("bridge-runtime-mac-newline", "bridge", bridge_conf(runtimeConfig={"mac": "0a:58:0a:f4:01:02\n"}), 7),
    ("bridge-name-traversal", "bridge", bridge_conf(bridge="../x"), 7),
    ("bridge-name-control-chars", "bridge", bridge_conf(bridge="br\u0085x"), 7),
    ("portmap-network-name-newline", "portmap", portmap_conf(name="pm\n"), 7),
    ("flannel-datadir-relative", "flannel", flannel_conf(dataDir="../../etc"), 7),
    ("flannel-subnetfile-relative", "flannel", flannel_conf(subnetFile="../../etc/shadow"), 7),
    ("flannel-subnetfile-dev-zero", "flannel", flannel_conf(subnetFile="/dev/zero"), 7),
    ("flannel-subnetfile-directory", "flannel", flannel_conf(subnetFile="/run/flannel"), 7),
    ("host-local-datadir-relative", "host-local",
     {"cniVersion": "1.0.0", "name": "hl", "type": "host-local", "ipam": {**IPAM, "dataDir": "relative/dir"}}, 7),
    ("network-name-traversal", "host-local", {"cniVersion": "1.0.0", "name": "../../etc", "type": "host-local",
                                              "ipam": IPAM}, 7),
    ("portmap-hostip-injection", "portmap",
     portmap_conf([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "1.2.3.4 -j ACCEPT"}]), 7),
    ("portmap-protocol-injection", "portmap",
     portmap_conf([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp -j ACCEPT"}]), 7),
    ("portmap-port-string", "portmap",
     portmap_conf([{"hostPort": "8080; flush", "containerPort": 80, "protocol": "tcp"}]), 7),
    ("portmap-port-out-of-range", "portmap",
     portmap_conf([{"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}]), 7),
    ("portmap-condition-injection", "portmap", portmap_conf(conditionsV4=["-j", "ACCEPT", "\n-F"]), 7),
    ("portmap-condition-newline", "portmap", portmap_conf(conditionsV4=["-s 10.0.0.0/8\n-A INPUT -j DROP"]), 7),
    ("portmap-mark-bit-injection", "portmap", portmap_conf(markMasqBit="13 -j ACCEPT"), 7),
    ("portmap-externalsetmarkchain-injection", "portmap", portmap_conf(externalSetMarkChain="X -j ACCEPT"), 7),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_config_is_refused_and_changes_nothing(node, pod, case) -> None:
    _, plugin, config, code = case
    node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
    p = pod()
    before = node_state(node)
    done = run_plugin(plugin, "ADD", config, node=node, netns=p.path, container_id="hostile")
    assert done.rc == 1 and isinstance(done.json, dict), (done.rc, done.stdout, done.stderr)
    assert done.json["code"] == code, done.json
    assert "Traceback" not in done.stderr
    assert node_state(node) == before


ENV_HOSTILE = [
    # (id, plugin, config, container ID, ifname, expected code)
    ("containerid-newline", "bridge", bridge_conf(), "hostile\n", "eth0", 4),
    ("containerid-newline-injection", "host-local", {"cniVersion": "1.0.0", "name": "hl", "type": "host-local",
                                                     "ipam": IPAM}, "c\n-A INPUT -j ACCEPT", "eth0", 4),
    ("containerid-traversal", "flannel", flannel_conf(), "../../../etc/passwd", "eth0", 4),
    ("ifname-traversal", "bridge", bridge_conf(), "hostile", "../../x", 4),
    ("ifname-17-bytes-in-9-chars", "bridge", bridge_conf(), "hostile", "\u00e9" * 8 + "x", 4),
    ("ifname-kernel-space-byte", "bridge", bridge_conf(), "hostile", "eth\u0120", 4),
]


@pytest.mark.parametrize("case", ENV_HOSTILE, ids=[c[0] for c in ENV_HOSTILE])
def test_hostile_environment_is_refused_and_changes_nothing(node, pod, case) -> None:
    _, plugin, config, cid, ifname, code = case
    node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
    p = pod()
    before = node_state(node)
    done = run_plugin(plugin, "ADD", config, node=node, netns=p.path, container_id=cid, ifname=ifname)
    assert done.rc == 1 and isinstance(done.json, dict), (done.rc, done.stdout, done.stderr)
    assert done.json["code"] == code, done.json
    assert "Traceback" not in done.stderr
    assert node_state(node) == before


def test_oversized_stdin_is_refused(node, pod) -> None:
    p = pod()
    big = json.dumps({"cniVersion": "1.0.0", "name": "hl", "type": "host-local", "ipam": IPAM,
                      "padding": "x" * (16 << 20)})
    before = node_state(node)
    done = run_plugin("host-local", "ADD", big, node=node, netns=p.path, container_id="big", timeout=120)
    # a 16 MiB config is either refused cleanly or served; never a crash, never half a state
    assert done.rc in (0, 1) and isinstance(done.json, dict), (done.rc, done.stdout[:300], done.stderr[-500:])
    assert "Traceback" not in done.stderr
    if done.rc == 1:
        assert node_state(node) == before


def test_symlink_planted_as_an_address_file_is_not_followed(node, pod) -> None:
    """A symlink named like the next free address points at a file outside the data dir:
    host-local must neither write through it nor hand out that address."""
    p = pod()
    d = "/var/lib/cni/networks/hl"
    node.run(["sh", "-ec", f"mkdir -p {d}; echo secret > /run/flannel/victim; ln -s /run/flannel/victim {d}/10.247.0.2"])
    conf = {"cniVersion": "1.0.0", "name": "hl", "type": "host-local", "ipam": IPAM}
    done = run_plugin("host-local", "ADD", conf, node=node, netns=p.path, container_id="sym")
    assert done.rc == 0, done.stdout
    assert done.json["ips"][0]["address"] != "10.247.0.2/24"
    assert node.read_file("/run/flannel/victim") == "secret\n"
    assert run_plugin("host-local", "DEL", conf, node=node, netns=p.path, container_id="sym").rc == 0
    assert node.read_file("/run/flannel/victim") == "secret\n"


def test_symlinked_saved_config_is_not_followed(node, pod) -> None:
    """flannel's saved config for a container is a planted symlink to a file elsewhere: ADD and
    DEL must not write through it."""
    node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
    p = pod()
    node.run(["sh", "-ec", "mkdir -p /var/lib/cni/flannel; echo secret > /run/flannel/victim; "
                           "ln -s /run/flannel/victim /var/lib/cni/flannel/symcid"])
    run_plugin("flannel", "ADD", flannel_conf(), node=node, netns=p.path, container_id="symcid")
    run_plugin("flannel", "DEL", flannel_conf(), node=node, netns=p.path, container_id="symcid")
    assert node.read_file("/run/flannel/victim") == "secret\n"


def test_flannel_with_ifname_lo_rolls_back_completely(node, pod) -> None:
    """CNI_IFNAME=lo (found by the fuzzer): the bridge refuses it (7); the rollback must not try to
    delete the pod's loopback, and flannel must not keep its saved config."""
    node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
    p = pod()
    before = node_state(node, dirs=("/var/lib/cni",))
    done = run_plugin("flannel", "ADD", flannel_conf(), node=node, netns=p.path, container_id="lo1", ifname="lo")
    assert done.rc == 1 and done.json["code"] == 7, done.stdout
    after = node_state(node, dirs=("/var/lib/cni",))
    assert "/var/lib/cni/flannel/lo1" not in after["files"], after["files"]
    assert [l for l in after["links"].splitlines() if "veth" in l] == []
    assert after["files"].count("/var/lib/cni/networks/cbr0/10.") == before["files"].count("/var/lib/cni/networks/cbr0/10.")


# --- hostile peers in etcd (the frozen flanneld) ------------------------------------------------

def peer_value(public_ip: str, mac: str, **extra: Any) -> str:
    return json.dumps({"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "vxlan",
                       "BackendData": {"VNI": 1, "VtepMAC": mac}, **extra})


def test_hostile_peer_leases_are_refused_and_flanneld_goes_on(make_node, etcd_factory) -> None:
    """Peers' lease values in etcd: one claiming a /25 of OUR subnet (its route would take half of
    our pods' traffic), one for a network holding ours, a 1 MiB value that is not JSON and a 1 MiB
    valid one.  flanneld programs none of the first three, keeps running, no traceback; a normal
    peer written after them (the same watch stream, in order) is programmed."""
    etcd = EtcdNode(make_node, etcd_factory)
    node = flannel_node(make_node("n1", underlay=True), subnet_env=None)
    daemon = Flanneld(node, etcd.endpoint).start().ready()
    own = subnet_env(node)["FLANNEL_SUBNET"].rsplit(".", 1)[0]  # 10.244.N
    hostile = {f"{own}.128-25": peer_value("198.18.0.50", "0a:00:00:00:00:50"),
               "10.0.0.0-8": peer_value("198.18.0.51", "0a:00:00:00:00:51"),
               "10.244.200.0-24": "x" * (1 << 20),
               "10.244.201.0-24": peer_value("198.18.0.53", "0a:00:00:00:00:53", Padding="y" * (1 << 20))}
    for key, value in hostile.items():
        etcd.server.put(f"{PREFIX}/subnets/{key}", value)
    etcd.server.put(f"{PREFIX}/subnets/10.244.202.0-24", peer_value("198.18.0.54", "0a:00:00:00:00:54"))
    wait_until(lambda: ("10.244.202.0/24", "10.244.202.0") in vtep(node)["routes"], 20,
               "the normal peer's route")
    routes = [dst for dst, _ in vtep(node)["routes"]]
    assert f"{own}.128/25" not in routes and "10.0.0.0/8" not in routes and "10.244.200.0/24" not in routes, routes
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
    assert http_get(node, "/healthz")[0] == 200
    log = daemon.log()
    assert "Traceback" not in log
    for refused in (f"{own}.128/25", "10.0.0.0/8"):
        assert f"refusing peer {refused} (" in log and "overlaps this node's own subnet" in log, log[-3000:]
    assert "ignoring put of /coreos.com/network/subnets/10.244.200.0-24: lease value is not JSON" in log
    # a 1 MiB lease that is valid JSON is just a lease (its unknown field ignored)
    assert ("10.244.201.0/24", "10.244.201.0") in vtep(node)["routes"]
