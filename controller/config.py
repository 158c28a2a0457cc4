"""Typed configuration with full defaults and one validation step.

The schema is a tree of frozen dataclasses; each field's metadata holds its allowed range or
choices, so one generic walker (`_build`) checks every key the same way and every error names the
key, the value and what is allowed, e.g.

    config.toml: slo.latency_ms = -5: must be > 0

`config.toml` at the project root documents exactly these defaults (a test keeps them equal).
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """One-line user-facing configuration error."""


def _num(default: float, *, gt: float | None = None, ge: float | None = None,
         le: float | None = None, lt: float | None = None, integer: bool = False):
    return field(default=default, metadata={"gt": gt, "ge": ge, "le": le, "lt": lt, "integer": integer})


def _choice(default: str, choices: tuple[str, ...] | None = None, registry: str | None = None):
    return field(default=default, metadata={"choices": choices, "registry": registry})


def _str_list(default: tuple[str, ...], choices: tuple[str, ...] | None = None, nonempty: bool = True):
    return field(default=default, metadata={"list_of": str, "choices": choices, "nonempty": nonempty})


MARKETS = ("on-demand", "spot")


@dataclass(frozen=True)
class SloConfig:
    latency_ms: float = _num(250.0, gt=0, le=3_600_000)
    attainment: float = _num(0.995, gt=0, lt=1)


@dataclass(frozen=True)
class ControllerConfig:
    policy: str = _choice("hybrid", registry="policy")
    interval_s: float = _num(10.0, gt=0, le=3600)
    metrics_window_s: float = _num(60.0, gt=0, le=86400)
    stale_after_s: float = _num(60.0, gt=0, le=86400)


@dataclass(frozen=True)
class FleetConfig:
    instance_types: tuple[str, ...] = _str_list(
        ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "p3.2xlarge", "c6i.xlarge", "c6i.2xlarge"))
    markets: tuple[str, ...] = _str_list(("on-demand",), choices=MARKETS)
    min_instances: int = _num(0, ge=0, le=10_000, integer=True)
    max_instances_per_type: int = _num(50, ge=1, le=10_000, integer=True)


@dataclass(frozen=True)
class FunctionsConfig:
    enabled: bool = True
    memory_mb: int = _num(10240, ge=128, le=10240, integer=True)
    max_concurrency: int = _num(1000, ge=1, le=100_000, integer=True)
    keep_alive_s: float = _num(600.0, ge=0, le=86400)
    warm_concurrency: int = _num(0, ge=0, le=100_000, integer=True)
    on_throttle: str = _choice("retry", choices=("retry", "drop"))
    retry_delay_s: float = _num(0.1, gt=0, le=60)
    max_retries: int = _num(3, ge=0, le=20, integer=True)


@dataclass(frozen=True)
class RouterConfig:
    max_outstanding_batches: int = _num(2, ge=1, le=64, integer=True)
    max_queue_per_instance: int = _num(256, ge=1, le=100_000, integer=True)


@dataclass(frozen=True)
class BudgetConfig:
    max_usd_per_h: float = _num(200.0, gt=0, le=1e7)
    max_launches_per_interval: int = _num(20, ge=1, le=10_000, integer=True)


@dataclass(frozen=True)
class ReactivePolicyConfig:
    target_utilization: float = _num(0.7, gt=0, le=1)
    scale_out_cooldown_s: float = _num(60.0, ge=0, le=86400)
    scale_in_cooldown_s: float = _num(300.0, ge=0, le=86400)


@dataclass(frozen=True)
class StaticPeakPolicyConfig:
    peak_rps: float = _num(0.0, ge=0, le=1e9)
    headroom: float = _num(1.0, ge=1, le=100)


@dataclass(frozen=True)
class HybridPolicyConfig:
    plan_window_s: float = _num(180.0, gt=0, le=86400)
    on_demand_floor: float = _num(0.5, ge=0, le=1)
    scale_in_hold_s: float = _num(120.0, ge=0, le=86400)
    cold_start_cv: float = _num(0.1, ge=0, le=10)


@dataclass(frozen=True)
class MarkPolicyConfig:
    launch_charge_s: float = _num(180.0, ge=0, le=86400)
    headroom: float = _num(1.2, ge=1, le=100)
    scale_in_decisions: int = _num(6, ge=1, le=10_000, integer=True)
    lookahead_s: float = _num(300.0, gt=0, le=86400)


@dataclass(frozen=True)
class OraclePolicyConfig:
    bin_s: float = _num(60.0, gt=0, le=3600)


@dataclass(frozen=True)
class FixedPolicyConfig:
    instances: int = _num(1, ge=0, le=10_000, integer=True)
    instance_type: str = ""
    market: str = _choice("on-demand", choices=MARKETS)
    spill: bool = True


@dataclass(frozen=True)
class PoliciesConfig:
    reactive: ReactivePolicyConfig = field(default_factory=ReactivePolicyConfig)
    static_peak: StaticPeakPolicyConfig = field(default_factory=StaticPeakPolicyConfig)
    hybrid: HybridPolicyConfig = field(default_factory=HybridPolicyConfig)
    mark: MarkPolicyConfig = field(default_factory=MarkPolicyConfig)
    oracle: OraclePolicyConfig = field(default_factory=OraclePolicyConfig)
    fixed: FixedPolicyConfig = field(default_factory=FixedPolicyConfig)


@dataclass(frozen=True)
class ForecastConfig:
    model: str = _choice("ensemble", registry="forecaster")
    step_s: float = _num(60.0, gt=0, le=86400)
    refit_every_s: float = _num(0.0, ge=0, le=365 * 86400)


@dataclass(frozen=True)
class ScenarioConfig:
    model: str = "resnet50"
    catalog: str = ""


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = _num(0, ge=0, le=2**63 - 1, integer=True)
    rescale: str = _choice("smoothed", choices=("smoothed", "multiply"))
    smooth_s: float = _num(60.0, gt=0, le=86400)
    fill_masked: bool = True
    warm_start: bool = True
    spot_interruptions: str = "hazard"   # "hazard" | "off" | path to a CSV of (time_s, instance_type)


@dataclass(frozen=True)
class ProvisionerConfig:
    backend: str = _choice("sim", choices=("sim", "local", "aws"))


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = _num(8000, ge=0, le=65535, integer=True)
    instances: int = _num(1, ge=0, le=64, integer=True)
    instance_type: str = "local-triton"
    auth_token_env: str = "SPILLWAY_TOKEN"
    max_body_bytes: int = _num(1_048_576, ge=1024, le=1 << 30, integer=True)
    instance_timeout_s: float = _num(10.0, gt=0, le=3600)
    pin_cpus: bool = False


@dataclass(frozen=True)
class StateConfig:
    database_url: str = "sqlite:///spillway.db"


@dataclass(frozen=True)
class MetricsConfig:
    port: int = _num(9464, ge=0, le=65535, integer=True)   # 0: any free port


@dataclass(frozen=True)
class Config:
    slo: SloConfig = field(default_factory=SloConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    functions: FunctionsConfig = field(default_factory=FunctionsConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    provisioner: ProvisionerConfig = field(default_factory=ProvisionerConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    state: StateConfig = field(default_factory=StateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def _toml_key(name: str) -> str:
    # TOML tables may use hyphens (`[policies.static-peak]`); attributes cannot.
    return name.replace("_", "-") if name in _HYPHENATED else name


_HYPHENATED = {"static_peak"}


def _registry_choices(registry: str) -> tuple[str, ...]:
    if registry == "policy":
        from controller.policies import policy_names  # late import: policies import this module
        return policy_names()
    if registry == "forecaster":
        from predictor.registry import model_names
        return tuple(model_names())
    raise AssertionError(registry)


def _check_value(key: str, value: Any, f, where: str) -> Any:
    meta = f.metadata
    default = f.default
    if "list_of" in meta:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} = {value!r}: must be a list of strings")
        if meta.get("nonempty") and not value:
            raise ConfigError(f"{where}: {key} = []: must name at least one entry")
        for v in value:
            if meta.get("choices") and v not in meta["choices"]:
                raise ConfigError(f"{where}: {key} = {value!r}: {v!r} is not one of {', '.join(meta['choices'])}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} = {value!r}: must be true or false")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} = {value!r}: must be a number{_range_text(meta)}")
        if meta.get("integer") and not (isinstance(value, int) or float(value).is_integer()):
            raise ConfigError(f"{where}: {key} = {value!r}: must be a whole number{_range_text(meta)}")
        if value != value or not _in_range(value, meta):
            raise ConfigError(f"{where}: {key} = {value!r}: must be{_range_text(meta, lead=False)}")
        return int(value) if meta.get("integer") else float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} = {value!r}: must be a string")
        choices = meta.get("choices") or (_registry_choices(meta["registry"]) if meta.get("registry") else None)
        if choices and value not in choices:
            raise ConfigError(f"{where}: {key} = {value!r}: must be one of {', '.join(choices)}")
        return value
    raise AssertionError(f"unsupported field type for {key}")


def _in_range(value: float, meta: dict) -> bool:
    return ((meta["gt"] is None or value > meta["gt"]) and (meta["ge"] is None or value >= meta["ge"])
            and (meta["lt"] is None or value < meta["lt"]) and (meta["le"] is None or value <= meta["le"]))


def _range_text(meta: dict, lead: bool = True) -> str:
    parts = [f"{op} {meta[k]:g}" for k, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if meta.get(k) is not None]
    if not parts:
        return ""
    text = " " + " and ".join(parts)
    return (" " + text.strip()) if not lead else f" ({text.strip()})"


def _build(cls, table: Any, prefix: str, where: str):
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a table")
    by_key = {_toml_key(f.name): f for f in fields(cls)}
    for key in table:
        if key not in by_key:
            full = f"{prefix}{key}"
            close = difflib.get_close_matches(key, list(by_key), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {full!r}{hint}; allowed: {', '.join(by_key)}")
    values = {}
    for key, f in by_key.items():
        if key not in table:
            continue
        if f.default_factory is not MISSING and is_dataclass(f.default_factory):
            values[f.name] = _build(f.default_factory, table[key], f"{prefix}{key}.", where)
        else:
            values[f.name] = _check_value(f"{prefix}{key}", table[key], f, where)
    return cls(**values)


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file; None gives the defaults (the same as config.toml)."""
    if path is None:
        return validate(Config(), "(defaults)")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        table = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None
    return validate(_build(Config, table, "", str(p)), str(p))


