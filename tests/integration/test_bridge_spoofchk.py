"""bridge macspoofchk in node + pod namespaces: the nftables rules upstream's
spoofcheck writes (table ``bridge cni_spoofcheck``), pods with their own MAC
talk, a pod that changes its MAC is cut off (and is not without macspoofchk),
CHECK, DEL (also without a netns, repeated), rollback, GC, and the Go 1.1.1
bridge's go-nft layout (``bridge nat``) side by side."""
from __future__ import annotations

import json
import re
from typing import List

import pytest

from tests.harness.exec import run_plugin
from tests.harness.plugins import reference_dir
from tests.harness.state import nft_table
from tests.integration.test_bridge import add, conf, ip_files, links, vethes

SPOOF = "02:42:de:ad:be:ef"


def sconf(**over) -> dict:
    return conf(macspoofchk=True, **over)


def table(node, name: str = "cni_spoofcheck") -> str:
    return nft_table(node, "bridge", name)


def pod_rules(node, name: str = "cni_spoofcheck") -> List[str]:
    """Every line naming a per-attachment chain or carrying a spoof-check comment."""
    return [l.strip() for l in table(node, name).splitlines()
            if "cni-br-iface-" in l or "macspoofchk-" in l]


def mac_of(p, ifname: str = "eth0") -> str:
    return [l for l in links(p) if l["ifname"] == ifname][0]["address"]


