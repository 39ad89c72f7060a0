"""Spec versions: which we speak, and which commands each allows (SPEC.md, pkg/version)."""

from __future__ import annotations

TYPE_CHECKING = False  # keep the VERSION path free of typing's import cost
if TYPE_CHECKING:
    from typing import Tuple

from .errors import DecodeFailure, IncompatibleVersion

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
_SUPPORTED_TEXT = "[" + ", ".join('"%s"' % v for v in SUPPORTED_VERSIONS) + "]"
CURRENT = "1.1.0"
#: A config without cniVersion is 0.1.0 (SPEC.md "Version considerations").
DEFAULT = "0.1.0"

#: The lowest config version that allows each command.
MINIMUM_FOR_COMMAND = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}


def parse(version: str) -> Tuple[int, int, int]:
    """``"0.3.1"`` -> ``(0, 3, 1)``; anything else is a decode failure."""
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise DecodeFailure(f"invalid cniVersion {version!r}", "expected MAJOR.MINOR.PATCH, e.g. \"1.0.0\"")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def require_supported(version: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            f'incompatible CNI versions; config is "{version}", plugin supports {_SUPPORTED_TEXT}'
        )


def require_allows(version: str, command: str) -> None:
    """CHECK needs a config >= 0.4.0; STATUS and GC need >= 1.1.0."""
    minimum = MINIMUM_FOR_COMMAND.get(command)
    if minimum and not at_least(version, minimum):
        raise IncompatibleVersion(f"config version {version} does not allow {command} (needs {minimum} or later)")


def version_info(asked: str = CURRENT) -> dict:
    """The VERSION answer; echoes the version asked when we know it."""
    return {
        "cniVersion": asked if asked in SUPPORTED_VERSIONS else CURRENT,
        "supportedVersions": list(SUPPORTED_VERSIONS),
    }
