"""The reference's on-disk store (backend/disk), made crash-safe.

Layout under ``<dataDir>/<network>/`` — identical to the Go plugin's, so
either implementation can read, allocate next to and release the other's:

``<ip>``                  one file per reserved address, named ``net.IP.String()``
                          (``10.244.1.2``, ``fd00::2``), content
                          ``<containerID>\\r\\n<ifname>``, no trailing newline
``last_reserved_ip.<set>`` the last address handed out from range set ``<set>``
``lock``                  flock'ed for the whole of one allocation or release

Where we differ: address files are mode 0600 and never exist half-written.
The content goes to a temporary file first (fsync'ed) which is then
hard-linked to the address name — ``link()`` fails on an existing name, so it
is the same atomic claim as the reference's O_EXCL create, but a crash leaves
at most a dot-named temporary file (swept on the next locked operation), never
an empty address file.  Empty address files left by a crashed Go plugin (or a
power loss) are treated as free-able leftovers by DEL and GC.  Anything under an
address name that is not a regular file (a symlink, FIFO, directory, device) is
not a reservation: never followed, read or removed, and never handed out
(``link()`` fails on the existing name) — ``atomicfile.read_regular``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator, List, Optional

from cni_flannel.atomicfile import read_regular
from cni_flannel.cni.crashpoint import reached
from cni_flannel.cni.errors import IOFailure

from .config import IPAddress
from .store import Reservation, Store, format_owner, ip_of, parse_owner

LAST_RESERVED = "last_reserved_ip."
LOCK = "lock"
TMP_PREFIX = ".host-local-tmp."
FILE_MODE = 0o600
DIR_MODE = 0o755
OWNER_LIMIT = 4096  # bytes read of an address file (an owner is "<containerID>\r\n<ifname>")
LAST_RESERVED_LIMIT = 256  # bytes read of last_reserved_ip.<set> (one address)


def _io(action: str, path: str, exc: OSError) -> IOFailure:
    return IOFailure(
        f"host-local: cannot {action} {path}: {exc.strerror or exc}",
        "the IPAM dataDir must be a writable local directory",
    )


class DiskStore(Store):
    def __init__(self, data_dir: str, network: str) -> None:
        self.directory = os.path.join(data_dir, network)
        self._locked = False

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def exists(self) -> bool:
        return os.path.isdir(self.directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            os.makedirs(self.directory, DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise _io("create", self.directory, exc) from None
        lock_path = self._path(LOCK)
        try:
            # O_NOFOLLOW: a planted "lock" symlink must not make us create its target (ELOOP: an error)
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            raise _io("open lock file", lock_path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._locked = True
            yield
        finally:
            self._locked = False
            os.close(fd)  # closing drops the flock

    def reservations(self) -> List[Reservation]:
        """Every address file and its owner.  This reads every file (so does the
        reference, for its duplicate check); names are opened relative to the
        directory's fd, which saves the kernel a path walk per file."""
        assert self._locked, "store used without its lock"
        out: List[Reservation] = []
        try:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _io("open", self.directory, exc) from None
        try:
            names = os.listdir(dfd)
            for name in names:
                if name == LOCK or name.startswith(LAST_RESERVED):
                    continue
                if name.startswith("."):
                    if name.startswith(TMP_PREFIX):  # a writer died mid-reserve; we hold the lock, so it is dead
                        self._unlink(name)
                    continue
                try:
                    data = read_regular(name, OWNER_LIMIT, dir_fd=dfd)
                except OSError:
                    out.append(Reservation(name, None, readable=False))  # held, never reclaimed as garbage
                    continue
                if data is not None:  # gone, a symlink, a directory, a FIFO...: not a reservation
                    out.append(Reservation(name, parse_owner(data)))
        except OSError as exc:
            raise _io("list", self.directory, exc) from None
        finally:
            os.close(dfd)
        return out

    def reserve(self, name: str, container_id: str, ifname: str) -> bool:
        assert self._locked, "store used without its lock"
        tmp = self._path(f"{TMP_PREFIX}{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                os.write(fd, format_owner(container_id, ifname))
                os.fsync(fd)  # content is on disk before the name exists
            finally:
                os.close(fd)
        except OSError as exc:
            self._unlink(os.path.basename(tmp))
            raise _io("write", tmp, exc) from None
        reached("host-local.reserve-tmp-written")
        try:
            os.link(tmp, self._path(name))
        except FileExistsError:
            return False
        except OSError as exc:
            raise _io("reserve", self._path(name), exc) from None
        finally:
            self._unlink(os.path.basename(tmp))
        reached("host-local.reserved")
        return True

    def release(self, name: str) -> None:
        assert self._locked, "store used without its lock"
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _io("release", self._path(name), exc) from None

    def last_reserved(self, range_id: int) -> Optional[IPAddress]:
        try:
            data = read_regular(self._path(f"{LAST_RESERVED}{range_id}"), LAST_RESERVED_LIMIT)
        except OSError:
            data = None
        if data is None:
            return None  # lost round-robin position only; the reference logs and carries on
        return ip_of(data.decode("ascii", "replace").strip())

    def set_last_reserved(self, range_id: int, ip: Optional[IPAddress]) -> None:
        assert self._locked, "store used without its lock"
        name = f"{LAST_RESERVED}{range_id}"
        if ip is None:
            self._unlink(name)
            return
        tmp = self._path(f"{TMP_PREFIX}{os.getpid()}.last")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
            try:
                os.write(fd, str(ip).encode())
            finally:
                os.close(fd)
            os.replace(tmp, self._path(name))  # readers see the old or the new address, never a torn one
        except OSError as exc:
            self._unlink(os.path.basename(tmp))
            raise _io("write", self._path(name), exc) from None

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except OSError:
            pass
