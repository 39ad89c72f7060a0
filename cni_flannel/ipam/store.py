"""The Store the allocator talks to, and an in-memory fake for tests.

A store holds *reservations*: an address (by its canonical text, which is also
its file name on disk) owned by ``(containerID, ifname)``.  Owners written by
old host-local versions carry only the container ID (``ifname`` None); a
reservation whose content is empty or unreadable has owner None — a crash
leftover that DEL and GC reclaim.

Every call but :meth:`Store.locked` must happen inside ``with store.locked():``
so one allocation or release is atomic against every other plugin process
(ours and the Go reference, which flock the same file).
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from .config import IPAddress

Owner = Tuple[str, Optional[str]]  # (container ID, ifname or None for the legacy ID-only format)


@dataclass(frozen=True)
class Reservation:
    name: str  # the address as the reference writes it: net.IP.String()
    owner: Optional[Owner]  # None: empty/garbage content (or unreadable)
    readable: bool = True  # False: could not be read; never treated as garbage

    @property
    def ip(self) -> Optional[IPAddress]:
        return ip_of(self.name)

    @property
    def leftover(self) -> bool:
        """An address file with no owner in it: a crash leftover, free to reclaim."""
        return self.owner is None and self.readable and self.ip is not None


def ip_of(name: str) -> Optional[IPAddress]:
    """The address a reservation name stands for; None for bookkeeping files."""
    if not name or name[0] not in "0123456789abcdefABCDEF:":
        return None
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def parse_owner(data: bytes) -> Optional[Owner]:
    """File content -> owner, the way the reference matches it (TrimSpace, CRLF)."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return None
    cid, sep, ifname = text.partition("\r\n")
    return (cid, ifname) if sep else (text, None)


def format_owner(container_id: str, ifname: str) -> bytes:
    """``<containerID>\\r\\n<ifname>``, no trailing newline (backend/disk)."""
    return (container_id.strip() + "\r\n" + ifname).encode()


class Store:
    """Interface.  ``DiskStore`` is the real one, ``MemoryStore`` the fake."""

    def locked(self) -> "contextlib.AbstractContextManager[None]":
        raise NotImplementedError

    def exists(self) -> bool:
        """Whether the store has ever been created (DEL/CHECK/GC never create it)."""
        raise NotImplementedError

    def reservations(self) -> List[Reservation]:
        raise NotImplementedError

    def reserve(self, name: str, container_id: str, ifname: str) -> bool:
        """Create reservation ``name``; False when it already exists."""
        raise NotImplementedError

    def release(self, name: str) -> None:
        """Remove reservation ``name``; gone already is fine."""
        raise NotImplementedError

    def last_reserved(self, range_id: int) -> Optional[IPAddress]:
        raise NotImplementedError

    def set_last_reserved(self, range_id: int, ip: Optional[IPAddress]) -> None:
        raise NotImplementedError


class MemoryStore(Store):
    """The fake: a dict, plus a check that callers hold the lock."""

    def __init__(self, created: bool = True) -> None:
        self.files: Dict[str, Optional[Owner]] = {}
        self.last: Dict[int, IPAddress] = {}
        self.created = created
        self.holding = False
        self.fail_reserve_at: Optional[str] = None  # name whose reserve raises OSError

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        assert not self.holding, "lock is not re-entrant"
        self.holding = True
        self.created = True
        try:
            yield
        finally:
            self.holding = False

    def _need_lock(self) -> None:
        assert self.holding, "store used without its lock"

    def exists(self) -> bool:
        return self.created

    def reservations(self) -> List[Reservation]:
        self._need_lock()
        return [Reservation(n, o) for n, o in self.files.items()]

    def reserve(self, name: str, container_id: str, ifname: str) -> bool:
        self._need_lock()
        if name == self.fail_reserve_at:
            raise OSError(28, "No space left on device")
        if name in self.files:
            return False
        self.files[name] = (container_id, ifname)
        return True

    def release(self, name: str) -> None:
        self._need_lock()
        self.files.pop(name, None)

    def last_reserved(self, range_id: int) -> Optional[IPAddress]:
        self._need_lock()
        return self.last.get(range_id)

    def set_last_reserved(self, range_id: int, ip: Optional[IPAddress]) -> None:
        self._need_lock()
        if ip is None:
            self.last.pop(range_id, None)
        else:
            self.last[range_id] = ip
