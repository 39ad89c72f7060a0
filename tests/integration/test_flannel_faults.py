"""flannel when things go wrong: failing delegates, lost state, no subnet.env yet, bad input."""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from tests.harness.exec import run_plugin
from tests.harness.state import node_state
from tests.integration.flannel_node import CLEAN, SHIPPED, SUBNET_ENV, flannel_node, links, node_leftovers


def conf(version: str = "1.0.0", **extra: Any) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"cniVersion": version, "name": "cbr0", "type": "flannel",
                           "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
    doc.update(extra)
    return doc


def flannel(node: Any, command: str, netns: str, cid: str = "c0", config: Optional[Dict[str, Any]] = None,
            **env: str) -> Any:
    return run_plugin("flannel", command, config or conf(), node=node, netns=netns, container_id=cid,
                      env_extra=env or None)


def test_failing_delegate_del_keeps_the_saved_config_and_a_retry_releases(node: Any, pod: Any,
                                                                           plugin_path: str) -> None:
    flannel_node(node)
    p = pod()
    assert flannel(node, "ADD", p.path).rc == 0
    failed = flannel(node, "DEL", p.path, CNI_FLANNEL_FAIL_AT="bridge.del-iface")
    assert failed.rc == 1 and "injected failure" in failed.json["msg"]
    left = node_leftovers(node)
    assert left["saved"] == ["c0"] and left["held"] == ["10.244.1.2"]  # the reference would have lost the file
    assert flannel(node, "DEL", p.path).rc == 0
    assert node_leftovers(node) == CLEAN


def test_del_without_saved_config_still_frees_the_address(node: Any, pod: Any, plugin_path: str) -> None:
    flannel_node(node)
    p = pod()
    assert flannel(node, "ADD", p.path).rc == 0
    node.run(["rm", "/var/lib/cni/flannel/c0"])
    assert flannel(node, "DEL", p.path).rc == 0
    assert node_leftovers(node) == CLEAN


def test_del_without_saved_config_or_subnet_env_still_frees_the_address(node: Any, pod: Any) -> None:
    flannel_node(node)
    p = pod()
    assert flannel(node, "ADD", p.path).rc == 0
    node.run(["rm", "/var/lib/cni/flannel/c0", "/run/flannel/subnet.env"])
    p.delete()
    assert flannel(node, "DEL", "").rc == 0
    assert node_leftovers(node) == CLEAN


def test_add_before_subnet_env_is_try_again_then_works(node: Any, pod: Any, plugin_path: str) -> None:
    flannel_node(node, SHIPPED, subnet_env=None)
    p = pod()
    early = flannel(node, "ADD", p.path)
    assert early.rc == 1 and early.json["code"] == 11
    assert "/run/flannel/subnet.env" in early.json["msg"] and "flanneld" in early.json["details"]
    assert node_leftovers(node) == CLEAN
    node.write_file("/run/flannel/subnet.env", SUBNET_ENV)
    late = flannel(node, "ADD", p.path)
    assert late.rc == 0 and late.json["ips"][0]["address"] == "10.244.1.2/24"


@pytest.mark.parametrize("step", ["flannel.saved", "bridge.veth", "bridge.ipam", "bridge.container", "bridge.done"])
def test_failure_midway_through_add_rolls_back(node: Any, pod: Any, step: str) -> None:
    flannel_node(node)
    p = pod()
    failed = flannel(node, "ADD", p.path, CNI_FLANNEL_FAIL_AT=step)
    if step == "flannel.saved":  # before the delegate ran: the runtime's DEL cleans up (the file is there for it)
        assert failed.rc == 1 and node_leftovers(node)["saved"] == ["c0"]
        assert flannel(node, "DEL", p.path).rc == 0
    assert failed.rc == 1 and "injected failure" in failed.json["msg"]
    assert node_leftovers(node) == CLEAN
    assert [l["ifname"] for l in links(p)] == ["lo"]


@pytest.mark.parametrize("step", ["flannel.saved", "bridge.ipam", "bridge.container"])
def test_sigkill_midway_then_runtime_del_leaves_nothing(node: Any, pod: Any, step: str, plugin_path: str) -> None:
    flannel_node(node)
    p = pod()
    assert flannel(node, "ADD", p.path, CNI_FLANNEL_CRASH_AT=step).killed
    assert flannel(node, "DEL", p.path).rc == 0
    assert node_leftovers(node) == CLEAN


# -- bad input: error JSON with the right code, nothing changed ---------------------------------

ENV = SUBNET_ENV
BAD = [
    ("subnet-env-missing", None, conf(), 11),
    ("subnet-env-empty", "", conf(), 11),
    ("subnet-env-comments-only", "# flanneld writes this\n", conf(), 11),
    ("subnet-env-garbage", "\x00\x01\x02 garbage\n", conf(), 11),
    ("subnet-env-half-written", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_M", conf(), 7),
    ("subnet-env-no-mtu", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPMASQ=true\n", conf(), 11),
    ("subnet-env-no-subnet", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", conf(), 11),
    ("subnet-outside-network", ENV.replace("10.244.1.1/24", "10.99.1.1/24"), conf(), 7),
    ("mtu-zero", ENV.replace("1450", "0"), conf(), 7),
    ("mtu-text", ENV.replace("1450", "jumbo"), conf(), 7),
    ("mtu-huge", ENV.replace("1450", "70000"), conf(), 7),
    ("network-bad-cidr", ENV.replace("10.244.0.0/16", "10.244.0.0/40"), conf(), 7),
    ("network-wrong-family", ENV.replace("10.244.0.0/16", "fd00::/48"), conf(), 7),
    ("ipmasq-not-bool", ENV.replace("IPMASQ=true", "IPMASQ=1"), conf(), 7),
    ("delegate-with-name", ENV, conf(delegate={"name": "x"}), 7),
    ("delegate-with-ipam", ENV, conf(delegate={"ipam": {"type": "host-local"}}), 7),
    ("delegate-type-number", ENV, conf(delegate={"type": 7}), 7),
    ("delegate-not-object", ENV, conf(delegate=["bridge"]), 7),
    ("delegate-unknown-plugin", ENV, conf(delegate={"type": "no-such-plugin"}), 7),
    ("ipam-not-object", ENV, conf(ipam="host-local"), 6),
    ("ipam-routes-bad", ENV, conf(ipam={"routes": [{"gw": "10.0.0.1"}]}), 7),
    ("subnet-file-relative", ENV, conf(subnetFile="run/subnet.env"), 7),
    ("data-dir-relative", ENV, conf(dataDir="flannel"), 7),
    ("subnet-file-not-string", ENV, conf(subnetFile=["x"]), 7),
    ("bridge-bad-mtu-override", ENV, conf(delegate={"mtu": 10}), 7),
]


def _state(node: Any) -> Dict[str, str]:
    return node_state(node, dirs=("/var/lib/cni",))


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(node: Any, pod: Any, case: Any) -> None:
    _, env_text, config, code = case
    flannel_node(node, SHIPPED, subnet_env=env_text)
    p = pod()
    before = _state(node)
    run = flannel(node, "ADD", p.path, config=config)
    assert run.rc == 1 and isinstance(run.json, dict), run
    assert run.json["code"] == code, run.json
    assert "Traceback" not in run.stderr
    assert _state(node) == before