def validate(cfg: Config, where: str) -> Config:
    """Cross-field checks that a single key cannot express."""
    if cfg.functions.warm_concurrency > cfg.functions.max_concurrency:
        raise ConfigError(f"{where}: functions.warm_concurrency = {cfg.functions.warm_concurrency}: "
                          f"must be <= functions.max_concurrency ({cfg.functions.max_concurrency})")
    if cfg.controller.stale_after_s < cfg.controller.interval_s:
        raise ConfigError(f"{where}: controller.stale_after_s = {cfg.controller.stale_after_s:g}: "
                          f"must be >= controller.interval_s ({cfg.controller.interval_s:g})")
    if len(set(cfg.fleet.instance_types)) != len(cfg.fleet.instance_types):
        raise ConfigError(f"{where}: fleet.instance_types = {list(cfg.fleet.instance_types)!r}: has duplicates")
    return cfg


def to_toml(cfg: Any, prefix: str = "") -> str:
    """Render a config back to TOML (written into every run directory)."""
    scalars, tables = [], []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        key = _toml_key(f.name)
        if is_dataclass(value):
            tables.append(to_toml(value, f"{prefix}{key}."))
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    head = [f"[{prefix[:-1]}]"] if prefix and scalars else []
    body = "\n".join(head + scalars)
    return "\n\n".join(part for part in [body, *tables] if part).strip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
