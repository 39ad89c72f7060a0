"""conditionsV4 / conditionsV6: extra matches on the entry rules.

Upstream appends these strings verbatim to the iptables argument list (or
the nft rule text), so any value could add targets, rules or chains.  We
accept only what maps onto a checked firewall field, and refuse the rest
(code 7) rather than pass text through:

    iptables   [!] -s|--source|-d|--destination <address>[/<len>]
               [!] -i|--in-interface|-o|--out-interface <interface>
    nftables   ip|ip6 saddr|daddr [!=] <address>[/<len>]
               iifname|oifname [!=] <interface>  (optionally in double quotes)

Each of source, destination, input and output interface may appear once.
Which syntax a list uses is decided as upstream does: a first token starting
with '-' is iptables, anything else nftables -- except that a leading "!"
followed by such a token is iptables too (no nft match starts with "!").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from cni_flannel.cni.errors import InvalidConfig

IPTABLES, NFTABLES = "iptables", "nftables"
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")
_IPT_FLAGS = {"-s": "src", "--source": "src", "-d": "dst", "--destination": "dst",
              "-i": "iif", "--in-interface": "iif", "-o": "oif", "--out-interface": "oif"}
_NFT_ADDR = {"saddr": "src", "daddr": "dst"}
_NFT_IF = {"iifname": "iif", "oifname": "oif"}
_SUPPORTED = ("only '[!] -s/-d <address>[/<len>]' and '[!] -i/-o <interface>' (iptables), or "
              "'ip|ip6 saddr/daddr [!=] <address>[/<len>]' and 'iifname/oifname [!=] <interface>' "
              "(nftables) can be validated, so nothing else is accepted")


@dataclass(frozen=True)
class Conditions:
    """Matches as firewall Rule fields; a leading '!' negates."""

    src: Optional[str] = None
    dst: Optional[str] = None
    iif: Optional[str] = None
    oif: Optional[str] = None

    def fields(self) -> Dict[str, str]:
        return {k: v for k, v in (("src", self.src), ("dst", self.dst), ("iif", self.iif),
                                  ("oif", self.oif)) if v is not None}


NONE = Conditions()


def syntax_of(conditions: Optional[Sequence[str]]) -> str:
    """'iptables', 'nftables' or '' (empty), by upstream's first-token rule."""
    if not conditions or not isinstance(conditions[0], str) or conditions[0] == "":
        return ""
    first = conditions[0]
    if first == "!" and len(conditions) > 1 and isinstance(conditions[1], str):
        first = conditions[1]  # "! -d X": upstream would call this nftables; nft never starts with "!"
    return IPTABLES if first.startswith("-") else NFTABLES


def parse(key: str, value: object, version: int) -> Conditions:
    """Validate conditionsV4 (version 4) or conditionsV6 (version 6)."""
    if value is None:
        return NONE
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidConfig(f"{key} must be a list of strings, got {value!r}")
    syntax = syntax_of(value)
    if not syntax:
        if any(value):
            raise _bad(key, value, "the first entry is empty")
        return NONE
    if syntax == IPTABLES:
        return _parse_iptables(key, value, version)
    return _parse_nft(key, value, version)


def _bad(key: str, value: object, why: str) -> InvalidConfig:
    return InvalidConfig(f"unsupported {key} {value!r}: {why}", _SUPPORTED)


def _address(key: str, value: object, text: str, version: int) -> str:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _bad(key, value, f"{text!r} is not an IP address or CIDR") from None
    if net.version != version:
        raise _bad(key, value, f"{text!r} is not an IPv{version} address")
    return str(net)


def _interface(key: str, value: object, text: str) -> str:
    if not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise _bad(key, value, f"{text!r} is not an interface name (wildcards are not supported)")
    return text


def _store(key: str, value: object, found: Dict[str, str], field: str, negated: bool, arg: str) -> None:
    if field in found:
        raise _bad(key, value, f"the {field} match is given twice")
    found[field] = ("!" if negated else "") + arg


def _parse_iptables(key: str, value: List[str], version: int) -> Conditions:
    found: Dict[str, str] = {}
    toks, i = list(value), 0
    while i < len(toks):
        negated = toks[i] == "!"
        i += negated
        if i + 1 >= len(toks) or toks[i] not in _IPT_FLAGS:
            raise _bad(key, value, f"unexpected {toks[i] if i < len(toks) else 'end'!r}")
        field, arg = _IPT_FLAGS[toks[i]], toks[i + 1]
        arg = _address(key, value, arg, version) if field in ("src", "dst") else _interface(key, value, arg)
        _store(key, value, found, field, negated, arg)
        i += 2
    return Conditions(**found)


def _parse_nft(key: str, value: List[str], version: int) -> Conditions:
    found: Dict[str, str] = {}
    toks = " ".join(value).split()
    family = "ip" if version == 4 else "ip6"
    i = 0
    while i < len(toks):
        if toks[i] in ("ip", "ip6"):
            if toks[i] != family:
                raise _bad(key, value, f"{toks[i]!r} matches do not belong in {key}")
            if i + 1 >= len(toks) or toks[i + 1] not in _NFT_ADDR:
                raise _bad(key, value, f"expected saddr or daddr after {toks[i]!r}")
            field, i = _NFT_ADDR[toks[i + 1]], i + 2
            parse_arg = lambda t: _address(key, value, t, version)  # noqa: E731
        elif toks[i] in _NFT_IF:
            field, i = _NFT_IF[toks[i]], i + 1
            parse_arg = lambda t: _interface(key, value, t[1:-1] if len(t) > 1 and t[0] == t[-1] == '"' else t)  # noqa: E731
        else:
            raise _bad(key, value, f"unexpected {toks[i]!r}")
        negated = i < len(toks) and toks[i] == "!="
        i += negated
        if i >= len(toks):
            raise _bad(key, value, "a match lacks its value")
        _store(key, value, found, field, negated, parse_arg(toks[i]))
        i += 1
    return Conditions(**found)
