"""iptables backend: iptables-save once, iptables-restore --noflush once.

Rules are rendered in the canonical form iptables-save prints (-s -d -i -o -p,
then matches, then -j), so a rule in a snapshot is found by comparing tokens.
The --noflush pitfalls are planned around:

* ``:CHAIN`` flushes an existing chain, so only owned chains are declared;
  a missing shared chain is created with ``-N``, which fails (and the change
  is planned again) if another writer created it meanwhile -- it never
  wipes that writer's rules.
* one failing ``-D`` aborts the batch, so only rules present in the snapshot
  are deleted, each by the exact text iptables-save printed.
"""

from __future__ import annotations

import functools
import re
import shlex
from typing import Dict, List, Optional, Sequence, Set, Tuple

from cni_flannel.cni.errors import InvalidConfig

from ._backend import Firewall
from ._exec import Runner
from ._model import NftChainName, Rule, RuleSet

IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
MODES = ("nft", "legacy")
WAIT_SECONDS = 10
State = Dict[str, List[str]]  # chain -> rule specs as saved (after "-A <chain> "), in order
Tokens = Tuple[str, ...]


# --- rendering (pure) -----------------------------------------------------------------------

def quote(value: str) -> str:
    """Double-quote for iptables-restore; the model already rejects '\\', "'" and newlines."""
    return '"' + value.replace('"', '\\"') + '"'


def rule_spec(rule: Rule) -> str:
    """The rule as iptables-save prints it, without ``-A <chain>``."""
    parts: List[str] = []
    for what, flag in (("src", "-s"), ("dst", "-d")):
        if getattr(rule, what) is not None:
            negated, net = rule.network(what)
            parts += ["!"] * negated + [flag, str(net)]
    for what, flag in (("iif", "-i"), ("oif", "-o")):
        if getattr(rule, what) is not None:
            negated, name = rule.interface(what)
            parts += ["!"] * negated + [flag, name]
    if rule.proto:
        parts += ["-p", rule.proto]
    if rule.comment is not None and rule.comment_first:
        parts += ["-m", "comment", "--comment", quote(rule.comment)]
    if len(rule.dports) == 1 and not rule.multiport:
        parts += ["-m", str(rule.proto), "--dport", str(rule.dports[0])]
    elif rule.dports:
        parts += ["-m", "multiport", "--dports", ",".join(map(str, rule.dports))]
    if rule.dst_local:
        parts += ["-m", "addrtype", "--dst-type", "LOCAL"]
    if rule.mark is not None:
        parts += ["-m", "mark", "--mark", f"{rule.mark:#x}/{rule.mark:#x}"]
    if rule.comment is not None and not rule.comment_first:
        parts += ["-m", "comment", "--comment", quote(rule.comment)]
    parts += ["-j", rule.target]
    if rule.target == "DNAT":
        host = f"[{rule.to_addr}]" if ":" in str(rule.to_addr) else rule.to_addr
        parts += ["--to-destination", f"{host}:{rule.to_port}"]
    elif rule.target == "MARK":
        parts += ["--set-xmark", f"{rule.set_mark:#x}/{rule.set_mark:#x}"]
    elif rule.random_fully:
        parts += ["--random-fully"]
    return " ".join(parts)


_SHLEX_SPACE = ("", " ", "\t", "\r", "\n")  # shlex's whitespace (and "nothing": start or end of text)
_OTHER_SPACE = re.compile(r"[^\S \t\r\n]")  # whitespace str.split() splits on and shlex does not


@functools.lru_cache(maxsize=4096)
def tokens(spec: str) -> Optional[Tokens]:
    """Split a rule spec like iptables-restore does; None for text we cannot parse."""
    if "'" not in spec and "\\" not in spec and not _OTHER_SPACE.search(spec):
        if '"' not in spec:
            return tuple(spec.split())  # the common case, ~20x faster than shlex
        quoted = _double_quoted(spec)  # iptables-save's --comment "a b": still no shlex
        if quoted is not None:
            return quoted
    try:
        return tuple(shlex.split(spec))
    except ValueError:
        return None


