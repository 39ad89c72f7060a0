"""flannel (the frozen binary) when its saved config <dataDir>/<containerID> is not what it wrote:
a FIFO, a symlink to a FIFO, a symlink to /dev/zero, a directory.  DEL must neither block (every
run has a deadline that fails the test) nor read the thing: it rebuilds the delegate config as for
a lost or corrupt file and still releases the address; the planted name goes (unlink: never its
target), a planted directory stays.  GC removes planted names of containers it does not keep.
No traceback anywhere, and the node otherwise unchanged.  The plugin runs with a 1 GiB
address-space cap, so a regression that reads /dev/zero fails the run instead of starving the
machine (the agent variant plants FIFOs only: the agent's workers are not capped)."""
from __future__ import annotations

from typing import Any

import pytest

from tests.harness.exec import run_plugin
from tests.harness.state import node_state
from tests.integration.flannel_node import CLEAN, SHIPPED, flannel_node, node_leftovers

DIR = "/var/lib/cni/flannel"
DEADLINE = 20  # seconds; the plugin needs well under one — a blocked read fails the run
CAPPED = "/run/flannel/capped/flannel"  # runs /opt/cni/bin/flannel under the memory cap
CONF = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel", "delegate": {"isDefaultGateway": True}}
PLANT = {"fifo": "mkfifo {path}", "fifo-link": "ln -s /run/flannel/fifo {path}",
         "dev-zero-link": "ln -s /dev/zero {path}"}


def flannel(node: Any, command: str, cid: str = "c0", netns: str = "", **conf: Any) -> Any:
    ifname = None if command == "GC" else "eth0"
    done = run_plugin(CAPPED, command, {**CONF, **conf}, node=node, netns=netns, container_id=cid,
                      ifname=ifname, cni_path="/opt/cni/bin", timeout=DEADLINE)
    assert "Traceback" not in done.stderr + done.stdout, done
    return done


def kind(node: Any, path: str) -> str:
    """What ``path`` itself is (a link is not followed): 'fifo', 'symbolic link', 'directory'..."""
    return node.run(["stat", "-c", "%F", path]).stdout.strip()


def prepare(node: Any) -> None:
    """The data dir, a FIFO outside it for the links to point at, the capped plugin."""
    flannel_node(node, SHIPPED)
    node.run(["sh", "-ec", f"mkdir -p {DIR}; mkfifo /run/flannel/fifo"])
    node.write_file(CAPPED, '#!/bin/sh\nexec prlimit --as=1073741824 -- /opt/cni/bin/flannel "$@"\n', mode=0o755)


def plant(node: Any, what: str, cid: str) -> None:
    node.run(["sh", "-ec", f"rm -f {DIR}/{cid}; " + PLANT[what].format(path=f"{DIR}/{cid}")])


@pytest.mark.parametrize("what", ["fifo", "fifo-link"])
def test_del_of_a_pod_whose_saved_config_was_replaced_still_releases(node: Any, pod: Any, plugin_path: str,
                                                                     what: str) -> None:
    del_of_a_pod_whose_saved_config_was_replaced(node, pod, what)


def test_del_of_a_pod_whose_saved_config_is_a_link_to_dev_zero_still_releases(node: Any, pod: Any) -> None:
    del_of_a_pod_whose_saved_config_was_replaced(node, pod, "dev-zero-link")


def del_of_a_pod_whose_saved_config_was_replaced(node: Any, pod: Any, what: str) -> None:
    prepare(node)
    p = pod()
    added = flannel(node, "ADD", netns=p.path)
    assert added.rc == 0, added
    assert node_leftovers(node)["held"] == ["10.244.1.2"]
    plant(node, what, "c0")
    check = flannel(node, "CHECK", netns=p.path, prevResult=added.json)
    assert check.rc == 1 and check.json["code"] == 3, check  # no saved config it can use
    done = flannel(node, "DEL", netns=p.path)
    assert done.rc == 0, done
    assert node_leftovers(node) == CLEAN  # address released, veth gone, the planted name removed
    assert kind(node, "/run/flannel/fifo") == "fifo"
    log = node.read_file("/var/log/cni-flannel.log")
    assert f"saved config {DIR}/c0 is a {'FIFO' if what == 'fifo' else 'symlink'}" in log, log


@pytest.mark.parametrize("what", list(PLANT))
def test_del_of_an_unknown_container_with_a_planted_config_changes_nothing_else(node: Any, what: str) -> None:
    prepare(node)
    before = node_state(node)
    plant(node, what, "ghost")
    done = flannel(node, "DEL", "ghost")
    assert done.rc == 0, done
    assert node_state(node) == before  # the planted name went with the (empty) DEL; nothing else changed


def test_a_planted_directory_is_left_and_del_and_gc_go_on(node: Any, pod: Any) -> None:
    prepare(node)
    p = pod()
    assert flannel(node, "ADD", netns=p.path).rc == 0
    node.run(["sh", "-ec", f"rm {DIR}/c0; mkdir -p {DIR}/c0 {DIR}/stale; touch {DIR}/c0/inside"])
    assert flannel(node, "DEL", netns=p.path).rc == 0
    assert node_leftovers(node)["held"] == []
    assert flannel(node, "GC", None, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []}).rc == 0
    left = sorted(node.run(["find", DIR, "-mindepth", "1"]).stdout.split())
    assert left == [f"{DIR}/c0", f"{DIR}/c0/inside", f"{DIR}/stale"]
    assert "is a directory, not a saved config; leaving it" in node.read_file("/var/log/cni-flannel.log")


def test_gc_drops_planted_configs_of_containers_it_does_not_keep(node: Any, pod: Any) -> None:
    prepare(node)
    p = pod()
    assert flannel(node, "ADD", "keep", netns=p.path).rc == 0
    for what in PLANT:
        plant(node, what, f"stale-{what}")
    plant(node, "fifo", ".stale-fifo.tmp.7")  # and a FIFO named like a killed save's temp file
    keep = [{"containerID": "keep", "ifname": "eth0"}]
    gc = flannel(node, "GC", None, cniVersion="1.1.0", **{"cni.dev/valid-attachments": keep})
    assert gc.rc == 0, gc
    left = node_leftovers(node)
    assert left["saved"] == ["keep"] and left["held"] == ["10.244.1.2"]
    assert kind(node, "/run/flannel/fifo") == "fifo"


def test_add_refuses_a_delegate_config_too_large_to_take_back(node: Any, pod: Any) -> None:
    """The other half of the limit: a config DEL would not read back is never saved."""
    prepare(node)
    p = pod()
    before = node_state(node)
    done = flannel(node, "ADD", netns=p.path, delegate={"isDefaultGateway": True, "note": "x" * (1 << 20)})
    assert done.rc == 1 and done.json["code"] == 7 and "more than the 1048576 flannel saves" in done.json["msg"], done
    assert node_state(node) == before
