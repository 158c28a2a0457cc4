import math
import re
from pathlib import Path

import pytest

from provisioners.catalog import (
    BUNDLED_CATALOG, REQUIRED_FUNCTION_SOURCES, REQUIRED_INSTANCE_SOURCES, CatalogError, FunctionPricing,
    load_catalog,
)

EXPECTED_ON_DEMAND = {
    "g4dn.xlarge": ("T4", 0.526), "g5.xlarge": ("A10G", 1.006), "g6.xlarge": ("L4", 0.8048),
    "p3.2xlarge": ("V100", 3.06), "c6i.xlarge": ("", 0.17), "c6i.2xlarge": ("", 0.34),
}


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_bundled_catalog_loads(cat):
    assert cat.region == "us-east-1"
    assert Path(cat.path) == BUNDLED_CATALOG
    assert set(cat.instance_types) == set(EXPECTED_ON_DEMAND)
    for name, (gpu, price) in EXPECTED_ON_DEMAND.items():
        it = cat.instance(name)
        assert it.name == name and it.gpu == gpu and it.gpus == (1 if gpu else 0)
        assert it.on_demand_usd_per_h == price
        assert 0 < it.spot_usd_per_h < it.on_demand_usd_per_h
        assert 0 < it.spot_interruptions_per_h < 1e-3
        assert it.billing_minimum_s == 60
    assert load_catalog(None).instance_types.keys() == cat.instance_types.keys()
    assert load_catalog(str(BUNDLED_CATALOG)).region == "us-east-1"


def test_every_price_and_delay_has_a_source(cat):
    for it in cat.instance_types.values():
        for key in REQUIRED_INSTANCE_SOURCES:
            assert it.sources.get(key, "").strip(), (it.name, key)
    for key in REQUIRED_FUNCTION_SOURCES:
        assert cat.functions.sources.get(key, "").strip(), key
    # an assumption must say so; a citation names a URL or a paper
    for it in cat.instance_types.values():
        for key, text in it.sources.items():
            assert "assumption" in text or "http" in text or "ATC" in text, (it.name, key)


def test_spot_hazard_matches_advisor_band_arithmetic(cat):
    bands = {f: -math.log(1 - f) / 730 for f in (0.05, 0.10, 0.15, 0.20)}
    for it in cat.instance_types.values():
        assert any(abs(it.spot_interruptions_per_h - v) / v < 0.01 for v in bands.values()), it.name


def test_launch_delays_plausible(cat):
    for it in cat.instance_types.values():
        d = it.launch_to_ready_s
        if it.gpus:
            assert 120 <= d.quantile(0.5) <= 240          # 2-4 minutes typical for GPU + Triton
            assert d.quantile(0.9) <= 300
        else:
            assert d.quantile(0.5) < 120                   # CPU types are faster
        assert d.quantile(0.0) >= 40                       # EC2 boot alone is ~40 s


def test_price_by_market(cat):
    it = cat.instance("g4dn.xlarge")
    assert it.price_usd_per_h("on-demand") == 0.526
    assert it.price_usd_per_h("spot") == it.spot_usd_per_h
    with pytest.raises(CatalogError, match="g4dn.xlarge: market: unknown market 'reserved'"):
        it.price_usd_per_h("reserved")
    assert it.billed_usd(10) == pytest.approx(60 * 0.526 / 3600)      # 60 s minimum
    assert it.billed_usd(3600, "spot") == pytest.approx(it.spot_usd_per_h)


def test_unknown_instance_lists_known_names(cat):
    with pytest.raises(CatalogError) as ei:
        cat.instance("m5.large")
    msg = str(ei.value)
    assert msg.startswith("catalog_aws_us_east_1.toml: instance_types: unknown instance type 'm5.large'")
    for name in EXPECTED_ON_DEMAND:
        assert name in msg


def test_lambda_pricing(cat):
    f = cat.functions
    assert f.arch == "x86_64"
    assert f.usd_per_gb_s == 0.0000166667
    assert f.usd_per_request == pytest.approx(0.20 / 1e6)
    assert f.provisioned_usd_per_gb_s == 0.0000041667
    assert f.provisioned_duration_usd_per_gb_s == 0.0000097222
    assert (f.billing_granularity_ms, f.min_memory_mb, f.max_memory_mb) == (1, 128, 10240)
    assert f.account_concurrency_limit == 1000 and f.burst_scaling_per_10s == 1000
    assert f.bills_init_phase is True


