"""A small blocking rtnetlink transport using pyroute2's message classes.

pyroute2 0.9's package ``__init__`` imports everything (asyncio, ndb/sqlite3,
conntrack…): ~155 ms before the first message.  Its *message classes*
(``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``, ``ndmsg``) hold the hard part — the
attribute maps and their encoders — and import in ~25 ms on their own.  So we
register the ``pyroute2`` package without running its ``__init__`` (a module
object made from its real spec; ``__getattr__`` runs the real ``__init__`` the
first time anyone asks for a top-level name, so full pyroute2 users elsewhere
in the same process still work) and talk to the kernel over a plain
``AF_NETLINK`` socket (``_rtnl``, shared with ``batch`` and ``dump``).

A :class:`Socket` is bound to the network namespace of the thread that created
it, for its whole life (see ``ns.enter``).
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from typing import Any, Dict, List, Optional

from cni_flannel.net import _rtnl

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH; pass dump=True instead
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800

NLMSG_ERROR = 2
NLMSG_DONE = 3

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

NETLINK_EXT_ACK = 11

_classes: Dict[int, Any] = {}


def _install_package_stub() -> None:
    """Make ``pyroute2`` importable without executing its eager ``__init__``."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        raise ImportError("pyroute2 is not installed")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> Any:  # PEP 562: load the real package on demand
        if name.startswith("__") or importlib.util.find_spec(f"pyroute2.{name}") is not None:
            raise AttributeError(name)  # a submodule: let the import system load just that
        del module.__dict__["__getattr__"]
        loader.exec_module(module)
        return getattr(module, name)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["pyroute2"] = module


def messages() -> Dict[str, Any]:
    """The pyroute2 message classes, imported on first use."""
    if not _classes:
        _install_package_stub()
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.ndmsg import ndmsg
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

        for kind, cls in ((RTM_NEWLINK, ifinfmsg), (RTM_NEWADDR, ifaddrmsg),
                          (RTM_NEWROUTE, rtmsg), (RTM_NEWNEIGH, ndmsg)):
            _classes[kind] = cls
            _classes[kind + 1] = cls  # DEL*: same layout
    return {"link": _classes[RTM_NEWLINK], "addr": _classes[RTM_NEWADDR],
            "route": _classes[RTM_NEWROUTE], "neigh": _classes[RTM_NEWNEIGH]}


def new(kind: str, **fields: Any) -> Any:
    """A fresh message of ``kind`` (link/addr/route/neigh) with ``fields`` set."""
    msg = messages()[kind]()
    for key, value in fields.items():
        if key == "attrs":
            msg["attrs"] = [list(a) for a in value]
        else:
            msg[key] = value
    return msg


class Socket:
    """One NETLINK_ROUTE socket; ``request`` sends a message and collects the reply."""

    def __init__(self) -> None:
        self._sock = _rtnl.open_socket(strict=True)  # filtered dumps (e.g. routes of one table)
        self._seq = 0
        messages()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, msg: Any, msg_type: int, flags: int = 0, dump: bool = False, raw: bool = False) -> List[Any]:
        """Send ``msg``; return the decoded replies (``dump`` or get) or [] (ACKed change).

        ``raw``: the replies as bytes (each a whole message, header included), for callers
        that decode only what they need (``_linkparse``).

        NLM_F_DUMP shares bits with NLM_F_REPLACE/NLM_F_EXCL, so a dump is asked
        for with ``dump=True``, never through ``flags``.

        Raises NetlinkError(errno) for an NLMSG_ERROR reply.
        """
        self._seq += 1
        seq = self._seq
        header = msg["header"]
        header["type"] = msg_type
        header["flags"] = flags | NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        header["sequence_number"] = seq
        header["pid"] = 0
        msg.encode()
        self._sock.send(msg.data)
        return self._collect(seq, raw)

    def _collect(self, seq: int, raw: bool = False) -> List[Any]:
        out: List[Any] = []
        for data, mtype, start, end in _rtnl.replies(self._sock, seq):
            cls = _classes.get(mtype)
            if cls is None:
                continue
            chunk = data[start - _rtnl.HDR.size:end]  # the whole message, header included
            if raw:
                out.append(chunk)
            else:
                reply = cls(bytearray(chunk))
                reply.decode()
                out.append(reply)
        return out


def decode(chunk: bytes) -> Any:
    """A raw reply (``request(raw=True)``) decoded by pyroute2."""
    (mtype,) = struct.unpack_from("=H", chunk, 4)
    msg = _classes[mtype](bytearray(chunk))
    msg.decode()
    return msg


def attr(msg: Any, name: str, default: Optional[Any] = None) -> Any:
    """An attribute of a decoded message (pyroute2 ``get_attr``)."""
    return msg.get_attr(name, default)
