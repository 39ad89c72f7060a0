"""Rule sets as data: validated, frozen, backend-neutral.

Every value is checked when the object is built, against allow-lists and the
ipaddress module, so a rendered rule can never carry an extra argument, rule or
chain: a bad value raises InvalidConfig before any command runs.

Chains come in two kinds:

* shared (default) -- others may write here too (POSTROUTING,
  CNI-HOSTPORT-DNAT, an nft table's common chain). We create it if missing
  (never declare, so never flush, it), add our missing rules, and on remove
  delete only our rules (except those marked ``keep``); the chain stays.
* owned -- nobody else writes it (a per-container ``CNI-<hash>`` chain). Apply
  rewrites it wholesale in the same transaction; remove deletes it, with every
  rule anywhere in the table that jumps to it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from cni_flannel.cni.errors import InvalidConfig

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

FAMILIES = ("ipv4", "ipv6", "inet", "bridge")  # inet: nftables tables holding both; bridge: nftables L2
VERDICTS = ("ACCEPT", "DROP", "RETURN", "MASQUERADE", "DNAT", "MARK")
PROTOCOLS = ("tcp", "udp", "sctp")
NFT_HOOK_TYPES = ("filter", "nat", "route")
NFT_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
NFT_PRIORITIES = ("raw", "mangle", "dstnat", "filter", "security", "srcnat")

CHAIN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,27}$")  # iptables allows 28 characters
NFT_CHAIN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,254}$")  # nftables: NFT_NAME_MAXLEN 256 with NUL
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")
# Printable ASCII without backslash or single quote (iptables-save escapes both); '"' is
# allowed for the reference comment format and escaped by the iptables renderer.
COMMENT_RE = re.compile(r'^[ !"#-&(-\[\]-~]{1,255}$')
MAX_MULTIPORT = 15


def _bad(what: str, value: object, rule: str) -> InvalidConfig:
    return InvalidConfig(f"invalid firewall {what} {value!r}: {rule}")


def _network(what: str, value: str) -> Tuple[bool, Network]:
    """Parse '[!]addr[/len]' into (negated, network); host bits are masked off."""
    if not isinstance(value, str):
        raise _bad(what, value, "must be a string")
    negated = value.startswith("!")
    text = value[1:] if negated else value
    try:
        return negated, ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _bad(what, value, "must be an IP address or CIDR, optionally prefixed with '!'") from None


def _ifname(what: str, value: str) -> Tuple[bool, str]:
    if not isinstance(value, str):
        raise _bad(what, value, "must be a string")
    negated = value.startswith("!")
    name = value[1:] if negated else value
    if not IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise _bad(what, value, "must be an interface name (a letter or digit, then letters, digits, '_', '.', '-'; at most 15)")
    return negated, name


class NftChainName(str):
    """A chain name only nftables can hold (up to 255 characters, e.g. upstream's
    ``cni-br-iface-<container id>-<ifname>``); the iptables backend refuses it."""


def check_chain_name(name: str) -> str:
    if isinstance(name, NftChainName):
        if not NFT_CHAIN_RE.fullmatch(name):
            raise _bad("nftables chain name", str(name), "must start with a letter and use only "
                       "letters, digits, '_', '.', '-' (at most 255 characters)")
        return name
    if not isinstance(name, str) or not CHAIN_RE.fullmatch(name):
        raise _bad("chain name", name, "must start with a letter and use only letters, digits, "
                   "'_', '.', '-' (at most 28 characters)")
    return name


def check_table_name(name: str) -> str:
    if not isinstance(name, str) or not TABLE_RE.fullmatch(name):
        raise _bad("table name", name, "must start with a letter and use only letters, digits, '_', '-'")
    return name


def check_comment(comment: str) -> str:
    if not isinstance(comment, str) or not COMMENT_RE.fullmatch(comment):
        raise _bad("comment", comment, "must be 1-255 printable ASCII characters without "
                   "backslash or single quote")
    return comment


def _port(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _bad(what, value, "must be an integer 1-65535")
    return value


def _mark(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 0xFFFFFFFF:
        raise _bad(what, value, "must be an integer 1..0xfffffffe (the bits to match or set)")
    return value


@dataclass(frozen=True)
class Rule:
    """One rule. ``target`` is a verdict from VERDICTS or the name of a chain to jump to.

    Addresses and interfaces may be negated with a leading '!'. ``dports`` with
    one port is ``--dport``, with more ``-m multiport``. ``mark`` matches packets
    with those bits set, ``set_mark`` (target MARK) sets them. ``insert`` puts
    the rule at the top of a shared chain instead of the end. ``keep`` leaves
    the rule in place on remove (infrastructure shared by many rule sets).
    ``multiport`` uses ``-m multiport`` even for one port and ``comment_first``
    puts the comment before the port match (the reference portmap's entry rules).
    ``ether_src`` matches the frame's source MAC (nftables ``ether saddr``; bridge
    or netdev tables).
    """

    target: str
    src: Optional[str] = None
    dst: Optional[str] = None
    iif: Optional[str] = None
    oif: Optional[str] = None
    proto: Optional[str] = None
    dports: Tuple[int, ...] = ()
    dst_local: bool = False
    mark: Optional[int] = None
    comment: Optional[str] = None
    to_addr: Optional[str] = None
    to_port: Optional[int] = None
    set_mark: Optional[int] = None
    random_fully: bool = False
    insert: bool = False
    keep: bool = False
    multiport: bool = False
    comment_first: bool = False
    ether_src: Optional[str] = None

    def __post_init__(self) -> None:
        if self.target not in VERDICTS:
            check_chain_name(self.target)
        for what in ("src", "dst"):
            if getattr(self, what) is not None:
                _network(what, getattr(self, what))
        for what in ("iif", "oif"):
            if getattr(self, what) is not None:
                _ifname(what, getattr(self, what))
        if self.proto is not None and self.proto not in PROTOCOLS:
            raise _bad("protocol", self.proto, f"must be one of {', '.join(PROTOCOLS)}")
        if not isinstance(self.dports, tuple):
            raise _bad("dports", self.dports, "must be a tuple of ports")
        for port in self.dports:
            _port("port", port)
        if self.dports and self.proto is None:
            raise _bad("dports", self.dports, "need a protocol")
        if len(self.dports) > MAX_MULTIPORT:
            raise _bad("dports", self.dports, f"at most {MAX_MULTIPORT} ports per rule")
        if self.mark is not None:
            _mark("mark", self.mark)
        if self.ether_src is not None and not (isinstance(self.ether_src, str)
                                               and MAC_RE.fullmatch(self.ether_src)):
            raise _bad("ether_src", self.ether_src, "must be a MAC address in lower case, "
                       "e.g. 0a:58:0a:f4:01:02")
        if self.comment is not None:
            check_comment(self.comment)
        self._check_target_options()
        self.family  # addresses of one family only

    def _check_target_options(self) -> None:
        dnat = self.target == "DNAT"
        if dnat != (self.to_addr is not None) or dnat != (self.to_port is not None):
            raise _bad("DNAT destination", (self.to_addr, self.to_port),
                       "to_addr and to_port are required with target DNAT and only there")
        if dnat:
            try:
                ipaddress.ip_address(self.to_addr)
            except ValueError:
                raise _bad("DNAT address", self.to_addr, "must be an IP address") from None
            _port("DNAT port", self.to_port)
            if self.proto is None:
                raise _bad("DNAT destination", f"{self.to_addr} port {self.to_port}",
                           "a port needs a protocol (proto tcp, udp or sctp)")
        if (self.target == "MARK") != (self.set_mark is not None):
            raise _bad("set_mark", self.set_mark, "is required with target MARK and only there")
        if self.set_mark is not None:
            _mark("set_mark", self.set_mark)
        if self.random_fully and self.target != "MASQUERADE":
            raise _bad("random_fully", True, "only goes with target MASQUERADE")
        for flag in ("dst_local", "random_fully", "insert", "keep", "multiport", "comment_first"):
            if not isinstance(getattr(self, flag), bool):
                raise _bad(flag, getattr(self, flag), "must be true or false")

    @property
    def family(self) -> Optional[str]:
        """'ipv4' / 'ipv6' from the addresses in the rule, None when it has none."""
        versions = {_network(w, getattr(self, w))[1].version for w in ("src", "dst")
                    if getattr(self, w) is not None}
        if self.to_addr is not None:
            versions.add(ipaddress.ip_address(self.to_addr).version)
        if len(versions) > 1:
            raise _bad("rule", self, "mixes IPv4 and IPv6 addresses")
        return {4: "ipv4", 6: "ipv6"}.get(versions.pop()) if versions else None

    def network(self, what: str) -> Tuple[bool, Network]:
        return _network(what, getattr(self, what))

    def interface(self, what: str) -> Tuple[bool, str]:
        return _ifname(what, getattr(self, what))


@dataclass(frozen=True)
class Hook:
    """Makes an nftables chain a base chain: ``type nat hook postrouting priority srcnat``."""

    type: str
    hook: str
    priority: Union[str, int]

    def __post_init__(self) -> None:
        if self.type not in NFT_HOOK_TYPES:
            raise _bad("hook type", self.type, f"must be one of {', '.join(NFT_HOOK_TYPES)}")
        if self.hook not in NFT_HOOKS:
            raise _bad("hook", self.hook, f"must be one of {', '.join(NFT_HOOKS)}")
        prio = self.priority
        if not (prio in NFT_PRIORITIES or (isinstance(prio, int) and not isinstance(prio, bool)
                                           and -1000 <= prio <= 1000)):
            raise _bad("hook priority", prio, f"must be one of {', '.join(NFT_PRIORITIES)} "
                       "or an integer -1000..1000")


@dataclass(frozen=True)
class Chain:
    name: str
    rules: Tuple[Rule, ...] = ()
    owned: bool = False
    hook: Optional[Hook] = None  # nftables base chains only

    def __post_init__(self) -> None:
        check_chain_name(self.name)
        if not isinstance(self.rules, tuple) or not all(isinstance(r, Rule) for r in self.rules):
            raise _bad("rules of chain", self.name, "must be a tuple of Rule")
        if self.owned and any(r.insert or r.keep for r in self.rules):
            raise _bad("chain", self.name, "is owned: its rules are rewritten in order and removed "
                       "with it, so insert/keep make no sense there")


@dataclass(frozen=True)
class RuleSet:
    """What one writer wants in one table.

    ``comment`` names the writer (e.g. ``name: "cbr0" id: "<container>"``):
    remove() also deletes every rule in the table carrying it, so a DEL that
    no longer knows the addresses still finds everything.
    """

    family: str
    table: str
    chains: Tuple[Chain, ...] = ()
    comment: Optional[str] = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise _bad("family", self.family, f"must be one of {', '.join(FAMILIES)}")
        check_table_name(self.table)
        if not isinstance(self.chains, tuple) or not all(isinstance(c, Chain) for c in self.chains):
            raise _bad("chains of table", self.table, "must be a tuple of Chain")
        names = [c.name for c in self.chains]
        if len(set(names)) != len(names):
            raise _bad("chains of table", self.table, "name a chain twice")
        if self.comment is not None:
            check_comment(self.comment)
        for chain in self.chains:
            for rule in chain.rules:
                fam = rule.family
                if fam is not None and self.family != "inet" and fam != self.family:
                    raise _bad("rule", rule, f"has {fam} addresses in an {self.family} rule set")
