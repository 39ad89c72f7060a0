"""Name rules of the spec (SPEC.md "Parameters"; pkg/utils/utils.go)."""

from __future__ import annotations

import re

from .errors import InvalidConfig, InvalidEnvironment

_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")  # fullmatch: "$" would let a trailing "\n" through
MAX_IFNAME = 15  # IFNAMSIZ - 1, in bytes
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")


def validate_container_id(cid: str) -> None:
    if not cid:
        raise InvalidEnvironment("missing containerID", "CNI_CONTAINERID must be set")
    if not _ID.fullmatch(cid):
        raise InvalidEnvironment(
            f"invalid characters in containerID {cid!r}",
            "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        )


def validate_network_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidConfig("missing network name", 'the config needs a "name"')
    if not _ID.fullmatch(name):
        raise InvalidConfig(
            f"invalid characters in network name {name!r}",
            "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        )


def interface_name_problem(name: str) -> str:
    """Why ``name`` cannot be a Linux interface name, or "" when it can.

    The kernel's rule (dev_valid_name) is on the UTF-8 bytes: at most 15 of them, no '/', ':'
    or byte the kernel's isspace() calls space (0x09-0x0d, 0x20, 0xa0, so also any character
    whose UTF-8 holds 0xa0, e.g. U+0120)."""
    if not name:
        return "interface name is empty"
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return "interface name is not valid UTF-8 (it holds a lone surrogate)"
    if len(raw) > MAX_IFNAME:
        return f"interface name is too long ({len(raw)} > {MAX_IFNAME} bytes)"
    if name in (".", ".."):
        return "interface name is . or .."
    for ch in name:
        if ch in "/:" or ch.isspace() or any(b in _KERNEL_SPACE for b in ch.encode("utf-8")):
            return f"interface name contains an invalid character {ch!r}"
    return ""


def printable_name_problem(name: str) -> str:
    """interface_name_problem, and also no control or other unprintable characters: the kernel
    takes them, but ip, iptables and logs show such a name differently from what it is."""
    problem = interface_name_problem(name)
    if problem:
        return problem
    for ch in name:
        if not ch.isprintable():
            return f"interface name contains an unprintable character {ch!r}"
    return ""


def validate_ifname(name: str) -> None:
    problem = interface_name_problem(name)
    if problem:
        raise InvalidEnvironment(f"invalid CNI_IFNAME {name!r}: {problem}")
