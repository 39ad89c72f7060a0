"""The delegate configuration flannel hands to bridge (flannel-io/cni-plugin, flannel_linux.go).

From the flannel config and subnet.env it builds, exactly as the reference:

    type        delegate.type, default "bridge"
    name        the network name (the delegate may not set it)
    cniVersion  the flannel config's cniVersion, when it has one
    ipMasq      delegate.ipMasq, default NOT FLANNEL_IPMASQ (flanneld masquerades, or the bridge does)
    mtu         delegate.mtu, default FLANNEL_MTU
    isGateway   delegate.isGateway, default true (bridge only)
    runtimeConfig  passed through
    ipam        the flannel config's ipam (type default host-local) with
                ranges = [[{subnet: v4}], [{subnet: v6}]] and
                routes = ipam.routes + one {dst: network} per FLANNEL_*NETWORK entry

and serialises it with sorted keys, as Go's encoding/json does for maps, so the
saved file is byte-for-byte the reference's.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict

from ..cni.errors import InvalidConfig
from .subnet_env import SubnetEnv

FLANNEL_KEYS = ("subnetFile", "dataDir", "delegate", "ipam", "runtimeConfig")


def validate_delegate(delegate: Any) -> Dict[str, Any]:
    if delegate is None:
        return {}
    if not isinstance(delegate, dict):
        raise InvalidConfig("'delegate' must be a JSON object")
    if "type" in delegate and not isinstance(delegate["type"], str):
        raise InvalidConfig("'delegate' dictionary, if present, must have (string) 'type' field")
    if "name" in delegate:
        raise InvalidConfig("'delegate' dictionary must not have 'name' field, it'll be set by flannel")
    if "ipam" in delegate:
        raise InvalidConfig("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel")
    return delegate


def build(flannel_conf: Dict[str, Any], env: SubnetEnv) -> Dict[str, Any]:
    """The delegate config for ``flannel_conf`` (the raw stdin JSON) and ``env``."""
    delegate = copy.deepcopy(validate_delegate(flannel_conf.get("delegate")))
    delegate["name"] = flannel_conf["name"]
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    if flannel_conf.get("cniVersion"):
        delegate["cniVersion"] = flannel_conf["cniVersion"]
    if flannel_conf.get("runtimeConfig") is not None:
        delegate["runtimeConfig"] = flannel_conf["runtimeConfig"]
    delegate["ipam"] = _ipam(flannel_conf.get("ipam"), env)
    return delegate


def _ipam(ipam: Any, env: SubnetEnv) -> Dict[str, Any]:
    if ipam is None:
        ipam = {}
    if not isinstance(ipam, dict):
        raise InvalidConfig("'ipam' must be a JSON object")
    ipam = copy.deepcopy(ipam)
    ipam.setdefault("type", "host-local")
    ipam["ranges"] = [[{"subnet": str(sub)}] for sub in env.subnets]
    routes = ipam.get("routes") or []
    if not isinstance(routes, list) or not all(isinstance(r, dict) and "dst" in r for r in routes):
        raise InvalidConfig("'ipam.routes' must be a list of {\"dst\": CIDR, \"gw\": IP} objects")
    ipam["routes"] = list(routes) + [{"dst": str(net)} for net in env.networks]
    return ipam


def dumps(conf: Dict[str, Any]) -> bytes:
    """Go's json.Marshal of a map: sorted keys, no spaces."""
    return json.dumps(conf, sort_keys=True, separators=(",", ":")).encode()
