"""The router's settings (frozen, validated) and its one-line error type."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields


class RouterError(ValueError):
    """Bad router settings or control input; the message is one line naming the key and value."""


# key -> (low, high) inclusive; the ranges are sanity bounds, not tuning advice.
_RANGES = {
    "max_outstanding_batches": (1, 64),
    "max_queue_per_instance": (1, 100_000),
    "spill_threshold_ms": (0.0, 3_600_000.0),
    "max_body_bytes": (1, 1 << 30),
    "instance_timeout_s": (0.001, 3600.0),
    "probe_interval_s": (0.01, 3600.0),
    "throttle_retries": (0, 20),
    "throttle_backoff_s": (0.001, 60.0),
}


@dataclass(frozen=True)
class RouterSettings:
    model: str = "resnet8"
    max_outstanding_batches: int = 2
    max_queue_per_instance: int = 256
    spill_enabled: bool = True
    spill_threshold_ms: float = 150.0
    max_body_bytes: int = 1 << 20
    auth_token: str | None = None
    instance_timeout_s: float = 10.0
    function_url: str | None = None
    probe_interval_s: float = 0.5
    # A throttled function request that no instance can take is invoked again after
    # throttle_backoff_s, doubling, at most throttle_retries times, then answered 503: the
    # simulator's rule for [functions] on_throttle = "retry", retry_delay_s and max_retries
    # (defaults 0.1 s and 3: 0.1 + 0.2 + 0.4 = 0.7 s of patience).
    throttle_retries: int = 3
    throttle_backoff_s: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _RANGES:
                low, high = _RANGES[f.name]
                integer = isinstance(low, int)
                ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
                if isinstance(value, bool) or not ok_type or not math.isfinite(value) or not low <= value <= high:
                    kind = "a whole number" if integer else "a number"
                    raise RouterError(f"router settings: {f.name} = {value!r}: must be {kind} in [{low}, {high}]")
        if not isinstance(self.model, str) or not self.model.strip() or "/" in self.model:
            raise RouterError(f"router settings: model = {self.model!r}: must be a non-empty name without '/'")
        if not isinstance(self.spill_enabled, bool):
            raise RouterError(f"router settings: spill_enabled = {self.spill_enabled!r}: must be true or false")
        if self.auth_token is not None and (not isinstance(self.auth_token, str) or not self.auth_token.strip()
                                            or any(c.isspace() for c in self.auth_token)):
            raise RouterError("router settings: auth_token: must be a non-empty string without spaces, or None")
        if self.function_url is not None and not is_http_url(self.function_url):
            raise RouterError(f"router settings: function_url = {self.function_url!r}: must be an http(s) URL")


def is_http_url(url: object) -> bool:
    return isinstance(url, str) and url.startswith(("http://", "https://")) and len(url) > len("https://")
