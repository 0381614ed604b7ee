import json
from pathlib import Path

from medseg.cli import main


def test_quick_demo_runs_the_whole_job(tmp_path: Path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    demo = tmp_path / "demo"
    summary = json.loads((demo / "demo_summary.json").read_text())
    assert set(summary["dice"]) == {"red_cell", "wbc_cytoplasm", "wbc_nucleus"}
    for path in (
        "run/report.html",
        "run/eval/metrics.json",
        "predictions/summary.csv",
        "run/snapshots/progress.gif",
    ):
        assert (demo / path).is_file(), path
    assert "medseg predict" in out and str(demo) in out
