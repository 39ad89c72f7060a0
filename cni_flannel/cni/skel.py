"""The dispatcher every plugin runs through (the role of Go's pkg/skel).

It owns the protocol: read CNI_* env and stdin, answer VERSION without
loading the plugin, gate commands by config version, refuse a CNI_NETNS that
is our own namespace, call the plugin, and print exactly one JSON document —
the result or the error — on stdout.  Nothing else is ever printed there.
"""

from __future__ import annotations

import os
import sys
from . import version as cniversion
from .errors import CNIError, InternalError, InvalidEnvironment, InvalidNetNS

TYPE_CHECKING = False  # VERSION must not pay for typing/dataclasses: config and request load lazily
if TYPE_CHECKING:
    from typing import Any, Dict, Mapping, NoReturn, Optional, Tuple

    from .request import Env

#: plugin name (argv[0]) -> module in cni_flannel.plugins
PLUGINS = {
    "flannel": "flannel",
    "bridge": "bridge",
    "host-local": "host_local",
    "portmap": "portmap",
    "loopback": "loopback",
}

_HANDLERS = {"ADD": "add", "DEL": "delete", "CHECK": "check", "STATUS": "status", "GC": "gc"}


def main(plugin: str) -> NoReturn:
    stdin = _read_stdin()
    reply = None
    if os.environ.get("CNI_COMMAND") in _HANDLERS:
        from .handoff import try_handoff  # the resident agent, when one runs, saves us the imports

        reply = try_handoff(plugin, os.environ, stdin)
    if reply is not None:  # the agent's exact bytes
        code, out = reply
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
        sys.exit(code)
    code, text = render(*run(plugin, os.environ, stdin))
    if text is not None:
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.exit(code)


def render(code: int, out: "Optional[Dict[str, Any]]") -> "Tuple[int, Optional[str]]":
    """What goes to stdout for a run() outcome: the one JSON document, or nothing."""
    import json

    return code, (json.dumps(out) if out is not None else None)


def run(plugin: str, environ: Mapping[str, str], stdin: bytes) -> Tuple[int, Optional[Dict[str, Any]]]:
    """One invocation, as data: (exit code, JSON to print or None)."""
    reply_version = cniversion.CURRENT
    try:
        if environ.get("CNI_COMMAND") == "VERSION":
            return 0, cniversion.version_info(_asked_version(stdin))
        from .config import parse_netconf
        from .request import Request, parse_env

        env = parse_env(environ)
        config = parse_netconf(stdin)
        reply_version = config.cni_version
        cniversion.require_allows(config.cni_version, env.command)
        module = _load(plugin)
        _check_netns(env, environ, enters=getattr(module, "ENTERS_NETNS", True))
        request = Request.build(env, stdin, config)
        handler = getattr(module, _HANDLERS[env.command])
        result = handler(request)
        if env.command == "ADD":
            return 0, result.to_dict(config.cni_version)
        return 0, None
    except CNIError as err:
        _log_error(plugin, err, internal=False)
        return 1, err.to_dict(reply_version)
    except Exception as exc:  # a bug: report it as the spec's internal error, keep the traceback in the log
        _log_error(plugin, exc, internal=True)
        err = InternalError(f"internal error in {plugin}: {type(exc).__name__}: {exc}", "see the plugin log for the traceback")
        return 1, err.to_dict(reply_version)


def _read_stdin() -> bytes:
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return b""
        return sys.stdin.buffer.read()
    except (OSError, ValueError):
        return b""


def _asked_version(stdin: bytes) -> str:
    """VERSION never fails: a missing or broken stdin just means "current"."""
    import json

    try:
        asked = json.loads(stdin).get("cniVersion") or cniversion.DEFAULT
        return asked if isinstance(asked, str) else cniversion.CURRENT
    except Exception:
        return cniversion.CURRENT


def _check_netns(env: Env, environ: Mapping[str, str], enters: bool = True) -> None:
    """ADD and CHECK need an existing namespace that is not our own (code 8).

    A plugin that never enters the namespace (``ENTERS_NETNS = False``: host-local) is
    let through with a path it cannot open or that is no namespace, as upstream's skel
    does (pkg/ns CheckNetNS leaves that to the plugin): callers that delegate IPAM may
    pass the path of a sandbox that is already gone.  Our own namespace stays refused."""
    if not env.netns:
        return
    try:
        target = os.stat(env.netns)
    except OSError as exc:
        if env.command == "DEL" or not enters:
            return  # the namespace is gone; DEL still cleans up what it can
        raise InvalidEnvironment(
            f"CNI_NETNS {env.netns!r} is not usable: {exc.strerror}",
            "the container's network namespace does not exist (was the sandbox already removed?)",
        ) from None
    if environ.get("CNI_NETNS_OVERRIDE") == "1":
        return
    own = os.stat("/proc/self/ns/net")
    if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
        raise InvalidNetNS(
            f"CNI_NETNS {env.netns!r} is the plugin's own network namespace",
            "pass the container's namespace, not the host's",
        )
    if enters and env.command != "DEL" and target.st_dev != own.st_dev:
        raise InvalidEnvironment(
            f"CNI_NETNS {env.netns!r} is not a network namespace file",
            "expected a path like /var/run/netns/<name> or /proc/<pid>/ns/net",
        )


def _load(plugin: str) -> Any:
    import importlib

    module = PLUGINS.get(plugin)
    if module is None:
        raise InvalidEnvironment(f"unknown plugin {plugin!r}", f"this binary provides {', '.join(sorted(PLUGINS))}")
    return importlib.import_module(f"cni_flannel.plugins.{module}")


def _log_error(plugin: str, exc: BaseException, internal: bool) -> None:
    try:
        from .log import logger

        log = logger()
        if internal:
            log.exception("%s: internal error", plugin)
        else:
            log.warning("%s: %s", plugin, exc)
    except Exception:
        pass  # logging must never turn a clean error into a crash
