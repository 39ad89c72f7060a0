"""`flanneld doctor` beside a running flanneld (dist/cni/flanneld against a real etcd): the
daemon-ready, lease and lease-expiry checks read the real daemon's /readyz and /metrics and the
etcd it leases from; net-conf comes from etcd (<prefix>/config) as in etcd mode.  Then the
daemon dies (SIGKILL): doctor says it is not running, and the node otherwise still works
(flanneld leaves routes, devices, rules and the lease in place)."""
from __future__ import annotations

from tests.harness import drivers
from tests.harness.etcd import etcd_factory  # noqa: F401 - fixture
from tests.integration.doctor_lab import doctor
from tests.integration.flannel_node import flannel_node
from tests.integration.flanneld_lab import FLANNELD, HEALTHZ_PORT, EtcdNode, Flanneld


def test_doctor_beside_a_running_flanneld_then_a_dead_one(make_node, etcd_factory):
    etcd = EtcdNode(make_node, etcd_factory)
    nodes = [flannel_node(make_node(f"n{i}", underlay=True), subnet_env=None) for i in (1, 2)]
    daemons = [Flanneld(n, etcd.endpoint).start() for n in nodes]
    for d in daemons:
        d.ready()
    for i, n in enumerate(nodes, 1):
        drivers.libcni(n, "add", "cbr0", n.add_pod("p1"), cid=f"n{i}-p1")
    n1 = nodes[0]
    port = ("--healthz-port", str(HEALTHZ_PORT))

    r = doctor(n1, *port, "--etcd-endpoints", etcd.endpoint, table=True)
    assert r.rc == 0 and r.failing() == [], r
    not_ok = {i: c["status"] for i, c in r.checks.items() if c["status"] != "ok"}
    assert not_ok == {}, r
    assert r["daemon"]["evidence"] == f"GET http://127.0.0.1:{HEALTHZ_PORT}/readyz answered 200"
    assert r["lease"]["evidence"].startswith(f"etcd ({etcd.endpoint}) leases 10.244.")
    assert "expires in 23h" in r["lease-expiry"]["evidence"] and "etcd" in r["lease-expiry"]["evidence"]
    assert r["net-conf"]["evidence"].startswith("etcd /coreos.com/network/config: Network 10.244.0.0/16")
    assert r["probe"]["evidence"] == "the peer answers"

    alone = doctor(n1, *port)  # no etcd given: the expiry comes from the daemon's /metrics
    assert alone.status("lease-expiry") == "ok" and "/metrics" in alone["lease-expiry"]["evidence"], alone

    daemons[0].kill()
    dead = doctor(n1, *port, "--etcd-endpoints", etcd.endpoint, binary=str(FLANNELD))  # as `flanneld doctor`
    assert dead.failing() == ["daemon"], dead
    assert dead["daemon"]["evidence"].endswith("flanneld is not running")
