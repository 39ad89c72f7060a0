"""The flannel meta-plugin (flannel-io/cni-plugin), CNI 1.1.

ADD     read subnet.env, build the delegate config (bridge + host-local by
        default), save it to <dataDir>/<containerID>, run the delegate's ADD
        and return its result.  A failed ADD undoes itself (delegate DEL) and
        removes the saved config.  subnet.env not there yet -> code 11.
DEL     run the delegate's DEL with the saved config and remove the file only
        when that succeeded (the reference removes it anyway and leaks the IP);
        with no saved config, rebuild it from subnet.env and still release.
CHECK   the delegate's CHECK with the saved config (the reference does nothing).
STATUS  not ready (50) without a usable subnet.env; else the delegate's STATUS.
GC      the delegate's GC with the runtime's keep-list, then drop the saved
        configs of containers not in it.

The bridge delegate runs in this process — one exec per pod instead of three;
any other delegate type is exec'd from CNI_PATH as the reference does.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any, Dict, Optional

from ..cni import crashpoint
from ..cni.config import parse_netconf
from ..cni.errors import CNIError, InvalidConfig, NotAvailable, UnknownContainer
from ..cni.log import logger
from ..cni.request import Request
from ..cni.result import Result
from ..flannel import delegate_conf, saved_conf, subnet_env

IN_PROCESS = {"bridge"}
_HANDLERS = {"ADD": "add", "DEL": "delete", "CHECK": "check", "STATUS": "status", "GC": "gc"}


def _setting(req: Request, key: str, default: str) -> str:
    value = req.config.raw.get(key) or default
    if not isinstance(value, str) or not os.path.isabs(value):
        raise InvalidConfig(f"{key} must be an absolute path, got {value!r}")
    return value


def _subnet_file(req: Request) -> str:
    return _setting(req, "subnetFile", subnet_env.DEFAULT_PATH)


def _data_dir(req: Request) -> str:
    return _setting(req, "dataDir", saved_conf.DEFAULT_DIR)


def _run_delegate(req: Request, command: str, conf: Dict[str, Any]) -> Optional[Result]:
    """Run the delegate in-process when we implement it, else exec it from CNI_PATH."""
    data = delegate_conf.dumps(conf)
    if conf["type"] in IN_PROCESS and os.environ.get("CNI_FLANNEL_DELEGATE_EXEC") != "1":
        import importlib

        plugin = importlib.import_module(f"cni_flannel.plugins.{conf['type']}")
        sub = replace(req, command=command, stdin=data, config=parse_netconf(data))
        return getattr(plugin, _HANDLERS[command])(sub)
    from ..cni.delegate import invoke

    out = invoke(conf["type"], command, conf, req)
    return Result.from_dict(out) if command == "ADD" and out is not None else None


def add(req: Request) -> Result:
    delegate_conf.validate_delegate(req.config.raw.get("delegate"))
    data_dir = _data_dir(req)
    env = subnet_env.load(_subnet_file(req))
    conf = delegate_conf.build(req.config.raw, env)
    _prevalidate(req, conf)
    saved_conf.save(data_dir, req.container_id, delegate_conf.dumps(conf))
    crashpoint.reached("flannel.saved")
    try:
        result = _run_delegate(req, "ADD", conf)
    except CNIError as err:
        _undo_add(req, conf, data_dir)
        raise _explain(err, env) from None
    assert result is not None
    return result


def _prevalidate(req: Request, conf: Dict[str, Any]) -> None:
    """Refuse a delegate config that can never work before anything is saved or changed:
    a saved config its own DEL cannot parse would make every later DEL fail."""
    if conf["type"] in IN_PROCESS and os.environ.get("CNI_FLANNEL_DELEGATE_EXEC") != "1":
        import importlib

        plugin = importlib.import_module(f"cni_flannel.plugins.{conf['type']}")
        validate = getattr(plugin, "validate", None)
        if validate is not None:
            validate(replace(req, stdin=delegate_conf.dumps(conf), config=parse_netconf(delegate_conf.dumps(conf))))
        return
    from ..cni.delegate import find_plugin

    find_plugin(conf["type"], req.path)


def _undo_add(req: Request, conf: Dict[str, Any], data_dir: str) -> None:
    try:
        _run_delegate(req, "DEL", conf)
    except CNIError as err:  # keep the saved config: the runtime's DEL will retry with it
        logger().warning("flannel: rollback of failed ADD for %s incomplete: %s", req.container_id, err)
        return
    saved_conf.remove(data_dir, req.container_id)


def _explain(err: CNIError, env: subnet_env.SubnetEnv) -> CNIError:
    """The bridge refuses an old address on cni0 after the node's subnet changed; say why and what to do."""
    if "already has an IP address different from" in err.msg:
        subnets = ", ".join(str(s) for s in env.subnets)
        err.details = (
            f"the bridge still carries an address from an earlier flannel subnet; this node's subnet is now "
            f"{subnets}. Drain the node, delete the bridge (ip link delete cni0) and let pods be recreated"
        )
    return err


def delete(req: Request) -> None:
    data_dir = _data_dir(req)
    conf = _saved(data_dir, req.container_id)
    if conf is None:
        conf = _rebuilt(req)
    _run_delegate(req, "DEL", conf)
    saved_conf.remove(data_dir, req.container_id)


def _saved(data_dir: str, container_id: str) -> Optional[Dict[str, Any]]:
    data = saved_conf.load(data_dir, container_id)
    if data is None:
        return None
    try:
        conf = json.loads(data)
        if isinstance(conf, dict) and isinstance(conf.get("type"), str):
            return conf
    except ValueError:
        pass
    logger().warning("flannel: saved config for %s is unreadable; rebuilding it", container_id)
    return None


def _rebuilt(req: Request) -> Dict[str, Any]:
    """No saved config (lost, or ADD never got that far): rebuild it so IPAM
    and the interface are still released.  Without subnet.env the ranges are
    unknown, but host-local releases by container ID alone."""
    try:
        env = subnet_env.load(_subnet_file(req))
    except CNIError:
        env = subnet_env.SubnetEnv()
    return delegate_conf.build(req.config.raw, env)


def check(req: Request) -> None:
    conf = _saved(_data_dir(req), req.container_id)
    if conf is None:
        raise UnknownContainer(f"flannel: no saved config for container {req.container_id}", "was ADD run for it?")
    prev = req.config.raw.get("prevResult")
    if prev is not None:
        conf = dict(conf, prevResult=prev)
    _run_delegate(req, "CHECK", conf)


def status(req: Request) -> None:
    try:
        env = subnet_env.load(_subnet_file(req))
    except CNIError as err:
        raise NotAvailable(f"flannel is not ready: {err.msg}", err.details) from None
    _run_delegate(req, "STATUS", delegate_conf.build(req.config.raw, env))


def gc(req: Request) -> None:
    keep = req.valid_attachments
    data_dir = _data_dir(req)
    conf = delegate_conf.build(req.config.raw, _env_or_empty(req))
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in req.config.raw:
            conf[key] = req.config.raw[key]
    _run_delegate(req, "GC", conf)
    if keep is None:
        return
    live = {cid for cid, _ in keep}
    for cid in saved_conf.container_ids(data_dir, interrupted=True):
        if cid not in live:
            saved_conf.remove(data_dir, cid)


def _env_or_empty(req: Request) -> subnet_env.SubnetEnv:
    try:
        return subnet_env.load(_subnet_file(req))
    except CNIError:
        return subnet_env.SubnetEnv()
