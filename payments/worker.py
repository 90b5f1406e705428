"""The worker: drives every authorized payment to its rail, resumable after any crash.

One pass (:meth:`Worker.tick`) takes each payment that is ``authorized``,
``awaiting_approval``, ``signed`` or ``broadcast`` one step further:

1. ``authorized``, nothing prepared: the rail builds the unsigned bytes; they are recorded
   (``SignPrepared``) BEFORE custody is asked, so a restart asks for the very same bytes;
2. ask custody (``CustodyClient.sign``, ``wait=False``) with the Idempotency-Key
   ``payment:<id>:sign``, derived from the payment id: a resubmission after a crash gets the
   same custody request back, never a second signature request; the answer is recorded
   (``SignSubmitted``, ``PaymentAwaitingApproval`` or, once signed, ``PaymentSigned``
   with the signature attached by the rail, which verifies it);
3. ``signed``: broadcast (idempotent on every rail), then ``PaymentBroadcast`` with its
   ledger postings;
4. ``broadcast``: the rail's status; ``PaymentConfirmed`` (or ``PaymentFailed``, which
   returns the funds).

A crash between any two of these leaves a payment whose next step repeats an idempotent
call (same custody request, same rail reference), so the same payment never pays twice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from custody import obs
from custody.client import CustodyClient, CustodyError, Forbidden, NotFound, ValidationFailed
from custody.models import RISK_FLAG_MAX_CHARS, RISK_FLAGS_MAX, SignRequestOut
from payments.core import PaymentCore
from payments.db import payments
from payments.events import ConcurrencyError
from payments.lifecycle import IllegalTransition
from payments.rails import CustodySignature, Rail, RailError, Signed, Unsigned

ACTIVE = ("authorized", "awaiting_approval", "signed", "broadcast")
log = obs.get_logger("payments.worker")


def sign_idempotency_key(payment_id: str) -> str:
    return f"payment:{payment_id}:sign"


def _printable(text: str) -> str:
    return "".join(c if c >= " " and c != "\x7f" else " " for c in text)


def risk_report(p: dict[str, Any]) -> dict[str, Any] | None:
    """What the authorization found (``payments.risk``: the score and its reasons, limits,
    velocity, new destination, z-score), as the sign request's ``risk`` report: custody shows
    it to approvers as the payment core's and decides nothing on it. Bounded as custody's
    schema bounds it (custody.models.RiskReport)."""
    texts = (" ".join(_printable(str(r)).split()) for r in p.get("reasons") or [])
    flags = [t[:RISK_FLAG_MAX_CHARS] for t in texts if t][:RISK_FLAGS_MAX]
    score = p.get("risk_score")
    if score is None and not flags:
        return None
    out: dict[str, Any] = {"flags": flags}
    if isinstance(score, int):
        out["score"] = max(0, min(score, 100))
    return out


class Worker:
    def __init__(
        self,
        core: PaymentCore,
        custody: CustodyClient,
        *,
        pause_at: str | None = None,
        marker: Path | None = None,
    ) -> None:
        self.core = core
        self.custody = custody
        self.pause_at = pause_at
        self.marker = marker
        self._public_keys: dict[str, str] = {}

    # tests only: stop here (and say so in the marker file) so a test can SIGKILL us
    def _fault(self, point: str, payment_id: str) -> None:
        if self.pause_at == point:
            if self.marker is not None:
                self.marker.write_text(f"{point} {payment_id}\n")
            log.warning("payments.fault_pause", point=point, payment_id=payment_id)
            while True:
                time.sleep(3600)

    def public_key(self, rail: Rail) -> str:
        if rail.key_id not in self._public_keys:
            key = self.custody.get_key(rail.key_id)
            if not key.public_key:
                raise RailError(
                    f"custody key {rail.key_id} has no public key (status {key.status})"
                )
            self._public_keys[rail.key_id] = key.public_key
        return self._public_keys[rail.key_id]

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the worker outlives one bad pass; logged
                log.exception("payments.worker_pass_failed")
            stop.wait(interval)

    def tick(self) -> int:
        with self.core.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(payments.c.id)
                    .where(payments.c.status.in_(ACTIVE))
                    .order_by(payments.c.created_at)
                )
                .scalars()
                .all()
            )
        for pid in ids:
            try:
                self.advance(pid)
            except (ConcurrencyError, IllegalTransition):
                continue  # someone else moved it (a cancel): the next pass sees the new state
            except CustodyError as exc:
                log.warning(
                    "payments.custody_unavailable",
                    payment_id=pid,
                    status=exc.status,
                    error=str(exc),
                )
            except Exception as exc:  # noqa: BLE001 - a rail that is down: retried next pass
                log.warning(
                    "payments.step_failed",
                    payment_id=pid,
                    error_type=type(exc).__name__,
                    error=str(exc),
                )
        return len(ids)

    def advance(self, pid: str) -> str:
        p = self.core.get(pid)
        rail = self.core.rails.get(p["rail"])
        if rail is None:
            return str(p["status"])  # its rail is not in this build: it waits
        status = p["status"]
        if status in ("authorized", "awaiting_approval"):
            self._sign(p, rail)
        elif status == "signed":
            self._broadcast(p, rail)
        elif status == "broadcast":
            self._confirm(p, rail)
        now = str(self.core.get(pid)["status"])
        if now != status:
            log.info("payments.step", payment_id=pid, rail=rail.name, status=now, previous=status)
        return now

    def _sign(self, p: dict[str, Any], rail: Rail) -> None:
        pid = p["id"]
        if p["unsigned"] is None:
            unsigned = rail.build(self.core.instruction(p))
            p = self.core.step(pid, "SignPrepared", {"unsigned": unsigned.to_json()})
            self._fault("after-prepare", pid)
        unsigned = Unsigned.from_json(p["unsigned"])
        try:
            if p["sign_request_id"]:
                sr = self.custody.get_sign_request(p["sign_request_id"])
            else:
                sr = self.custody.sign(
                    rail.key_id,
                    kind=unsigned.kind,
                    payload=unsigned.payload,
                    idempotency_key=sign_idempotency_key(pid),
                    wait=False,
                    risk=risk_report(p),
                )
        except (Forbidden, ValidationFailed, NotFound) as exc:
            # permanent refusals (policy, a payload custody does not accept, a request it
            # no longer knows): the payment fails and its funds are released; anything else
            # (unreachable, busy, 5xx) is retried on the next pass
            why = f"custody refused to sign: {exc}"
            self.core.step(pid, "PaymentFailed", {"reasons": [*p["reasons"], why]})
            return
        self._fault("after-sign-submit", pid)
        self._record_sign(p, rail, unsigned, sr)

    def _record_sign(
        self, p: dict[str, Any], rail: Rail, unsigned: Unsigned, sr: SignRequestOut
    ) -> None:
        pid = p["id"]
        if sr.status == "signed" and sr.signature:
            try:
                got = CustodySignature(
                    sr.signature, sr.recovery_id, sr.result.signed_tx if sr.result else None, sr.id
                )
                signed = rail.attach(unsigned, got, self.public_key(rail))
            except RailError as exc:
                self.core.step(
                    pid, "PaymentFailed", {"reasons": [*p["reasons"], f"signature refused: {exc}"]}
                )
                return
            self.core.step(
                pid,
                "PaymentSigned",
                {
                    "signature": sr.signature,
                    "signed_raw": signed.raw,
                    "signed_ref": signed.ref,
                    "sign_request_id": sr.id,
                },
            )
        elif sr.status == "pending_approval":
            if p["status"] != "awaiting_approval":
                self.core.step(pid, "PaymentAwaitingApproval", {"sign_request_id": sr.id})
        elif sr.status == "signing":
            if p["sign_request_id"] != sr.id:
                self.core.step(pid, "SignSubmitted", {"sign_request_id": sr.id})
        else:  # rejected, failed, expired
            why = sr.error.detail if sr.error and sr.error.detail else sr.status
            self.core.step(
                pid,
                "PaymentFailed",
                {"reasons": [*p["reasons"], f"custody sign request {sr.id} {sr.status}: {why}"]},
            )

    def _broadcast(self, p: dict[str, Any], rail: Rail) -> None:
        pid = p["id"]
        signed = Signed(p["signed_raw"], "")
        try:
            ref = rail.broadcast(signed)
        except RailError as exc:
            self.core.step(
                pid,
                "PaymentFailed",
                {"reasons": [*p["reasons"], f"{rail.name} refused the transfer: {exc}"]},
            )
            return
        self._fault("after-broadcast", pid)
        self.core.step(pid, "PaymentBroadcast", {"rail_ref": ref, "fee": p["fee"]})

    def _confirm(self, p: dict[str, Any], rail: Rail) -> None:
        st = rail.status(p["rail_ref"])
        if st.state == "confirmed":
            data: dict[str, Any] = {"confirmations": st.confirmations, **st.facts}
            if st.fee is not None:
                # the fee actually paid (the core returns what was booked above it); never
                # more than was booked at broadcast: any excess is the house's, recorded
                data["fee"] = min(st.fee, p["fee"])
                if st.fee > p["fee"]:
                    data["fee_excess"] = st.fee - p["fee"]
            self.core.step(p["id"], "PaymentConfirmed", data)
        elif st.state == "failed":
            self.core.step(
                p["id"], "PaymentFailed", {"reasons": [*p["reasons"], f"{rail.name}: {st.detail}"]}
            )


__all__ = ["Worker", "sign_idempotency_key", "ACTIVE"]