def test_lambda_duration_rounds_up(cat):
    f = cat.functions
    assert f.billed_ms(1.2) == 2
    assert f.billed_ms(2.0) == 2
    assert f.billed_ms(0.1 + 0.2 + 1.7) == 2          # float noise does not bill an extra ms
    assert f.billed_ms(0) == 0
    assert f.duration_usd(1.2, 1024) == pytest.approx(0.002 * 1.0 * 0.0000166667)
    assert f.duration_usd(1.2, 1024) == f.duration_usd(2.0, 1024)
    assert f.duration_usd(100, 10240) == pytest.approx(0.1 * 10 * 0.0000166667)
    assert f.duration_usd(100, 2048, provisioned=True) == pytest.approx(0.1 * 2 * 0.0000097222)
    assert f.invocation_usd(100, 2048) == pytest.approx(0.1 * 2 * 0.0000166667 + 2e-7)
    assert f.provisioned_usd(2048, 10, 3600) == pytest.approx(10 * 3600 * 2 * 0.0000041667)
    with pytest.raises(CatalogError, match="memory_mb: 20000 is outside 128-10240 MB"):
        f.duration_usd(10, 20000)
    with pytest.raises(CatalogError, match="duration_ms"):
        f.duration_usd(-1, 1024)
    coarse = FunctionPricing(arch="x86_64", usd_per_gb_s=1e-5, usd_per_request=0, provisioned_usd_per_gb_s=0,
                             provisioned_duration_usd_per_gb_s=0, billing_granularity_ms=100)
    assert coarse.billed_ms(101) == 200 and coarse.billed_ms(100) == 100


# ------------------------------------------------------------------ bad files
def _mutate(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = BUNDLED_CATALOG.read_text()
    assert old in text, old
    p = tmp_path / "bad_catalog.toml"
    p.write_text(text.replace(old, new, count))
    return p


def _one_line_error(path, key: str, needle: str):
    with pytest.raises(CatalogError) as ei:
        load_catalog(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    assert key in msg and needle in msg, msg
    return msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope.toml"
    _one_line_error(p, "file", "not found")


def test_missing_key(tmp_path):
    p = _mutate(tmp_path, "on_demand_usd_per_h = 0.526\n", "")
    _one_line_error(p, "instance_types.g4dn.xlarge.on_demand_usd_per_h", "missing")


def test_negative_price(tmp_path):
    p = _mutate(tmp_path, "on_demand_usd_per_h = 1.006", "on_demand_usd_per_h = -1.006")
    _one_line_error(p, "instance_types.g5.xlarge.on_demand_usd_per_h", "must be >= 0")


def test_negative_lambda_price(tmp_path):
    p = _mutate(tmp_path, "usd_per_gb_s = 0.0000166667", "usd_per_gb_s = -0.0000166667")
    _one_line_error(p, "functions.usd_per_gb_s", "must be >= 0")


def test_unknown_distribution_kind(tmp_path):
    p = _mutate(tmp_path, 'launch_to_ready_s = { kind = "lognormal", median = 75',
                'launch_to_ready_s = { kind = "weibull", median = 75')
    _one_line_error(p, "instance_types.c6i.xlarge.launch_to_ready_s", "unknown kind 'weibull'")


def test_missing_source(tmp_path):
    text = BUNDLED_CATALOG.read_text()
    start = text.index('[instance_types."g6.xlarge".sources]')
    line = re.compile(r"^spot_usd_per_h = .*\n", re.M).search(text, start)
    p = tmp_path / "bad_catalog.toml"
    p.write_text(text[:line.start()] + text[line.end():])
    _one_line_error(p, "instance_types.g6.xlarge.sources.spot_usd_per_h", "missing source")


def test_spot_above_on_demand(tmp_path):
    p = _mutate(tmp_path, "spot_usd_per_h = 0.918", "spot_usd_per_h = 9.18")
    _one_line_error(p, "instance_types.p3.2xlarge.spot_usd_per_h", "exceeds the on-demand price")


def test_unknown_key_and_bad_type(tmp_path):
    p = _mutate(tmp_path, "vcpu = 8\n", "vcpu = 8\nvcpus = 8\n")
    _one_line_error(p, "instance_types.p3.2xlarge.vcpus", "unknown key")
    p = _mutate(tmp_path, "vcpu = 8\n", 'vcpu = "eight"\n')
    _one_line_error(p, "instance_types.p3.2xlarge.vcpu", "must be a number")


def test_toml_syntax_error(tmp_path):
    p = _mutate(tmp_path, 'region = "us-east-1"', 'region = "us-east-1')
    _one_line_error(p, "toml", "")


def test_missing_functions_table(tmp_path):
    text = BUNDLED_CATALOG.read_text()
    p = tmp_path / "bad_catalog.toml"
    p.write_text(text[:text.index("[functions]")])
    _one_line_error(p, "functions", "missing table")
