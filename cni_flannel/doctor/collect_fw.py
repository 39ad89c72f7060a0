"""Firewall snapshots: iptables-{legacy,nft}-save per family, and `nft -a list ruleset`.

The mode the node uses is decided by the firewall layer's own ``detect_mode`` (kube-proxy's
rule), fed from these snapshots instead of running its saves again.
"""

from __future__ import annotations

import re
import subprocess
from typing import Dict, List, Sequence

from cni_flannel.cni.errors import CNIError
from cni_flannel.firewall import Runner, detect_mode
from cni_flannel.firewall._iptables import MODES, legacy_unused, tool

from .facts import IptablesSave, NodeFacts

_TABLE_RE = re.compile(r"^\*(\w+)\n(.*?)^COMMIT$", re.S | re.M)


def split_tables(text: str) -> Dict[str, str]:
    """iptables-save (all tables) -> {table: the "*table ... COMMIT" block}."""
    return {m.group(1): m.group(0) for m in _TABLE_RE.finditer(text)}


class _Snapshots(Runner):
    """Answers detect_mode's saves from snapshots already taken."""

    def __init__(self, saves: Dict[str, str]) -> None:
        super().__init__()
        self.saves = saves

    def run(self, argv: Sequence[str], stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
        text = self.saves.get(argv[0], "")
        if len(argv) >= 3 and argv[1] == "-t":
            text = split_tables(text).get(argv[2], "")
        return subprocess.CompletedProcess(list(argv), 0, text, "")


def read_firewall(f: NodeFacts, families: List[str], runner: Runner) -> None:
    saves: Dict[str, str] = {}
    skip_legacy = legacy_unused()
    try:
        for mode in MODES:
            for family in ("ipv4", "ipv6"):
                name = tool(mode, family, "save")
                if mode == "legacy" and skip_legacy:
                    saves[name] = ""  # no legacy table was ever loaded here: nothing to save
                    continue
                if family not in families and family == "ipv6":
                    saves[name] = ""
                    continue
                saves[name] = runner.run([name]).stdout
    except CNIError as exc:
        f.unavailable["iptables"] = exc.msg
    else:
        f.iptables_mode = detect_mode(_Snapshots(saves))
        for mode in MODES:
            for family in families:
                f.iptables.append(IptablesSave(mode, family, split_tables(saves[tool(mode, family, "save")])))
    try:
        f.nft_text = runner.run(["nft", "-a", "list", "ruleset"]).stdout
    except CNIError as exc:
        f.unavailable["nft"] = exc.msg
