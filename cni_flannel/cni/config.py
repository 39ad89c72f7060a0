"""The network configuration a plugin reads on stdin (SPEC.md "Section 1")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .errors import DecodeFailure, InvalidConfig
from .names import validate_network_name
from .result import Result
from .version import DEFAULT, require_supported


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    raw: Dict[str, Any]
    prev_result: Optional[Result] = None
    runtime_config: Dict[str, Any] = field(default_factory=dict)
    ipam: Dict[str, Any] = field(default_factory=dict)
    dns: Dict[str, Any] = field(default_factory=dict)
    args: Dict[str, Any] = field(default_factory=dict)


def decode_json(data: bytes, what: str = "network configuration") -> Dict[str, Any]:
    if not data or not data.strip():
        raise DecodeFailure(f"no {what} on stdin", "the runtime must pass the JSON configuration on stdin")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeFailure(f"error parsing {what}", str(exc)) from None
    if not isinstance(doc, dict):
        raise DecodeFailure(f"error parsing {what}", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def config_version(doc: Dict[str, Any]) -> str:
    version = doc.get("cniVersion", DEFAULT)
    if version == "":
        version = DEFAULT
    if not isinstance(version, str):
        raise DecodeFailure("error parsing network configuration", f"cniVersion must be a string, got {version!r}")
    return version


def _object(doc: Dict[str, Any], key: str) -> Dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeFailure("error parsing network configuration", f"{key!r} must be a JSON object, got {value!r}")
    return value


def parse_netconf(data: bytes) -> NetConf:
    """Decode and validate stdin for ADD, DEL, CHECK, STATUS and GC."""
    doc = decode_json(data)
    version = config_version(doc)
    require_supported(version)
    validate_network_name(doc.get("name"))
    plugin_type = doc.get("type")
    if not isinstance(plugin_type, str) or not plugin_type:
        raise InvalidConfig("missing plugin type", 'the config needs a "type" naming the plugin')
    prev = None
    if doc.get("prevResult") is not None:
        raw_prev = doc["prevResult"]
        if isinstance(raw_prev, dict) and "cniVersion" not in raw_prev:
            raw_prev = dict(raw_prev, cniVersion=version)  # prevResult is in the config's version
        prev = Result.from_dict(raw_prev)
    return NetConf(
        cni_version=version,
        name=doc["name"],
        type=plugin_type,
        raw=doc,
        prev_result=prev,
        runtime_config=_object(doc, "runtimeConfig"),
        ipam=_object(doc, "ipam"),
        dns=_object(doc, "dns"),
        args=_object(doc, "args"),
    )
