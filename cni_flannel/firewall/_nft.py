"""nftables backend: our own tables, ``nft -a list table`` once, ``nft -f -`` once.

Only missing chains are sent, with ``create`` (fails if one appeared
meanwhile, and the change is planned again); existing chains are never
redeclared or flushed unless owned. Rules are rendered in the text ``nft list`` prints back,
found in a listing by that text (or by comment, or by the chain they jump
to) and deleted by handle.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from cni_flannel.cni.errors import InvalidConfig

from ._backend import Firewall
from ._exec import command_error
from ._model import Chain, Rule, RuleSet, check_table_name

NFT_FAMILIES = {"ipv4": "ip", "ipv6": "ip6", "inet": "inet", "bridge": "bridge"}
MAX_COMMENT = 128  # NFT_USERDATA comment limit as knftables enforces it
VERBS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return"}
Listed = List[Tuple[str, int]]  # (rule text, handle)
State = Optional[Dict[str, Listed]]  # None: the table does not exist

_CHAIN_LINE = re.compile(r"^\s*chain (\S+) \{")
_RULE_LINE = re.compile(r"^\s*(.*\S) # handle (\d+)$")
_COMMENT = re.compile(r' comment "([^"]*)"$')
_JUMP = re.compile(r"(?:^| )(?:jump|goto) (\S+)")


# --- rendering (pure) -----------------------------------------------------------------------

def nft_comment(comment: str) -> str:
    if '"' in comment or len(comment) > MAX_COMMENT:
        raise InvalidConfig(f"invalid nftables comment {comment!r}: nft strings cannot hold '\"' "
                            f"and comments are at most {MAX_COMMENT} characters")
    return f'"{comment}"'


def rule_text(rule: Rule, family: str) -> str:
    """The rule as ``nft list`` prints it (family: the table's ip / ip6 / inet)."""
    parts: List[str] = []
    if rule.dst_local:
        parts.append("fib daddr type local")
    for what, field in (("src", "saddr"), ("dst", "daddr")):
        if getattr(rule, what) is not None:
            negated, net = rule.network(what)
            addr = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
            parts.append(f"{'ip' if net.version == 4 else 'ip6'} {field} {'!= ' * negated}{addr}")
    for what, key in (("iif", "iifname"), ("oif", "oifname")):
        if getattr(rule, what) is not None:
            negated, name = rule.interface(what)
            parts.append(f'{key} {"!= " * negated}"{name}"')
    if rule.ether_src is not None:
        parts.append(f"ether saddr {rule.ether_src}")
    if rule.proto and len(rule.dports) == 1:
        parts.append(f"{rule.proto} dport {rule.dports[0]}")
    elif rule.proto and rule.dports:
        parts.append(f"{rule.proto} dport {{ {', '.join(map(str, rule.dports))} }}")
    elif rule.proto:
        parts.append(f"meta l4proto {rule.proto}")
    if rule.mark is not None:
        parts.append(f"meta mark & 0x{rule.mark:08x} == 0x{rule.mark:08x}")
    parts.append(_verdict(rule, family))
    if rule.comment is not None:
        parts.append("comment " + nft_comment(rule.comment))
    return " ".join(parts)


def _verdict(rule: Rule, family: str) -> str:
    if rule.target in VERBS:
        return VERBS[rule.target]
    if rule.target == "MASQUERADE":
        return "masquerade fully-random" if rule.random_fully else "masquerade"
    if rule.target == "DNAT":
        v6 = ":" in str(rule.to_addr)
        host = f"[{rule.to_addr}]" if v6 else rule.to_addr
        via = f"{'ip6' if v6 else 'ip'} " if family == "inet" else ""
        return f"dnat {via}to {host}:{rule.to_port}"
    if rule.target == "MARK":
        return f"meta mark set meta mark | 0x{rule.set_mark:08x}"
    return f"jump {rule.target}"


def _norm(text: str) -> str:
    return " ".join(text.split())


def parse_list(text: str) -> Dict[str, Listed]:
    """``nft -a list table`` output -> {chain: [(rule text, handle), ...]}."""
    chains: Dict[str, Listed] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        m = _CHAIN_LINE.match(line)
        if m:
            current = m.group(1)
            chains[current] = []
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _RULE_LINE.match(line)
        if m and current is not None:
            chains[current].append((_norm(m.group(1)), int(m.group(2))))
    return chains


def _comment_of(text: str) -> Optional[str]:
    m = _COMMENT.search(text)
    return m.group(1) if m else None


def _jump_of(text: str) -> Optional[str]:
    m = _JUMP.search(_COMMENT.sub("", text))
    return m.group(1) if m else None


# --- planning (pure) -----------------------------------------------------------------------

def _chain_decl(prefix: str, chain: Chain) -> str:
    # "create" fails if another writer made the chain meanwhile: the change is then
    # planned again, so two first writers cannot both add the chain's shared rules.
    if chain.hook is None:
        return f"create chain {prefix} {chain.name}"
    h = chain.hook
    return (f"create chain {prefix} {chain.name} {{ type {h.type} hook {h.hook} "
            f"priority {h.priority}; policy accept; }}")


def plan_apply(rs: RuleSet, state: State) -> List[str]:
    fam = NFT_FAMILIES[rs.family]
    prefix = f"{fam} {rs.table}"
    chains = state or {}
    head = [f"add table {prefix}"] if state is None else []
    head += [_chain_decl(prefix, c) for c in rs.chains if c.name not in chains]
    body: List[str] = []
    for chain in rs.chains:
        current = [t for t, _ in chains.get(chain.name, [])]
        want = [rule_text(r, fam) for r in chain.rules]
        if chain.owned:
            if chain.name in chains and current != want:
                body.append(f"flush chain {prefix} {chain.name}")
            if chain.name not in chains or current != want:
                body += [f"add rule {prefix} {chain.name} {t}" for t in want]
            continue
        have, inserts = set(current), []
        for rule, text in zip(chain.rules, want):
            if text in have:
                continue
            have.add(text)
            (inserts if rule.insert else body).append(
                f"{'insert' if rule.insert else 'add'} rule {prefix} {chain.name} {text}")
        body += reversed(inserts)
    return head + body


def plan_remove(rs: RuleSet, state: State) -> List[str]:
    if state is None:
        return []
    fam = NFT_FAMILIES[rs.family]
    prefix = f"{fam} {rs.table}"
    owned = {c.name for c in rs.chains if c.owned and c.name in state}
    ours: Dict[str, set] = {}
    kept: Dict[str, set] = {}
    for chain in rs.chains:
        for rule in chain.rules:
            (kept if rule.keep else ours).setdefault(chain.name, set()).add(rule_text(rule, fam))
    deletes = []
    for name, listed in state.items():
        if name in owned:
            continue
        for text, handle in listed:
            if text in kept.get(name, ()):
                continue
            if (text in ours.get(name, ()) or _jump_of(text) in owned
                    or (rs.comment is not None and _comment_of(text) == rs.comment)):
                deletes.append(f"delete rule {prefix} {name} handle {handle}")
    return (deletes + [f"flush chain {prefix} {c}" for c in sorted(owned)]
            + [f"delete chain {prefix} {c}" for c in sorted(owned)])


def plan_check(rs: RuleSet, state: State) -> List[str]:
    fam = NFT_FAMILIES[rs.family]
    if state is None:
        return [f"table {fam} {rs.table} is missing"]
    problems = []
    for chain in rs.chains:
        where = f"{fam} {rs.table} {chain.name}"
        if chain.name not in state:
            problems.append(f"chain {where} is missing")
            continue
        have = [t for t, _ in state[chain.name]]
        want = [rule_text(r, fam) for r in chain.rules]
        problems += [f"rule missing in {where}: {t}" for t in want if t not in have]
        if chain.owned:
            problems += [f"unexpected rule in {where}: {t}" for t in have if t not in want]
            if not problems and have != want:
                problems.append(f"rules out of order in {where}")
    return problems


# --- the backend -------------------------------------------------------------------------

class NftFirewall(Firewall):
    name = "nftables"

    def supports(self, ruleset: RuleSet) -> None:
        if ruleset.comment is not None:
            nft_comment(ruleset.comment)
        for chain in ruleset.chains:
            for rule in chain.rules:
                rule_text(rule, NFT_FAMILIES[ruleset.family])  # comment limits

    def comments(self, family: str, table: str) -> List[str]:
        found = {_comment_of(t) for listed in (self._snapshot(family, table) or {}).values()
                 for t, _ in listed}
        return sorted(c for c in found if c is not None)

    def chains(self, family: str, table: str, prefix: str = "") -> List[str]:
        return sorted(c for c in (self._snapshot(family, table) or {}) if c.startswith(prefix))

    def rules(self, family: str, table: str) -> Dict[str, List[str]]:
        """{chain: [rule text as ``nft list`` prints it, without handle]}; {} without the table."""
        return {c: [t for t, _ in listed] for c, listed in (self._snapshot(family, table) or {}).items()}

    def delete_table(self, family: str, table: str) -> None:
        """Remove a table we own entirely (chains, rules, hooks); an absent table is fine.
        Only for tables nobody else writes (e.g. flanneld's ``flannel-ipv4``)."""
        check_table_name(table)
        if self._snapshot(family, table) is None:
            return
        self._commit(family, _batch([f"delete table {NFT_FAMILIES[family]} {table}"]))

    def _snapshot(self, family: str, table: str) -> State:
        argv = ["nft", "-a", "list", "table", NFT_FAMILIES[family], table]
        done = self.runner.run(argv, check=False)
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise command_error(argv, done.returncode, done.stderr)
        return parse_list(done.stdout)

    def _plan_apply(self, rs: RuleSet, state: State) -> str:
        return _batch(plan_apply(rs, state))

    def _plan_remove(self, rs: RuleSet, state: State) -> str:
        return _batch(plan_remove(rs, state))

    def _plan_check(self, rs: RuleSet, state: State) -> List[str]:
        return plan_check(rs, state)

    def _commit(self, family: str, batch: str) -> None:
        self.runner.run(["nft", "-f", "-"], stdin=batch)


def _batch(lines: List[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
