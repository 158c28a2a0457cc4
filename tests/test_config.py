"""Configuration: config.toml documents exactly the defaults; every error names key, value, range."""
from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import Config, ConfigError, load_config, to_toml

ROOT = Path(__file__).resolve().parents[1]


def test_config_toml_is_the_defaults():
    assert load_config(ROOT / "config.toml") == load_config() == Config()


def test_round_trip_through_toml(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(to_toml(Config()))
    assert load_config(f) == Config()


def test_partial_file_keeps_other_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[slo]\nlatency_ms = 100\n[policies.static-peak]\npeak_rps = 500\n")
    cfg = load_config(f)
    assert cfg.slo.latency_ms == 100.0 and cfg.slo.attainment == 0.995
    assert cfg.policies.static_peak.peak_rps == 500.0


@pytest.mark.parametrize("text, fragments", [
    ("[slo]\nattainment = 1.5\n", ["slo.attainment", "1.5", "< 1"]),
    ("[controller]\ninterval_s = 0\n", ["controller.interval_s", "> 0"]),
    ("[fleet]\nmarkets = ['reserved']\n", ["fleet.markets", "reserved", "on-demand"]),
    ("[fleet]\nmax_instances_per_type = 2.5\n", ["fleet.max_instances_per_type", "whole number"]),
    ("[functions]\nmemory_mb = 20000\n", ["functions.memory_mb", "20000", "<= 10240"]),
    ("[functions]\nwarm_concurrency = 5\nmax_concurrency = 2\n", ["functions.warm_concurrency", "max_concurrency"]),
    ("[controller]\npolicy = 'magic'\n", ["controller.policy", "magic", "reactive"]),
    ("[functions]\nenabled = 'yes'\n", ["functions.enabled", "true or false"]),
    ("[bogus]\nx = 1\n", ["unknown key 'bogus'"]),
    ("slo = 3\n", ["slo must be a table"]),
    ("[slo\n", ["not valid TOML"]),
])
def test_errors_name_key_value_and_range(tmp_path, text, fragments):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    msg = str(exc.value)
    assert "\n" not in msg and str(f) in msg
    for fragment in fragments:
        assert fragment in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")
