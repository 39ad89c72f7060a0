"""Read and write /proc/sys (stdlib only).

Keys are slash paths under /proc/sys ("net/ipv4/ip_forward",
"net/ipv6/conf/eth0/accept_dad") — dots are not converted, because interface
names may contain them.  /proc/sys/net shows the network namespace of the
thread that opens the file: call these inside ``ns.enter`` (``Handle.sysctl_*``
does).
"""

from __future__ import annotations

import os

from cni_flannel.net.errors import translate

ROOT = "/proc/sys"


def _path(key: str) -> str:
    parts = key.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad sysctl key {key!r}")
    return os.path.join(ROOT, *parts)


def read(key: str) -> str:
    with translate(f"reading sysctl {key}"):
        with open(_path(key)) as f:
            return f.read().strip()


def write(key: str, value: str) -> None:
    with translate(f"setting sysctl {key}={value}"):
        with open(_path(key), "w") as f:
            f.write(str(value))
