"""What every ``custody`` command shares: output that never cuts a value, errors as
messages with their exit code (:mod:`custody.exitcodes`), the cluster file.

For modules that add commands to ``custody`` (``app.add_typer`` in :mod:`custody.cli`;
import from here, not from :mod:`custody.cli`, which imports them):

- take ``ClusterOpt``, ``ApiOpt``, ``TokenOpt`` (and ``JsonOpt`` on a read command, ``IdemOpt``
  on a POST) and get a client with :func:`connect` (the credential of a role);
- raise :class:`CliError` (message + :class:`~custody.exitcodes.ExitCode`) for a user error,
  or let a :class:`~custody.client.CustodyError` through: :class:`HandledGroup`, the root
  command's class, prints either (every field error of a problem document) and exits with
  its code; no user error shows a traceback;
- print with :func:`print_fields` (one record), :func:`print_rows` (a list) and
  :func:`print_json` (``--json``): values are printed whole, folded by the terminal at any
  width, and plain (no colour, no box) when stdout is not a terminal.

May import: :mod:`custody.exitcodes`, :mod:`custody.client`, :mod:`custody.domain`, typer,
rich, pydantic.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from custody.client import CustodyClient, CustodyError, CustodyUnreachable
from custody.domain import MAX_ID_LEN, is_valid_id
from custody.exitcodes import ExitCode, for_status

__all__ = [
    "DEFAULT_DIR",
    "ApiOpt",
    "CliError",
    "ClusterOpt",
    "IdemOpt",
    "JsonOpt",
    "TokenOpt",
    "connect",
    "ClusterFileError",
    "HandledGroup",
    "err",
    "fail",
    "handled",
    "out",
    "print_fields",
    "print_model",
    "print_json",
    "print_rows",
    "problem_lines",
    "read_cluster_file",
    "report",
    "require_id",
]

out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


class CliError(Exception):
    """A user error: ``message`` is printed (plain text, to stderr), ``code`` is the exit."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


HINT = "run `custody up` (or pass --api-url and --token)"


class ClusterFileError(CliError):
    """``cluster.json`` is missing, unreadable or not what ``custody up`` writes."""

    def __init__(self, path: Path, why: str, hint: str = HINT) -> None:
        super().__init__(f"cluster file {path}: {why}; {hint}", ExitCode.USAGE)
        self.path = path


