"""Hand one plugin invocation to the resident agent, if one is running.

A frozen plugin that imports pyroute2 spends ~110-270 ms just starting; the
agent (``cni_flannel.agent``) has everything imported already and forks a
worker per request.  The plugin process sends what defines the invocation —
plugin name, environment, stdin — plus descriptors of its own network and
mount namespaces (SCM_RIGHTS), so the worker runs the very same code in the
very same namespaces and returns exactly what the plugin would have printed.

Wire format, both ways: 4-byte big-endian length + a ``marshal``-ed dict
(both ends are this package at the same version; the socket is root-only).
  request  {"proto": 2, "version": <package version>, "plugin", "env", "stdin"}
  reply    {"code": <exit code>, "stdout": <text to print, or None>}
        or {"refused": <why>}  -> run in-process instead

This client side imports only builtin modules (``_socket``, ``marshal``):
``socket`` and ``json`` would pull in ``enum`` and ``re``, ~8 ms per pod.

No agent socket, a refusal, or any transport error before the request was
accepted means "run in-process": the agent only ever makes things faster.
If the worker dies mid-request (e.g. SIGKILL at a crash point), this process
dies the same way, as an in-process plugin would have.
"""

from __future__ import annotations

import _socket
import marshal
import os

PROTO = 2
SOCKET_ENV = "CNI_FLANNEL_AGENT_SOCKET"
DEFAULT_SOCKET = "/run/flannel/cni-agent.sock"
SWITCH_ENV = "CNI_FLANNEL_AGENT"  # "off": never hand off
MAX_MESSAGE = 16 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple


def socket_path(environ: "Mapping[str, str]") -> str:
    return environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def try_handoff(plugin: str, environ: "Mapping[str, str]", stdin: bytes) -> "Optional[Tuple[int, Optional[str]]]":
    """(exit code, text to print) from the agent, or None to run in-process."""
    if environ.get(SWITCH_ENV) == "off":
        return None
    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        conn.connect(socket_path(environ))
        _send_request(conn, plugin, environ, stdin)
        reply = recv_message(conn)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    finally:
        conn.close()
    if reply is None:  # the worker died mid-request: die as the plugin would have
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    code, out = reply.get("code"), reply.get("stdout")
    if "refused" in reply or not isinstance(code, int) or not (out is None or isinstance(out, str)):
        return None
    return code, out


def _send_request(conn: "Any", plugin: str, environ: "Mapping[str, str]", stdin: bytes) -> None:
    from .. import __version__

    body = {"proto": PROTO, "version": __version__, "plugin": plugin, "env": dict(environ),
            "stdin": stdin}
    fds = [os.open("/proc/self/ns/net", os.O_RDONLY), os.open("/proc/self/ns/mnt", os.O_RDONLY)]
    try:
        rights = b"".join(fd.to_bytes(4, "little" if _little() else "big", signed=True) for fd in fds)
        conn.sendmsg([encode(body)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    finally:
        for fd in fds:
            os.close(fd)


def _little() -> bool:
    import sys

    return sys.byteorder == "little"


def encode(doc: "Dict[str, Any]") -> bytes:
    body = marshal.dumps(doc)
    return len(body).to_bytes(4, "big") + body


def recv_message(conn: "Any", fds_out: "Optional[List[int]]" = None) -> "Optional[Dict[str, Any]]":
    """One framed message (None on EOF before it); received descriptors go to ``fds_out``."""
    buf = b""
    want = 4
    length = None
    while len(buf) < want:
        if fds_out is not None:
            data, ancdata, _, _ = conn.recvmsg(65536, _socket.CMSG_SPACE(16 * 4))
            for level, kind, payload in ancdata:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    order = "little" if _little() else "big"
                    fds_out.extend(int.from_bytes(payload[i:i + 4], order, signed=True)
                                   for i in range(0, usable, 4))
        else:
            data = conn.recv(65536)
        if not data:
            return None
        buf += data
        if length is None and len(buf) >= 4:
            length = int.from_bytes(buf[:4], "big")
            if length > MAX_MESSAGE:
                raise ValueError("message too large")
            want = 4 + length
    doc = marshal.loads(buf[4:want])
    if not isinstance(doc, dict):
        raise ValueError("message is not a dict")
    return doc
