"""`flannel doctor` on what dead pods leave: the runtime lost a pod (its network namespace
went away, no CNI DEL ever came) -- its address stays held, flannel's saved config stays,
portmap's DNAT chain stays.  doctor must name each, and the GC command it prints must
release exactly those while the live pod keeps its address and its rules."""
from __future__ import annotations

import json

from tests.harness import drivers
from tests.integration.doctor_lab import doctor, make_cluster

PORTS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}


def test_pod_lost_without_del_leaks_address_config_and_chains_until_gc(make_node):
    c = make_cluster(make_node)
    m1 = c.members[0]
    n1 = m1.node
    ghost = n1.add_pod("ghost")
    drivers.libcni(n1, "add", "cbr0", ghost, cid="ghost-cid", capability_args=PORTS)
    keep = n1.add_pod("keep")
    kept = drivers.libcni(n1, "add", "cbr0", keep, cid="keep-cid",
                          capability_args={"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]})
    keep_ip = kept["ips"][0]["address"].split("/")[0]
    ghost.delete()  # the runtime lost it: no DEL

    r = doctor(n1)
    assert r.failing() == ["firewall-leftovers", "ipam", "saved-configs"], r
    [leak] = r["ipam"]["items"]
    assert leak.endswith("held by ghost-cid eth0")
    assert r["saved-configs"]["items"] == ["ghost-cid"]
    [chain] = r["firewall-leftovers"]["items"]
    assert chain.startswith("ipv4 nat CNI-DN-") and chain.endswith("(container ghost-cid)")
    fix = r["ipam"]["fix"]
    assert fix == r["saved-configs"]["fix"] == r["firewall-leftovers"]["fix"]
    command = fix[fix.index("echo "):]
    assert "CNI_COMMAND=GC" in command and '"containerID":"keep-cid"' in command and "ghost-cid" not in command

    n1.run(["sh", "-c", command])  # the operator runs the fix as printed
    after = doctor(n1)
    assert after.failing() == [], after.doc
    held = n1.run(["ls", "/var/lib/cni/networks/cbr0"]).stdout.split()
    assert keep_ip in held and leak.split()[0] not in held
    assert "8081" in n1.run(["iptables-save", "-t", "nat"]).stdout  # the live pod's mapping stays
    assert json.loads(n1.read_file("/var/lib/cni/flannel/keep-cid"))["type"] == "bridge"


def test_a_pod_doctor_cannot_see_makes_leaks_unknown_never_a_gc_command(make_node):
    """A runtime that pins pod namespaces where doctor does not look (here: a bind mount in the
    node's private /var/lib/cni, gone from /run/netns): the pod's veth is on cni0 but its
    namespace cannot be found, so no address may be called leaked -- a GC listing only the
    pods doctor saw would take that pod's address."""
    c = make_cluster(make_node)
    n1 = c.members[0].node
    hidden = n1.add_pod("hidden")
    drivers.libcni(n1, "add", "cbr0", hidden, cid="hidden-cid")
    n1.run(["sh", "-ec", f"mkdir -p /var/lib/cni/pinned; touch /var/lib/cni/pinned/ns; "
                         f"mount --bind {hidden.path} /var/lib/cni/pinned/ns"])
    hidden.delete()  # /run/netns loses it; the node's bind mount keeps the namespace and its veth alive
    assert len([l for l in n1.run(["ip", "-o", "link", "show", "master", "cni0"]).stdout.splitlines()]) == 2
    r = doctor(n1)
    assert r.failing() == [], r
    for check in ("ipam", "saved-configs", "firewall-leftovers"):
        assert r.status(check) == "unknown", r
        assert "1 of 2 pod network namespaces on cni0 could not be found" in r[check]["evidence"]
        assert r[check]["fix"] is None
