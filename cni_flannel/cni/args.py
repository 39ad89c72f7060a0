"""CNI_ARGS: ``K=V;K=V`` pairs (SPEC.md; pkg/types/args.go).

Unknown keys are ignored whether or not ``IgnoreUnknown`` is given: each plugin
looks only for the keys it knows (IP, MAC, K8S_POD_*...).  A pair without
``=`` or with an empty key is rejected, as the Go library does.
"""

from __future__ import annotations

from typing import Dict

from .errors import InvalidEnvironment


def parse_cni_args(raw: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if pair == "":
            continue  # tolerate a trailing ';'
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidEnvironment(
                f"invalid CNI_ARGS pair {pair!r}",
                "CNI_ARGS must be KEY=VALUE pairs separated by ';'",
            )
        out[key.strip()] = value
    return out
