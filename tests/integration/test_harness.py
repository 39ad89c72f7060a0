"""The harness itself: nodes are isolated, the host is untouched, teardown is
complete even after failures, and both Go drivers run Debian's reference
plugins in a node."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.harness import drivers
from tests.harness.crash import CRASH_ENV, run_until_crash
from tests.harness.exec import run_plugin
from tests.harness.netns import NODE_DIRS, Lab, mount_points, netns_names, run
from tests.harness.plugins import PLUGIN_NAMES, REPO_ROOT, reference_dir

POD_SUBNET = "10.244.1.0/24"


def host_state() -> dict:
    """What a test must never change in the root namespaces."""
    return {
        "links": run(["ip", "-o", "link", "show"]).stdout.replace("\\", "").split("\n"),
        "addrs": run(["ip", "-o", "addr", "show"]).stdout,
        "routes": run(["ip", "route", "show", "table", "all"]).stdout,
    }


def leftovers(prefix: str) -> list:
    """Anything on the host still named with prefix."""
    found = [n for n in netns_names() if n.startswith(prefix)]
    found += [m for m in mount_points() if prefix in m]
    return found + ([f"/run/{prefix}"] if os.path.exists(f"/run/{prefix}") else [])


def link_pod(node, pod, node_addr: str, pod_addr: str) -> None:
    """A hand-made veth between node and pod (what bridge/ptp would do)."""
    node.run(["ip", "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod.netns])
    node.run(["ip", "addr", "add", node_addr, "dev", "vpod"])
    node.run(["ip", "link", "set", "vpod", "up"])
    pod.run(["ip", "addr", "add", pod_addr, "dev", "eth0"])
    pod.run(["ip", "link", "set", "eth0", "up"])


def test_nodes_have_private_default_dirs(make_node):
    a, b = make_node(plugins=False), make_node(plugins=False)
    a.write_file("/var/lib/cni/marker", "node a")
    assert a.read_file("/var/lib/cni/marker") == "node a"
    assert not b.exists("/var/lib/cni/marker")
    assert not os.path.exists("/var/lib/cni/marker")
    for d in NODE_DIRS:
        assert a.run(["findmnt", "-n", "-o", "FSTYPE", d]).stdout.strip() == "tmpfs"


def test_node_sees_own_links_and_later_pods(make_node):
    node = make_node(plugins=False)
    pod = node.add_pod()  # created after the node's mount namespace
    assert node.exists(pod.path)
    assert node.run(["ls", "/sys/class/net"]).stdout.split() == ["lo"]
    assert pod.run(["ip", "-o", "link"]).stdout.count(": lo:") == 1
    assert ",UP" in node.run(["ip", "link", "show", "lo"]).stdout


def test_root_namespace_untouched():
    before = host_state()
    with Lab() as lab:
        a = lab.add_node(underlay=True)
        lab.add_node(underlay=True)
        link_pod(a, a.add_pod(), "10.244.1.1/24", "10.244.1.2/24")
        assert host_state() == before
    assert host_state() == before
    assert leftovers(lab.prefix) == []


def test_pod_reachable_only_from_its_node(make_node):
    a, b = make_node(underlay=True, plugins=False), make_node(underlay=True, plugins=False)
    pod = a.add_pod()
    link_pod(a, pod, "10.244.1.1/24", "10.244.1.2/24")
    assert a.ping("10.244.1.2")
    assert pod.ping("10.244.1.1")
    assert not b.ping("10.244.1.2", timeout=0.5)
    assert "10.244.1." not in run(["ip", "-o", "addr", "show"]).stdout


def test_underlay_joins_nodes(make_node):
    a, b = make_node(underlay=True, plugins=False), make_node(underlay=True, plugins=False)
    assert a.underlay_ip != b.underlay_ip
    assert a.underlay_ip.startswith("198.18.") and b.underlay_ip.startswith("198.18.")
    assert a.ping(b.underlay_ip) and b.ping(a.underlay_ip)
    assert not a.ping("198.18.0.250", timeout=0.5)  # the pinger can say no


def test_lab_cleans_up_when_body_raises():
    with pytest.raises(RuntimeError, match="test body failed"):
        with Lab() as lab:
            node = lab.add_node(underlay=True)
            node.add_pod()
            node.popen(["sleep", "600"])
            raise RuntimeError("test body failed")
    assert leftovers(lab.prefix) == []


def test_fixtures_clean_up_a_failing_test(tmp_path):
    record = tmp_path / "prefix"
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(f"""
        def test_fails(lab, make_node, pod):
            open({str(record)!r}, "w").write(lab.prefix)
            pod(node=make_node(underlay=True, plugins=False))
            assert False, "deliberate failure"
    """))
    inner = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
                            "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert inner.returncode == 1, inner.stdout + inner.stderr
    assert "deliberate failure" in inner.stdout
    assert leftovers(record.read_text()) == []


def test_cleanup_command_removes_leftovers():
    lab = Lab()
    try:
        lab.add_node(underlay=True).add_pod()
        assert leftovers(lab.prefix)  # never closed: as after a killed run
        out = subprocess.run([sys.executable, "-m", "tests.harness.cleanup", lab.prefix],
                             cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        assert f"netns {lab.prefix}-n1" in out
        assert leftovers(lab.prefix) == []
    finally:
        lab.close()


# --- running plugins ------------------------------------------------------------------

# A fake plugin that reports its environment and stdin, and honours the crash hook.
ENVDUMP = f"""#!{sys.executable}
import json, os, signal, sys
if os.environ.get("{CRASH_ENV}") == "after-read":
    os.kill(os.getpid(), signal.SIGKILL)