def ip_of(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


def spoof(p, mac: str = SPOOF) -> None:
    p.run(["ip", "link", "set", "eth0", "address", mac])


def flush_neighbours(*pods) -> None:
    # make the next packet start with ARP from the (possibly new) MAC
    for p in pods:
        p.run(["ip", "neigh", "flush", "all"])


def test_add_installs_upstream_rules_and_pods_talk(node, pod):
    p1, p2 = pod(), pod()
    r1, r2 = add(node, p1, sconf()), add(node, p2, sconf())
    assert r1.rc == 0 and r2.rc == 0, (r1, r2)
    text = table(node)
    assert "type filter hook prerouting priority dstnat; policy accept;" in text, text  # -300
    for p, r in ((p1, r1), (p2, r2)):
        ref, veth = f"{p.name}-eth0", r.json["interfaces"][1]["name"]
        mac = mac_of(p)
        assert mac == r.json["interfaces"][2]["mac"]
        c = f'comment "macspoofchk-{ref}"'
        expected = [f'iifname "{veth}" jump cni-br-iface-{ref} {c}',
                    f"chain cni-br-iface-{ref} {{", f"jump cni-br-iface-{ref}-mac {c}",
                    f"chain cni-br-iface-{ref}-mac {{", f"ether saddr {mac} return {c}", f"drop {c}"]
        rules = pod_rules(node)
        for line in expected:
            assert line in rules, (line, text)
    assert len(pod_rules(node)) == 12
    assert p1.ping(ip_of(r2.json)) and p2.ping(ip_of(r1.json))
    assert p1.ping("10.244.1.1")


@pytest.mark.parametrize("spoofchk", [True, False], ids=["macspoofchk", "without"])
def test_pod_with_another_mac_is_cut_off(node, pod, spoofchk):
    p1, p2 = pod(), pod()
    c = conf(macspoofchk=spoofchk)
    r1, r2 = add(node, p1, c), add(node, p2, c)
    assert r1.rc == 0 and r2.rc == 0, (r1, r2)
    assert p1.ping(ip_of(r2.json))
    spoof(p1)
    assert mac_of(p1) == SPOOF
    flush_neighbours(p1, p2)
    # without macspoofchk the same change still passes traffic: the check is what stops it
    assert p1.ping(ip_of(r2.json)) is (not spoofchk)
    assert p1.ping("10.244.1.1") is (not spoofchk)
    spoof(p1, r1.json["interfaces"][2]["mac"])  # its own MAC again: back in
    flush_neighbours(p1, p2)
    assert p1.ping(ip_of(r2.json))


def test_check_passes_then_fails_without_the_drop_rule(node, pod):
    p = pod()
    r = add(node, p, sconf())
    assert r.rc == 0, r
    c = dict(sconf(), prevResult=r.json)
    chk = run_plugin("bridge", "CHECK", c, netns=p.path, node=node, container_id=p.name)
    assert chk.rc == 0, chk
    listed = node.run(["nft", "-a", "list", "chain", "bridge", "cni_spoofcheck",
                       f"cni-br-iface-{p.name}-eth0-mac"]).stdout
    handle = re.search(r"\bdrop comment .* # handle (\d+)", listed).group(1)
    node.run(["nft", "delete", "rule", "bridge", "cni_spoofcheck", f"cni-br-iface-{p.name}-eth0-mac",
              "handle", handle])
    chk = run_plugin("bridge", "CHECK", c, netns=p.path, node=node, container_id=p.name)
    assert chk.rc == 1 and "spoof-check rules" in chk.json["msg"], chk
    assert "drop" in chk.json["details"], chk


def test_check_fails_without_the_jump(node, pod):
    p = pod()
    r = add(node, p, sconf())
    assert r.rc == 0, r
    listed = node.run(["nft", "-a", "list", "chain", "bridge", "cni_spoofcheck", "prerouting"]).stdout
    handle = re.search(r"jump cni-br-iface-.* # handle (\d+)", listed).group(1)
    node.run(["nft", "delete", "rule", "bridge", "cni_spoofcheck", "prerouting", "handle", handle])
    chk = run_plugin("bridge", "CHECK", dict(sconf(), prevResult=r.json), netns=p.path, node=node,
                     container_id=p.name)
    assert chk.rc == 1 and "spoof-check" in chk.json["msg"], chk


@pytest.mark.parametrize("how", ["netns", "empty", "deleted"])
def test_del_removes_everything_and_repeats(node, pod, how):
    keep, p = pod(), pod()
    assert add(node, keep, sconf()).rc == 0
    theirs = pod_rules(node)
    r = add(node, p, sconf())
    assert r.rc == 0, r
    assert len(pod_rules(node)) == 12
    netns = p.netns_for_del(how)
    for _ in range(2):
        d = run_plugin("bridge", "DEL", sconf(), netns=netns, node=node, container_id=p.name)
        assert d.rc == 0 and d.stdout == "", d
        assert pod_rules(node) == theirs  # only the other pod's rules are left
        assert p.name not in table(node)
    assert "chain prerouting" in table(node)  # shared, stays (as upstream)
    assert keep.ping("10.244.1.1")


@pytest.mark.parametrize("step", ["bridge.spoofchk", "bridge.ipam", "bridge.masq", "bridge.done"])
def test_injected_failure_leaves_no_rules(node, pod, step):
    p = pod()
    before = vethes(node)
    r = add(node, p, sconf(), env_extra={"CNI_FLANNEL_FAIL_AT": step})
    assert r.rc == 1 and r.json["code"] == 190, r
    assert pod_rules(node) == []
    assert vethes(node) == before and ip_files(node) == []
    assert "eth0" not in [l["ifname"] for l in links(p)]


def test_sigkill_after_the_rules_then_runtime_del(node, pod):
    p = pod()
    r = add(node, p, sconf(), env_extra={"CNI_FLANNEL_CRASH_AT": "bridge.spoofchk"})
    assert r.killed, r
    assert pod_rules(node)  # the kill left them
    d = run_plugin("bridge", "DEL", sconf(), netns=p.path, node=node, container_id=p.name)
    assert d.rc == 0, d
    assert pod_rules(node) == []


def test_bad_ifname_is_refused_before_any_change(node, pod):
    p = pod()
    before = vethes(node)
    r = add(node, p, sconf(), ifname="eth@1")
    assert r.rc == 1 and r.json["code"] == 7 and "macspoofchk" in r.json["msg"], r
    assert vethes(node) == before and table(node) == "" and ip_files(node) == []


def test_gc_removes_rules_of_unlisted_attachments_of_this_bridge(node, pod):
    c = dict(sconf(), cniVersion="1.1.0")
    pods = [pod() for _ in range(3)]
    for p in pods[:2]:
        assert add(node, p, c).rc == 0
    # a pod of another bridge network: its veth is alive on cni1, so not ours to judge
    other = dict(c, name="othernet", bridge="cni1",
                 ipam={"type": "host-local", "ranges": [[{"subnet": "10.244.9.0/24"}]]})
    assert add(node, pods[2], other).rc == 0
    # a stale set whose veth is gone (e.g. left by a kill and a lost DEL)
    assert run_plugin("bridge", "ADD", c, netns=pods[0].path, node=node, container_id="ghost",
                      ifname="net9").rc == 0
    ghost_veth = [l for l in pod_rules(node) if "macspoofchk-ghost-net9" in l and "iifname" in l]
    assert ghost_veth
    node.run(["ip", "link", "del", re.search(r'iifname "(\S+)"', ghost_veth[0]).group(1)])
    gc = dict(c, **{"cni.dev/valid-attachments": [{"containerID": pods[0].name, "ifname": "eth0"}]})
    r = run_plugin("bridge", "GC", gc, netns=None, ifname=None, container_id=None, node=node)
    assert r.rc == 0, r
    text = table(node)
    assert f"macspoofchk-{pods[0].name}-eth0" in text
    assert f"macspoofchk-{pods[2].name}-eth0" in text  # other bridge's pod spared
    assert f"{pods[1].name}-eth0" not in text and "ghost-net9" not in text
    assert pods[0].ping("10.244.1.1")


def _normalise(lines: List[str], pod_mac: str) -> List[str]:
    out = []
    for line in lines:
        line = re.sub(r'iifname "veth[0-9a-f]{8}"', 'iifname "VETH"', line)
        out.append(line.replace(pod_mac, "MAC"))
    return out


def test_same_rules_as_go_bridge_and_del_cleans_its_layout(make_node, pod):
    """Debian's Go bridge 1.1.1 writes upstream's older go-nft layout (table
    bridge nat, base chain PREROUTING): the same per-attachment chains, rules
    and comments as ours; and our DEL removes them (a node moving over)."""
    ref_bridge = str(reference_dir() / "bridge")
    ours_node, ref_node = make_node("ours"), make_node("ref")
    ours_pod, ref_pod = pod(node=ours_node), pod(node=ref_node)
    c = sconf(ipMasq=False)
    ours = run_plugin("bridge", "ADD", c, netns=ours_pod.path, node=ours_node, container_id="c1")
    ref = run_plugin(ref_bridge, "ADD", c, netns=ref_pod.path, node=ref_node, container_id="c1",
                     cni_path=str(reference_dir()))
    assert ours.rc == 0, ours
    assert ref.rc == 0, ref
    ref_text = table(ref_node, "nat")
    assert "chain PREROUTING" in ref_text and "priority dstnat" in ref_text, ref_text
    ours_rules = _normalise(pod_rules(ours_node), mac_of(ours_pod))
    ref_rules = _normalise(pod_rules(ref_node, "nat"), mac_of(ref_pod))
    assert ours_rules == ref_rules and len(ours_rules) == 6, (ours_rules, ref_rules)
    # our DEL on the Go plugin's attachment leaves none of its spoof-check rules
    d = run_plugin("bridge", "DEL", c, netns=ref_pod.path, node=ref_node, container_id="c1")
    assert d.rc == 0, d
    assert pod_rules(ref_node, "nat") == [], table(ref_node, "nat")
    assert "chain PREROUTING" in table(ref_node, "nat")
    assert json.loads(ref_node.run(["ip", "-j", "link", "show", "cni0"]).stdout)
