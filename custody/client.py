"""Python SDK for the coordinator API (httpx), sync and async, returning typed models.

    from custody.client import CustodyClient
    with CustodyClient("http://127.0.0.1:7100", token) as c:
        key = c.create_key("ed25519", threshold=2)
        sr = c.sign(key.id, b"hello")          # waits until signed/failed
        bytes.fromhex(sr.signature or "")

Every resource is the pydantic model the API documents (:mod:`custody.models`:
:class:`~custody.models.KeyOut`, :class:`~custody.models.SignRequestOut`, ...); every
scheme, status and role is :mod:`custody.domain`'s. :class:`AsyncCustodyClient` has the
same methods as :class:`CustodyClient`, awaitable (``list_*`` and :meth:`audit` are async
iterators there).

Every POST carries an ``Idempotency-Key`` (a fresh UUID unless you pass one). Transient
failures (429, 502, 503, 504, a 409 ``idempotency-in-flight``, no connection) are retried
with exponential backoff and jitter (stamina), honouring ``Retry-After``, re-sending the
very same request, so the same Idempotency-Key: a retry never double-submits. Only
requests safe to repeat are retried (GET, PUT, DELETE, or a request carrying an
Idempotency-Key); ``retries=0`` turns it off.

Errors raise a subclass of :class:`CustodyError` (so ``except CustodyError`` catches them
all) chosen by the problem's family (:mod:`custody.problem_types`, ``docs/PROBLEMS.md``):
:class:`Unauthorized`, :class:`Forbidden` (and :class:`PolicyDenied`), :class:`NotFound`,
:class:`Conflict`, :class:`ValidationFailed`, :class:`RateLimited`, :class:`Unavailable`
(and :class:`CustodyUnreachable`), :class:`SignFailed`, :class:`ServerError`; a redirect or
a body that is not the documented JSON is :class:`UnexpectedResponse`, never a success.
``sign(wait=True, timeout=...)`` raises :class:`SignTimeout` (carrying the request as last
seen) when it is not terminal in time. :func:`custody.webhooks_verify.verify_webhook`
checks a Standard Webhooks delivery.

May import: :mod:`custody.domain`, :mod:`custody.models`, :mod:`custody.problem_types`,
httpx, stamina.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import stamina
from pydantic import BaseModel, ValidationError

from custody import problem_types as pt
from custody.domain import (
    TERMINAL_KEY_STATUSES,
    TERMINAL_SIGN_STATUSES,
    Kind,
    Network,
    Role,
    Scheme,
    SignStatus,
)
from custody.models import (
    AuditList,
    AuditOut,
    AuditVerify,
    CheckpointList,
    CheckpointOut,
    CredentialIssued,
    CredentialList,
    CredentialOut,
    DerivedKeyOut,
    Health,
    KeyList,
    KeyOut,
    NodeList,
    NodeOut,
    Page,
    PolicyDryRunOut,
    PolicyShadowOut,
    ProblemModel,
    Ready,
    ReceiptOut,
    ShadowDisagreementList,
    ShadowDisagreementOut,
    SignRequestList,
    SignRequestOut,
    WebhookCreated,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookList,
    WebhookOut,
)

__all__ = [
    "CustodyError",
    "Unauthorized",
    "Forbidden",
    "PolicyDenied",
    "NotFound",
    "Conflict",
    "ValidationFailed",
    "RateLimited",
    "Unavailable",
    "CustodyUnreachable",
    "SignFailed",
    "ServerError",
    "UnexpectedResponse",
    "SignTimeout",
    "error_for",
    "RETRY_STATUSES",
    "Retries",
    "CustodyClient",
    "AsyncCustodyClient",
    "TERMINAL_SIGN",
    "TERMINAL_KEY",
    "load_cluster",
]

TERMINAL_SIGN = TERMINAL_SIGN_STATUSES
TERMINAL_KEY = TERMINAL_KEY_STATUSES
M = TypeVar("M", bound=BaseModel)


class CustodyError(Exception):
    """The API answered with a problem document (or not at all): the base of every SDK error."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", ""))
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")

    @property
    def slug(self) -> str:
        """``policy-denied`` of ``urn:tpwc:problem:policy-denied`` (docs/PROBLEMS.md)."""
        return pt.slug_of(self.type)


class Unauthorized(CustodyError):
    """401: no credential, or one the coordinator does not know."""


class Forbidden(CustodyError):
    """403: the credential's role may not do this."""


class PolicyDenied(Forbidden):
    """403: the governance policy, an approver or a signer node refused the request."""


class NotFound(CustodyError):
    """404: no such resource."""


class Conflict(CustodyError):
    """409: the resource's state forbids it now."""


class ValidationFailed(CustodyError):
    """400/413/415/422: fix the request; ``errors`` lists the fields for a schema failure."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        found = self.problem.get("errors")
        return found if isinstance(found, list) else []


class RateLimited(CustodyError):
    """429, after the SDK's own retries: wait ``retry_after`` seconds."""

    @property
    def retry_after(self) -> float | None:
        return _retry_after(self.problem.get("retry_after"))


class Unavailable(CustodyError):
    """502/503/504, after the SDK's own retries: transient, retry later with the same
    Idempotency-Key."""


