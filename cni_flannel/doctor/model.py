"""What a check answers: a status, one line of evidence, and the fix when it fails.

    ✔ ok       the thing is as it should be
    ✘ fail     a problem; ``fix`` says what to do
    ! unknown  could not be checked (a source is absent: no etcd given, nothing on the
               health port...); ``evidence`` says why

The exit status of ``doctor``: 0 when nothing failed, 1 when a check failed, 2 when the
node could not be inspected at all (not root, no netlink) -- "!" alone never makes it
non-zero, so a node checked without etcd or a daemon can still answer 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
STATUSES = (OK, FAIL, UNKNOWN)
EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_INSPECT = 0, 1, 2
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Check:
    """One check's answer. ``items``: per-thing detail lines (one per peer, leaked address...)."""

    id: str
    title: str
    status: str
    evidence: str
    fix: str = ""
    items: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        if self.status == FAIL and not self.fix:
            raise ValueError(f"check {self.id}: a failing check must say how to fix it")
        object.__setattr__(self, "items", tuple(self.items))

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "evidence": self.evidence,
                "fix": self.fix or None, "items": list(self.items)}


def ok(id: str, title: str, evidence: str, items: Tuple[str, ...] = ()) -> Check:
    return Check(id, title, OK, evidence, "", items)


def fail(id: str, title: str, evidence: str, fix: str, items: Tuple[str, ...] = ()) -> Check:
    return Check(id, title, FAIL, evidence, fix, items)


def unknown(id: str, title: str, evidence: str, fix: str = "", items: Tuple[str, ...] = ()) -> Check:
    return Check(id, title, UNKNOWN, evidence, fix, items)


@dataclass(frozen=True)
class Report:
    checks: Tuple[Check, ...]
    node: str = ""
    elapsed: float = 0.0
    error: Optional[str] = None  # the node could not be inspected at all
    notes: Tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_CANNOT_INSPECT
        return EXIT_PROBLEMS if any(c.status == FAIL for c in self.checks) else EXIT_OK

    def counts(self) -> Dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def by_id(self) -> Dict[str, Check]:
        return {c.id: c for c in self.checks}

    def to_dict(self) -> Dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "node": self.node, "exit_code": self.exit_code,
                "error": self.error, "elapsed_seconds": round(self.elapsed, 3), "summary": self.counts(),
                "checks": [c.to_dict() for c in self.checks], "notes": list(self.notes)}


# The JSON document --json prints, as a JSON Schema (draft 2020-12 subset): tools and tests
# validate against it.
JSON_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["schema", "node", "exit_code", "error", "elapsed_seconds", "summary", "checks", "notes"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "node": {"type": "string"},
        "exit_code": {"enum": [EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_INSPECT]},
        "error": {"type": ["string", "null"]},
        "elapsed_seconds": {"type": "number", "minimum": 0},
        "summary": {"type": "object", "required": list(STATUSES), "additionalProperties": False,
                    "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES}},
        "checks": {"type": "array", "items": {
            "type": "object", "required": ["id", "title", "status", "evidence", "fix", "items"],
            "additionalProperties": False,
            "properties": {"id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
                           "title": {"type": "string", "minLength": 1},
                           "status": {"enum": list(STATUSES)},
                           "evidence": {"type": "string", "minLength": 1},
                           "fix": {"type": ["string", "null"]},
                           "items": {"type": "array", "items": {"type": "string"}}}}},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}


def schema_errors(doc: Any, schema: Dict[str, Any] = JSON_SCHEMA, where: str = "$") -> List[str]:
    """Validate ``doc`` against the subset of JSON Schema JSON_SCHEMA uses (no dependency)."""
    errors: List[str] = []
    kinds = {"object": dict, "array": list, "string": str, "number": (int, float), "integer": int, "null": type(None)}
    if "const" in schema and doc != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {doc!r}")
    if "enum" in schema and doc not in schema["enum"]:
        errors.append(f"{where}: {doc!r} not one of {schema['enum']}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(isinstance(doc, kinds[t]) and not (t in ("number", "integer") and isinstance(doc, bool))
                   for t in types):
            return errors + [f"{where}: expected {'/'.join(types)}, got {type(doc).__name__}"]
    if isinstance(doc, dict):
        props = schema.get("properties", {})
        errors += [f"{where}: missing {k!r}" for k in schema.get("required", ()) if k not in doc]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected {k!r}" for k in doc if k not in props]
        for key, sub in props.items():
            if key in doc:
                errors += schema_errors(doc[key], sub, f"{where}.{key}")
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    if isinstance(doc, str):
        import re

        if len(doc) < schema.get("minLength", 0):
            errors.append(f"{where}: empty")
        if "pattern" in schema and not re.search(schema["pattern"], doc):
            errors.append(f"{where}: {doc!r} does not match {schema['pattern']}")
    if isinstance(doc, (int, float)) and not isinstance(doc, bool) and doc < schema.get("minimum", doc):
        errors.append(f"{where}: {doc} below {schema['minimum']}")
    return errors
