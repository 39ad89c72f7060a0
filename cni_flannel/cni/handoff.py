"""Hand one plugin invocation to the resident agent, if one is running.

A frozen plugin that imports pyroute2 spends ~110-270 ms just starting; the
agent (``cni_flannel.agent``) has everything imported already and forks a
worker per request.  The plugin process sends what defines the invocation —
plugin name, environment, stdin — plus descriptors of its own network and
mount namespaces (SCM_RIGHTS), so the worker runs the very same code in the
very same namespaces and returns exactly what the plugin would have printed.

The wire format is ``cni/wire.py`` (length-prefixed fields), the same the
static C client in front of the bundle speaks (``native/``); this Python side
serves installs without it (``NATIVE=0``) and runs the source tree.

This client side imports only builtin modules (``_socket``): ``socket`` and
``json`` would pull in ``enum`` and ``re``, ~8 ms per pod.

No agent socket, a refusal, or any transport error before the request was
accepted means "run in-process": the agent only ever makes things faster.
If the worker dies mid-request (e.g. SIGKILL at a crash point), this process
dies the same way, as an in-process plugin would have.
"""

from __future__ import annotations

import _socket
import os

from . import wire

SOCKET_ENV = "CNI_FLANNEL_AGENT_SOCKET"
DEFAULT_SOCKET = "/run/flannel/cni-agent.sock"
SWITCH_ENV = "CNI_FLANNEL_AGENT"  # "off": never hand off

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping, Optional, Tuple


def socket_path(environ: "Mapping[str, str]") -> str:
    return environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def try_handoff(plugin: str, environ: "Mapping[str, str]", stdin: bytes) -> "Optional[Tuple[int, bytes]]":
    """(exit code, bytes to print) from the agent, or None to run in-process."""
    if environ.get(SWITCH_ENV) == "off":
        return None
    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        conn.connect(socket_path(environ))
        _send_request(conn, plugin, environ, stdin)
        try:
            body = wire.recv_frame(conn)
        except wire.Truncated:
            body = None
        if body is None:  # the worker died mid-request: die as the plugin would have
            _die()
        return wire.decode_reply(body)  # None: refused
    except (OSError, ValueError):  # WireError is a ValueError; nothing ran for this request
        return None
    finally:
        conn.close()


def _die() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def _send_request(conn: "Any", plugin: str, environ: "Mapping[str, str]", stdin: bytes) -> None:
    from .. import __version__

    frame = wire.encode_request(__version__, plugin, environ, stdin)
    fds = [os.open("/proc/self/ns/net", os.O_RDONLY), os.open("/proc/self/ns/mnt", os.O_RDONLY)]
    try:
        rights = b"".join(fd.to_bytes(4, wire._order(), signed=True) for fd in fds)
        sent = conn.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    finally:
        for fd in fds:
            os.close(fd)
    if sent < len(frame):
        conn.sendall(frame[sent:])
