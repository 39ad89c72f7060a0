"""net/_linkparse (our reader of link replies, on every pod's path) against pyroute2's full
decode, on real links: a bridge (its VLAN filtering attribute), ports with hairpin/learning/isolated set, a
veth whose peer is in another namespace, a down veth with its own MTU and MAC, vxlan (left to
pyroute2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness.netns import run, temp_netns

REPO = Path(__file__).resolve().parents[2]

COMPARE = r"""
import dataclasses, json
from cni_flannel.net import _linkparse, _nl
from cni_flannel.net._links import _to_link
sock = _nl.Socket()
out = []
for chunk in sock.request(_nl.new("link"), _nl.RTM_GETLINK, dump=True, raw=True):
    ours = _linkparse.parse(chunk)
    theirs = _to_link(_nl.decode(chunk))
    out.append({"name": theirs.name, "ours": dataclasses.asdict(ours) if ours else None,
                "pyroute2": dataclasses.asdict(theirs)})
print(json.dumps(out))
"""


def test_link_reader_agrees_with_pyroute2() -> None:
    with temp_netns("lp") as ns, temp_netns("lp-peer") as peer:
        def ip(*args: str) -> None:
            run(["ip", "-n", ns, *args])

        ip("link", "add", "br0", "type", "bridge")  # (this kernel has no VLAN filtering to turn on)
        ip("link", "add", "v0", "type", "veth", "peer", "name", "v0p")
        ip("link", "set", "v0", "master", "br0", "up")
        ip("link", "set", "br0", "up")
        run(["ip", "-n", ns, "link", "set", "dev", "v0", "type", "bridge_slave", "hairpin", "on", "learning", "off",
             "isolated", "on"])
        ip("link", "add", "v1", "type", "veth", "peer", "name", "v1p", "netns", peer)
        ip("link", "add", "d0", "mtu", "1400", "address", "02:aa:bb:cc:dd:ee", "type", "veth", "peer", "name", "d0p")
        ip("link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "8472", "nolearning")
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", COMPARE], capture_output=True,
                              text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)
    links = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert set(links) == {"lo", "br0", "v0", "v0p", "v1", "d0", "d0p", "vx0"}
    assert links["vx0"]["ours"] is None  # vxlan: pyroute2 decodes it
    for name, entry in links.items():
        if name != "vx0":
            assert entry["ours"] == entry["pyroute2"], name
    # ... and the cases were the interesting ones
    assert links["v0"]["ours"]["port"] == {"hairpin": 1, "learning": 0, "isolated": 1}
    assert links["br0"]["ours"]["vlan_filtering"] is False and links["br0"]["ours"]["kind"] == "bridge"
    assert links["v1"]["ours"]["peer_netnsid"] is not None
    assert links["d0"]["ours"]["mtu"] == 1400 and links["d0"]["ours"]["mac"] == "02:aa:bb:cc:dd:ee"
    assert links["d0"]["ours"]["operstate"] == "DOWN" and links["v0"]["ours"]["master"] == links["br0"]["ours"]["index"]
