"""The committed notebooks in docs/notebooks were run top to bottom, and nothing failed.

CI executes them again with nbmake (``.ci/run``); this test reads the outputs a reader sees
on the page, with json alone: a code cell that never ran, or an output holding an error or
a traceback, means the notebook was committed broken or half run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"

#: How Python and IPython start a traceback, coloured or not.
TRACEBACK = "Traceback (most recent call last)"


def text_of(output: dict) -> str:
    """An output's text: a stream's, a result's plain text, a traceback's lines."""
    parts = [output.get("text", ""), output.get("data", {}).get("text/plain", "")]
    parts.append(output.get("traceback", []))
    return "".join("".join(part) if isinstance(part, list) else part for part in parts)


def problems(path: Path) -> list[str]:
    """What is wrong with the notebook at ``path``, one line each; empty when nothing is."""
    found = []
    for number, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"], 1):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        if cell.get("execution_count") is None:
            found.append(f"cell {number} was not run")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {number} raised {output.get('ename')}: {output.get('evalue')}")
            elif TRACEBACK in text_of(output):
                found.append(f"cell {number} printed a traceback")
    return found


def committed() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks():
    assert committed(), f"no notebook in {NOTEBOOKS}"


@pytest.mark.parametrize("path", committed(), ids=lambda path: path.name)
def test_a_committed_notebook_ran_without_an_error(path):
    assert problems(path) == []


def notebook(tmp_path: Path, *cells: dict) -> Path:
    """A notebook of ``cells`` written into ``tmp_path``."""
    path = tmp_path / "made.ipynb"
    document = {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def code(source: str, count: int | None = 1, outputs: list | None = None) -> dict:
    return {
        "cell_type": "code",
        "execution_count": count,
        "metadata": {},
        "outputs": outputs or [],
        "source": source,
    }


def test_a_clean_notebook_has_no_problems(tmp_path):
    printed = {"output_type": "stream", "name": "stdout", "text": "relative error 1.7e-11\n"}
    path = notebook(
        tmp_path,
        {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
        code("print('relative error 1.7e-11')", outputs=[printed]),
        code("", count=None),  # an empty cell need not run
    )
    assert problems(path) == []


def test_an_error_output_is_found(tmp_path):
    error = {
        "output_type": "error",
        "ename": "AssertionError",
        "evalue": "",
        "traceback": ["\x1b[0;31mAssertionError\x1b[0m"],
    }
    path = notebook(tmp_path, code("assert rel_error < 1e-7", outputs=[error]))
    assert problems(path) == ["cell 1 raised AssertionError: "]


def test_a_printed_traceback_is_found(tmp_path):
    text = "Traceback (most recent call last):\n  File ...\nValueError: shapes differ\n"
    printed = {"output_type": "stream", "name": "stderr", "text": text}
    path = notebook(tmp_path, code("f()", outputs=[printed]))
    assert problems(path) == ["cell 1 printed a traceback"]


def test_a_cell_that_never_ran_is_found(tmp_path):
    path = notebook(tmp_path, code("x = 1", count=1), code("y = 2", count=None))
    assert problems(path) == ["cell 2 was not run"]
