"""The test API server (tests/harness/kubeapi.py) is honest: the official kubectl and the Python
client the daemon uses (lightkube) get, list, patch, watch and delete Nodes through it and see
real Kubernetes shapes and errors; watch resume, bookmarks and 410 Gone behave as documented.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import httpx
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from tests.harness.kubeapi import KubeAPI

pytestmark = pytest.mark.integration

KUBECTL = shutil.which("kubectl")


@pytest.fixture
def api():
    with KubeAPI(bookmark_interval=0.2) as server:
        server.add_node("n1", pod_cidrs=["10.244.0.0/24"], addresses=["192.0.2.11"])
        server.add_node("n2", pod_cidrs=["10.244.1.0/24", "fc00::/64"], addresses=["192.0.2.12"])
        yield server


def kubectl(api: KubeAPI, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    if KUBECTL is None:
        pytest.fail("kubectl is missing: `make apt` installs Debian's kubernetes-client")
    proc = subprocess.run([KUBECTL, "--server", api.url, *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "KUBECONFIG": "/dev/null"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def client(api: KubeAPI) -> Client:
    # (KubeConfig.from_server leaves user=None, which lightkube 0.17 cannot build a client from)
    return Client(KubeConfig.from_one(cluster=Cluster(server=api.url), user=User()), trust_env=False)


# --- kubectl -----------------------------------------------------------------------------------

def test_kubectl_get_patch_delete(api):
    listed = json.loads(kubectl(api, "get", "nodes", "-o", "json").stdout)
    assert listed["kind"] == "List" or listed["kind"] == "NodeList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["n1", "n2"]
    assert kubectl(api, "get", "node", "n2", "-o", "jsonpath={.spec.podCIDRs}").stdout == '["10.244.1.0/24","fc00::/64"]'

    rv = api.resource_version
    kubectl(api, "patch", "node", "n1", "--type=merge", "-p", '{"metadata":{"annotations":{"a/b":"1"}}}')
    assert api.get("n1")["metadata"]["annotations"] == {"a/b": "1"}
    assert api.resource_version == rv + 1

    # strategic merge on the status subresource: conditions merge by type, the spec is kept
    cond = {"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp"}
    kubectl(api, "patch", "node", "n1", "--subresource=status", "--type=strategic",
            "-p", json.dumps({"status": {"conditions": [cond]}, "spec": {"podCIDR": "10.9.9.0/24"}}))
    node = api.get("n1")
    assert [c["type"] for c in node["status"]["conditions"]] == ["Ready", "NetworkUnavailable"]
    assert node["spec"]["podCIDR"] == "10.244.0.0/24"
    # the main resource keeps the status
    kubectl(api, "patch", "node", "n1", "--type=merge", "-p", '{"status":{"conditions":[]}}')
    assert len(api.get("n1")["status"]["conditions"]) == 2
    kubectl(api, "patch", "node", "n1", "--type=json", "-p", '[{"op":"remove","path":"/metadata/annotations/a~1b"}]')
    assert api.get("n1")["metadata"]["annotations"] == {}

    kubectl(api, "delete", "node", "n2")
    assert api.names() == ["n1"]
    missing = kubectl(api, "get", "node", "n2", check=False)
    assert missing.returncode == 1 and 'Error from server (NotFound): nodes "n2" not found' in missing.stderr


def test_kubectl_forbidden_patch(api):
    api.forbid("patch", "nodes/status")
    proc = kubectl(api, "patch", "node", "n1", "--subresource=status", "-p", '{"status":{}}', check=False)
    assert proc.returncode == 1
    assert "Error from server (Forbidden)" in proc.stderr and 'cannot patch resource "nodes/status"' in proc.stderr
    kubectl(api, "patch", "node", "n1", "-p", '{"metadata":{"labels":{"x":"y"}}}')  # other verbs still work


def test_kubectl_watch_sees_changes(api):
    proc = subprocess.Popen([KUBECTL or "kubectl", "--server", api.url, "get", "nodes", "--watch", "-o", "json",
                             "--output-watch-events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "KUBECONFIG": "/dev/null"})
    try:
        deadline = time.monotonic() + 30
        while not any("watch=true" in p for _, p in api.requests):
            assert time.monotonic() < deadline, "kubectl never started its watch"
            time.sleep(0.1)
        api.add_node("n3", pod_cidrs=["10.244.3.0/24"])
        api.delete("n1")
        time.sleep(1)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    decoder, events, text = json.JSONDecoder(), [], out.strip()
    while text:
        obj, end = decoder.raw_decode(text)
        events.append((obj["type"], obj["object"]["metadata"]["name"]))
        text = text[end:].strip()
    assert events[-2:] == [("ADDED", "n3"), ("DELETED", "n1")], (events, err)


# --- lightkube (the daemon's client) ------------------------------------------------------------

def test_lightkube_get_list_patch_status(api):
    c = client(api)
    nodes = c.list(Node)
    assert [n.metadata.name for n in nodes] == ["n1", "n2"]  # (resourceVersion: after iterating)
    assert nodes.resourceVersion == str(api.resource_version)
    assert c.get(Node, "n2").spec.podCIDRs == ["10.244.1.0/24", "fc00::/64"]
    c.patch(Node.Status, "n1", {"metadata": {"annotations": {"flannel.alpha.coreos.com/x": "1"}},
                                "status": {"conditions": [{"type": "NetworkUnavailable", "status": "False"}]}},
            patch_type=PatchType.STRATEGIC)
    got = c.get(Node, "n1")
    assert got.metadata.annotations == {"flannel.alpha.coreos.com/x": "1"}
    assert {x.type: x.status for x in got.status.conditions} == {"Ready": "True", "NetworkUnavailable": "False"}
    with pytest.raises(ApiError) as err:
        c.get(Node, "nope")
    assert err.value.status.code == 404 and err.value.status.reason == "NotFound"
    api.forbid("patch", "nodes/status")
    with pytest.raises(ApiError) as err:
        c.patch(Node.Status, "n1", {"status": {}})
    assert err.value.status.code == 403


def test_lightkube_watch_resumes_from_resource_version(api):
    c = client(api)
    nodes = c.list(Node)
    assert len(list(nodes)) == 2
    rv = nodes.resourceVersion
    api.add_node("n3")
    api.patch("n1", {"metadata": {"labels": {"x": "1"}}}, "merge")
    seen = []
    for kind, node in c.watch(Node, resource_version=rv):
        seen.append((kind, node.metadata.name))
        if len(seen) == 2:
            break
    assert seen == [("ADDED", "n3"), ("MODIFIED", "n1")]


# --- watch protocol details, over plain HTTP ---------------------------------------------------

def stream(api: KubeAPI, params: dict, stop_after: int, timeout: float = 10.0):
    events = []
    with httpx.Client(base_url=api.url, trust_env=False, timeout=timeout) as h:
        with h.stream("GET", "/api/v1/nodes", params={"watch": "true", **params}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                events.append(json.loads(line))
                if len(events) >= stop_after:
                    break
    return events


def test_watch_bookmarks_carry_the_current_version(api):
    rv = api.resource_version
    api.jump(100)  # writes to other objects
    events = stream(api, {"resourceVersion": str(rv), "allowWatchBookmarks": "true"}, 1)
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(rv + 100)
    assert events[0]["object"]["kind"] == "Node"


def test_watch_from_compacted_version_is_410(api):
    old = api.resource_version
    api.add_node("n3")
    api.compact()
    events = stream(api, {"resourceVersion": str(old)}, 1)
    assert events[0]["type"] == "ERROR"
    st = events[0]["object"]
    assert (st["kind"], st["code"], st["reason"]) == ("Status", 410, "Expired")
    # from the current version it works and sees new changes
    threading.Timer(0.3, lambda: api.delete("n3")).start()
    events = stream(api, {"resourceVersion": str(api.resource_version)}, 1)
    assert (events[0]["type"], events[0]["object"]["metadata"]["name"]) == ("DELETED", "n3")


def test_restart_drops_watches_and_keeps_objects(api):
    port, done = api.port, []

    def watch():
        try:
            done.append(stream(api, {"resourceVersion": str(api.resource_version)}, 100, timeout=30))
        except httpx.HTTPError as exc:
            done.append(exc)

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.5)
    api.restart(jump=50, compact=True)
    t.join(10)
    assert not t.is_alive(), "the watch survived a restart"
    assert api.port == port and api.names() == ["n1", "n2"]
    with httpx.Client(base_url=api.url, trust_env=False) as h:
        listed = h.get("/api/v1/nodes").json()
    assert int(listed["metadata"]["resourceVersion"]) >= 50


def test_create_conflicts_and_replace(api, tmp_path):
    """POST (kubectl create), AlreadyExists, and optimistic concurrency on PUT (409 Conflict)."""
    manifest = tmp_path / "node.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n9"},
                                    "spec": {"podCIDR": "10.244.9.0/24"}}))
    kubectl(api, "create", "--validate=false", "-f", str(manifest))
    assert api.get("n9")["spec"]["podCIDR"] == "10.244.9.0/24"
    again = kubectl(api, "create", "--validate=false", "-f", str(manifest), check=False)
    assert again.returncode == 1 and "AlreadyExists" in again.stderr and '"n9" already exists' in again.stderr
    c = client(api)
    node = c.get(Node, "n9")
    node.metadata.labels = {"x": "1"}
    c.replace(node)  # current resourceVersion: accepted
    node.metadata.labels = {"x": "2"}
    with pytest.raises(ApiError) as err:
        c.replace(node)  # the version it carries is stale now
    assert (err.value.status.code, err.value.status.reason) == (409, "Conflict")
    assert api.get("n9")["metadata"]["labels"] == {"x": "1"}