class CustodyUnreachable(Unavailable):
    """No answer at all (connection refused, DNS, timeout): a client-side problem document."""

    def __init__(self, url: str, exc: Exception) -> None:
        super().__init__(
            503,
            {
                "type": "urn:tpwc:client:unreachable",
                "title": "Coordinator unreachable",
                "status": 503,
                "detail": f"{url}: {type(exc).__name__}: {exc}",
            },
        )


class SignFailed(CustodyError):
    """The work ran and failed (``dkg-failed``, ``signing-failed``)."""


class ServerError(CustodyError):
    """500 and other 5xx: a fault of the coordinator; nothing was released."""


class UnexpectedResponse(CustodyError):
    """An answer that is not the documented one: a redirect (3xx is never a success), or a
    body that is not the expected JSON."""


class SignTimeout(CustodyError):
    """``sign(wait=True, timeout=...)``: the request was not terminal in time; ``request``
    is the last state seen (poll it again with :meth:`CustodyClient.get_sign_request`)."""

    def __init__(self, request: SignRequestOut, timeout: float) -> None:
        self.request = request
        super().__init__(
            408,
            {
                "type": "urn:tpwc:client:sign-timeout",
                "title": "Sign request not terminal in time",
                "status": 408,
                "detail": f"{request.id} still {request.status} after {timeout:g} s",
            },
        )