def _double_quoted(spec: str) -> Optional[Tokens]:
    """shlex.split for a spec whose only quoting is whole double-quoted words (no backslash, no
    single quote): the text between quotes is one token.  None when a quote touches other text
    (a"b c"d) or is unbalanced: shlex decides those."""
    parts = spec.split('"')
    if len(parts) % 2 == 0:
        return None
    out: List[str] = []
    for i, part in enumerate(parts):
        if i % 2:
            before, after = parts[i - 1], parts[i + 1]
            if before[-1:] not in _SHLEX_SPACE or after[:1] not in _SHLEX_SPACE:
                return None
            if (not before and i > 1) or (not after and i + 2 < len(parts)):  # "a""b": one word
                return None
            out.append(part)
        else:
            out.extend(part.split())
    return tuple(out)


def _option(toks: Optional[Tokens], *flags: str) -> Optional[str]:
    if toks:
        for i, tok in enumerate(toks[:-1]):
            if tok in flags:
                return toks[i + 1]
    return None


def parse_save(text: str) -> State:
    """iptables-save output for one table -> {chain: [rule spec, ...]}."""
    state: State = {}
    for line in text.splitlines():
        if line.startswith(":"):
            state.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            _, chain, spec = (line.split(" ", 2) + [""])[:3]
            state.setdefault(chain, []).append(spec)
    return state


def restore_input(table: str, lines: Sequence[str]) -> str:
    return "\n".join([f"*{table}", *lines, "COMMIT", ""])


# --- planning (pure) -----------------------------------------------------------------------

def plan_apply(rs: RuleSet, state: State) -> List[str]:
    declare, create, body = [], [], []
    for chain in rs.chains:
        current = state.get(chain.name)
        want = [rule_spec(r) for r in chain.rules]
        if chain.owned:
            if current is None or [tokens(s) for s in current] != [tokens(s) for s in want]:
                declare.append(f":{chain.name} - [0:0]")  # ours alone: flush and rewrite
                body += [f"-A {chain.name} {s}" for s in want]
            continue
        if current is None:
            create.append(f"-N {chain.name}")
        have = {tokens(s) for s in current or ()}
        inserts = []
        for rule, spec in zip(chain.rules, want):
            if tokens(spec) in have:
                continue
            have.add(tokens(spec))
            if rule.insert:
                inserts.append(f"-I {chain.name} 1 {spec}")
            else:
                body.append(f"-A {chain.name} {spec}")
        body += reversed(inserts)  # each goes to the top: reversed keeps the described order
    return declare + create + body


def plan_remove(rs: RuleSet, state: State) -> List[str]:
    owned = {c.name for c in rs.chains if c.owned and c.name in state}
    ours: Dict[str, Set[Optional[Tokens]]] = {}
    kept: Dict[str, Set[Optional[Tokens]]] = {}
    for chain in rs.chains:
        for rule in chain.rules:
            (kept if rule.keep else ours).setdefault(chain.name, set()).add(tokens(rule_spec(rule)))
    deletes = []
    for name, specs in state.items():
        if name in owned:
            continue  # flushed below
        for spec in specs:
            toks = tokens(spec)
            if toks is None or toks in kept.get(name, ()):
                continue
            if (toks in ours.get(name, ())
                    or (rs.comment is not None and _option(toks, "--comment") == rs.comment)
                    or _option(toks, "-j", "-g", "--jump", "--goto") in owned):
                deletes.append(f"-D {name} {spec}")
    flushes = [f"-F {c.name}" for c in rs.chains if c.name in owned]
    drops = [f"-X {c.name}" for c in rs.chains if c.name in owned]
    return deletes + flushes + drops


def plan_check(rs: RuleSet, state: State) -> List[str]:
    problems = []
    for chain in rs.chains:
        where = f"{rs.table} {chain.name}"
        if chain.name not in state:
            problems.append(f"chain {where} is missing")
            continue
        have = [tokens(s) for s in state[chain.name]]
        for spec in (rule_spec(r) for r in chain.rules):
            if tokens(spec) not in have:
                problems.append(f"rule missing in {where}: {spec}")
        if chain.owned:
            want = [tokens(rule_spec(r)) for r in chain.rules]
            problems += [f"unexpected rule in {where}: {s}" for s in state[chain.name]
                         if tokens(s) not in want]
            if not problems and have != want:
                problems.append(f"rules out of order in {where}")
    return problems


