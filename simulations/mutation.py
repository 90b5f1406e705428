"""Mutation testing of the safety-critical modules: ``python -m simulations.mutation``.

Usage::

    nice -n 19 .venv/bin/python -m simulations.mutation                 # every module
    .venv/bin/python -m simulations.mutation --module mpc/dkg.py        # one module
    .venv/bin/python -m simulations.mutation --short                    # changed modules, sampled
    .venv/bin/python -m simulations.mutation --module mpc/frost/core.py --sample 8 --json out.json

What it does, per module of ``mutation.toml`` (docs/MUTATION.md):

1. copies the working tree (tracked and untracked, not ignored files) into a scratch
   directory, with ``signer_nodes`` linked to ``signer-nodes/`` as pyproject.toml's
   ``package-dir`` maps it, and checks that every package of ours imports from the copy,
   so a mutant can never touch the worktree and never goes unseen;
2. lists the module's mutants with cosmic-ray (``cosmic_ray.commands.init``), keeps the
   operators that ``mutation.toml`` selects, and drops mutations inside annotations (never
   evaluated: ``from __future__ import annotations``) and inside docstrings;
3. runs the module's test selection once unmutated (it must pass), then once per mutant,
   one at a time, in a fresh pytest process at the lowest CPU priority (``nice 19``);
4. prints killed/total per module; a survivor matched by an ``[[mutation.equivalent]]``
   entry is shown as equivalent. Two scores: the raw one counts it as not killed
   (killed / (mutants - errors)); the standard one (DeMillo/Offutt) leaves it out
   (killed / (mutants - errors - equivalents)), and is marked ``*`` while any survivor is
   undocumented.

Not a benchmark and not a test: the slow test ``tests/core/test_mutation_short.py`` runs a
small sample and asserts every mutant in it is killed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "mutation.toml"
OUR_PACKAGES = ("mpc", "hsm", "custody", "signer_nodes", "api", "payments")


@dataclass(frozen=True)
class Module:
    path: str
    tests: tuple[str, ...]
    deselect: tuple[str, ...] = ()  # pytest node ids left out (slow fuzzing of another layer)


@dataclass(frozen=True)
class Equivalent:
    path: str
    operator: str
    code: str
    why: str
    after: str = ""  # text of the line after, where ``code`` alone is ambiguous


@dataclass(frozen=True)
class Config:
    timeout: float
    pytest_args: tuple[str, ...]
    pytest_plugins: tuple[str, ...]
    operators: frozenset[str]
    modules: tuple[Module, ...]
    equivalents: tuple[Equivalent, ...]
    short_module: str
    short_sample: int

    def module(self, path: str) -> Module:
        for m in self.modules:
            if m.path == path:
                return m
        raise SystemExit(f"{path} is not a module of {CONFIG.name} (have: {self.paths()})")

    def paths(self) -> list[str]:
        return [m.path for m in self.modules]


def load_config(path: Path = CONFIG) -> Config:
    raw = tomllib.loads(path.read_text())["mutation"]
    modules = tuple(
        Module(m["path"], tuple(m["tests"]), tuple(m.get("deselect", ()))) for m in raw["module"]
    )
    equivalents = tuple(
        Equivalent(e["path"], e["operator"], e["code"], e["why"], e.get("after", ""))
        for e in raw.get("equivalent", [])
    )
    return Config(
        timeout=float(raw["timeout"]),
        pytest_args=tuple(raw["pytest-args"]),
        pytest_plugins=tuple(raw.get("pytest-plugins", ())),
        operators=frozenset(raw["operators"]),
        modules=modules,
        equivalents=equivalents,
        short_module=raw["short-module"],
        short_sample=int(raw["short-sample"]),
    )


@dataclass
class Mutant:
    job_id: str
    operator: str
    line: int
    column: int
    code: str  # the original source line
    after: str = ""  # the line after it
    outcome: str = "pending"  # killed | survived | equivalent | error
    why: str = ""
    diff: str = ""


@dataclass
class ModuleResult:
    path: str
    command: str
    mutants: list[Mutant] = field(default_factory=list)
    listed: int = 0  # every mutant cosmic-ray lists for the module
    filtered: int = 0  # dropped: operator not selected, annotation, docstring
    sampled_out: int = 0
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for m in self.mutants if m.outcome == outcome)

    @property
    def score(self) -> float:
        """The raw score: killed / (mutants - tool errors); an equivalent counts as not killed."""
        run = [m for m in self.mutants if m.outcome != "error"]
        return 100.0 * self.count("killed") / len(run) if run else 100.0

    @property
    def standard_score(self) -> float:
        """The standard mutation score (DeMillo and Offutt): killed / (mutants - tool errors
        - equivalents), over the mutants that a test *can* kill. Equivalents are only those
        that an ``[[mutation.equivalent]]`` entry documents with its reason; an undocumented
        survivor stays in the denominator as a mutant not killed."""
        killable = [m for m in self.mutants if m.outcome not in ("error", "equivalent")]
        return 100.0 * self.count("killed") / len(killable) if killable else 100.0

    @property
    def all_explained(self) -> bool:
        """No survivor without an ``[[mutation.equivalent]]`` entry: the only case in which
        the standard score is the one judged. Tool errors (mutants cosmic-ray cannot make)
        are out of both scores, shown in their own column and explained in MUTATION.md."""
        return self.count("survived") == 0


# -- the scratch copy ---------------------------------------------------------------------


def _package_dirs() -> dict[str, str]:
    """pyproject.toml's ``[tool.setuptools.package-dir]``: import name -> folder."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs: dict[str, str] = data.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return {name: folder for name, folder in dirs.items() if name}


