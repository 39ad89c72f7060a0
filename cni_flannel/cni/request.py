"""One plugin invocation: the CNI_* environment plus the parsed stdin (SPEC.md "Parameters")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from .args import parse_cni_args
from .config import NetConf
from .errors import InvalidConfig, InvalidEnvironment
from .names import validate_container_id, validate_ifname

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

#: The env variables each command needs (SPEC.md; pkg/skel).  DEL may run
#: without CNI_NETNS: the runtime may have lost the namespace already.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
}


@dataclass(frozen=True)
class Env:
    """The validated CNI_* variables."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Dict[str, str] = field(default_factory=dict)
    path: List[str] = field(default_factory=list)


def parse_env(environ: Mapping[str, str]) -> Env:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise InvalidEnvironment("required env variable CNI_COMMAND is missing")
    if command not in COMMANDS:
        raise InvalidEnvironment(f"unknown CNI_COMMAND {command!r}", f"expected one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        return Env(command=command)
    nul = sorted(k for k, v in environ.items() if k.startswith("CNI_") and "\0" in v)
    if nul:  # exec cannot carry one, but the agent's wire and in-process callers can
        raise InvalidEnvironment(f"env variables [{','.join(nul)}] contain a NUL byte")
    missing = [var for var in REQUIRED_ENV[command] if not environ.get(var)]
    if missing:
        raise InvalidEnvironment(f"required env variables [{','.join(missing)}] missing")
    cid = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    if command in ("ADD", "CHECK", "DEL"):
        validate_container_id(cid)
        validate_ifname(ifname)
    return Env(
        command=command,
        container_id=cid,
        netns=environ.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=[p for p in environ.get("CNI_PATH", "").split(":") if p],
    )


@dataclass(frozen=True)
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: Dict[str, str]
    path: List[str]
    stdin: bytes
    config: NetConf

    @classmethod
    def build(cls, env: Env, stdin: bytes, config: NetConf) -> "Request":
        return cls(env.command, env.container_id, env.netns, env.ifname, env.args, env.path, stdin, config)

    @property
    def valid_attachments(self) -> Optional[List[Tuple[str, str]]]:
        """GC's keep-list: the union of ``cni.dev/valid-attachments`` and the
        legacy ``cni.dev/attachments``; None when the runtime sent neither."""
        raw = self.config.raw
        lists = [raw[k] for k in ("cni.dev/valid-attachments", "cni.dev/attachments") if k in raw]
        if not lists:
            return None
        keep: List[Tuple[str, str]] = []
        for entries in lists:
            if not isinstance(entries, list):
                raise InvalidConfig("invalid GC attachment list", f"expected a list, got {entries!r}")
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("containerID"), str):
                    raise InvalidConfig("invalid GC attachment", f"expected {{containerID, ifname}}, got {entry!r}")
                pair = (entry["containerID"], str(entry.get("ifname", "")))
                if pair not in keep:
                    keep.append(pair)
        return keep
