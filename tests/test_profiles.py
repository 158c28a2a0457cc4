from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioners.catalog import load_catalog
from provisioners.distributions import Distribution
from serving.profiles import PROFILE_DIR, BackendProfile, ProfileError, bundled_profiles, load_profile

BUNDLED = PROFILE_DIR / "resnet50.toml"
INSTANCES = ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "p3.2xlarge", "c6i.xlarge", "c6i.2xlarge")
SIZES = (2048, 4096, 6144, 8192, 10240)


@pytest.fixture(scope="module")
def prof():
    return load_profile()


def _backend(table, delay=5.0, cv=0.0, kind="instance"):
    return BackendProfile(backend="t", kind=kind, max_batch=len(table), batch_latency_ms=tuple(table),
                          jitter_cv=cv, max_queue_delay_ms=delay)


def test_bundled_profile_loads(prof):
    assert "resnet50" in bundled_profiles()
    assert prof.model == "resnet50" and Path(prof.path) == BUNDLED
    assert load_profile(str(BUNDLED)).backends.keys() == prof.backends.keys()
    for name in INSTANCES:
        p = prof.instance(name)
        assert p.kind == "instance" and p.backend == name and p.source
        assert len(p.batch_latency_ms) == p.max_batch
        assert p.max_queue_delay_ms > 0 and p.cold_start_s is None
    assert prof.function_memory_sizes() == SIZES
    for m in SIZES:
        f = prof.function(m)
        assert f.backend == f"lambda-{m}" and f.memory_mb == m and f.max_batch == 1
        assert f.max_queue_delay_ms == 0 and f.source
        assert isinstance(f.cold_start_s, Distribution)
        assert 2 <= f.cold_start_s.quantile(0.5) <= 30           # ML container cold starts: 2-30 s


def test_lookups_fail_with_one_line(prof):
    with pytest.raises(ProfileError, match=r"no function profile for 3000 MB \(profiled sizes: 2048, 4096, "
                                           r"6144, 8192, 10240\)"):
        prof.function(3000)
    with pytest.raises(ProfileError, match="no instance profile for 'm5.large'"):
        prof.instance("m5.large")
    with pytest.raises(ProfileError, match="no instance profile for 'lambda-2048'"):
        prof.instance("lambda-2048")
    with pytest.raises(ProfileError, match="no bundled profile of that name"):
        load_profile("bert")


def test_measured_points_are_kept_and_interpolated(prof):
    t4 = prof.instance("g4dn.xlarge")
    for b, ms in zip((1, 2, 4, 8, 16, 32, 64), (3.003, 3.998, 5.747, 8.998, 15.113, 28.353, 53.187)):
        assert t4.latency_ms(b) == pytest.approx(ms)
    assert t4.latency_ms(3) == pytest.approx((3.998 + 5.747) / 2)
    assert t4.throughput_rps(64) == pytest.approx(64000 / 53.187)
    with pytest.raises(ProfileError):
        t4.latency_ms(65)
    with pytest.raises(ProfileError):
        t4.latency_ms(0)


def test_affine_fit_is_expanded(prof):
    c = prof.instance("c6i.xlarge")
    assert c.batch_latency_ms == (48.0, 86.0, 124.0, 162.0)      # 10 + 38 b


def test_capacity_hand_computed_case():
    p = _backend([10, 15, 20, 25], delay=5.0, cv=0.0)
    # b=4: 2*25+5 = 55 > 50; b=3: 2*20+5 = 45 <= 50 -> 0.9 * 3 * 1000 / 20 = 135
    assert p.best_batch_at_slo(50) == 3
    assert p.capacity_rps_at_slo(50) == pytest.approx(135.0)
    assert p.capacity_rps_at_slo(55) == pytest.approx(0.9 * 4000 / 25)
    assert p.capacity_rps_at_slo(24.9) == 0.0                 # even b=1 needs 2*10+5 = 25
    # jitter inflates latency to its p99: cv = 0.1 -> x1.233; b=2: 2*15*1.233+5 = 42 <= 50, b=3: 54.3 > 50
    assert _backend([10, 15, 20, 25], cv=0.1).best_batch_at_slo(50) == 2


def test_function_capacity_rule(prof):
    f = prof.function(10240)
    assert f.capacity_rps_at_slo(250) == pytest.approx(1000 / f.latency_ms(1))
    assert prof.function(2048).capacity_rps_at_slo(250) == 0.0   # 285 ms * 1.35 > 250 ms
    fb = BackendProfile(backend="lambda-1", kind="function", max_batch=1, batch_latency_ms=(100.0,),
                        jitter_cv=0.0, max_queue_delay_ms=0.0, memory_mb=1)
    assert fb.capacity_rps_at_slo(100) == 10.0 and fb.capacity_rps_at_slo(99.9) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.5, 500), min_size=1, max_size=40), st.floats(0, 20), st.floats(0, 0.5),
       st.floats(0, 2000), st.floats(0, 2000))