print(json.dumps({{"env": dict(os.environ), "stdin": sys.stdin.read()}}))
"""


def test_run_plugin_gives_a_runtime_environment(make_node):
    node = make_node(plugins=False)
    node.write_file("/opt/cni/bin/envdump", ENVDUMP, mode=0o755)
    run = run_plugin("envdump", "ADD", {"cniVersion": "1.0.0"}, node=node, netns="/x",
                     cni_args={"IgnoreUnknown": "1", "K": "V"}, env_extra={"CNI_IFNAME": None})
    assert run.rc == 0 and json.loads(run.json["stdin"]) == {"cniVersion": "1.0.0"}
    env = run.json["env"]
    assert env.pop("PATH")
    env.pop("LC_CTYPE", None)  # set by the fake's own Python (PEP 538), not by run_plugin
    assert env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "cid", "CNI_NETNS": "/x",
                   "CNI_ARGS": "IgnoreUnknown=1;K=V", "CNI_PATH": "/opt/cni/bin"}


def test_crash_hook_reaches_the_plugin(make_node):
    node = make_node(plugins=False)
    node.write_file("/opt/cni/bin/envdump", ENVDUMP, mode=0o755)
    assert run_until_crash("envdump", "ADD", {}, "after-read", node=node).killed
    with pytest.raises(AssertionError, match="did not crash"):
        run_until_crash("envdump", "ADD", {}, "elsewhere", node=node)


def test_node_fixture_installs_the_plugins_under_test(node):
    for name in PLUGIN_NAMES:
        run = run_plugin(name, "VERSION", {"cniVersion": "1.0.0"}, node=node)
        assert run.rc == 0, run
        assert "1.0.0" in run.json["supportedVersions"]


# --- the Go drivers against Debian's reference plugins --------------------------------

def bridge_conflist(name: str = "refnet") -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]]}},
            {"type": "argsdump"},
        ],
    }


# A chained plugin that records its CNI_* environment and passes prevResult on.
ARGSDUMP = f"""#!{sys.executable}
import json, os, sys
conf = json.load(sys.stdin)
with open("/run/flannel/argsdump-" + os.environ["CNI_COMMAND"], "w") as f:
    json.dump({{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}, f)
if os.environ["CNI_COMMAND"] == "ADD":
    print(json.dumps(conf["prevResult"]))
"""


@pytest.fixture
def ref_node(make_node):
    """A node running Debian's Go plugins, with the bridge conflist installed."""
    node = make_node(plugins=reference_dir(), underlay=False)
    node.write_file("/opt/cni/bin/argsdump", ARGSDUMP, mode=0o755)
    node.write_file("/etc/cni/net.d/10-refnet.conflist", json.dumps(bridge_conflist()))
    return node


def test_drivers_build_and_explain_usage(make_node):
    node = make_node(plugins=False)
    for name in ("cnitool-libcni", "gocni-tool"):
        done = node.run([drivers.driver_path(name)], check=False)
        assert done.returncode == 2 and "usage:" in done.stderr


def pod_addresses(pod) -> str:
    return pod.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], check=False).stdout


