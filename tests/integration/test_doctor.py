"""`flannel doctor` on a healthy node and on nodes broken in the config/lease ways the field
breaks them: subnet.env gone, a lease that moved, a lease about to expire, net-conf changed
under a running node, the daemon not running.  Each broken node must fail exactly the check
that names the problem, with its fix; the JSON is schema-checked on every run (doctor_lab)."""
from __future__ import annotations

import json

from tests.integration.doctor_lab import (ETCD_URL, NET_CONF, NET_CONF_PATH, doctor, etcd_with_leases,
                                          make_cluster, put_lease)

ALL = ["subnet-env", "daemon", "lease", "lease-expiry", "net-conf", "cni0", "mtu", "br-netfilter", "ip-forward",
       "kernel", "vxlan-offload", "iptables-mode", "forward", "masquerade", "peers", "stale", "probe", "ipam",
       "saved-configs", "firewall-leftovers"]
# Checks that need a running flanneld (its /readyz and /metrics): "!" without one.
NEEDS_DAEMON = {"daemon"}


def test_healthy_node_is_all_ok_and_the_json_has_every_check(make_node):
    c = make_cluster(make_node, count=3)
    etcd_with_leases(c)
    r = doctor(c.members[0].node, "--etcd-endpoints", ETCD_URL, table=True)
    assert r.rc == 0, r
    assert list(r.checks) == ALL
    assert {i: ch["status"] for i, ch in r.checks.items() if ch["status"] != "ok"} == {"daemon": "unknown"}, r
    assert r["probe"]["items"] == ["10.244.2.0/24 → 10.244.2.0: " + r["probe"]["items"][0].split(": ")[1],
                                   "10.244.3.0/24 → 10.244.3.0: " + r["probe"]["items"][1].split(": ")[1]]
    assert all(i.endswith(" ms") for i in r["probe"]["items"]), r["probe"]
    assert "leases 10.244.1.0/24 to this node" in r["lease"]["evidence"]
    assert "expires in 23h" in r["lease-expiry"]["evidence"]
    assert r.doc["summary"] == {"ok": 19, "fail": 0, "unknown": 1}
    assert "✔  subnet.env" in r.text and "✘" not in r.text


def test_subnet_env_removed(make_node):
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    n1.run(["rm", "/run/flannel/subnet.env"])
    r = doctor(n1, table=True)
    assert r.rc == 1 and r.failing() == ["subnet-env"], r
    assert "does not exist" in r["subnet-env"]["evidence"] and "loadFlannelSubnetEnv" in r["subnet-env"]["evidence"]
    assert "start flanneld" in r["subnet-env"]["fix"]
    assert "✘  subnet.env" in r.text and "fix: start flanneld" in r.text
    for dependent in ("cni0", "mtu", "masquerade", "net-conf"):  # cannot compare without it: "!", not a guess
        assert r.status(dependent) == "unknown", r


def test_lease_moved_to_another_subnet(make_node):
    """etcd gave this node a new subnet (its old lease expired while it was down) but
    subnet.env still has the old one."""
    c = make_cluster(make_node, pods=0)
    n1 = etcd_with_leases(c)
    m1 = c.members[0]
    n1.run(["etcdctl", "--endpoints", ETCD_URL, "del", "/coreos.com/network/subnets/10.244.1.0-24"],
           env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    put_lease(n1, "10.244.5.0/24", m1.public, m1.data["BackendData"]["VtepMAC"])
    r = doctor(n1, "--etcd-endpoints", ETCD_URL)
    assert r.status("lease") == "fail", r
    assert r["lease"]["evidence"] == "etcd leases 10.244.5.0/24 to this node, subnet.env says 10.244.1.0/24"
    assert "restart flanneld" in r["lease"]["fix"]


def test_lease_close_to_expiry_was_not_renewed(make_node):
    c = make_cluster(make_node, pods=0)
    n1 = etcd_with_leases(c, ttl=1200)  # 20 minutes left: the renewal (due 60 minutes before) failed
    r = doctor(n1, "--etcd-endpoints", ETCD_URL)
    assert r.failing() == ["lease-expiry"], r
    assert "and was not renewed" in r["lease-expiry"]["evidence"]
    assert "etcd" in r["lease-expiry"]["fix"]


def test_unreachable_etcd_is_not_checked_rather_than_failed(make_node):
    c = make_cluster(make_node, pods=0)
    r = doctor(c.members[0].node, "--etcd-endpoints", ETCD_URL)  # nothing listens there
    assert r.rc == 0, r
    assert r.status("lease") == "unknown" and "etcd unreachable" in r["lease"]["evidence"], r


def test_net_conf_changed_after_subnet_env_was_written(make_node):
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    n1.write_file(NET_CONF_PATH, json.dumps({**NET_CONF, "Network": "10.245.0.0/16"}))
    r = doctor(n1)
    assert r.failing() == ["net-conf"], r
    assert "net-conf.json Network 10.245.0.0/16, subnet.env 10.244.0.0/16" in r["net-conf"]["evidence"]


def test_daemon_not_running_on_the_given_health_port(make_node):
    c = make_cluster(make_node, pods=0)
    r = doctor(c.members[0].node, "--healthz-port", "8471")
    assert r.failing() == ["daemon"], r
    assert r["daemon"]["evidence"].startswith("nothing answers on http://127.0.0.1:8471/readyz")
    assert "flanneld is not running" in r["daemon"]["evidence"]


def _kube_node(m) -> dict:
    p = "flannel.alpha.coreos.com/"
    return {p + "kube-subnet-manager": "true", p + "backend-type": "vxlan", p + "public-ip": m.public,
            p + "backend-data": json.dumps({"VNI": 1, "VtepMAC": m.data["BackendData"]["VtepMAC"]})}


def test_kube_mode_lease_is_the_node_pod_cidr_and_a_reassigned_one_is_named(make_node):
    """Kubernetes mode: the lease is the Node's podCIDR (our test API server, inside the node).
    The field break: the Node object was deleted and re-registered and got another podCIDR,
    while subnet.env (and the pods) keep the old one."""
    from tests.harness.kubeapi import KubeAPI

    c = make_cluster(make_node, pods=0)
    m1, m2 = c.members
    api = KubeAPI(netns=m1.node.netns).start()
    m1.node.lab.add_finalizer(api.stop)
    for m in c.members:
        api.add_node(m.node.name, pod_cidrs=[f"10.244.{m.n}.0/24"], annotations=_kube_node(m))
    kube = ("--kube-api-url", api.url)
    r = doctor(m1.node, *kube)
    assert r.failing() == [], r
    assert r["lease"]["evidence"] == f"kube ({api.url} node n1) leases 10.244.1.0/24 to this node, as subnet.env says"
    assert r["peers"]["items"] == ["10.244.2.0/24 (198.18.0.2): route, neighbour and FDB on flannel.1 ✔"]
    assert "does not expire" in r["lease-expiry"]["evidence"]

    api.patch("n1", {"spec": {"podCIDR": "10.244.6.0/24", "podCIDRs": ["10.244.6.0/24"]}}, kind="merge")
    moved = doctor(m1.node, *kube)
    assert moved.failing() == ["lease"], moved
    assert moved["lease"]["evidence"] == "kube leases 10.244.6.0/24 to this node, subnet.env says 10.244.1.0/24"