_FAMILY_ERRORS: dict[pt.Family, type[CustodyError]] = {
    pt.Family.UNAUTHORIZED: Unauthorized,
    pt.Family.FORBIDDEN: Forbidden,
    pt.Family.POLICY_DENIED: PolicyDenied,
    pt.Family.NOT_FOUND: NotFound,
    pt.Family.CONFLICT: Conflict,
    pt.Family.VALIDATION: ValidationFailed,
    pt.Family.RATE_LIMITED: RateLimited,
    pt.Family.UNAVAILABLE: Unavailable,
    pt.Family.FAILED: SignFailed,
    pt.Family.INTERNAL: ServerError,
}
_STATUS_ERRORS: dict[int, type[CustodyError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: ValidationFailed,
    406: ValidationFailed,
    409: Conflict,
    413: ValidationFailed,
    415: ValidationFailed,
    422: ValidationFailed,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_for(status: int, problem: dict[str, Any]) -> CustodyError:
    """The exception for an error answer: by the problem's ``type`` when the catalogue knows
    it, else by status (a new problem type still lands in the right family)."""
    entry = pt.lookup(str(problem.get("type", "")))
    if entry is not None and str(problem.get("type", "")).startswith(pt.TYPE_PREFIX):
        cls = _FAMILY_ERRORS[entry.family]
    elif 300 <= status < 400:
        cls = UnexpectedResponse
    else:
        cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else CustodyError)
    return cls(status, problem)


RETRY_STATUSES = frozenset({429, 502, 503, 504})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retry_after(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < 86400 else None


def _repeatable(request: httpx.Request) -> bool:
    """Safe to send again: an idempotent method, or a POST carrying an Idempotency-Key
    (the coordinator answers a repeat with the stored result)."""
    return request.method in _SAFE_METHODS or "idempotency-key" in request.headers


IN_FLIGHT = pt.TYPE_PREFIX + "idempotency-in-flight"


def _transient(response: httpx.Response) -> bool:
    """Worth sending again: 429/502/503/504, or a 409 saying the same Idempotency-Key is
    still being processed (the repeat then gets the stored answer). Not an answer that
    carries a sign request (``sign_request``: that signing was attempted and failed, an
    answer for this request, which the caller decides whether to retry)."""
    try:
        doc = json.loads(response.content)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("sign_request"), dict):
        return False
    if response.status_code in RETRY_STATUSES:
        return True
    return isinstance(doc, dict) and doc.get("type") == IN_FLIGHT


class _RetryableAnswer(Exception):
    """A transient status (429/502/503/504), raised inside the retry loop."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = _retry_after(response.headers.get("retry-after"))


@dataclass(frozen=True)
class Retries:
    """The retry policy: ``attempts`` in all (1 = no retry), exponential backoff from
    ``wait_initial`` to ``wait_max`` seconds with jitter, a ``Retry-After`` up to
    ``wait_max`` honoured, everything within ``timeout`` seconds."""

    attempts: int = 4
    wait_initial: float = 0.1
    wait_max: float = 5.0
    timeout: float = 60.0

    def on(self, exc: Exception) -> bool | float:
        if isinstance(exc, _RetryableAnswer):
            if exc.retry_after is not None:
                return min(exc.retry_after, self.wait_max)
            return True
        return isinstance(exc, httpx.TransportError)

    def context(self, request: httpx.Request) -> Any:
        attempts = self.attempts if _repeatable(request) else 1
        return stamina.retry_context(
            on=self.on,
            attempts=max(1, attempts),
            timeout=self.timeout,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_initial,
        )


class _Transport(httpx.HTTPTransport):
    """Retries transient failures (:class:`Retries`) re-sending the same request (same
    Idempotency-Key); turns transport failures into :class:`CustodyUnreachable`, so callers
    see one error type."""

    def __init__(self, retries: Retries | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.retries = retries or Retries()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            for attempt in self.retries.context(request):
                with attempt:
                    response = super().handle_request(request)
                    if response.status_code in RETRY_STATUSES or response.status_code == 409:
                        response.read()
                        response.close()
                        if _transient(response):
                            raise _RetryableAnswer(response)
                    return response
        except _RetryableAnswer as last:
            return last.response
        except httpx.TransportError as exc:
            raise CustodyUnreachable(str(request.url), exc) from None
        raise AssertionError("unreachable")  # pragma: no cover


class _AsyncTransport(httpx.AsyncHTTPTransport):
    """Async twin of :class:`_Transport`."""

    def __init__(self, retries: Retries | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.retries = retries or Retries()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            async for attempt in self.retries.context(request):
                with attempt:
                    response = await super().handle_async_request(request)
                    if response.status_code in RETRY_STATUSES or response.status_code == 409:
                        await response.aread()
                        await response.aclose()
                        if _transient(response):
                            raise _RetryableAnswer(response)
                    return response
        except _RetryableAnswer as last:
            return last.response
        except httpx.TransportError as exc:
            raise CustodyUnreachable(str(request.url), exc) from None
        raise AssertionError("unreachable")  # pragma: no cover


def load_cluster(path: str) -> dict[str, Any]:
    """Read a ``cluster.json`` written by ``custody up``."""
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def _unexpected(r: httpx.Response, title: str, detail: str) -> UnexpectedResponse:
    return UnexpectedResponse(
        r.status_code,
        {"type": "urn:tpwc:client:unexpected-response", "title": title, "detail": detail},
    )


def _parse(r: httpx.Response, model: type[M]) -> M:
    """The answer as ``model``; else the error of its family (:func:`error_for`) with the
    problem document. Only a 2xx is a success: a redirect is :class:`UnexpectedResponse`."""
    try:
        doc = r.json()
    except ValueError:
        doc = {"title": "non-JSON answer", "detail": r.text[:200]}
    if not isinstance(doc, dict):
        doc = {"title": "unexpected answer", "detail": str(doc)[:200]}
    if r.status_code >= 300 or r.status_code < 200:
        problem = dict(doc)
        problem.setdefault("status", r.status_code)
        if r.status_code < 400:
            where = r.headers.get("location", "")
            problem = {
                "type": "urn:tpwc:client:redirect",
                "title": "Redirect not followed",
                "status": r.status_code,
                "detail": f"{r.request.method} {r.request.url} answered {r.status_code} {where}",
            }
        if "retry-after" in r.headers:
            problem.setdefault("retry_after", r.headers["retry-after"])
        raise error_for(r.status_code, problem)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise _unexpected(
            r, f"answer is not a {model.__name__}", str(exc).splitlines()[0]
        ) from None


def _sign_answer(r: httpx.Response) -> SignRequestOut:
    """A POST /v1/sign-requests answer: a failed signing is a problem (502, 403 ...) that
    embeds the request as ``sign_request``; that request is the answer (status failed)."""
    if r.status_code >= 400:
        try:
            doc = r.json()
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("sign_request"), dict):
            return SignRequestOut.model_validate(doc["sign_request"])
    return _parse(r, SignRequestOut)


def _sign_body(
    key_id: str,
    message: bytes | str | None,
    kind: Kind,
    payload: dict[str, Any] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {"key_id": key_id, "kind": kind, **extra}
    if message is not None:
        body["message"] = message.hex() if isinstance(message, bytes | bytearray) else message
    if payload is not None:
        body["payload"] = payload
    return body


def _key_body(
    scheme: Scheme,
    threshold: int,
    nodes: list[str] | None,
    network: Network | None = None,
    label: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"scheme": scheme, "threshold": threshold}
    if nodes is not None:
        body["nodes"] = nodes
    if network is not None:
        body["network"] = network
    if label is not None:
        body["label"] = label
    if metadata is not None:
        body["metadata"] = metadata
    return body


def _dry_run_body(
    key_id: str,
    message: bytes | str | None,
    kind: Kind,
    payload: dict[str, Any] | None,
    governance: bytes | None,
    at: int | None,
    initiator: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    body = _sign_body(key_id, message, kind, payload, extra)
    if governance is not None:
        body["governance"] = base64.b64encode(governance).decode()
    if at is not None:
        body["at"] = at
    if initiator is not None:
        body["initiator"] = initiator
    return body


def _b64(document: bytes) -> dict[str, str]:
    return {"document": base64.b64encode(document).decode()}


def _deleted(r: httpx.Response) -> None:
    if r.status_code != 204:
        _parse(r, PolicyShadowOut)


def _seg(value: str) -> str:
    """``value`` as one URL path segment: percent-encoded, ``/`` included, so an id such as
    ``..`` then ``/nodes`` names no other resource. ``ValueError`` for an id no URL can name (empty,
    ``.`` or ``..``, which would address the collection or its parent)."""
    if value in ("", ".", ".."):
        raise ValueError(f"{value!r} is not an id")
    return urllib.parse.quote(value, safe="")


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _approval_body(approval: bytes | str) -> dict[str, str]:
    """``{"approval": base64}`` from an approval's wire bytes (or their base64 already)."""
    if isinstance(approval, bytes | bytearray):
        approval = base64.b64encode(bytes(approval)).decode()
    return {"approval": approval}


def _sign_waits(r: SignRequestOut) -> bool:
    """Still worth polling: neither terminal nor parked for an approval."""
    return r.status not in TERMINAL_SIGN and r.status != "pending_approval"


def _retries(retries: Retries | int | None) -> Retries:
    if isinstance(retries, Retries):
        return retries
    return Retries() if retries is None else Retries(attempts=1 + max(0, retries))


class _Base:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": "custody-sdk/0.1"}

    @staticmethod
    def _idem(key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": key or str(uuid.uuid4())}


class CustodyClient(_Base):
    """Synchronous client."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
        retries: Retries | int | None = None,
    ) -> None:
        """``retries``: a :class:`Retries` policy, or the number of retries after the first
        attempt (``0``: none); default 3 retries with backoff. Ignored with ``http``."""
        super().__init__(base_url, token)
        self.http = http or httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=_Transport(_retries(retries))
        )
        self.http.headers.update(self.headers)

    def __enter__(self) -> CustodyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return _parse(self.http.get(path, params=_params(params)), model)

    def _pages(self, path: str, model: type[Page[M]], **params: Any) -> Iterator[M]:
        cursor = None
        while True:
            page = self._get(path, model, cursor=cursor, **params)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return

    def health(self) -> Health:
        return self._get("/health", Health)

    def ready(self) -> Ready:
        return self._get("/ready", Ready)

    def nodes(self) -> list[NodeOut]:
        return self._get("/v1/nodes", NodeList).items

    def enrol_node(self, node_id: str, url: str) -> NodeOut:
        return _parse(self.http.put(f"/v1/nodes/{_seg(node_id)}", json={"url": url}), NodeOut)

    def create_key(
        self,
        scheme: Scheme,
        threshold: int,
        nodes: list[str] | None = None,
        *,
        network: Network | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 120.0,
        label: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> KeyOut:
        """Run a DKG; with ``wait`` poll until the key is active or failed. ``network``:
        a bip340 key's Bitcoin network (its ``addresses["bitcoin"]``), default mainnet;
        ``label`` and ``metadata`` (string tags) for people and filters."""
        key = _parse(
            self.http.post(
                "/v1/keys",
                json=_key_body(scheme, threshold, nodes, network, label, metadata),
                headers=self._idem(idempotency_key),
            ),
            KeyOut,
        )
        deadline = time.monotonic() + timeout
        while wait and key.status not in TERMINAL_KEY and time.monotonic() < deadline:
            time.sleep(0.2)
            key = self.get_key(key.id)
        return key

    def get_key(self, key_id: str) -> KeyOut:
        return self._get(f"/v1/keys/{_seg(key_id)}", KeyOut)

    def list_keys(self, limit: int = 50, **filters: str | None) -> Iterator[KeyOut]:
        """Keys, newest first; ``filters``: ``scheme``, ``status``, ``label`` (exact)."""
        given = {k: v for k, v in filters.items() if v is not None}
        yield from self._pages("/v1/keys", KeyList, limit=limit, **given)

    def update_key(self, key_id: str, **changes: Any) -> KeyOut:
        """``PATCH`` a key's ``label`` (``None``: remove) and/or ``metadata`` (all tags)."""
        return _parse(self.http.patch(f"/v1/keys/{_seg(key_id)}", json=changes), KeyOut)

    def sign(
        self,
        key_id: str,
        message: bytes | str | None = None,
        *,
        kind: Kind = "raw",
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 60.0,
        derivation_path: str | None = None,
        risk: dict[str, Any] | None = None,
        **extra: Any,
    ) -> SignRequestOut:
        """Create a sign request; with ``wait`` poll until it is signed/failed/expired (or
        parked for approvals), raising :class:`SignTimeout` after ``timeout`` seconds.
        ``derivation_path`` (e.g. ``"m/0/7"``, non-hardened steps only): sign under the
        key's BIP-32 child at that path (its public key: :meth:`derive_key`); a hardened
        step is refused (422 ``hardened-derivation``). ``risk``: your risk engine's report
        (:class:`custody.models.RiskReport`: ``score``, ``flags``), shown to approvers and
        audited, never decided on."""
        if derivation_path is not None:
            extra = {**extra, "derivation_path": derivation_path}
        if risk is not None:
            extra = {**extra, "risk": risk}
        r = _sign_answer(
            self.http.post(
                "/v1/sign-requests",
                json=_sign_body(key_id, message, kind, payload, extra),
                headers=self._idem(idempotency_key),
            )
        )
        return self._settle(r, wait, timeout)

    def derive_key(self, key_id: str, path: str) -> DerivedKeyOut:
        """The key's child at ``path`` (public key, addresses, xpub): what a sign request
        with that ``derivation_path`` signs under."""
        return _parse(
            self.http.get(f"/v1/keys/{_seg(key_id)}/derive", params={"path": path}), DerivedKeyOut
        )

    def get_sign_request(self, request_id: str) -> SignRequestOut:
        return self._get(f"/v1/sign-requests/{_seg(request_id)}", SignRequestOut)

    def get_receipt(self, request_id: str) -> ReceiptOut:
        """The signed request's authorization receipt (``custody.receipts``)."""
        return self._get(f"/v1/sign-requests/{_seg(request_id)}/receipt", ReceiptOut)

    def approve(
        self,
        request_id: str,
        approval: bytes | str,
        *,
        idempotency_key: str | None = None,
        wait: bool = False,
        timeout: float = 60.0,
    ) -> SignRequestOut:
        """Post an approver's signed ``approve`` statement
        (:meth:`custody.approvals.Approval.encode`, or its base64); with ``wait``, when it
        satisfied the requirement, poll until the request is signed or failed."""
        r = _parse(
            self.http.post(
                f"/v1/sign-requests/{_seg(request_id)}/approvals",
                json=_approval_body(approval),
                headers=self._idem(idempotency_key),
            ),
            SignRequestOut,
        )
        return self._settle(r, wait, timeout)

    def reject(
        self,
        request_id: str,
        approval: bytes | str,
        *,
        idempotency_key: str | None = None,
        wait: bool = False,
        timeout: float = 60.0,
    ) -> SignRequestOut:
        """Post an approver's signed ``reject`` statement: one valid rejection from a
        required group rejects the request."""
        r = _parse(
            self.http.post(
                f"/v1/sign-requests/{_seg(request_id)}/rejections",
                json=_approval_body(approval),
                headers=self._idem(idempotency_key),
            ),
            SignRequestOut,
        )
        return self._settle(r, wait, timeout)

    def _settle(self, r: SignRequestOut, wait: bool, timeout: float) -> SignRequestOut:
        """With ``wait``, poll until terminal (or parked for approval), else
        :class:`SignTimeout` with the last state."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while wait and _sign_waits(r):
            if time.monotonic() >= deadline:
                raise SignTimeout(r, timeout)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)
            r = self.get_sign_request(r.id)
        return r

    def list_sign_requests(
        self, limit: int = 50, *, status: SignStatus | None = None, key_id: str | None = None
    ) -> Iterator[SignRequestOut]:
        yield from self._pages(
            "/v1/sign-requests", SignRequestList, limit=limit, status=status, key_id=key_id
        )

    def audit(self, limit: int = 100) -> Iterator[AuditOut]:
        yield from self._pages("/v1/audit", AuditList, limit=limit)

    def verify_audit(self) -> AuditVerify:
        return self._get("/v1/audit/verify", AuditVerify)

    def checkpoint_audit(self, *, idempotency_key: str | None = None) -> CheckpointOut:
        """Ask every node to co-sign the audit head (admin)."""
        return _parse(
            self.http.post("/v1/audit/checkpoints", headers=self._idem(idempotency_key)),
            CheckpointOut,
        )

    def checkpoints(self) -> list[CheckpointOut]:
        return self._get("/v1/audit/checkpoints", CheckpointList).items

    def dry_run_policy(
        self,
        key_id: str,
        message: bytes | str | None = None,
        *,
        kind: Kind = "raw",
        payload: dict[str, Any] | None = None,
        governance: bytes | None = None,
        at: int | None = None,
        initiator: str | None = None,
        **extra: Any,
    ) -> PolicyDryRunOut:
        """Evaluate a sign request against the active policy (or ``governance``, a draft
        document's bytes) at ``at`` (Unix seconds) without signing or creating anything."""
        return _parse(
            self.http.post(
                "/v1/policy/dry-run",
                json=_dry_run_body(
                    key_id, message, kind, payload, governance, at, initiator, extra
                ),
            ),
            PolicyDryRunOut,
        )

    def policy_shadow(self) -> PolicyShadowOut:
        return self._get("/v1/policy/shadow", PolicyShadowOut)

    def set_policy_shadow(self, document: bytes) -> PolicyShadowOut:
        """Install an unsigned draft of the next version as the shadow policy (admin)."""
        return _parse(self.http.put("/v1/policy/shadow", json=_b64(document)), PolicyShadowOut)

    def delete_policy_shadow(self) -> None:
        """Remove the shadow policy (admin)."""
        _deleted(self.http.delete("/v1/policy/shadow"))

    def shadow_disagreements(self, limit: int = 100) -> Iterator[ShadowDisagreementOut]:
        """Live requests on which the shadow policy decided otherwise, newest first."""
        yield from self._pages(
            "/v1/policy/shadow/disagreements", ShadowDisagreementList, limit=limit
        )

    # -- credentials (admin) ------------------------------------------------------------------
    def create_credential(
        self,
        role: Role,
        *,
        principal: str | None = None,
        label: str = "",
        keys: list[str] | None = None,
        wallets: list[str] | None = None,
    ) -> CredentialIssued:
        """A new credential; its ``token`` is shown in this answer only. ``keys`` and/or
        ``wallets`` scope it (default: every key)."""
        body = _credential_body(role, principal, label, keys, wallets)
        return _parse(self.http.post("/v1/credentials", json=body), CredentialIssued)

    def list_credentials(self, *, include_revoked: bool = False) -> list[CredentialOut]:
        return self._get(
            "/v1/credentials", CredentialList, include_revoked=include_revoked or None
        ).items

    def get_credential(self, credential_id: str) -> CredentialOut:
        return self._get(f"/v1/credentials/{_seg(credential_id)}", CredentialOut)

    def scope_credential(
        self, credential_id: str, keys: list[str] | None = None, wallets: list[str] | None = None
    ) -> CredentialOut:
        """Scope to ``keys`` and ``wallets``; with neither, lift the scope (every key)."""
        return _parse(
            self.http.put(
                f"/v1/credentials/{_seg(credential_id)}/scope", json=_scope_body(keys, wallets)
            ),
            CredentialOut,
        )

    def rotate_credential(self, credential_id: str) -> CredentialIssued:
        """A new token for the credential (shown once); the old one stops working."""
        return _parse(
            self.http.post(f"/v1/credentials/{_seg(credential_id)}/rotate"), CredentialIssued
        )

    def revoke_credential(self, credential_id: str) -> CredentialOut:
        return _parse(self.http.delete(f"/v1/credentials/{_seg(credential_id)}"), CredentialOut)

    # -- webhooks (admin) ---------------------------------------------------------------------
    def create_webhook(
        self, url: str, event_types: list[str], *, description: str = ""
    ) -> WebhookCreated:
        """Subscribe ``url``; the answer's ``secret`` (shown once) verifies deliveries
        (``standardwebhooks.Webhook(secret).verify(body, headers)``)."""
        body = {"url": url, "event_types": event_types, "description": description}
        return _parse(self.http.post("/v1/webhooks", json=body), WebhookCreated)

    def list_webhooks(self) -> list[WebhookOut]:
        return self._get("/v1/webhooks", WebhookList).items

    def get_webhook(self, webhook_id: str) -> WebhookOut:
        return self._get(f"/v1/webhooks/{_seg(webhook_id)}", WebhookOut)

    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        event_types: list[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookOut:
        body = _params(
            {"url": url, "event_types": event_types, "description": description, "enabled": enabled}
        )
        return _parse(self.http.patch(f"/v1/webhooks/{_seg(webhook_id)}", json=body), WebhookOut)

    def delete_webhook(self, webhook_id: str) -> None:
        _no_content(self.http.delete(f"/v1/webhooks/{_seg(webhook_id)}"))

    def test_webhook(self, webhook_id: str) -> WebhookDeliveryOut:
        """Queue a ``webhook.test`` event to this webhook; its delivery as queued."""
        return _parse(self.http.post(f"/v1/webhooks/{_seg(webhook_id)}/test"), WebhookDeliveryOut)

    def webhook_deliveries(self, webhook_id: str, limit: int = 50) -> Iterator[WebhookDeliveryOut]:
        """The delivery log, newest first."""
        yield from self._pages(
            f"/v1/webhooks/{_seg(webhook_id)}/deliveries", WebhookDeliveryList, limit=limit
        )

    def redeliver_webhook(self, webhook_id: str, delivery_id: int) -> WebhookDeliveryOut:
        """Send a message again now, with the same ``webhook-id``."""
        return _parse(
            self.http.post(
                f"/v1/webhooks/{_seg(webhook_id)}/deliveries/{int(delivery_id)}/redeliver"
            ),
            WebhookDeliveryOut,
        )


class AsyncCustodyClient(_Base):
    """Asynchronous client: the methods of :class:`CustodyClient`, awaitable."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
        retries: Retries | int | None = None,
    ) -> None:
        """As :class:`CustodyClient`."""
        super().__init__(base_url, token)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        self.http = http or httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=_AsyncTransport(_retries(retries), limits=limits),
        )
        self.http.headers.update(self.headers)

    async def __aenter__(self) -> AsyncCustodyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, model: type[M], **params: Any) -> M:
        return _parse(await self.http.get(path, params=_params(params)), model)

    async def _pages(self, path: str, model: type[Page[M]], **params: Any) -> AsyncIterator[M]:
        cursor = None
        while True:
            page = await self._get(path, model, cursor=cursor, **params)
            for item in page.items:
                yield item
            cursor = page.next_cursor
            if not cursor:
                return

    async def health(self) -> Health:
        return await self._get("/health", Health)

    async def ready(self) -> Ready:
        return await self._get("/ready", Ready)

    async def nodes(self) -> list[NodeOut]:
        return (await self._get("/v1/nodes", NodeList)).items

    async def enrol_node(self, node_id: str, url: str) -> NodeOut:
        return _parse(await self.http.put(f"/v1/nodes/{_seg(node_id)}", json={"url": url}), NodeOut)

    async def create_key(
        self,
        scheme: Scheme,
        threshold: int,
        nodes: list[str] | None = None,
        *,
        network: Network | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 120.0,
        label: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> KeyOut:
        """Run a DKG; with ``wait`` poll until the key is active or failed. ``network``:
        a bip340 key's Bitcoin network (its ``addresses["bitcoin"]``), default mainnet;
        ``label`` and ``metadata`` (string tags) for people and filters."""
        key = _parse(
            await self.http.post(
                "/v1/keys",
                json=_key_body(scheme, threshold, nodes, network, label, metadata),
                headers=self._idem(idempotency_key),
            ),
            KeyOut,
        )
        deadline = time.monotonic() + timeout
        while wait and key.status not in TERMINAL_KEY and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            key = await self.get_key(key.id)
        return key

    async def get_key(self, key_id: str) -> KeyOut:
        return await self._get(f"/v1/keys/{_seg(key_id)}", KeyOut)

    async def list_keys(self, limit: int = 50, **filters: str | None) -> AsyncIterator[KeyOut]:
        """Keys, newest first; ``filters``: ``scheme``, ``status``, ``label`` (exact)."""
        given = {k: v for k, v in filters.items() if v is not None}
        async for k in self._pages("/v1/keys", KeyList, limit=limit, **given):
            yield k

    async def update_key(self, key_id: str, **changes: Any) -> KeyOut:
        """``PATCH`` a key's ``label`` (``None``: remove) and/or ``metadata`` (all tags)."""
        return _parse(await self.http.patch(f"/v1/keys/{_seg(key_id)}", json=changes), KeyOut)

    async def sign(
        self,
        key_id: str,
        message: bytes | str | None = None,
        *,
        kind: Kind = "raw",
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 60.0,
        derivation_path: str | None = None,
        risk: dict[str, Any] | None = None,
        **extra: Any,
    ) -> SignRequestOut:
        """Create a sign request; with ``wait`` poll until it is signed/failed/expired (or
        parked for approvals), raising :class:`SignTimeout` after ``timeout`` seconds.
        ``derivation_path`` (e.g. ``"m/0/7"``, non-hardened steps only): sign under the
        key's BIP-32 child at that path (its public key: :meth:`derive_key`); a hardened
        step is refused (422 ``hardened-derivation``). ``risk``: your risk engine's report
        (:class:`custody.models.RiskReport`: ``score``, ``flags``), shown to approvers and
        audited, never decided on."""
        if derivation_path is not None:
            extra = {**extra, "derivation_path": derivation_path}
        if risk is not None:
            extra = {**extra, "risk": risk}
        r = _sign_answer(
            await self.http.post(
                "/v1/sign-requests",
                json=_sign_body(key_id, message, kind, payload, extra),
                headers=self._idem(idempotency_key),
            )
        )
        return await self._settle(r, wait, timeout)

    async def derive_key(self, key_id: str, path: str) -> DerivedKeyOut:
        """The key's child at ``path`` (public key, addresses, xpub)."""
        r = await self.http.get(f"/v1/keys/{_seg(key_id)}/derive", params={"path": path})
        return _parse(r, DerivedKeyOut)

    async def get_sign_request(self, request_id: str) -> SignRequestOut:
        return await self._get(f"/v1/sign-requests/{_seg(request_id)}", SignRequestOut)

    async def get_receipt(self, request_id: str) -> ReceiptOut:
        """The signed request's authorization receipt (``custody.receipts``)."""
        return await self._get(f"/v1/sign-requests/{_seg(request_id)}/receipt", ReceiptOut)

    async def approve(
        self,
        request_id: str,
        approval: bytes | str,
        *,
        idempotency_key: str | None = None,
        wait: bool = False,
        timeout: float = 60.0,
    ) -> SignRequestOut:
        """Post an approver's signed ``approve`` statement
        (:meth:`custody.approvals.Approval.encode`, or its base64); with ``wait``, when it
        satisfied the requirement, poll until the request is signed or failed."""
        r = _parse(
            await self.http.post(
                f"/v1/sign-requests/{_seg(request_id)}/approvals",
                json=_approval_body(approval),
                headers=self._idem(idempotency_key),
            ),
            SignRequestOut,
        )
        return await self._settle(r, wait, timeout)

    async def reject(
        self,
        request_id: str,
        approval: bytes | str,
        *,
        idempotency_key: str | None = None,
        wait: bool = False,
        timeout: float = 60.0,
    ) -> SignRequestOut:
        """Post an approver's signed ``reject`` statement: one valid rejection from a
        required group rejects the request."""
        r = _parse(
            await self.http.post(
                f"/v1/sign-requests/{_seg(request_id)}/rejections",
                json=_approval_body(approval),
                headers=self._idem(idempotency_key),
            ),
            SignRequestOut,
        )
        return await self._settle(r, wait, timeout)

    async def _settle(self, r: SignRequestOut, wait: bool, timeout: float) -> SignRequestOut:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while wait and _sign_waits(r):
            if time.monotonic() >= deadline:
                raise SignTimeout(r, timeout)
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)
            r = await self.get_sign_request(r.id)
        return r

    async def list_sign_requests(
        self, limit: int = 50, *, status: SignStatus | None = None, key_id: str | None = None
    ) -> AsyncIterator[SignRequestOut]:
        async for r in self._pages(
            "/v1/sign-requests", SignRequestList, limit=limit, status=status, key_id=key_id
        ):
            yield r

    async def audit(self, limit: int = 100) -> AsyncIterator[AuditOut]:
        async for e in self._pages("/v1/audit", AuditList, limit=limit):
            yield e

    async def verify_audit(self) -> AuditVerify:
        return await self._get("/v1/audit/verify", AuditVerify)

    async def checkpoint_audit(self, *, idempotency_key: str | None = None) -> CheckpointOut:
        """Ask every node to co-sign the audit head (admin)."""
        return _parse(
            await self.http.post("/v1/audit/checkpoints", headers=self._idem(idempotency_key)),
            CheckpointOut,
        )

    async def checkpoints(self) -> list[CheckpointOut]:
        return (await self._get("/v1/audit/checkpoints", CheckpointList)).items

    async def dry_run_policy(
        self,
        key_id: str,
        message: bytes | str | None = None,
        *,
        kind: Kind = "raw",
        payload: dict[str, Any] | None = None,
        governance: bytes | None = None,
        at: int | None = None,
        initiator: str | None = None,
        **extra: Any,
    ) -> PolicyDryRunOut:
        """Evaluate a sign request against the active policy (or ``governance``, a draft
        document's bytes) at ``at`` (Unix seconds) without signing or creating anything."""
        return _parse(
            await self.http.post(
                "/v1/policy/dry-run",
                json=_dry_run_body(
                    key_id, message, kind, payload, governance, at, initiator, extra
                ),
            ),
            PolicyDryRunOut,
        )

    async def policy_shadow(self) -> PolicyShadowOut:
        return await self._get("/v1/policy/shadow", PolicyShadowOut)

    async def set_policy_shadow(self, document: bytes) -> PolicyShadowOut:
        """Install an unsigned draft of the next version as the shadow policy (admin)."""
        return _parse(
            await self.http.put("/v1/policy/shadow", json=_b64(document)), PolicyShadowOut
        )

    async def delete_policy_shadow(self) -> None:
        """Remove the shadow policy (admin)."""
        _deleted(await self.http.delete("/v1/policy/shadow"))

    async def shadow_disagreements(self, limit: int = 100) -> AsyncIterator[ShadowDisagreementOut]:
        """Live requests on which the shadow policy decided otherwise, newest first."""
        async for d in self._pages(
            "/v1/policy/shadow/disagreements", ShadowDisagreementList, limit=limit
        ):
            yield d

    # -- credentials (admin) ------------------------------------------------------------------
    async def create_credential(
        self,
        role: Role,
        *,
        principal: str | None = None,
        label: str = "",
        keys: list[str] | None = None,
        wallets: list[str] | None = None,
    ) -> CredentialIssued:
        """A new credential; its ``token`` is shown in this answer only. ``keys`` and/or
        ``wallets`` scope it (default: every key)."""
        body = _credential_body(role, principal, label, keys, wallets)
        return _parse(await self.http.post("/v1/credentials", json=body), CredentialIssued)

    async def list_credentials(self, *, include_revoked: bool = False) -> list[CredentialOut]:
        return (
            await self._get(
                "/v1/credentials", CredentialList, include_revoked=include_revoked or None
            )
        ).items

    async def get_credential(self, credential_id: str) -> CredentialOut:
        return await self._get(f"/v1/credentials/{_seg(credential_id)}", CredentialOut)

    async def scope_credential(
        self, credential_id: str, keys: list[str] | None = None, wallets: list[str] | None = None
    ) -> CredentialOut:
        """Scope to ``keys`` and ``wallets``; with neither, lift the scope (every key)."""
        return _parse(
            await self.http.put(
                f"/v1/credentials/{_seg(credential_id)}/scope", json=_scope_body(keys, wallets)
            ),
            CredentialOut,
        )

    async def rotate_credential(self, credential_id: str) -> CredentialIssued:
        """A new token for the credential (shown once); the old one stops working."""
        return _parse(
            await self.http.post(f"/v1/credentials/{_seg(credential_id)}/rotate"), CredentialIssued
        )

    async def revoke_credential(self, credential_id: str) -> CredentialOut:
        return _parse(
            await self.http.delete(f"/v1/credentials/{_seg(credential_id)}"), CredentialOut
        )

    # -- webhooks (admin) ---------------------------------------------------------------------
    async def create_webhook(
        self, url: str, event_types: list[str], *, description: str = ""
    ) -> WebhookCreated:
        """Subscribe ``url``; the answer's ``secret`` (shown once) verifies deliveries
        (``standardwebhooks.Webhook(secret).verify(body, headers)``)."""
        body = {"url": url, "event_types": event_types, "description": description}
        return _parse(await self.http.post("/v1/webhooks", json=body), WebhookCreated)

    async def list_webhooks(self) -> list[WebhookOut]:
        return (await self._get("/v1/webhooks", WebhookList)).items

    async def get_webhook(self, webhook_id: str) -> WebhookOut:
        return await self._get(f"/v1/webhooks/{_seg(webhook_id)}", WebhookOut)

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        event_types: list[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookOut:
        body = _params(
            {"url": url, "event_types": event_types, "description": description, "enabled": enabled}
        )
        return _parse(
            await self.http.patch(f"/v1/webhooks/{_seg(webhook_id)}", json=body), WebhookOut
        )

    async def delete_webhook(self, webhook_id: str) -> None:
        _no_content(await self.http.delete(f"/v1/webhooks/{_seg(webhook_id)}"))

    async def test_webhook(self, webhook_id: str) -> WebhookDeliveryOut:
        """Queue a ``webhook.test`` event to this webhook; its delivery as queued."""
        return _parse(
            await self.http.post(f"/v1/webhooks/{_seg(webhook_id)}/test"), WebhookDeliveryOut
        )

    async def webhook_deliveries(
        self, webhook_id: str, limit: int = 50
    ) -> AsyncIterator[WebhookDeliveryOut]:
        """The delivery log, newest first."""
        async for d in self._pages(
            f"/v1/webhooks/{_seg(webhook_id)}/deliveries", WebhookDeliveryList, limit=limit
        ):
            yield d

    async def redeliver_webhook(self, webhook_id: str, delivery_id: int) -> WebhookDeliveryOut:
        """Send a message again now, with the same ``webhook-id``."""
        return _parse(
            await self.http.post(
                f"/v1/webhooks/{_seg(webhook_id)}/deliveries/{int(delivery_id)}/redeliver"
            ),
            WebhookDeliveryOut,
        )


def _credential_body(
    role: str,
    principal: str | None,
    label: str,
    keys: list[str] | None,
    wallets: list[str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"role": role, "label": label}
    if principal is not None:
        body["principal"] = principal
    if keys is not None or wallets is not None:
        body["scope"] = {"keys": keys or [], "wallets": wallets or []}
    return body


def _scope_body(keys: list[str] | None, wallets: list[str] | None) -> dict[str, Any]:
    if keys is None and wallets is None:
        return {"scope": None}
    return {"scope": {"keys": keys or [], "wallets": wallets or []}}


def _no_content(r: httpx.Response) -> None:
    if r.status_code != 204:
        _parse(r, ProblemModel)
