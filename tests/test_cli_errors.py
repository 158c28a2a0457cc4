"""Bad input tried as a new user would: one clear line, a non-zero exit, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from controller.cli import main


def run_cli(capsys, *args):
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.err.strip()


def assert_one_line(rc, err, *fragments):
    assert rc != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_missing_trace_file(capsys, tmp_path):
    rc, err = run_cli(capsys, "simulate", "--trace", str(tmp_path / "nope.csv"), "-q", "--out", str(tmp_path / "o"))
    assert_one_line(rc, err, "nope.csv")


@pytest.mark.parametrize("content, problem", [
    ("timestamp_s\n0.5\n-1.0\n2.0\n", "negative"),
    ("timestamp_s\n0.5\n3.0\n2.0\n", "sort"),
])
def test_bad_trace_values(capsys, tmp_path, content, problem):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    rc, err = run_cli(capsys, "simulate", "--trace", str(f), "-q", "--out", str(tmp_path / "o"))
    assert_one_line(rc, err, "bad.csv")
    assert problem in err.lower()


def test_negative_counts_file(capsys, tmp_path):
    f = tmp_path / "counts.txt"
    f.write_text("3 4 -2 5\n")
    rc, err = run_cli(capsys, "simulate", "--trace", str(f), "-q", "--out", str(tmp_path / "o"))
    assert_one_line(rc, err, "counts.txt", "negative")


def test_unknown_trace_name(capsys):
    rc, err = run_cli(capsys, "simulate", "--trace", "twiter", "-q")
    assert_one_line(rc, err, "twiter")
    assert "twitter" in err   # lists the known names


def test_unknown_policy(capsys):
    rc, err = run_cli(capsys, "simulate", "--trace", "default", "--policy", "magic", "-q")
    assert_one_line(rc, err, "magic", "reactive")
    assert rc == 2


def test_mistyped_config_key(capsys, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[slo]\nlatncy_ms = 100\n")
    rc, err = run_cli(capsys, "simulate", "--trace", "default", "--config", str(f), "-q")
    assert_one_line(rc, err, "c.toml", "slo.latncy_ms", "did you mean slo.latency_ms")
    assert rc == 2


def test_negative_slo(capsys, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[slo]\nlatency_ms = -5\n")
    rc, err = run_cli(capsys, "simulate", "--trace", "default", "--config", str(f), "-q")
    assert_one_line(rc, err, "slo.latency_ms", "-5", "> 0")
    assert rc == 2


def test_bad_duration_and_rate(capsys):
    rc, err = run_cli(capsys, "simulate", "--trace", "default", "--duration", "6 hours", "-q")
    assert rc == 2 and "--duration" in err and "Traceback" not in err
    rc, err = run_cli(capsys, "simulate", "--trace", "default", "--mean-rps", "-3", "-q")
    assert rc == 2 and "--mean-rps" in err


def test_report_on_a_directory_that_is_not_a_run(capsys, tmp_path):
    rc, err = run_cli(capsys, "report", str(tmp_path))
    assert_one_line(rc, err, "summary.json")


def test_console_script_prints_no_traceback(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[controller]\npolicy = 3\n")
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "simulate", "--trace", "default",
                           "--config", str(f)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "controller.policy" in proc.stderr
    assert "Traceback" not in proc.stderr
