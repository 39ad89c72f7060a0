"""The one place the daemon talks to the Kubernetes API, through lightkube.

- ``load_config``: flanneld's rules (client-go BuildConfigFromFlags): --kubeconfig-file (its
  server replaced by --kube-api-url when both are given), else --kube-api-url alone (no
  credentials), else the in-cluster service account (KUBERNETES_SERVICE_HOST/PORT and
  /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}).
- ``KubeClient``: get/patch through lightkube's typed client (strategic merge on nodes/status, as
  upstream); list and watch through lightkube's HTTP client as plain JSON (lightkube's watch has
  no bookmarks and cannot surface a watch's 410 ERROR event).
- Errors: every lightkube / httpx / kubeconfig failure becomes a daemon error here and nowhere
  else: connection problems, timeouts and 5xx -> StoreUnavailable (retried), 410 -> Gone (re-list),
  other API errors -> StoreError naming the request and the server's message, an unusable
  kubeconfig -> ConfigError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import ConfigError, StoreError, StoreUnavailable

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class Gone(StoreError):
    """410: the resourceVersion is too old (compacted): list again."""


class NotFound(StoreError):
    """404: the object does not exist."""


@dataclass(frozen=True)
class Connection:
    api_url: str = ""            # --kube-api-url
    kubeconfig: str = ""         # --kubeconfig-file
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    request_timeout: float = 10.0


def load_config(conn: Connection) -> Any:
    """A lightkube SingleConfig for these flags; ConfigError says which input is unusable."""
    from lightkube import ConfigError as LKConfigError
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.config.models import Cluster, User

    if conn.kubeconfig:
        from yaml import YAMLError

        try:
            cfg = KubeConfig.from_file(conn.kubeconfig).get()
        except (OSError, ValueError, LookupError, TypeError, AttributeError, YAMLError, LKConfigError) as exc:
            raise ConfigError(f"--kubeconfig-file {conn.kubeconfig}: cannot use it: {_why(exc)}") from None
        if conn.api_url:
            cfg = cfg._replace(cluster=dataclasses.replace(cfg.cluster, server=conn.api_url))
        return cfg
    if conn.api_url:
        return KubeConfig.from_one(cluster=Cluster(server=conn.api_url), user=User()).get()
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("no Kubernetes API to talk to: not in a pod (KUBERNETES_SERVICE_HOST/PORT unset) "
                          "and neither --kube-api-url nor --kubeconfig-file given")
    try:
        return KubeConfig.from_service_account(conn.service_account_dir).get()
    except (OSError, LKConfigError) as exc:
        raise ConfigError(f"in-cluster config: cannot read the service account in {conn.service_account_dir}: "
                          f"{_why(exc)} (is automountServiceAccountToken off?)") from None


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class KubeClient:
    def __init__(self, conn: Connection) -> None:
        import httpx
        from lightkube import Client
        from lightkube.config import client_adapter

        self.conn = conn
        self.config = load_config(conn)
        self.server = self.config.cluster.server
        timeout = httpx.Timeout(conn.request_timeout)
        try:
            self._typed = Client(self.config, timeout=timeout, trust_env=False, field_manager="flanneld")
            self._http = client_adapter.Client(self.config, timeout=timeout, trust_env=False)
        except (OSError, ValueError) as exc:  # certificate files, a bad URL
            raise ConfigError(f"Kubernetes client for {self.server}: {_why(exc)}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._http.close()

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        import httpx
        from lightkube import ApiError

        try:
            yield
        except ApiError as exc:
            raise self._status_error(what, exc.status.code, exc.status.reason, exc.status.message) from None
        except httpx.HTTPStatusError as exc:
            body = _json(exc.response)
            raise self._status_error(what, exc.response.status_code, body.get("reason"),
                                     body.get("message") or exc.response.reason_phrase) from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # retrying cannot help: say which trust failed
                raise StoreError(f"{what}: the API server {self.server}'s TLS certificate is not trusted "
                                 f"({_why(exc)}): check the cluster CA (ca.crt / certificate-authority)") from None
            raise StoreUnavailable(f"{what}: API server {self.server} unreachable: {_why(exc)}") from None
        except ValueError as exc:  # JSON that is not JSON
            raise StoreUnavailable(f"{what}: bad answer from {self.server}: {exc}") from None

    def _status_error(self, what: str, code: Optional[int], reason: Optional[str], message: Optional[str]) -> StoreError:
        text = f"{what}: {code} {reason or ''}: {message or ''}".replace("  ", " ")
        if code == 410:
            return Gone(text)
        if code == 404:
            return NotFound(text)
        if code is None or code >= 500 or code == 429:
            return StoreUnavailable(text)
        if code in (401, 403):
            return StoreError(text + " (check the flannel ClusterRole: nodes get/list/watch, nodes/status patch)")
        return StoreError(text)

    # --- requests ---------------------------------------------------------------------------
    def get_node(self, name: str) -> Dict[str, Any]:
        from lightkube.resources.core_v1 import Node

        with self._translated(f"getting node {name!r}"):
            return self._typed.get(Node, name).to_dict()

    def get_pod_node_name(self, namespace: str, name: str) -> str:
        from lightkube.resources.core_v1 import Pod

        with self._translated(f"getting pod {namespace}/{name}"):
            pod = self._typed.get(Pod, name, namespace=namespace)
        return (pod.spec.nodeName if pod.spec else "") or ""

    def patch_node_status(self, name: str, patch: Dict[str, Any]) -> Dict[str, Any]:
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        with self._translated(f"patching node {name!r} status"):
            return self._typed.patch(Node.Status, name, patch, patch_type=PatchType.STRATEGIC).to_dict()

    def list_nodes(self, page: int = 500) -> Tuple[List[Dict[str, Any]], str]:
        """Every node (paged as kubectl does) and the list's resourceVersion."""
        items: List[Dict[str, Any]] = []
        params: Dict[str, Any] = {"limit": page}
        with self._translated("listing nodes"):
            while True:
                resp = self._http.get("/api/v1/nodes", params=params)
                resp.raise_for_status()
                body = resp.json()
                items += body.get("items") or []
                meta = body.get("metadata") or {}
                if not meta.get("continue"):
                    return items, str(meta.get("resourceVersion", ""))
                params["continue"] = meta["continue"]

    def watch_nodes(self, resource_version: str, timeout: float) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """(type, object) from one watch request, with bookmarks; the server ends it after
        ``timeout`` s.  An ERROR event raises (Gone for 410); a broken stream StoreUnavailable."""
        import httpx

        params = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": int(timeout)}
        # read timeout: a little longer than the server's, so a silent dead connection ends too
        t = httpx.Timeout(self.conn.request_timeout, read=timeout + 30)
        with self._translated("watching nodes"):
            with self._http.stream("GET", "/api/v1/nodes", params=params, timeout=t) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        raise self._status_error("watching nodes", obj.get("code"), obj.get("reason"), obj.get("message"))
                    yield kind, obj


def _json(resp: Any) -> Dict[str, Any]:
    try:
        body = resp.json()
    except Exception:  # noqa: BLE001 - not JSON: no details
        return {}
    return body if isinstance(body, dict) else {}
