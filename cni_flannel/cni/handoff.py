"""Hand one plugin invocation to the resident agent, if one is running.

A frozen plugin that imports pyroute2 spends ~110-270 ms just starting; the
agent (``cni_flannel.agent``) has everything imported already and forks a
worker per request.  The plugin process sends what defines the invocation —
plugin name, environment, stdin — plus descriptors of its own network and
mount namespaces (SCM_RIGHTS), so the worker runs the very same code in the
very same namespaces and prints what the plugin itself would have printed.

Wire format, both ways: 4-byte big-endian length + JSON.
  request  {"proto": 1, "version": <package version>, "plugin", "env", "stdin"}
  reply    {"code": <exit code>, "out": <JSON document or null>}
        or {"refused": <why>}  -> run in-process instead

No agent socket, a refusal, or any transport error before the request was
accepted means "run in-process": the agent only ever makes things faster.
If the worker dies mid-request (e.g. SIGKILL at a crash point), this process
dies the same way, as an in-process plugin would have.
"""

from __future__ import annotations

import os
import socket
import struct

PROTO = 1
SOCKET_ENV = "CNI_FLANNEL_AGENT_SOCKET"
DEFAULT_SOCKET = "/run/flannel/cni-agent.sock"
SWITCH_ENV = "CNI_FLANNEL_AGENT"  # "off": never hand off
_HEADER = struct.Struct("!I")
MAX_MESSAGE = 16 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple


class Refused(Exception):
    """The agent cannot take this request; the caller runs it in-process."""


def socket_path(environ: "Mapping[str, str]") -> str:
    return environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def try_handoff(plugin: str, environ: "Mapping[str, str]", stdin: bytes) -> "Optional[Tuple[int, Any]]":
    """(exit code, JSON to print) from the agent, or None to run in-process."""
    if environ.get(SWITCH_ENV) == "off":
        return None
    path = socket_path(environ)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return None
    with conn:
        try:
            conn.connect(path)
            _send_request(conn, plugin, environ, stdin)
            reply = recv_message(conn)
        except (OSError, ValueError):
            return None
        if reply is None:  # the worker died mid-request: die as the plugin would have
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if "refused" in reply or not isinstance(reply.get("code"), int):
            return None
        return reply["code"], reply.get("out")


def _send_request(conn: socket.socket, plugin: str, environ: "Mapping[str, str]", stdin: bytes) -> None:
    from array import array

    from .. import __version__

    body = {"proto": PROTO, "version": __version__, "plugin": plugin, "env": dict(environ),
            "stdin": stdin.decode("latin-1")}
    fds = [os.open("/proc/self/ns/net", os.O_RDONLY), os.open("/proc/self/ns/mnt", os.O_RDONLY)]
    try:
        data = encode(body)
        conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", fds))])
    finally:
        for fd in fds:
            os.close(fd)


def encode(doc: "Dict[str, Any]") -> bytes:
    import json

    body = json.dumps(doc).encode()
    return _HEADER.pack(len(body)) + body


def recv_message(conn: socket.socket, fds_out: "Optional[List[int]]" = None) -> "Optional[Dict[str, Any]]":
    """One framed message (None on EOF before it); received descriptors go to ``fds_out``."""
    import json

    buf = b""
    want = _HEADER.size
    length = None
    while len(buf) < want:
        if fds_out is not None:
            from array import array

            data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    fds_out.extend(fds)
        else:
            data = conn.recv(65536)
        if not data:
            return None
        buf += data
        if length is None and len(buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buf)
            if length > MAX_MESSAGE:
                raise ValueError("message too large")
            want = _HEADER.size + length
    doc = json.loads(buf[_HEADER.size:want])
    if not isinstance(doc, dict):
        raise ValueError("message is not a JSON object")
    return doc
