"""bridge: a failed ADD leaves no link behind, the bridge included (regression of a random
fuzz case: an odd bridge name with a missing IPAM plugin left a new bridge on the node).

The bridge an ADD made is part of its rollback (unless another pod joined it meanwhile); a
bridge that was there before stays.  Names the kernel takes but tools show differently
(control characters) and IPAM plugins missing from CNI_PATH are refused before any change."""
from __future__ import annotations

import json
from typing import Dict, List

import pytest

from tests.harness.exec import run_plugin
from tests.harness.state import node_state

ODD = "\ub92b,v"  # printable, non-ASCII, 5 bytes: a name the kernel and we accept
#: the fuzzer's input, verbatim (its bridge name holds three C1 control characters)
FUZZ_CONF = {"cniVersion": "1.0.0", "name": "fz", "type": "bridge", "bridge": "\u0083\u0094\ub92b,\u0093v",
             "isGateway": True, "ipMasq": True,
             "ipam": {"type": "\u00f0\u00e1#", "ranges": [[{"subnet": "265.236.1.233/34"}]]}}
IPAM = {"type": "host-local", "ranges": [[{"subnet": "10.246.3.0/24"}]]}
NET_KEYS = ("links", "addrs", "routes4", "routes6")
STATE_DIRS = ("/var/lib/cni", "/etc/cni/net.d")  # not /run/flannel: the agent logs its requests there


def conf(bridge: str = ODD, ipam: Dict = IPAM) -> Dict:
    return {"cniVersion": "1.0.0", "name": "rb", "type": "bridge", "bridge": bridge,
            "isGateway": True, "ipMasq": True, "ipam": ipam}


def net_state(node) -> Dict[str, str]:
    state = node_state(node)
    return {k: state[k] for k in NET_KEYS}


def link_names(node) -> List[str]:
    return sorted(l["ifname"] for l in json.loads(node.run(["ip", "-j", "link", "show"]).stdout))


def test_fuzz_input_is_refused_before_any_change(node, pod, plugin_path) -> None:
    p = pod()
    before = node_state(node, dirs=STATE_DIRS)
    done = run_plugin("bridge", "ADD", FUZZ_CONF, node=node, netns=p.path, container_id="NaN",
                      ifname="net1", cni_args="", cni_path="/opt/cni/bin")
    assert done.rc == 1 and done.json["code"] == 7, (done.stdout, done.stderr)
    assert "invalid bridge name" in done.json["msg"] and "unprintable" in done.json["msg"], done.json
    assert "Traceback" not in done.stderr
    assert node_state(node, dirs=STATE_DIRS) == before


def test_missing_ipam_plugin_is_refused_before_any_change(node, pod, plugin_path) -> None:
    p = pod()
    before = node_state(node, dirs=STATE_DIRS)
    c = dict(FUZZ_CONF, bridge=ODD)
    done = run_plugin("bridge", "ADD", c, node=node, netns=p.path, container_id="NaN", ifname="net1",
                      cni_path="/opt/cni/bin")
    assert done.rc == 1 and done.json["code"] == 7, (done.stdout, done.stderr)
    assert "failed to find plugin" in done.json["msg"], done.json
    assert node_state(node, dirs=STATE_DIRS) == before


@pytest.mark.parametrize("step", ["bridge.veth", "bridge.ipam", "bridge.container", "bridge.masq", "bridge.done"])
def test_failure_after_the_bridge_was_made_deletes_it(node, pod, step) -> None:
    p = pod()
    before = net_state(node)
    done = run_plugin("bridge", "ADD", conf(), node=node, netns=p.path, container_id="rb1",
                      env_extra={"CNI_FLANNEL_FAIL_AT": step})
    assert done.rc == 1 and done.json["code"] == 190, done.stdout
    assert net_state(node) == before, link_names(node)


def test_failing_exec_ipam_plugin_deletes_the_bridge_it_made(node, pod) -> None:
    """A real IPAM plugin (Go's static, exec'd from CNI_PATH) fails after the bridge exists."""
    p = pod()
    before = net_state(node)
    bad_static = {"type": "static", "addresses": [{"address": "not-an-address"}]}
    done = run_plugin("bridge", "ADD", conf(ipam=bad_static), node=node, netns=p.path, container_id="rb2",
                      cni_path="/opt/cni/bin:/usr/lib/cni")
    assert done.rc == 1 and "Traceback" not in done.stderr, (done.stdout, done.stderr)
    assert net_state(node) == before, link_names(node)


def test_failure_keeps_a_bridge_that_was_already_there(node, pod) -> None:
    node.run(["ip", "link", "add", ODD, "type", "bridge"])
    p = pod()
    done = run_plugin("bridge", "ADD", conf(), node=node, netns=p.path, container_id="rb3",
                      env_extra={"CNI_FLANNEL_FAIL_AT": "bridge.ipam"})
    assert done.rc == 1 and done.json["code"] == 190, done.stdout
    assert ODD in link_names(node)
    assert [n for n in link_names(node) if n.startswith("veth")] == []


def test_odd_printable_name_works_end_to_end(node, pod) -> None:
    p = pod()
    before = net_state(node)
    done = run_plugin("bridge", "ADD", conf(), node=node, netns=p.path, container_id="rb4")
    assert done.rc == 0, done.stdout
    assert done.json["interfaces"][0]["name"] == ODD and ODD in link_names(node)
    assert run_plugin("bridge", "DEL", conf(), node=node, netns=p.path, container_id="rb4").rc == 0
    node.run(["ip", "link", "del", ODD])
    assert net_state(node) == before