def test_libcni_driver_with_reference_plugins(ref_node, pod):
    p = pod(node=ref_node)
    result = drivers.libcni(ref_node, "add", "refnet", p, cid="c1",
                            args={"IgnoreUnknown": "1", "K8S_POD_NAME": "x"})
    assert [ip["address"] for ip in result["ips"]] == ["10.244.1.2/24"]
    assert "10.244.1.2/24" in pod_addresses(p)
    assert ref_node.ping("10.244.1.2")
    assert ref_node.exists("/var/lib/cni/results/refnet-c1-eth0")  # libcni's cache, node-local
    assert not os.path.exists("/var/lib/cni/results/refnet-c1-eth0")
    assert json.loads(ref_node.read_file("/run/flannel/argsdump-ADD"))["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=x"

    assert drivers.libcni(ref_node, "check", "refnet", p, cid="c1") is None
    with pytest.raises(drivers.DriverError) as err:
        drivers.libcni(ref_node, "add", "refnet", p, cid="c1")  # eth0 exists: a CNI error comes back
    assert "already exists" in err.value.cni_error["msg"]

    drivers.libcni(ref_node, "del", "refnet", p, cid="c1")
    drivers.libcni(ref_node, "del", "refnet", p, cid="c1")  # repeated DEL succeeds
    assert not ref_node.exists("/var/lib/cni/networks/refnet/10.244.1.2")
    assert pod_addresses(p) == ""

    with pytest.raises(drivers.DriverError) as err:
        drivers.libcni(ref_node, "gc", "refnet", p)
    assert err.value.rc == 2


def test_libcni_driver_with_reference_loopback(make_node, pod):
    node = make_node(plugins=reference_dir())
    node.write_file("/etc/cni/net.d/99-lo.conflist", json.dumps(
        {"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}))
    p = pod(node=node)
    drivers.libcni(node, "add", "lo", p, ifname="lo")
    assert ",UP" in p.run(["ip", "-o", "link", "show", "lo"]).stdout
    drivers.libcni(node, "check", "lo", p, ifname="lo")
    drivers.libcni(node, "del", "lo", p, ifname="lo")


def test_gocni_driver_with_reference_plugins(ref_node, pod):
    p = pod(node=ref_node)
    result = drivers.gocni(ref_node, "add", p, cid="sb1", pod_name="web", pod_namespace="prod", pod_uid="u-1")
    assert [c["IP"] for c in result["Interfaces"]["eth0"]["IPConfigs"]] == ["10.244.1.2"]
    assert result["Interfaces"]["eth0"]["Sandbox"] == p.path
    assert ",UP" in p.run(["ip", "-o", "link", "show", "lo"]).stdout  # go-cni's loopback network
    args = dict(kv.split("=", 1) for kv in json.loads(
        ref_node.read_file("/run/flannel/argsdump-ADD"))["CNI_ARGS"].split(";"))
    assert args == {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": "web",
                    "K8S_POD_INFRA_CONTAINER_ID": "sb1", "K8S_POD_UID": "u-1"}

    # go-cni's built-in loopback network is cniVersion 0.3.1, so libcni refuses
    # CHECK for every pod: a fact of containerd's library, not of the plugins.
    with pytest.raises(drivers.DriverError, match='"0.3.1" does not support the CHECK'):
        drivers.gocni(ref_node, "check", p, cid="sb1")
    drivers.gocni(ref_node, "del", p, cid="sb1")
    assert not ref_node.exists("/var/lib/cni/networks/refnet/10.244.1.2")
    p.delete()
    drivers.gocni(ref_node, "del", p, cid="sb1")  # DEL after the sandbox is gone
