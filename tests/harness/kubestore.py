"""The test API server's object store: Node objects with resourceVersions and a watch history.

Generic, as etcd plus the apiserver's watch cache are: create/update/patch/delete bump one
resourceVersion counter and record an event; ``watch_events`` replays the events after a version
and follows new ones (bookmarks on request, 410 Expired for a version older than the retained
history).  ``jump()`` advances the counter (writes to other objects), ``compact()`` forgets the
history (a restarted apiserver's watch cache), ``end_watches()`` ends every live watch.
No Kubernetes controller and no flannel logic.  Served over HTTP by tests/harness/kubeapi.py.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from .kubepatch import NODE_LIST_STRATEGIES, PatchError, json_patch, merge_patch, strategic_merge


class ApiStatus(Exception):
    def __init__(self, code: int, reason: str, message: str, name: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.name = code, reason, message, name

    def body(self) -> Dict[str, Any]:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.name:
            out["details"] = {"name": self.name, "kind": "nodes"}
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class NodeStore:
    def __init__(self, bookmark_interval: float = 1.0) -> None:
        self.bookmark_interval = bookmark_interval
        self._cond = threading.Condition()
        self._objects: Dict[str, Dict[str, Any]] = {}
        self._rv = 1
        self._compacted = 1  # watches from older versions get 410
        self._history: List[Tuple[int, str, Dict[str, Any]]] = []  # (rv, type, object)
        self._epoch = 0  # bumped by end_watches(): live watches end

    def end_watches(self) -> None:
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    @property
    def epoch(self) -> int:
        with self._cond:
            return self._epoch

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def jump(self, n: int) -> None:
        with self._cond:
            self._rv += n

    def compact(self) -> None:
        with self._cond:
            self._history.clear()
            self._compacted = self._rv
            self._cond.notify_all()

    def get(self, name: str) -> Dict[str, Any]:
        with self._cond:
            if name not in self._objects:
                raise ApiStatus(404, "NotFound", f'nodes "{name}" not found', name)
            return copy.deepcopy(self._objects[name])

    def names(self) -> List[str]:
        with self._cond:
            return sorted(self._objects)

    def add_node(self, name: str, pod_cidrs: Optional[List[str]] = None,
                 annotations: Optional[Dict[str, str]] = None, addresses: Optional[List[str]] = None) -> Dict[str, Any]:
        """A Node as the kubelet and the node controller would have made it."""
        spec: Dict[str, Any] = {}
        if pod_cidrs:
            spec = {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs)}
        obj = {"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                            "annotations": dict(annotations or {})},
               "spec": spec,
               "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                          "message": "kubelet is posting ready status",
                                          "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
                          "addresses": [{"type": "InternalIP", "address": a} for a in (addresses or [])]
                          + [{"type": "Hostname", "address": name}]}}
        return self.create(obj)

    def create(self, obj: Dict[str, Any]) -> Dict[str, Any]:
        name = obj.get("metadata", {}).get("name", "")
        if not name:
            raise ApiStatus(422, "Invalid", "Node \"\" is invalid: metadata.name: Required value: name is required")
        with self._cond:
            if name in self._objects:
                raise ApiStatus(409, "AlreadyExists", f'nodes "{name}" already exists', name)
            new = copy.deepcopy(obj)
            new.setdefault("apiVersion", "v1")
            new.setdefault("kind", "Node")
            meta = new["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta.pop("resourceVersion", None)
            return self._commit(name, "ADDED", new)

    def update(self, name: str, obj: Dict[str, Any], subresource: str = "") -> Dict[str, Any]:
        with self._cond:
            old = self.get(name)
            rv = obj.get("metadata", {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on nodes "{name}": the object has '
                                "been modified; please apply your changes to the latest version and try again", name)
            return self._replace(name, old, obj, subresource)

    def patch(self, name: str, body: Any, kind: str = "strategic", subresource: str = "") -> Dict[str, Any]:
        with self._cond:
            old = self.get(name)
            try:
                if kind == "json":
                    new = json_patch(old, body)
                elif kind == "merge":
                    new = merge_patch(old, body)
                else:
                    new = strategic_merge(old, body, NODE_LIST_STRATEGIES)
            except (PatchError, LookupError, ValueError, TypeError) as exc:
                raise ApiStatus(422, "Invalid", f'Node "{name}" is invalid: {exc}', name) from None
            rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on nodes "{name}": the object has '
                                "been modified; please apply your changes to the latest version and try again", name)
            return self._replace(name, old, new, subresource)

    def delete(self, name: str) -> Dict[str, Any]:
        with self._cond:
            old = self.get(name)
            del self._objects[name]
            self._rv += 1
            old["metadata"]["resourceVersion"] = str(self._rv)
            self._history.append((self._rv, "DELETED", old))
            self._cond.notify_all()
            return copy.deepcopy(old)

    def _replace(self, name: str, old: Dict[str, Any], new: Any, subresource: str) -> Dict[str, Any]:
        if not isinstance(new, dict) or new.get("metadata", {}).get("name", name) != name:
            raise ApiStatus(400, "BadRequest", "the name of the object does not match the name on the URL", name)
        new = copy.deepcopy(new)
        new.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "name"):  # immutable
            new["metadata"][key] = old["metadata"][key]
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["apiVersion"], new["kind"] = "v1", "Node"
        keep = "spec" if subresource == "status" else "status"
        if keep in old:
            new[keep] = old[keep]
        else:
            new.pop(keep, None)
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        return self._commit(name, "MODIFIED", new)

    def _commit(self, name: str, kind: str, obj: Dict[str, Any]) -> Dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[name] = obj
        self._history.append((self._rv, kind, copy.deepcopy(obj)))
        self._cond.notify_all()
        return copy.deepcopy(obj)

    # --- list and watch ---------------------------------------------------------------------
    def list(self, limit: int = 0, cont: str = "", name: str = "") -> Dict[str, Any]:
        with self._cond:
            names = [n for n in sorted(self._objects) if n > cont and (not name or n == name)]
            page = names[:limit] if limit else names
            items = [copy.deepcopy(self._objects[n]) for n in page]
            rv = self._rv
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        meta: Dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and len(names) > limit:
            meta["continue"] = page[-1]
            meta["remainingItemCount"] = len(names) - limit
        return {"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": items}

    def watch_events(self, since: Optional[int], epoch: int, bookmarks: bool, deadline: float, name: str = ""):
        """Yield watch events (dicts) until the deadline, a stop(), or compaction past ``since``."""
        with self._cond:
            if since is None:  # "now": the current objects as ADDED, then changes
                since = self._rv
                initial = [copy.deepcopy(o) for n, o in sorted(self._objects.items()) if not name or n == name]
            else:
                initial = []
                if since < self._compacted:
                    yield {"type": "ERROR", "object": ApiStatus(
                        410, "Expired", f"too old resource version: {since} ({self._compacted})").body()}
                    return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self._cond:
                while True:
                    if self._epoch != epoch or time.monotonic() >= deadline:
                        return
                    if since < self._compacted:
                        yield {"type": "ERROR", "object": ApiStatus(
                            410, "Expired", f"too old resource version: {since} ({self._compacted})").body()}
                        return
                    i = bisect.bisect_right([h[0] for h in self._history], since)
                    batch = [h for h in self._history[i:] if not name or h[2]["metadata"]["name"] == name]
                    if batch or i < len(self._history):
                        since = self._history[-1][0]
                        break
                    if bookmarks and time.monotonic() >= next_bookmark:
                        batch = []
                        break
                    self._cond.wait(min(0.5, max(0.01, next_bookmark - time.monotonic())))
                current = self._rv
            for rv, kind, obj in batch:
                yield {"type": kind, "object": copy.deepcopy(obj)}
            if bookmarks and time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + self.bookmark_interval
                yield {"type": "BOOKMARK", "object": {"kind": "Node", "apiVersion": "v1",
                                                      "metadata": {"resourceVersion": str(max(since, current))}}}