def read_cluster_file(path: Path, hint: str = HINT) -> dict[str, Any]:
    """``cluster.json`` as ``custody up`` wrote it, or :class:`ClusterFileError` saying
    what is wrong with it (missing, unreadable, not JSON, missing members) and ``hint``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ClusterFileError(path, "not found", hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterFileError(path, f"cannot be read ({_os_reason(exc)})", hint) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterFileError(
            path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", hint
        ) from None
    if not isinstance(doc, dict):
        raise ClusterFileError(path, "not a JSON object", hint)
    if not isinstance(doc.get("api_url"), str):
        raise ClusterFileError(path, 'no "api_url"', hint)
    creds = doc.get("credentials")
    if not isinstance(creds, dict) or not all(isinstance(v, str) for v in creds.values()):
        raise ClusterFileError(path, 'no "credentials" object of role -> token', hint)
    return doc


def require_id(value: str, what: str) -> str:
    """``value`` if it is a valid id (:func:`custody.domain.is_valid_id`), else a usage error
    naming ``what`` (an empty id would otherwise address the collection)."""
    if not value:
        raise CliError(f"{what} is empty: pass the id of an existing {what.split()[0]}")
    if not is_valid_id(value):
        raise CliError(
            f"{what} {value!r} is not an id: 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : -"
        )
    return value


# -- the options every command that talks to a cluster takes ---------------------------------
DEFAULT_DIR = Path(".custody")
ClusterOpt = Annotated[
    Path | None,
    typer.Option(
        "--cluster",
        envvar="CUSTODY_CLUSTER",
        help="path to the cluster.json `custody up` wrote [default: .custody/cluster.json]",
    ),
]
ApiOpt = Annotated[
    str | None,
    typer.Option(
        "--api-url", envvar="CUSTODY_API_URL", help="coordinator URL (instead of --cluster)"
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="CUSTODY_TOKEN", help="bearer token for --api-url (instead of --cluster)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the API's JSON document")]
IdemOpt = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="reuse this key to retry the same request safely [default: a fresh UUID]",
    ),
]


def connect(
    role: str, cluster: Path | None, api_url: str | None, token: str | None
) -> CustodyClient:
    """A client for the coordinator with the credential of ``role`` from the cluster file
    (``--cluster``, default ``.custody/cluster.json``), or ``--api-url`` and ``--token``."""
    if api_url is not None and not api_url.startswith(("http://", "https://")):
        raise CliError(f"--api-url {api_url!r}: not an http:// or https:// URL")
    if api_url and token:
        return CustodyClient(api_url, token)
    path = cluster or DEFAULT_DIR / "cluster.json"
    doc = read_cluster_file(path)
    cred = token or doc["credentials"].get(role)
    if not cred:
        raise ClusterFileError(path, f"no {role!r} credential")
    return CustodyClient(api_url or doc["api_url"], cred)


# -- errors ----------------------------------------------------------------------------------
def problem_lines(status: int, problem: dict[str, Any]) -> list[str]:
    """An RFC 9457 problem as lines of text: status, title and detail, its type, every
    entry of its ``errors`` list (``field: message (type)``), then its extension members
    (``field``, ``culprits``, ...)."""
    title = str(problem.get("title") or "error")
    lines = [f"{status} {title}"]
    detail = problem.get("detail")
    if detail:
        lines[0] += f": {detail}"
    ptype = problem.get("type")
    if ptype and ptype != "about:blank":
        lines.append(f"  type: {ptype}")
    errors = problem.get("errors")
    if isinstance(errors, list):
        for e in errors:
            lines.append("  - " + _field_error(e))
    for member, value in problem.items():  # extension members: field, culprits, ...
        if member not in _PROBLEM_MEMBERS and value not in (None, "", [], {}):
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"  {member}: {text}")
    return lines


_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "errors"})


def _field_error(e: Any) -> str:
    if not isinstance(e, dict):
        return str(e)
    loc = e.get("loc", e.get("field", e.get("pointer")))
    if isinstance(loc, list):
        parts = [str(p) for p in loc]
        if parts and parts[0] in ("body", "query", "path", "header"):
            parts = parts[1:] or parts
        loc = ".".join(parts)
    msg = e.get("msg", e.get("detail", e.get("message", "")))
    kind = e.get("type")
    text = f"{loc}: {msg}" if loc else str(msg)
    return f"{text} ({kind})" if kind else text


def report(exc: BaseException) -> ExitCode | None:
    """Print a user error and return its exit code; ``None`` for anything else (a bug)."""
    if isinstance(exc, CliError):
        _error(exc.message)
        return exc.code
    if isinstance(exc, CustodyError):
        lines = problem_lines(exc.status, exc.problem)
        if isinstance(exc, CustodyUnreachable):
            lines[0] = f"coordinator unreachable: {exc.problem.get('detail', '')}"
        _error(lines[0], lines[1:])
        return (
            ExitCode.UNREACHABLE if isinstance(exc, CustodyUnreachable) else for_status(exc.status)
        )
    if isinstance(exc, ValidationError):
        _error(f"unexpected answer from the coordinator: {exc.error_count()} invalid fields")
        return ExitCode.FAILED
    if isinstance(exc, json.JSONDecodeError):
        _error(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        return ExitCode.USAGE
    if isinstance(exc, ConnectionError):
        _error(f"connection failed: {_os_reason(exc)}")
        return ExitCode.UNREACHABLE
    if isinstance(exc, OSError):
        _error(_os_reason(exc))
        return ExitCode.USAGE
    return None


def fail(exc: CustodyError) -> typer.Exit:
    """Print ``exc`` (status, title, detail, every field error) and the exit to raise."""
    return typer.Exit(report(exc) or ExitCode.FAILED)


def _error(first: str, rest: Sequence[str] = ()) -> None:
    err.print(f"[red]error[/red]: {escape(first)}")
    for line in rest:
        err.print(escape(line))


def _os_reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    name = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or type(exc).__name__
    return f"{name}: {reason}" if name else reason


@contextmanager
def handled(*, json_problem: bool = False) -> Iterator[None]:
    """Turn a user error raised inside into its message (stderr) and exit code; with
    ``json_problem`` (the command was given ``--json``) a problem document is also printed
    on stdout, as JSON."""
    try:
        yield
    except BrokenPipeError:  # the reader went away (``custody keys list | head -1``)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush is quiet
        raise typer.Exit(ExitCode.ABORTED) from None
    except Exception as exc:  # typer's Exit and Abort are not user errors: report() -> None
        code = report(exc)
        if code is None:
            raise
        if json_problem and isinstance(exc, CustodyError):
            print_json({"status": exc.status, **exc.problem})
        raise typer.Exit(code) from None


class HandledGroup(TyperGroup):
    """The root command: every subcommand runs inside :func:`handled`."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        with handled(json_problem="--json" in args):
            return super().invoke(ctx)


# -- output ----------------------------------------------------------------------------------
def _plain() -> bool:
    return not out.is_terminal


def print_json(doc: Any) -> None:
    """``doc`` as indented JSON on stdout, never wrapped (``--json``)."""
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """One record, a line per field: ``name  value``, each value whole (a long value is
    one line the terminal folds; never cut, never broken with a newline)."""
    width = max((len(k) for k, _ in fields), default=0)
    for name, value in fields:
        text = "" if value is None else str(value)
        if _plain():
            _write(f"{name:<{width}}  {text}")
        else:
            out.print(f"[bold]{escape(name):<{width}}[/bold]  {escape(text)}", soft_wrap=True)


def print_model(model: BaseModel, fields: Sequence[tuple[str, Any]], as_json: bool) -> None:
    """One API answer: the model as JSON with ``--json``, else ``fields`` a line each."""
    if as_json:
        print_json(model.model_dump(mode="json"))
    else:
        print_fields(fields)


def print_rows(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, long: Sequence[str] = ()
) -> None:
    """A list. Not a terminal: a header line and one tab-separated line per row (for
    ``cut``/``awk``). A terminal: a table when it fits the width, else one block per row
    (its short columns on one line, each ``long`` column on its own line), values whole."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if _plain():
        _write("\t".join(headers))
        for row in cells:
            _write("\t".join(row))
        return
    table = Table(*headers)
    for col in table.columns:
        col.no_wrap = True
        col.overflow = "fold"
    for row in cells:
        table.add_row(*(escape(c) for c in row))
    widths = [max(cell_len(x) for x in col) for col in zip(headers, *cells, strict=True)]
    if sum(widths) + 3 * len(widths) + 1 <= out.width:  # cells, padding, borders
        out.print(table)
        return
    short = [i for i, h in enumerate(headers) if h not in long]
    for row in cells:
        out.print("  ".join(escape(row[i]) for i in short if row[i]), soft_wrap=True)
        for i, h in enumerate(headers):
            if h in long and row[i]:
                out.print(f"  [bold]{escape(h)}[/bold] {escape(row[i])}", soft_wrap=True)


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
