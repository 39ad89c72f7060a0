"""The udp backend inside the frozen flanneld (etcd mode) on three namespace nodes: upstream's
lease bytes, flannel0, pods everywhere reaching each other, a transfer, /metrics, repair of a
deleted flannel0, and a SIGKILLed daemon's restart bringing traffic back by itself."""
from __future__ import annotations

import signal

from tests.harness import drivers
from tests.harness.etcd import etcd_factory  # noqa: F401 - fixture
from tests.harness.state import link
from tests.integration.flannel_node import flannel_node
from tests.integration.flanneld_lab import EtcdNode, Flanneld, http_get, subnet_env, wait_until
from tests.integration.udp_helpers import MTU, transfer

NO_BACKEND_CONF = '{"Network": "10.244.0.0/16"}'  # flannel's default backend is udp


def flannel0(node):
    return link(node, "flannel0")  # None only when it does not exist


def test_udp_daemon_three_nodes_metrics_repair_and_restart(make_node, etcd_factory):
    etcd = EtcdNode(make_node, etcd_factory, conf=NO_BACKEND_CONF)
    nodes = [flannel_node(make_node(f"n{i}", underlay=True), subnet_env=None) for i in range(1, 4)]
    # n3 runs the plain path (FLANNELD_UDP_OFFLOAD=0): a node without our offloads in the mix
    daemons = [Flanneld(n, etcd.endpoint, env=["FLANNELD_UDP_OFFLOAD=0"] if n is nodes[2] else []).start()
               for n in nodes]
    for d in daemons:
        d.ready()
    leases = etcd.leases()
    assert len(leases) == 3
    for n in nodes:
        env = subnet_env(n)
        assert env["FLANNEL_MTU"] == str(MTU)
        key = env["FLANNEL_SUBNET"].rsplit(".", 1)[0] + ".0-24"
        # byte for byte what upstream's udp backend writes (PublicIP only); the offload path
        # adds BackendData PartialChecksums, which upstream ignores for udp
        extra = ',"BackendData":{"PartialChecksums":true}' if n is not nodes[2] else ""
        assert leases[key]["value"] == '{"PublicIP":"%s","PublicIPv6":null%s}' % (n.underlay_ip, extra)
        link = flannel0(n)
        assert link and link["mtu"] == MTU and link["linkinfo"]["info_kind"] == "tun", link
    pods = []
    for n in nodes:
        pod = n.add_pod("p1")
        pods.append((pod, drivers.libcni(n, "add", "cbr0", pod, cid=f"{n.name}-p1")["ips"][0]["address"].split("/")[0]))
    for pa, _ in pods:
        for pb, ip in pods:
            if pa is not pb:
                out = pa.run(["ping", "-c", "1", "-W", "2", ip], check=False).stdout
                assert "ttl=60" in out, out  # two kernels and two forwarders decrement it
    transfer(pods[0][0], pods[1][0], pods[1][1], 16 << 20)
    transfer(pods[0][0], pods[2][0], pods[2][1], 4 << 20, port=5002)  # to the plain node: full checksums

    def metric(name: str) -> float:
        code, text = http_get(nodes[0], "/metrics")
        assert code == 200, text
        got = [line for line in text.splitlines() if line.startswith(name + '{direction="tun_to_udp"}')]
        assert got, text
        return float(got[0].split()[-1])
    assert metric("flannel_udp_packets_total") > (20 << 20) / MTU
    # n2's lease says PartialChecksums: the stream to it was cut with partial sums
    assert metric("flannel_udp_partial_checksum_packets_total") > (16 << 20) / MTU / 2
    # flannel0 deleted under the running daemon: back within a resync, traffic flows again.
    n1 = nodes[0]
    old = flannel0(n1)["ifindex"]
    n1.run(["ip", "link", "del", "flannel0"])
    wait_until(lambda: (flannel0(n1) or {}).get("ifindex", old) != old, 10, "flannel0 recreated")
    wait_until(lambda: pods[0][0].ping(pods[2][1]), 10, "traffic over the new flannel0")
    # SIGKILL: flannel0 goes with the process; the restarted daemon makes it again, by itself.
    daemons[1].signal(signal.SIGKILL)
    daemons[1].wait()
    assert flannel0(nodes[1]) is None
    assert not pods[0][0].ping(pods[1][1], timeout=1)
    daemons[1].start().ready()
    wait_until(lambda: pods[0][0].ping(pods[1][1]) and pods[1][0].ping(pods[2][1]), 10, "traffic after the restart")
    assert "Traceback" not in "".join(d.log() for d in daemons)


def test_udp_daemon_kube_mode_as_the_daemonset(lab, make_node):
    from tests.integration.kube_cluster import KubeCluster, ping_ttl
    from tests.integration.kube_cluster import subnet_env as kube_env
    cidrs = {"n1": ["10.244.0.0/24"], "n2": ["10.244.1.0/24"], "n3": ["10.244.2.0/24"]}
    c = KubeCluster(lab, make_node, list(cidrs), cidrs,
                    net_conf='{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}')
    for name in c.nodes:
        c.start(name)
    for name in c.nodes:
        c.wait_ready(name)
    pods = {}
    for name, node in c.nodes.items():
        assert kube_env(node)["FLANNEL_MTU"] == str(MTU)
        # upstream's udp node annotations: no backend type, null backend data
        assert c.annotations(name) == {"backend-type": "", "backend-data": '{"PartialChecksums":true}',
                                       "kube-subnet-manager": "true", "public-ip": node.underlay_ip}
        pod = node.add_pod("p1")
        pods[name] = (pod, drivers.libcni(node, "add", "cbr0", pod, cid=f"{name}-p1")["ips"][0]["address"].split("/")[0])
    for a, (pa, _) in pods.items():
        for b, (_, ip) in pods.items():
            if a != b:
                wait_until(lambda pa=pa, ip=ip: ping_ttl(pa, ip) == 60, 10, f"{a} -> {b} ({ip}) over udp")
