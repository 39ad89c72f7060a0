"""The hand-off framing between the plugin binaries and the resident agent.

Two clients speak it — the static C client (``native/cni-flannel-client.c``) and
the Python entry (``cni/handoff.py``) — and one server (``agent/server.py``), so
it is made of length-prefixed fields that C reads with ``ntohl`` and Python with
``int.from_bytes``; nobody needs a parser of their own (marshal, which trusted
its input, is gone)::

    frame   = length:u32be body              length of body, at most MAX_FRAME
    body    = field*
    field   = length:u32be bytes

    request = MAGIC version plugin env stdin           (exactly 5 fields)
              env: "KEY=VALUE\\0" entries, as in /proc/<pid>/environ
    reply   = "ok" exit-code stdout                    (exit code in decimal ASCII, 0-255)
            | "refused" reason                         -> the binary runs the request itself

The caller's network and mount namespace descriptors travel with the request's
first bytes (SCM_RIGHTS).  Every decoder here checks sizes and types before it
returns anything and raises only :class:`WireError`.

Only builtins here: the Python entry imports this for every pod.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Tuple

MAGIC = b"cni-flannel-handoff/3"
MAX_FRAME = 16 << 20  # a GC's attachment list is the largest stdin we expect (a few MB)
MAX_NAME = 64  # version and plugin fields
MAX_ENV_ENTRIES = 4096
REQUEST_FIELDS = 5
OK = b"ok"
REFUSED = b"refused"


class WireError(ValueError):
    """A frame that is not what the protocol allows (truncated, oversized, wrong fields)."""


class Truncated(WireError):
    """The peer closed the connection in the middle of a frame."""


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def encode_frame(fields: "List[bytes]") -> bytes:
    body = b"".join(_u32(len(f)) + f for f in fields)
    if len(body) > MAX_FRAME:
        raise WireError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _u32(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length announced by a frame's 4-byte header."""
    if len(header) != 4:
        raise WireError("truncated frame header")
    length = int.from_bytes(header, "big")
    if length > MAX_FRAME:
        raise WireError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return length


def split_fields(body: bytes, limit: int) -> "List[bytes]":
    """The fields of a body; more than ``limit`` fields or a field overrunning the body is an error."""
    fields = []
    pos, end = 0, len(body)
    while pos < end:
        if len(fields) == limit:
            raise WireError(f"more than {limit} fields")
        if end - pos < 4:
            raise WireError("truncated field header")
        size = int.from_bytes(body[pos:pos + 4], "big")
        pos += 4
        if size > end - pos:
            raise WireError(f"field of {size} bytes overruns the frame")
        fields.append(body[pos:pos + size])
        pos += size
    return fields


# --- requests ------------------------------------------------------------------------------------

def encode_env(environ: "Mapping[str, str]") -> bytes:
    import os

    return b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in environ.items())


def encode_request(version: str, plugin: str, environ: "Mapping[str, str]", stdin: bytes) -> bytes:
    return encode_frame([MAGIC, version.encode(), plugin.encode(), encode_env(environ), stdin])


def _name(field: bytes, what: str) -> str:
    if not 0 < len(field) <= MAX_NAME or not all(0x21 <= b < 0x7F for b in field):
        raise WireError(f"{what} is not a short printable name")
    return field.decode("ascii")


def decode_env(field: bytes) -> "Dict[str, str]":
    """KEY=VALUE\\0 entries -> dict; the first of duplicate keys wins, as for os.environ."""
    if not field:
        return {}
    if not field.endswith(b"\0"):
        raise WireError("environment not NUL-terminated")
    entries = field[:-1].split(b"\0")
    if len(entries) > MAX_ENV_ENTRIES:
        raise WireError(f"more than {MAX_ENV_ENTRIES} environment entries")
    env: "Dict[str, str]" = {}
    for entry in entries:
        key, sep, value = entry.partition(b"=")
        if not sep or not key:
            raise WireError("environment entry without KEY=")
        # as os.environ decodes the process environment, so the plugin sees the same strings
        env.setdefault(key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
    return env


def decode_request(body: bytes) -> "Tuple[str, str, Dict[str, str], bytes]":
    """(version, plugin, environment, stdin) of a request body."""
    fields = split_fields(body, REQUEST_FIELDS)
    if len(fields) != REQUEST_FIELDS:
        raise WireError(f"request has {len(fields)} fields, not {REQUEST_FIELDS}")
    magic, version, plugin, env, stdin = fields
    if magic != MAGIC:
        raise WireError("not a cni-flannel hand-off request of this protocol")
    return _name(version, "version"), _name(plugin, "plugin"), decode_env(env), stdin


# --- replies -------------------------------------------------------------------------------------

def encode_result(code: int, stdout: bytes) -> bytes:
    if not 0 <= code <= 255:
        raise WireError(f"exit code {code} out of range")
    return encode_frame([OK, str(code).encode(), stdout])


def encode_refusal(reason: str) -> bytes:
    return encode_frame([REFUSED, reason.encode("utf-8", "replace")[:4096]])


def decode_reply(body: bytes) -> "Optional[Tuple[int, bytes]]":
    """(exit code, stdout) of a result; None for a refusal."""
    fields = split_fields(body, 3)
    if fields and fields[0] == REFUSED and len(fields) == 2:
        return None
    if len(fields) != 3 or fields[0] != OK:
        raise WireError("malformed reply")
    code = fields[1]
    if not 0 < len(code) <= 3 or not code.isdigit() or int(code) > 255:
        raise WireError("malformed exit code")
    return int(code), fields[2]


# --- reading a frame -----------------------------------------------------------------------------

def recv_frame(conn: "object", fds_out: "Optional[List[int]]" = None) -> "Optional[bytes]":
    """One frame's body from a stream socket; None on EOF before any byte.

    With ``fds_out``, descriptors received (SCM_RIGHTS) are appended to it — the
    caller owns and must close them, whatever happens next."""
    import _socket

    buf = bytearray()
    want = 4
    length = -1
    while len(buf) < want:
        if fds_out is not None:
            data, ancdata, _, _ = conn.recvmsg(65536, _socket.CMSG_SPACE(16 * 4))  # type: ignore[attr-defined]
            for level, kind, payload in ancdata:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    fds_out.extend(int.from_bytes(payload[i:i + 4], _order(), signed=True)
                                   for i in range(0, usable, 4))
        else:
            data = conn.recv(min(65536, max(want - len(buf), 4096)))  # type: ignore[attr-defined]
        if not data:
            if not buf:
                return None
            raise Truncated("connection closed mid-frame")
        buf += data
        if length < 0 and len(buf) >= 4:
            length = frame_length(bytes(buf[:4]))
            want = 4 + length
    if len(buf) > want:
        raise WireError("bytes after the frame")
    return bytes(buf[4:])


def _order() -> str:
    import sys

    return sys.byteorder
