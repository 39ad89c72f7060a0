"""Name rules of the spec (SPEC.md "Parameters"; pkg/utils/utils.go)."""

from __future__ import annotations

import re

from .errors import InvalidConfig, InvalidEnvironment

_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
MAX_IFNAME = 15


def validate_container_id(cid: str) -> None:
    if not cid:
        raise InvalidEnvironment("missing containerID", "CNI_CONTAINERID must be set")
    if not _ID.match(cid):
        raise InvalidEnvironment(
            f"invalid characters in containerID {cid!r}",
            "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        )


def validate_network_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidConfig("missing network name", 'the config needs a "name"')
    if not _ID.match(name):
        raise InvalidConfig(
            f"invalid characters in network name {name!r}",
            "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        )


def interface_name_problem(name: str) -> str:
    """Why ``name`` cannot be a Linux interface name, or "" when it can."""
    if not name:
        return "interface name is empty"
    if len(name) > MAX_IFNAME:
        return f"interface name is too long ({len(name)} > {MAX_IFNAME} characters)"
    if name in (".", ".."):
        return "interface name is . or .."
    for ch in name:
        if ch in "/:" or ch.isspace():
            return f"interface name contains an invalid character {ch!r}"
    return ""


def validate_ifname(name: str) -> None:
    problem = interface_name_problem(name)
    if problem:
        raise InvalidEnvironment(f"invalid CNI_IFNAME {name!r}: {problem}")
