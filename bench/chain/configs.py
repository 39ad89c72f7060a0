"""The network configurations the bench installs, ours and Go's side by side.

Both sides get the same network names, bridge, subnet and options; the only
difference is that ours runs the seed conflist (flannel + portmap, flannel
building its bridge + host-local delegate from subnet.env) while Go's runs the
delegate flannel would build, spelled out (Go flannel is not packaged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parents[2]
SEED_CONFLIST = REPO / "conflists" / "10-flannel.conflist"

NETWORK = "10.244.0.0/16"
SUBNET = "10.244.1.0/24"
MTU = 1450  # vxlan over a 1500 underlay, what flanneld writes
SUBNET_ENV = (f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET=10.244.1.1/24\n"
              f"FLANNEL_MTU={MTU}\nFLANNEL_IPMASQ=true\n")

# Network names used with cnitool-libcni (the "name" in each conflist).
LOOPBACK, BRIDGE, SEED = "lo", "brnet", "cbr0"
VERSION = "1.0.0"  # Debian's libcni 1.1.2 speaks up to 1.0.0


def loopback() -> Dict:
    return {"cniVersion": VERSION, "name": LOOPBACK, "plugins": [{"type": "loopback"}]}


def bridge_host_local() -> Dict:
    """Plain bridge + host-local (item 3): same file on both nodes, its own bridge and subnet."""
    return {"cniVersion": VERSION, "name": BRIDGE, "plugins": [{
        "type": "bridge", "bridge": "cni1", "isGateway": True, "ipMasq": False, "mtu": MTU,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.1.0/24"}]],
                 "routes": [{"dst": "10.245.0.0/16"}]}}]}


def seed_delegate() -> Dict:
    """The bridge config our flannel builds from SUBNET_ENV and the seed conflist's delegate
    (ipMasq = not FLANNEL_IPMASQ, mtu = FLANNEL_MTU, isGateway, routes to the network)."""
    seed = json.loads(SEED_CONFLIST.read_text())
    delegate = dict(seed["plugins"][0].get("delegate", {}))
    delegate.update({"type": "bridge", "name": seed["name"], "ipMasq": False, "mtu": MTU, "isGateway": True,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                              "routes": [{"dst": NETWORK}]}})
    return delegate


def seed_ours() -> Dict:
    seed = json.loads(SEED_CONFLIST.read_text())
    seed.pop("cniVersions", None)  # libcni 1.1.2 ignores it; keep the file what it reads
    seed["cniVersion"] = VERSION
    return seed


def seed_go() -> Dict:
    """Go side of the seed chain: bridge (+ host-local) as flannel's delegate, then portmap."""
    ours = seed_ours()
    bridge = {k: v for k, v in seed_delegate().items() if k != "name"}
    return {"cniVersion": VERSION, "name": ours["name"], "plugins": [bridge, ours["plugins"][1]]}


def port_mapping(index: int) -> Dict:
    """The capability args for one pod: one TCP mapping, a distinct host port per pod."""
    return {"portMappings": [{"hostPort": 30000 + index, "containerPort": 80, "protocol": "tcp"}]}


def files(side: str) -> Dict[str, str]:
    """{path in the node: content} of every network configuration for side ('ours' or 'go')."""
    seed = seed_ours() if side == "ours" else seed_go()
    out = {
        "/etc/cni/net.d/10-flannel.conflist": seed,
        "/etc/cni/net.d/20-brnet.conflist": bridge_host_local(),
        "/etc/cni/net.d/99-loopback.conflist": loopback(),
    }
    text = {path: json.dumps(conf, indent=1) + "\n" for path, conf in out.items()}
    if side == "ours":
        text["/run/flannel/subnet.env"] = SUBNET_ENV
    return text
