"""The ``custody`` CLI's exit codes: one definition, documented in ``docs/CLI.md``.

They are stable: a script may branch on them, so a code keeps its meaning once published
(new meanings get new numbers). Every command of ``custody`` (and every module that
registers one) exits with one of these; :func:`for_status` is the one map from an HTTP
status of the coordinator's problem document to a code.

``custody node ...`` is the exception: it *is* ``python -m signer_nodes``, and exits with
that CLI's own codes (``docs/CLI.md`` lists them).

May import: nothing of ours.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "for_status"]


class ExitCode(IntEnum):
    """What a ``custody`` command's exit status means."""

    OK = 0
    """Done: the key was created, the signature made, the check passed."""
    ABORTED = 1
    """Aborted (Ctrl-C, a confirmation declined, the reader of its output went away), or a
    bug: an unexpected error with its traceback. No deliberate failure uses it."""
    USAGE = 2
    """Bad command line or input: an unknown option, an empty or malformed id, an
    unreadable or corrupt ``cluster.json`` or payload file, or a request the API refused as
    invalid (400, 413, 415, 422: every field error is printed)."""
    NOT_FOUND = 3
    """No such key, sign request or node (404)."""
    REFUSED = 4
    """Refused by authentication, authorization or policy (401, 403), or a governance
    document or key file that does not pass its checks."""
    UNREACHABLE = 5
    """No answer: the coordinator could not be reached (connection refused, DNS, timeout),
    or it answered that it or the nodes are unavailable or busy (429, 502, 503, 504): try
    again later."""
    FAILED = 6
    """The work ran and failed: a signing or DKG that failed, was rejected or expired, an
    audit chain found tampered, a cluster that did not start, another server error."""
    CONFLICT = 7
    """A conflict (409): the same Idempotency-Key is still being processed, or the
    resource is in a state that does not allow it."""
    PENDING = 8
    """Accepted but not finished: a sign request waits for approvals, or was not terminal
    when the command stopped waiting. Ask again later with its id."""
    IN_USE = 9
    """``custody up``: a port it needs is in use (another cluster, or another program);
    the message names the port."""


_BY_STATUS: dict[int, ExitCode] = {
    400: ExitCode.USAGE,
    401: ExitCode.REFUSED,
    403: ExitCode.REFUSED,
    404: ExitCode.NOT_FOUND,
    405: ExitCode.USAGE,
    409: ExitCode.CONFLICT,
    410: ExitCode.NOT_FOUND,
    413: ExitCode.USAGE,
    415: ExitCode.USAGE,
    422: ExitCode.USAGE,
    429: ExitCode.UNREACHABLE,
    502: ExitCode.UNREACHABLE,
    503: ExitCode.UNREACHABLE,
    504: ExitCode.UNREACHABLE,
}


def for_status(status: int) -> ExitCode:
    """The exit code for an answer with HTTP ``status`` (a problem document)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return ExitCode.USAGE
    return ExitCode.FAILED
