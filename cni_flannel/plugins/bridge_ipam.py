"""bridge's IPAM: host-local in-process, any other type exec'd through CNI_PATH."""

from __future__ import annotations

from typing import List, Optional, Tuple

from cni_flannel.cni.request import Request
from cni_flannel.cni.result import Result
from cni_flannel.plugins.bridge_config import BridgeConfig

IN_PROCESS = "host-local"


def validate(conf: BridgeConfig, req: Request) -> None:
    """Refuse a bad in-process host-local section, or an exec'd IPAM plugin missing from
    CNI_PATH, before ADD changes anything."""
    if conf.ipam_type != IN_PROCESS:
        from cni_flannel.cni.delegate import find_plugin

        find_plugin(conf.ipam_type, req.path)
        return
    from cni_flannel.ipam.config import parse_ipam

    c = req.config
    parse_ipam(conf.ipam, conf.network, c.cni_version, cni_args=req.args,
               runtime_config=c.runtime_config, conf_args=c.args)


def allocate(conf: BridgeConfig, req: Request) -> Result:
    if conf.ipam_type == IN_PROCESS:
        from cni_flannel.ipam import host_local

        c = req.config
        return host_local.allocate(conf.ipam, conf.network, req.container_id, req.ifname,
                                   cni_args=req.args, cni_version=c.cni_version,
                                   runtime_config=c.runtime_config, conf_args=c.args)
    from cni_flannel.cni.delegate import invoke

    return Result.from_dict(invoke(conf.ipam_type, "ADD", req.config.raw, req))


def release(conf: BridgeConfig, req: Request) -> None:
    if conf.ipam_type == IN_PROCESS:
        from cni_flannel.ipam import host_local

        host_local.release(conf.ipam, conf.network, req.container_id, req.ifname)
        return
    from cni_flannel.cni.delegate import invoke

    invoke(conf.ipam_type, "DEL", req.config.raw, req)


def check(conf: BridgeConfig, req: Request) -> None:
    if conf.ipam_type == IN_PROCESS:
        from cni_flannel.ipam import host_local

        host_local.check(conf.ipam, conf.network, req.container_id, req.ifname)
        return
    from cni_flannel.cni.delegate import invoke

    invoke(conf.ipam_type, "CHECK", req.config.raw, req)


def status(conf: BridgeConfig, req: Request) -> None:
    if conf.ipam_type == IN_PROCESS:
        from cni_flannel.ipam import host_local

        host_local.status(conf.ipam, conf.network, req.config.cni_version)
        return
    from cni_flannel.cni.delegate import invoke

    invoke(conf.ipam_type, "STATUS", req.config.raw, req)


def gc(conf: BridgeConfig, req: Request, valid: Optional[List[Tuple[str, str]]]) -> None:
    if conf.ipam_type == IN_PROCESS:
        from cni_flannel.ipam import host_local

        host_local.gc(conf.ipam, conf.network, valid)
        return
    from cni_flannel.cni.delegate import invoke

    invoke(conf.ipam_type, "GC", req.config.raw, req)
