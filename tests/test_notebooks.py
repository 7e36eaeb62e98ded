"""Every notebook runs headless, top to bottom, and its headline numbers hold."""

from __future__ import annotations

import json

import pytest

from toolkit.reproduce import execute_notebook

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def run_nb(default_sample, tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("notebooks")

    def run(name: str, **params) -> dict:
        params = {
            "sample_dir": str(default_sample.path),
            "figures_dir": str(out / "figures"),
            "results_path": str(out / "summary.json"),
            **params,
        }
        execute_notebook(
            repo_root / "notebooks" / f"{name}.ipynb",
            output=out / f"{name}.ipynb",
            parameters=params,
        )
        return json.loads((out / "summary.json").read_text()), out

    return run


def test_quickstart_counts_the_event_scene(run_nb):
    results, out = run_nb("00_quickstart")
    truth = results["quickstart_event_truth"]
    assert truth == 73  # the simulator reproduces the published count
    # first-version counting: within 15% of the truth on the event scene
    assert abs(results["quickstart_event_estimate"] - truth) <= 0.15 * truth
    for name in ("quickstart_scene", "quickstart_counts"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 10_000
