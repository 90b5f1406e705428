"""The mutation-testing set-up (mutation.toml, simulations/mutation.py) stays true.

Fast checks: every configured module and test file exists, every operator is one that
cosmic-ray has, every documented equivalent still matches a line of its module (a stale
entry would excuse a mutant that no longer exists), and the filter drops exactly the code
that never runs (annotations, docstrings). The mutation run itself is
tests/core/test_mutation_short.py (slow).
"""

from __future__ import annotations

from pathlib import Path

import cosmic_ray.plugins

from simulations.mutation import ROOT, _inside, _unevaluated_spans, load_config

CFG = load_config()


def test_every_module_and_test_file_exists() -> None:
    assert CFG.modules
    for m in CFG.modules:
        assert (ROOT / m.path).is_file(), m.path
        assert m.tests, m.path
        for t in m.tests:
            assert (ROOT / t).is_file(), (m.path, t)
    assert CFG.short_module in CFG.paths()
    assert 1 <= CFG.short_sample <= 20  # the short form must stay short


def test_operators_are_cosmic_ray_operators() -> None:
    known = set(cosmic_ray.plugins.operator_names())
    assert CFG.operators <= known, sorted(CFG.operators - known)
    # the reviewer's set of issue 16 is all there
    for needed in (
        "core/ReplaceComparisonOperator_Lt_LtE",
        "core/ReplaceBinaryOperator_Add_Sub",
        "core/ReplaceBinaryOperator_Sub_Add",
        "core/ReplaceAndWithOr",
        "core/ReplaceOrWithAnd",
        "core/AddNot",
        "core/NumberReplacer",
    ):
        assert needed in CFG.operators


def test_every_equivalent_matches_a_line_of_its_module() -> None:
    for e in CFG.equivalents:
        assert e.path in CFG.paths(), e
        assert e.operator in CFG.operators, e
        assert e.why.strip(), e
        lines = (ROOT / e.path).read_text().splitlines()
        assert any(
            e.code in line and e.after in after
            for line, after in zip(lines, [*lines[1:], ""], strict=True)
        ), f"stale equivalent: {e}"


def test_annotations_and_docstrings_are_not_mutated(tmp_path: Path) -> None:
    src = (
        '"""Module doc 1 + 2."""\n'
        "from __future__ import annotations\n"
        "def f(a: int | None, *b: str | bytes, c: list[int] = [1], **k: int | str) -> int | None:\n"
        '    """Doc 3 < 4."""\n'
        "    x: int | str = a | 2\n"
        "    return x\n"
    )
    spans = _unevaluated_spans(src)
    lines = src.splitlines()

    def pos(line: int, needle: str, nth: int = 0) -> tuple[int, int]:
        text = lines[line - 1]
        col = -1
        for _ in range(nth + 1):
            col = text.index(needle, col + 1)
        return (line, col)

    assert _inside(pos(1, "+"), spans)  # module docstring
    assert _inside(pos(3, "|", 0), spans)  # a: int | None
    assert _inside(pos(3, "|", 1), spans)  # *b: str | bytes
    assert _inside(pos(3, "|", 2), spans)  # **k: int | str
    assert _inside(pos(3, "|", 3), spans)  # -> int | None
    assert not _inside(pos(3, "1"), spans)  # the default value runs
    assert _inside(pos(4, "<"), spans)  # function docstring
    assert _inside(pos(5, "|", 0), spans)  # x: int | str
    assert not _inside(pos(5, "|", 1), spans)  # a | 2 runs
    assert not _inside(pos(6, "x"), spans)