def test_capacity_monotone_in_slo(lat, delay, cv, s1, s2):
    p = _backend(lat, delay=delay, cv=cv)
    lo, hi = sorted((s1, s2))
    assert 0 <= p.capacity_rps_at_slo(lo) <= p.capacity_rps_at_slo(hi)


def test_bundled_capacity_monotone_in_slo(prof):
    for b in prof.backends.values():
        caps = [b.capacity_rps_at_slo(s) for s in np.linspace(0, 1000, 201)]
        assert all(y >= x for x, y in zip(caps, caps[1:])), b.backend


def test_economics_match_design_claims(prof):
    """Functions cost about 5-20x a well-used CPU instance and often 50x+ a well-batched GPU."""
    cat = load_catalog()
    slo = 250.0
    usd_per_m = {}
    for name in INSTANCES:
        cap = prof.instance(name).capacity_rps_at_slo(slo)
        assert cap > 0, name
        usd_per_m[name] = cat.instance(name).on_demand_usd_per_h / (cap * 3600) * 1e6
    f = prof.function(10240)
    lam = cat.functions.invocation_usd(f.latency_ms(1), f.memory_mb) * 1e6
    assert lam == pytest.approx(14.2, rel=0.01)
    cpu = min(usd_per_m["c6i.xlarge"], usd_per_m["c6i.2xlarge"])
    gpu = min(usd_per_m[n] for n in ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "p3.2xlarge"))
    assert 5 <= lam / cpu <= 20
    assert lam / gpu >= 50
    # the table written in the profile's header comment
    assert usd_per_m["g4dn.xlarge"] == pytest.approx(0.135, abs=0.001)
    assert prof.instance("g4dn.xlarge").capacity_rps_at_slo(slo) == pytest.approx(1083.0, abs=0.1)


# ------------------------------------------------------------------ bad files
def _mutate(tmp_path: Path, old: str, new: str) -> Path:
    text = BUNDLED.read_text()
    assert old in text, old
    p = tmp_path / "bad_profile.toml"
    p.write_text(text.replace(old, new, 1))
    return p


def _one_line_error(path, key: str, needle: str):
    with pytest.raises(ProfileError) as ei:
        load_profile(str(path))
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    assert key in msg and needle in msg, msg


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.toml", "file", "not found")


def test_missing_key(tmp_path):
    p = _mutate(tmp_path, 'kind = "instance"\nmax_batch = 32\n', 'kind = "instance"\n')
    _one_line_error(p, "backends.p3.2xlarge.max_batch", "missing")


def test_negative_latency(tmp_path):
    p = _mutate(tmp_path, "latency_a_ms = 8.0", "latency_a_ms = -8.0")
    _one_line_error(p, "backends.c6i.2xlarge.latency_a_ms", "must be >= 0")
    p = _mutate(tmp_path, "batch_latency_ms = [285.2]", "batch_latency_ms = [-285.2]")
    _one_line_error(p, "backends.lambda-2048.batch_latency_ms", "must be > 0")


def test_unknown_cold_start_kind(tmp_path):
    p = _mutate(tmp_path, 'cold_start_s = { kind = "lognormal", median = 9.0',
                'cold_start_s = { kind = "pareto", median = 9.0')
    _one_line_error(p, "backends.lambda-2048.cold_start_s", "unknown kind 'pareto'")


def test_table_length_mismatch(tmp_path):
    p = _mutate(tmp_path, "batch_latency_ms = [83.9]", "batch_latency_ms = [83.9, 90.0]")
    _one_line_error(p, "backends.lambda-10240.batch_latency_ms", "has 2 entries, max_batch is 1")


def test_measured_batches_must_cover_max_batch(tmp_path):
    p = _mutate(tmp_path, "max_batch = 32\n", "max_batch = 48\n")
    _one_line_error(p, "backends.p3.2xlarge.measured_batches", "reach max_batch = 48")


def test_function_name_and_missing_cold_start(tmp_path):
    p = _mutate(tmp_path, "memory_mb = 4096", "memory_mb = 4000")
    _one_line_error(p, "backends.lambda-4096.memory_mb", "named 'lambda-<memory_mb>'")
    p = _mutate(tmp_path, 'cold_start_s = { kind = "lognormal", median = 6.5, p90 = 12.0, low = 2.0, high = 30.0 }\n',
                "")
    _one_line_error(p, "backends.lambda-6144.cold_start_s", "missing")


def test_missing_source(tmp_path):
    text = BUNDLED.read_text()
    start = text.index('[backends."g6.xlarge"]')
    i = text.index("\nsource = ", start)
    j = text.index("\n", i + 1)
    p = tmp_path / "bad_profile.toml"
    p.write_text(text[:i] + text[j:])
    _one_line_error(p, "backends.g6.xlarge.source", "missing")
