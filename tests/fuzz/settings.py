"""How many cases each fuzz target runs, and the count of what ran (for the reliability table)."""
from __future__ import annotations

import json
import os
from typing import Dict

from hypothesis import HealthCheck, settings

#: cases per target: 100 in `make test`, >= 1000 in `make reliability`
EXAMPLES = int(os.environ.get("CNI_FUZZ_EXAMPLES", "100"))
#: where counts go (JSON lines), when set
REPORT = os.environ.get("CNI_FUZZ_REPORT", "")


def fuzz_settings(examples: int = EXAMPLES) -> settings:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=os.environ.get("CNI_FUZZ_RANDOM") != "1",
                    suppress_health_check=list(HealthCheck))


def report(target: str, counts: Dict[str, int]) -> None:
    """Append one target's counts (cases, results, clean errors, tracebacks) to CNI_FUZZ_REPORT."""
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps({"target": target, **counts}) + "\n")
