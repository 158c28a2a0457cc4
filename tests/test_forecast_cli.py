"""`spillway forecast ...` end to end on the bundled hourly Wikipedia trace."""
from __future__ import annotations

import json

from controller.cli import main


def test_backtest_writes_metrics_and_plot(tmp_path, capsys):
    out = tmp_path / "bt"
    assert main(["forecast", "backtest", "--trace", "wikipedia", "--model", "ewma", "--horizon", "3h",
                 "--out", str(out)]) == 0
    result = json.loads((out / "backtest.json").read_text())
    for key in ("mae", "mase", "pinball_p90", "coverage_p90", "coverage_p99", "seconds_per_update",
                "seconds_per_predict"):
        assert key in result, key
    assert (out / "bands.png").stat().st_size > 10_000
    assert "mase" in capsys.readouterr().out


def test_compare_table(tmp_path):
    out = tmp_path / "cmp"
    assert main(["forecast", "compare", "--traces", "wikipedia", "--models", "seasonal-naive-daily,ewma",
                 "--max-origins", "100", "--out", str(out)]) == 0
    table = (out / "compare.md").read_text()
    assert "ewma" in table and "seasonal-naive-daily" in table and "mase" in table


def test_unknown_model_is_a_usage_error(capsys):
    assert main(["forecast", "backtest", "--trace", "wikipedia", "--model", "magic"]) == 2
    err = capsys.readouterr().err
    assert "magic" in err and "Traceback" not in err