# --- the backend -------------------------------------------------------------------------

def tool(mode: str, family: str, what: str) -> str:
    """e.g. tool("nft", "ipv6", "restore") -> "ip6tables-nft-restore"."""
    return f"{'ip6tables' if family == 'ipv6' else 'iptables'}-{mode}-{what}"


HINT_RE = re.compile(r"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) ", re.M)


LEGACY_TABLE_LISTS = ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")


def legacy_unused() -> bool:
    """No legacy x_tables table was ever loaded in the calling process's network
    namespace (the lists are per namespace and iptables-legacy-save reads them),
    so legacy holds no rules and no hint: detect_mode would say nft.  Lets a
    caller in the target namespace skip detect_mode's six saves."""
    for path in LEGACY_TABLE_LISTS:
        try:
            with open(path) as f:
                if f.read().strip():
                    return False
        except OSError:
            pass  # ip_tables not loaded at all
    return True


def detect_mode(runner: Runner) -> str:
    """legacy or nft, the way kube-proxy's iptables-wrapper decides: the kubelet's
    hint chains in mangle first, else whichever has more rules, nft on a tie."""
    def save(mode: str, family: str, table: Optional[str] = None) -> str:
        argv = [tool(mode, family, "save")] + (["-t", table] if table else [])
        return runner.run(argv, check=False).stdout

    for mode in MODES:
        if HINT_RE.search(save(mode, "ipv4", "mangle")):
            return mode
    counts = {mode: sum(line.startswith("-") for fam in ("ipv4", "ipv6")
                        for line in save(mode, fam).splitlines()) for mode in MODES}
    return "legacy" if counts["legacy"] > counts["nft"] else "nft"


class IptablesFirewall(Firewall):
    def __init__(self, mode: str = "nft", runner: Optional[Runner] = None) -> None:
        super().__init__(runner)
        if mode not in MODES:
            raise ValueError(f"iptables mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.name = f"iptables-{mode}"

    def supports(self, ruleset: RuleSet) -> None:
        if ruleset.family == "inet":
            raise InvalidConfig("the iptables backend has no 'inet' family: use one rule set per "
                                "family (ipv4, ipv6)")
        if ruleset.family == "bridge":
            raise InvalidConfig("the iptables backend has no 'bridge' family: bridge rule sets "
                                "need the nftables backend")
        if ruleset.table not in IPTABLES_TABLES:
            raise InvalidConfig(f"iptables has no table {ruleset.table!r}; use one of "
                                f"{', '.join(IPTABLES_TABLES)}")
        for chain in ruleset.chains:
            if chain.hook is not None:
                raise InvalidConfig(f"chain {chain.name!r}: hooks are for nftables; iptables "
                                    "rule sets hook from the built-in chains with jump rules")
            if isinstance(chain.name, NftChainName) or any(
                    isinstance(r.target, NftChainName) or r.ether_src is not None for r in chain.rules):
                raise InvalidConfig(f"chain {chain.name!r}: long nftables chain names and ether "
                                    "matches need the nftables backend")

    def comments(self, family: str, table: str) -> List[str]:
        found = {_option(tokens(spec), "--comment") for specs in self._snapshot(family, table).values()
                 for spec in specs}
        return sorted(c for c in found if c is not None)

    def _snapshot(self, family: str, table: str) -> State:
        if table not in IPTABLES_TABLES:
            raise InvalidConfig(f"iptables has no table {table!r}")
        return parse_save(self.runner.run([tool(self.mode, family, "save"), "-t", table]).stdout)

    def _plan_apply(self, rs: RuleSet, state: State) -> str:
        lines = plan_apply(rs, state)
        return restore_input(rs.table, lines) if lines else ""

    def _plan_remove(self, rs: RuleSet, state: State) -> str:
        lines = plan_remove(rs, state)
        return restore_input(rs.table, lines) if lines else ""

    def _plan_check(self, rs: RuleSet, state: State) -> List[str]:
        return plan_check(rs, state)

    def _commit(self, family: str, batch: str) -> None:
        self.runner.run([tool(self.mode, family, "restore"), "--noflush", "-w", str(WAIT_SECONDS)],
                        stdin=batch)
