"""30 pods with hostPorts added and deleted concurrently (libcni, Go bridge +
host-local, our portmap): after every step each live pod's hostPort answers
with that pod's name, each deleted pod's port is closed, and at the end no
rule names any of the containers."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List

import pytest

from tests.harness import drivers
from tests.integration.test_portmap import NET, ask, conflist, serve, rules_of
from tests.harness.plugins import reference_dir

PODS = 30
BASE_PORT = 20000


@pytest.fixture
def setup(make_node, plugin_dir):
    node = make_node(underlay=True, plugins=reference_dir())
    node.install_plugins(plugin_dir, names=["portmap"])
    node.write_file("/etc/cni/net.d/10-pmnet.conflist", json.dumps(conflist()))
    client = make_node(underlay=True, plugins=False)
    return node, client


def maps(port: int) -> list:
    return [{"hostPort": port, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": port, "containerPort": 53, "protocol": "udp"}]


def test_concurrent_add_and_delete_keeps_every_live_port(setup):
    node, client = setup
    pods: Dict[int, object] = {}
    live: List[int] = []
    port = {i: BASE_PORT + i for i in range(PODS + 15)}
    port.update({PODS + 15 + k: BASE_PORT + i for k, i in enumerate(range(0, PODS, 4))})  # re-used

    def add(i: int) -> None:
        pod = node.add_pod(f"p{i}")
        pods[i] = pod
        drivers.libcni(node, "add", NET, pod, cid=f"c{i}", capability_args={"portMappings": maps(port[i])},
                       timeout=180)
        serve(pod, f"pod{i}")

    def delete(i: int) -> None:
        drivers.libcni(node, "del", NET, pods[i], cid=f"c{i}", capability_args={"portMappings": maps(port[i])},
                       timeout=180)

    def step(adds: Iterable[int], deletes: Iterable[int]) -> None:
        adds, deletes = list(adds), list(deletes)
        with ThreadPoolExecutor(max_workers=len(adds) + len(deletes)) as pool:
            futures = [pool.submit(add, i) for i in adds] + [pool.submit(delete, i) for i in deletes]
            for f in futures:
                f.result()
        live[:] = sorted(set(live) - set(deletes) | set(adds))
        with ThreadPoolExecutor(max_workers=16) as pool:
            tcp = dict(zip(live, pool.map(lambda i: ask(client, node.underlay_ip, port[i]), live)))
            udp = dict(zip(live, pool.map(lambda i: ask(client, node.underlay_ip, port[i], "udp"), live)))
            closed = [i for i in deletes if port[i] not in {port[j] for j in live}]
            gone = list(pool.map(lambda i: ask(client, node.underlay_ip, port[i], timeout=1), closed))
        assert tcp == {i: f"pod{i}" for i in live}
        assert udp == {i: f"pod{i}" for i in live}
        assert gone == [None] * len(closed)

    step(adds=range(PODS), deletes=())                              # 30 concurrent ADDs
    step(adds=range(PODS, PODS + 15), deletes=range(0, PODS, 2))   # 15 ADDs racing 15 DELs
    step(adds=range(PODS + 15, PODS + 23), deletes=range(1, PODS, 2))  # new pods on freed ports
    step(adds=(), deletes=list(live))                               # everything goes
    rules = rules_of(node)
    assert not [i for i in pods if f'id: \\"c{i}\\"' in rules or f'"c{i}"' in rules]
    assert "CNI-DN-" not in rules
