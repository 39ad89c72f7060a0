"""The three PATCH formats of the Kubernetes API, for the test API server (tests/harness/kubeapi.py).

- JSON merge patch (RFC 7386, application/merge-patch+json): objects merge, null deletes, lists
  are replaced whole.
- Strategic merge patch (application/strategic-merge-patch+json): a merge patch whose lists follow
  the type's patch metadata (the ``patchStrategy``/``patchMergeKey`` tags of k8s.io/api): lists of
  objects with a merge key are merged element by element, "merge" lists of scalars are unions, all
  other lists are replaced.  Directives: ``$patch: replace|delete`` (in a map or a list element),
  ``$setElementOrder/<list>`` (ordering only: accepted and dropped), ``$retainKeys`` (dropped),
  ``$deleteFromPrimitiveList/<list>``.
- JSON patch (RFC 6902, application/json-patch+json): add, remove, replace, test.

The patch metadata is data about the Node schema (``NODE_LIST_STRATEGIES``), as the real server
reads it from the Go struct tags; nothing here knows what any field means.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Tuple

# path (dotted, from the object's root) -> (strategy, merge key or None for scalar lists);
# from k8s.io/api/core/v1 and k8s.io/apimachinery/pkg/apis/meta/v1 struct tags.
NODE_LIST_STRATEGIES: Dict[str, Tuple[str, Optional[str]]] = {
    "metadata.finalizers": ("merge", None),
    "metadata.ownerReferences": ("merge", "uid"),
    "spec.podCIDRs": ("merge", None),
    "status.conditions": ("merge", "type"),
    "status.addresses": ("merge", "type"),
    "status.volumesAttached": ("merge", "name"),  # no tag upstream either way; harmless
}


class PatchError(ValueError):
    """The patch cannot be applied (the server answers 422/400 with this message)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge(target: Any, patch: Any, strategies: Mapping[str, Tuple[str, Optional[str]]],
                    path: str = "") -> Any:
    if not isinstance(patch, dict):
        raise PatchError(f"strategic merge patch at {path or 'the root'} must be an object")
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(out.get(name), list) and isinstance(value, list):
                out[name] = [x for x in out[name] if x not in value]
            continue
        sub = f"{path}.{key}" if path else key
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(out.get(key), value, strategies, sub)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _merge_list(out.get(key), value, strategies, sub)
        else:
            out[key] = value
    return out


def _merge_list(current: Any, patch: List[Any], strategies: Mapping[str, Tuple[str, Optional[str]]],
                path: str) -> List[Any]:
    strategy, key = strategies.get(path, ("replace", None))
    if strategy != "merge" or not isinstance(current, list):
        return [x for x in copy.deepcopy(patch) if not (isinstance(x, dict) and x.get("$patch"))]
    if key is None:  # a set of scalars
        out = list(current)
        out += [x for x in patch if x not in out]
        return out
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{path}: every element needs the merge key {key!r}")
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
        elif idx is None:
            out.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            out[idx] = strategic_merge(out[idx], item, strategies, path)
    return out


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 (add, remove, replace, test)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"bad JSON patch operation {op!r}")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        if not parts:
            raise PatchError("JSON patch on the whole document is not supported")
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.get(p) if isinstance(parent, dict) else None
            if parent is None:
                raise PatchError(f"JSON patch path {op['path']!r} does not exist")
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, op.get("value"))
            elif kind == "remove":
                del parent[idx]
            elif kind == "replace":
                parent[idx] = op.get("value")
            elif kind == "test" and parent[idx] != op.get("value"):
                raise PatchError(f"JSON patch test failed at {op['path']!r}")
        elif isinstance(parent, dict):
            if kind in ("remove", "replace", "test") and last not in parent:
                raise PatchError(f"JSON patch path {op['path']!r} does not exist")
            if kind in ("add", "replace"):
                parent[last] = op.get("value")
            elif kind == "remove":
                del parent[last]
            elif kind == "test" and parent[last] != op.get("value"):
                raise PatchError(f"JSON patch test failed at {op['path']!r}")
        else:
            raise PatchError(f"JSON patch path {op['path']!r} does not exist")
        if kind not in ("add", "remove", "replace", "test"):
            raise PatchError(f"JSON patch op {kind!r} is not supported")
    return doc
