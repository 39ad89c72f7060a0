"""Translate netlink and namespace failures into CNI errors — in one place.

Every netlink request and every ``setns`` goes through :func:`translate`, which
names the object being worked on (``link "cni0"``, ``address 10.244.1.1/24 on
"cni0"``, ``route 0.0.0.0/0 via 10.244.1.1``) and appends the errno text:

    NetFailure (InternalError, 999)    a netlink/netns request failed; ``.errno`` set
     ├── NotFound                       ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL: the object is gone
     └── Exists                         EEXIST: the object is already there
    NetNSNotFound (InvalidEnvironment, 4)  CNI_NETNS does not exist or is not a network namespace

Callers catch ``NotFound`` where "already gone" is success (DEL) and ``Exists``
where re-use is allowed; anything else propagates to the runtime as code 999,
which is what the Go reference reports for the same failures.
"""

from __future__ import annotations

import errno as _errno
import functools
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from cni_flannel.cni.errors import CNIError, InternalError, InvalidEnvironment

_NOT_FOUND = {_errno.ENODEV, _errno.ENOENT, _errno.ESRCH, _errno.EADDRNOTAVAIL}


class NetFailure(InternalError):
    """A netlink or namespace operation failed."""

    def __init__(self, msg: str, err: int = 0, details: str = "") -> None:
        super().__init__(msg, details)
        self.errno = err


class NotFound(NetFailure):
    """The link/address/route/neighbour does not exist (any more)."""


class Exists(NetFailure):
    """The link/address/route/neighbour already exists."""


class NetNSNotFound(InvalidEnvironment):
    """A namespace path that does not exist or is not a network namespace."""


class NetlinkError(OSError):
    """Raised by the transport (``_nl``) for an NLMSG_ERROR reply; translated below."""


def failure(what: str, err: int) -> NetFailure:
    """The CNI error for ``what`` failing with ``err`` (an errno)."""
    text = os.strerror(err) if err else "unknown error"
    msg = f"{what}: {text}"
    if err in _NOT_FOUND:
        return NotFound(msg, err)
    if err == _errno.EEXIST:
        return Exists(msg, err)
    return NetFailure(msg, err)


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Run a block, turning OSError (NetlinkError included) into a CNI error about ``what``."""
    try:
        yield
    except CNIError:
        raise
    except OSError as exc:
        raise failure(what, exc.errno or 0) from exc


F = TypeVar("F", bound=Callable[..., Any])


def translated(describe: Callable[..., str]) -> Callable[[F], F]:
    """Decorator form: ``describe(*args, **kwargs)`` names the object for the message."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except CNIError:
                raise
            except OSError as exc:
                raise failure(describe(*args, **kwargs), exc.errno or 0) from exc

        return inner  # type: ignore[return-value]

    return wrap


