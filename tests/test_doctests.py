"""Every Examples section in the toolkit runs as a doctest, one case per module.

The cases come from the source: each module of the package whose text holds a
doctest prompt. A case also checks that doctest found every prompt in the file
(an example it cannot reach, say on a nested function, would otherwise never
run). Examples run with the suite's warning filters (warnings are errors), in a
temporary working directory, and ``tempfile`` puts their files under the test's
``tmp_path``. Examples marked ``# doctest: +SKIP`` are counted but not run.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import re
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import toolkit  # noqa: E402

_PROMPT = re.compile(r"^\s*>>> ", re.MULTILINE)

#: Modules never imported here, and why; they must hold no examples (checked below).
NOT_IMPORTED = {"__main__": "importing it runs the command line"}


def _source(name: str) -> str:
    spec = importlib.util.find_spec(f"toolkit.{name}")
    return Path(spec.origin).read_text(encoding="utf-8")


def _all_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(toolkit.__path__))


def _modules_with_examples() -> list[str]:
    return [m for m in _all_modules() if m not in NOT_IMPORTED and _PROMPT.search(_source(m))]


def test_modules_left_out_hold_no_examples():
    assert set(NOT_IMPORTED) <= set(_all_modules())
    for name in NOT_IMPORTED:
        assert not _PROMPT.search(_source(name)), f"toolkit/{name}.py has examples, not run"
    # the public modules with examples are among the cases
    assert {"baseline", "changepoints", "cube", "plotting", "synth"} <= set(
        _modules_with_examples()
    )


@pytest.mark.parametrize("name", _modules_with_examples())
def test_module_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    module = importlib.import_module(f"toolkit.{name}")
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    found = sum(len(t.examples) for t in tests)
    prompts = len(_PROMPT.findall(_source(name)))
    assert found == prompts, (
        f"toolkit/{name}.py has {prompts} example lines but doctest finds {found}: an "
        "example sits where doctest does not look (a nested function, a comment, a string)"
    )
    runner = doctest.DocTestRunner(verbose=False)
    report: list[str] = []
    try:
        for test in sorted(tests, key=lambda t: (t.lineno or 0, t.name)):
            runner.run(test, out=report.append)
    finally:
        plt.close("all")
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