def copy_tree(dest: Path) -> None:
    """The working tree (tracked and untracked, not ignored) into ``dest``."""
    listing = subprocess.run(  # noqa: S603 - fixed argv
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    for rel in filter(None, listing.decode().split("\0")):
        src = ROOT / rel
        if not src.is_file() or src.is_symlink():
            continue  # deleted in the working tree, or a link (.typing/): not needed to test
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    for name, folder in _package_dirs().items():
        link = dest / name
        if not link.exists():
            link.symlink_to(folder, target_is_directory=True)


def _check_imports(copy: Path, env: dict[str, str]) -> None:
    """Every package of ours must import from ``copy``, or a mutant would go unseen."""
    code = "import importlib,sys\nfor n in sys.argv[1:]: print(importlib.import_module(n).__file__)"
    out = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-c", code, *OUR_PACKAGES],
        cwd=copy,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    stray = [f for f in out if not Path(f).resolve().is_relative_to(copy.resolve())]
    if stray:
        raise SystemExit(f"packages import from outside the scratch copy: {stray}")


@contextmanager
def scratch_copy(keep: Path | None) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="tpwc-mutation-")) if keep is None else keep
    copy = base / "repo"
    if copy.exists():
        shutil.rmtree(copy)
    copy.mkdir(parents=True)
    try:
        copy_tree(copy)
        yield copy
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)


# -- which mutants --------------------------------------------------------------------------


