"""The two mutation scores of simulations/mutation.py (docs/MUTATION.md, "Figures").

raw = killed / (mutants - tool errors), an equivalent counted as not killed;
standard (DeMillo and Offutt) = killed / (mutants - tool errors - documented equivalents).
Pure: ModuleResult objects built by hand, no cosmic-ray run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from simulations import mutation
from simulations.mutation import ModuleResult, Mutant, report


def result(killed: int, survived: int = 0, equivalent: int = 0, error: int = 0) -> ModuleResult:
    outcomes = ["killed"] * killed + ["survived"] * survived
    outcomes += ["equivalent"] * equivalent + ["error"] * error
    r = ModuleResult("custody/kinds/btc.py", "python -m pytest")
    r.mutants = [
        Mutant(str(i), "core/AddNot", i + 1, 0, "x", outcome=o) for i, o in enumerate(outcomes)
    ]
    return r


def test_raw_counts_an_equivalent_as_not_killed_standard_leaves_it_out() -> None:
    r = result(killed=90, equivalent=10)
    assert r.score == pytest.approx(90.0)
    assert r.standard_score == pytest.approx(100.0)
    assert r.all_explained


def test_tool_errors_are_out_of_both_denominators() -> None:
    r = result(killed=45, equivalent=3, error=2)
    assert r.score == pytest.approx(100.0 * 45 / 48)
    assert r.standard_score == pytest.approx(100.0)
    assert r.all_explained  # errors have their own column (and their reason in MUTATION.md)


def test_an_undocumented_survivor_stays_in_the_standard_denominator() -> None:
    r = result(killed=94, survived=4, equivalent=2)
    assert r.score == pytest.approx(94.0)
    assert r.standard_score == pytest.approx(100.0 * 94 / 98)
    assert not r.all_explained


def test_the_documented_figures_of_mul_py() -> None:
    # docs/MUTATION.md: mpc/dkls23/mul.py, 255 mutants, 223 killed, 32 equivalent
    r = result(killed=223, equivalent=32)
    assert f"{r.score:.1f}%" == "87.5%"
    assert f"{r.standard_score:.1f}%" == "100.0%"


def test_nothing_run_scores_100_on_both() -> None:
    r = result(killed=0, equivalent=3)
    assert r.score == 0.0  # three mutants, none killed
    assert r.standard_score == 100.0  # no killable mutant at all
    empty = result(killed=0)
    assert empty.score == empty.standard_score == 100.0


def test_report_prints_both_columns_and_marks_an_unexplained_module() -> None:
    out = io.StringIO()
    report(
        [result(killed=90, equivalent=10), result(killed=94, survived=4, equivalent=2)],
        Console(file=out, width=200, color_system=None),
        survivors=False,
    )
    text = out.getvalue()
    header = next(line for line in text.splitlines() if "module" in line and "raw" in line)
    assert "std" in header
    assert "90.0%" in text and "100.0%" in text  # the first row, raw and standard
    assert "95.9%*" in text  # the second: 94 of 98, a survivor undocumented
    assert "100.0%*" not in text
    assert "DeMillo/Offutt" in text


def test_main_writes_both_scores_to_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the CLI end to end, with the cosmic-ray run replaced by a result built by hand (the
    # real run is tests/core/test_mutation_short.py, slow)
    def fake_run(cfg: object, module: object, **_: object) -> ModuleResult:
        return result(killed=47, survived=1, equivalent=2)

    monkeypatch.setattr(mutation, "run_module", fake_run)
    monkeypatch.setattr(mutation.os, "nice", lambda _: 0)  # keep this process's priority
    monkeypatch.setattr(mutation.signal, "signal", lambda *_: None)  # and its SIGTERM handler
    out = tmp_path / "r.json"
    assert mutation.main(["--module", "custody/kinds/btc.py", "--json", str(out)]) == 0
    assert mutation.main(["--module", "custody/kinds/btc.py", "--strict"]) == 1
    (doc,) = json.loads(out.read_text())
    assert doc["killed"] == 47
    assert doc["score"] == pytest.approx(94.0)
    assert doc["standard_score"] == pytest.approx(100.0 * 47 / 48)
    assert doc["all_explained"] is False
    assert "97.9%*" in capsys.readouterr().out
