"""The Firewall interface: apply / check / remove a RuleSet, list what exists.

Each change is one snapshot (``iptables-save -t`` / ``nft list table``) and
one transaction (``iptables-restore --noflush`` / ``nft -f -``), planned from
the snapshot by pure functions. If the transaction fails because another
writer changed the table in between (a chain we create appeared, a rule we
delete went away), the change is planned again from a fresh snapshot.
"""

from __future__ import annotations

from typing import List, Optional

from cni_flannel.cni.errors import CNIError, InvalidConfig

from ._exec import Runner
from ._model import RuleSet

ATTEMPTS = 4


class Firewall:
    name = "abstract"

    def __init__(self, runner: Optional[Runner] = None) -> None:
        self.runner = runner or Runner()

    # --- public --------------------------------------------------------------------------
    def apply(self, ruleset: RuleSet) -> None:
        """Make the rule set present; idempotent, never touches others' rules."""
        self._retry(ruleset, self._plan_apply)

    def remove(self, ruleset: RuleSet) -> None:
        """Remove the rule set's rules (except keep), its owned chains and every rule
        jumping to them, and every rule carrying ruleset.comment. Idempotent."""
        self._retry(ruleset, self._plan_remove)

    def check(self, ruleset: RuleSet) -> List[str]:
        """What is missing or wrong; an empty list means the rule set is in place."""
        self.supports(ruleset)
        return self._plan_check(ruleset, self._snapshot(ruleset.family, ruleset.table))

    def chains(self, family: str, table: str, prefix: str = "") -> List[str]:
        """Names of the chains in the table starting with prefix."""
        return sorted(c for c in self._snapshot(family, table) if c.startswith(prefix))

    def comments(self, family: str, table: str) -> List[str]:
        """Distinct rule comments in the table (for GC: find rule sets by owner)."""
        raise NotImplementedError

    def supports(self, ruleset: RuleSet) -> None:
        """Raise InvalidConfig if this backend cannot express the rule set."""

    # --- backend hooks ----------------------------------------------------------------
    def _snapshot(self, family: str, table: str):
        raise NotImplementedError

    def _plan_apply(self, ruleset: RuleSet, state) -> str:
        raise NotImplementedError

    def _plan_remove(self, ruleset: RuleSet, state) -> str:
        raise NotImplementedError

    def _plan_check(self, ruleset: RuleSet, state) -> List[str]:
        raise NotImplementedError

    def _commit(self, family: str, batch: str) -> None:
        raise NotImplementedError

    def _retry(self, ruleset: RuleSet, plan) -> None:
        self.supports(ruleset)
        for attempt in range(ATTEMPTS):
            batch = plan(ruleset, self._snapshot(ruleset.family, ruleset.table))
            if not batch:
                return
            try:
                self._commit(ruleset.family, batch)
                return
            except InvalidConfig:
                raise
            except CNIError:
                if attempt == ATTEMPTS - 1:
                    raise

    def __repr__(self) -> str:
        return f"<Firewall {self.name}>"