def _unevaluated_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of annotations and docstrings: code that never runs."""
    tree = ast.parse(source)
    spans: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def add(node: ast.AST | None) -> None:
        if node is None:
            return
        start = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        end = (getattr(node, "end_lineno", 0) or 0, getattr(node, "end_col_offset", 0) or 0)
        spans.append((start, end))

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            add(node.returns)
            for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                add(a.annotation)
            add(node.args.vararg.annotation if node.args.vararg else None)
            add(node.args.kwarg.annotation if node.args.kwarg else None)
        elif isinstance(node, ast.AnnAssign):
            add(node.annotation)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                add(body[0])
    return spans


def _inside(pos: tuple[int, int], spans: Sequence[tuple[tuple[int, int], tuple[int, int]]]) -> bool:
    return any(start <= pos < end for start, end in spans)


MutantKey = tuple[str, int, int, str]  # operator, line, column, source line


def list_mutants(
    cfg: Config,
    module: Path,
    db_path: Path,
    sample: int | None,
    seed: int,
    only: frozenset[MutantKey] | None = None,
    documented: str | None = None,
) -> tuple[list[Mutant], int, int, int]:
    """Write cosmic-ray's session for ``module`` and return the mutants to run.

    ``only``: just these (an earlier run's survivors); ``documented``: just the mutants
    that an ``[[mutation.equivalent]]`` entry of that module path matches (to re-check
    them after new tests, without the module's whole run).
    """
    from cosmic_ray.commands import init
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    source = module.read_text()
    lines = source.splitlines()
    spans = _unevaluated_spans(source)
    keep: list[Mutant] = []
    with use_db(str(db_path), WorkDB.Mode.create) as db:
        init([module], db, {})
        items = sorted(db.work_items, key=lambda w: w.mutations[0].start_pos)
        filtered = 0
        for item in items:
            m = item.mutations[0]
            if m.operator_name not in cfg.operators or _inside(m.start_pos, spans):
                filtered += 1
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                continue
            line = m.start_pos[0]
            mutant = Mutant(
                item.job_id, m.operator_name, line, m.start_pos[1], lines[line - 1].strip()
            )
            mutant.after = lines[line].strip() if line < len(lines) else ""
            if (only is not None and _key(mutant) not in only) or (
                documented is not None and _equivalent_of(cfg, documented, mutant) is None
            ):
                filtered += 1
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                continue
            keep.append(mutant)
        sampled_out = 0
        if sample is not None and sample < len(keep):
            chosen = set(random.Random(seed).sample(range(len(keep)), sample))
            for k, mutant in enumerate(keep):
                if k not in chosen:
                    db.set_result(mutant.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
            sampled_out = len(keep) - sample
            keep = [mutant for k, mutant in enumerate(keep) if k in chosen]
    return keep, len(items), filtered, sampled_out


def _key(m: Mutant) -> MutantKey:
    return (m.operator, m.line, m.column, m.code)


def survivors_of(report_json: Path, path: str) -> frozenset[MutantKey]:
    """The surviving (and equivalent) mutants of ``path`` in an earlier ``--json`` report."""
    doc = json.loads(report_json.read_text())
    return frozenset(
        (m["operator"], m["line"], m["column"], m["code"])
        for r in doc
        if r["path"] == path
        for m in r["mutants"]
        if m["outcome"] in ("survived", "equivalent", "error")
    )


# -- running ----------------------------------------------------------------------------------


def _test_command(cfg: Config, module: Module) -> list[str]:
    plugins = [arg for name in cfg.pytest_plugins for arg in ("-p", name)]
    skip = [f"--deselect={node}" for node in module.deselect]
    return [sys.executable, "-m", "pytest", *plugins, *cfg.pytest_args, *skip, *module.tests]


@contextmanager
def _environment(copy: Path) -> Iterator[dict[str, str]]:
    """cosmic-ray runs the tests with this process's cwd and environment."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ["PYTHONPATH"] = str(copy)
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # mutation.toml names the plugins
    os.chdir(copy)
    try:
        yield dict(os.environ)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run_module(
    cfg: Config,
    module: Module,
    *,
    sample: int | None,
    seed: int,
    keep: Path | None,
    console: Console,
    only: frozenset[MutantKey] | None = None,
    documented: bool = False,
) -> ModuleResult:
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    command = _test_command(cfg, module)
    shown = " ".join(["python", *command[1:]])
    result = ModuleResult(module.path, shown)
    started = time.monotonic()
    with scratch_copy(keep) as copy, _environment(copy) as env:
        _check_imports(copy, env)
        target = copy / module.path
        original = target.read_bytes()
        baseline = subprocess.run(  # noqa: S603 - our interpreter, configured test paths
            command, capture_output=True, text=True, timeout=cfg.timeout * 4
        )
        if baseline.returncode != 0:
            raise SystemExit(
                f"{module.path}: the unmutated tests fail, nothing to measure:\n"
                + baseline.stdout[-3000:]
            )
        db_path = copy.parent / (module.path.replace("/", "_") + ".sqlite")
        mutants, result.listed, result.filtered, result.sampled_out = list_mutants(
            cfg, target, db_path, sample, seed, only, module.path if documented else None
        )
        result.mutants = mutants
        by_id = {m.job_id: m for m in mutants}
        progress = Progress(
            TextColumn(f"[bold]{module.path}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("killed {task.fields[killed]}, survived {task.fields[survived]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        with progress, use_db(str(db_path), WorkDB.Mode.open) as db:
            task = progress.add_task("mutants", total=len(mutants), killed=0, survived=0)
            for item in sorted(db.pending_work_items, key=lambda w: w.mutations[0].start_pos):
                m = by_id[item.job_id]
                try:
                    work = mutate_and_test(item.mutations, " ".join(command), cfg.timeout)
                finally:
                    if target.read_bytes() != original:  # cosmic-ray restores; make sure
                        target.write_bytes(original)
                db.set_result(item.job_id, work)
                m.diff = work.diff or ""
                if work.worker_outcome is not WorkerOutcome.NORMAL:
                    m.outcome = "error"
                    m.why = f"{work.worker_outcome}: {(work.output or '')[-300:]}"
                elif work.test_outcome is TestOutcome.KILLED:
                    m.outcome = "killed"
                elif work.test_outcome is TestOutcome.SURVIVED:
                    m.outcome = "survived"
                    _match_equivalent(cfg, module.path, m)
                else:
                    m.outcome, m.why = "error", f"incompetent: {(work.output or '')[-300:]}"
                progress.update(
                    task,
                    advance=1,
                    killed=result.count("killed"),
                    survived=result.count("survived") + result.count("equivalent"),
                )
    result.seconds = time.monotonic() - started
    return result


def _equivalent_of(cfg: Config, path: str, m: Mutant) -> Equivalent | None:
    for e in cfg.equivalents:
        if e.path == path and e.operator == m.operator and e.code in m.code and e.after in m.after:
            return e
    return None


def _match_equivalent(cfg: Config, path: str, m: Mutant) -> None:
    e = _equivalent_of(cfg, path, m)
    if e is not None:
        m.outcome, m.why = "equivalent", e.why


# -- which modules ---------------------------------------------------------------------------


def changed_modules(cfg: Config, base: str) -> list[str]:
    """Configured modules that differ from ``base`` (committed or not)."""
    names: set[str] = set()
    for args in (["git", "diff", "--name-only", f"{base}...HEAD"], ["git", "diff", "--name-only"]):
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)  # noqa: S603
        if out.returncode == 0:
            names.update(out.stdout.split())
    return [p for p in cfg.paths() if p in names]


def report(results: Sequence[ModuleResult], console: Console, survivors: bool) -> None:
    table = Table(title="mutation score per module (cosmic-ray, one worker, nice 19)")
    columns = ("module", "mutants", "killed", "survived", "equivalent", "errors", "raw", "std", "s")
    for col in columns:
        table.add_column(col, justify="left" if col == "module" else "right")
    for r in results:
        table.add_row(
            r.path,
            str(len(r.mutants)),
            str(r.count("killed")),
            str(r.count("survived")),
            str(r.count("equivalent")),
            str(r.count("error")),
            f"{r.score:.1f}%",
            f"{r.standard_score:.1f}%" + ("" if r.all_explained else "*"),
            f"{r.seconds:.0f}",
        )
    console.print(table)
    console.print(
        "[dim]raw = killed / (mutants - errors); std = killed / (mutants - errors - documented "
        "equivalents) (DeMillo/Offutt); * = a survivor not documented, so the std "
        "score is not the one judged[/dim]"
    )
    for r in results:
        console.print(f"[dim]{r.path}: {r.command}[/dim]")
        if r.sampled_out:
            console.print(f"[dim]  sample of {len(r.mutants)} of {len(r.mutants) + r.sampled_out}")
        for m in r.mutants:
            if m.outcome in ("survived", "error") or (survivors and m.outcome == "equivalent"):
                console.print(f"[yellow]{m.outcome}[/yellow] {r.path}:{m.line} {m.operator}")
                console.print(f"  {m.code}")
                if m.why:
                    console.print(f"  [dim]{m.why}[/dim]")
                if survivors and m.diff:
                    console.print(m.diff, markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.mutation", description=__doc__)
    parser.add_argument("--module", action="append", help="a module path of mutation.toml")
    parser.add_argument("--short", action="store_true", help="changed modules (or one), sampled")
    parser.add_argument("--base", default="main", help="what --short compares with (git ref)")
    parser.add_argument("--sample", type=int, help="run only this many mutants per module")
    parser.add_argument("--seed", type=int, default=0, help="which sample (with --sample)")
    parser.add_argument("--json", type=Path, help="write every mutant and outcome here")
    parser.add_argument("--survivors", action="store_true", help="print survivors' diffs")
    parser.add_argument("--keep", type=Path, help="scratch directory to keep (else a temp dir)")
    parser.add_argument(
        "--rerun", type=Path, help="only the survivors of this earlier --json report"
    )
    parser.add_argument(
        "--equivalents",
        action="store_true",
        help="only the mutants that mutation.toml documents as equivalent (re-check them)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 on a survivor not documented as equivalent"
    )
    args = parser.parse_args(argv)

    os.nice(19)  # 2 cores shared with everyone else; the test processes inherit it
    # a SIGTERM unwinds like Ctrl-C, so the scratch copy is removed on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = load_config()
    sample = args.sample
    if args.module:
        paths = [cfg.module(p).path for p in args.module]
    elif args.short:
        paths = changed_modules(cfg, args.base) or [cfg.short_module]
        sample = sample or cfg.short_sample
    else:
        paths = cfg.paths()
    console = Console(stderr=True)
    results = []
    for p in paths:
        only = survivors_of(args.rerun, p) if args.rerun else None
        results.append(
            run_module(
                cfg,
                cfg.module(p),
                sample=sample,
                seed=args.seed,
                keep=args.keep,
                console=console,
                only=only,
                documented=args.equivalents,
            )
        )
    report(results, Console(width=140), args.survivors)
    if args.json:
        doc: list[dict[str, Any]] = [
            {
                **asdict(r),
                "score": r.score,
                "standard_score": r.standard_score,
                "all_explained": r.all_explained,
                "killed": r.count("killed"),
            }
            for r in results
        ]
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    unexplained = sum(r.count("survived") + r.count("error") for r in results)
    return 1 if args.strict and unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
