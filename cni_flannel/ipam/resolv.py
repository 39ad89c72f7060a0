"""resolv.conf -> DNS, read the way the reference's dns.go reads it."""

from __future__ import annotations

from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.cni.result import DNS


def parse_resolv_conf(path: str) -> DNS:
    """``nameserver``/``domain``/``search``/``options`` lines; comments (# ;) and
    lines with fewer than two fields are skipped; a later ``domain`` wins."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise InvalidConfig(f"ipam.resolvConf: cannot read {path}: {exc.strerror or exc}") from None
    nameservers, search, options = [], [], []
    domain = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        key = fields[0]
        if key == "nameserver":
            nameservers.append(fields[1])
        elif key == "domain":
            domain = fields[1]
        elif key == "search":
            search += fields[1:]
        elif key == "options":
            options += fields[1:]
    return DNS(nameservers=nameservers, domain=domain, search=search, options=options)
