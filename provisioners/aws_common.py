"""What the AWS provisioners share: settings, lazily created boto3 clients, the one retry layer,
and the translation of every AWS failure into a one-line ProvisionerError.

Every AWS request of provisioners.aws_ec2 and provisioners.aws_lambda goes through
`AwsApi.call(service, operation, **params)`. botocore's own retries are switched off
(total_max_attempts=1) so that this is the only retry layer: throttling and 5xx answers are
retried with exponential backoff and full jitter, everything else fails at once with one line
naming the operation and the AWS error code.
"""
from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

__all__ = ["AwsApi", "AwsSettings", "AwsSettingsError", "ProvisionerError", "THROTTLING_CODES",
           "backoff_delay_s"]

# Throttling answers across EC2 (RequestLimitExceeded), Lambda (TooManyRequestsException,
# ThrottlingException) and the query protocol (Throttling); any HTTP 5xx is retried as well.
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded",
                              "TooManyRequestsException", "ServiceUnavailable"})
CREDENTIAL_CODES = frozenset({"AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId",
                              "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException"})
ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
LAMBDA_MAX_CONNECTIONS = 32   # concurrent spill invocations per process (botocore's default pool: 10)
MAX_MESSAGE_CHARS = 200   # AWS messages can carry kilobytes (EC2's encoded authorization failure)


class AwsSettingsError(ValueError):
    """Bad AWS settings; one line: "aws settings: <key> = <value>: <problem>"."""


class ProvisionerError(RuntimeError):
    """An AWS call failed for good; one line naming the operation and the AWS error code.

    `code` is the AWS error code ("" when the request never got an answer), `http_status` the
    HTTP status of the answer (None when there was none)."""

    def __init__(self, message: str, code: str = "", http_status: int | None = None,
                 aws_message: str = ""):
        super().__init__(message)
        self.code, self.http_status, self.aws_message = code, http_status, aws_message


_PATTERNS = {   # key: (pattern, what a valid value looks like)
    "region": (r"[a-z]{2}(-[a-z]+)+-\d", "a region such as us-east-1"),
    "fleet_name": (r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", "1-63 letters, digits, '.', '_' or '-'"),
    "endpoint_url": (r"https?://\S+", "an http(s):// URL"),
    "instance_types": (r"[a-z][a-z0-9-]*\.[a-z0-9]+", "instance types such as g4dn.xlarge"),
    "launch_template_id": (r"lt-[0-9a-f]{8,17}", "an id such as lt-0123456789abcdef0"),
    "ami_id": (r"ami-[0-9a-f]{8,17}", "an id such as ami-0123456789abcdef0"),
    "subnet_ids": (r"subnet-[0-9a-f]{8,17}", "ids such as subnet-0123456789abcdef0"),
    "security_group_ids": (r"sg-[0-9a-f]{8,17}", "ids such as sg-0123456789abcdef0"),
    "function_name": (r"[A-Za-z0-9_-]{1,64}", "1-64 letters, digits, '_' or '-'"),
    "function_role_arn": (r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", "arn:aws:iam::<account>:role/<name>"),
    # Lambda runs container images from ECR only, by tag or digest.
    "function_image_uri": (r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+"
                           r"(:[\w.-]+|@sha256:[0-9a-f]{64})",
                           "an ECR image such as <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>"),
    "function_alias": (r"(?!^[0-9]+$)[A-Za-z0-9_-]{1,128}", "a name such as live (not a number)"),
    "function_architecture": (r"x86_64|arm64", "x86_64 or arm64"),
}
_RANGES = {   # key: (low, high), inclusive
    "ready_grace_s": (0.0, 3600.0),
    "function_memory_mb": (128, 10_240),
    "function_timeout_s": (1, 900),
    "max_attempts": (1, 20),
    "base_delay_s": (0.001, 60.0),
    "max_delay_s": (0.001, 300.0),
    "connect_timeout_s": (0.01, 300.0),
    "read_timeout_s": (0.01, 900.0),
}
USER_DATA_MAX_BYTES = 16 * 1024   # EC2's limit on user data before base64


@dataclass(frozen=True)
class AwsSettings:
    region: str
    fleet_name: str                          # value of the spillway:fleet ownership tag
    endpoint_url: str | None = None          # None: real AWS; tests pass moto's URL
    # EC2: a launch template, or an explicit AMI (+ optional network, key, instance profile).
    instance_types: tuple[str, ...] = ()     # fallback order on InsufficientInstanceCapacity
    market_fallback: bool = True             # after all types fail, try the other market
    launch_template_id: str | None = None
    launch_template_version: str = "$Default"
    ami_id: str | None = None
    subnet_ids: tuple[str, ...] = ()         # () = the default VPC; several = AZ fallback
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    iam_instance_profile: str | None = None  # profile name or ARN
    user_data: str = ""                      # see provisioners.aws_ec2.render_user_data
    ready_grace_s: float = 180.0             # default readiness: running this long after launch
    # Lambda: one container-image function behind an alias.
    function_name: str | None = None
    function_image_uri: str | None = None
    function_role_arn: str | None = None
    function_memory_mb: int = 3008
    function_timeout_s: int = 30
    function_alias: str = "live"
    function_architecture: str = "x86_64"
    # Every call: retries on throttling, timeouts.
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0

    def __post_init__(self):
        for key in ("instance_types", "subnet_ids", "security_group_ids"):
            value = getattr(self, key)
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                _bad(key, value, "must be a list of strings")
            object.__setattr__(self, key, tuple(value))
        for key, (pattern, looks_like) in _PATTERNS.items():
            value = getattr(self, key)
            for item in (value if isinstance(value, tuple) else (value,)):
                if item is not None and not (isinstance(item, str) and re.fullmatch(pattern, item)):
                    _bad(key, item, f"must be {looks_like}")
            if isinstance(value, tuple) and len(set(value)) != len(value):
                _bad(key, list(value), "has duplicates")
        for key, (low, high) in _RANGES.items():
            value = getattr(self, key)
            kind = int if isinstance(low, int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
                _bad(key, value, f"must be {'an integer' if kind is int else 'a number'} in {low}..{high}")
        for key, optional in (("launch_template_version", False), ("key_name", True),
                              ("iam_instance_profile", True), ("user_data", False)):
            value = getattr(self, key)
            if not (isinstance(value, str) or (optional and value is None)):
                _bad(key, value, "must be a string")
        if not isinstance(self.market_fallback, bool):
            _bad("market_fallback", self.market_fallback, "must be true or false")
        if self.max_delay_s < self.base_delay_s:
            _bad("max_delay_s", self.max_delay_s, f"must be >= base_delay_s ({self.base_delay_s})")
        if self.launch_template_id and self.ami_id:
            _bad("ami_id", self.ami_id, "give either launch_template_id or ami_id, not both")
        if len(self.user_data.encode()) > USER_DATA_MAX_BYTES:
            _bad("user_data", f"<{len(self.user_data.encode())} bytes>", f"EC2 allows at most {USER_DATA_MAX_BYTES}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AwsSettings:
        """Build from a config table (e.g. config.toml's [aws]); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                _bad(key, values[key], "unknown key")
        for key in ("region", "fleet_name"):
            if key not in values:
                raise AwsSettingsError(f"aws settings: {key}: missing")
        return cls(**values)

    def require(self, *keys: str, purpose: str) -> None:
        """One-line error naming the first key the EC2 or Lambda provisioner needs and lacks."""
        for key in keys:
            if not getattr(self, key):
                raise AwsSettingsError(f"aws settings: {key}: missing (needed for {purpose})")


def _bad(key: str, value: Any, problem: str) -> None:
    raise AwsSettingsError(f"aws settings: {key} = {value!r}: {problem}")


def backoff_delay_s(failures: int, base_delay_s: float, max_delay_s: float, rng: random.Random) -> float:
    """Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): after the
    k-th consecutive failure (k = 1, 2, ...) sleep a uniform draw from [0, min(cap, base * 2^(k-1))].
    With base 0.5 s and cap 20 s the ceilings are 0.5, 1, 2, 4, 8, 16, 20 s, so 5 attempts wait
    at most 7.5 s in total and 3.75 s on average; the jitter spreads the retries of many clients
    throttled at the same moment instead of making them collide again."""
    return rng.uniform(0.0, min(max_delay_s, base_delay_s * 2 ** (failures - 1)))


@dataclass
class AwsApi:
    """The boto3 clients (created on first use) and the retrying `call` every request goes through.

    `sleep` and `rng` are injectable so that tests record the backoff instead of waiting."""
    settings: AwsSettings
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    _clients: dict[str, BaseClient] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, service: str) -> BaseClient:
        with self._lock:   # the router may invoke from worker threads
            if service not in self._clients:
                s = self.settings
                read_timeout_s = s.read_timeout_s
                if service == "lambda":
                    # A synchronous Invoke holds the connection for the whole run (up to the
                    # function's timeout) plus a cold start of up to ~30 s for ML images.
                    read_timeout_s = max(read_timeout_s, s.function_timeout_s + 30)
                config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                connect_timeout=s.connect_timeout_s, read_timeout=read_timeout_s,
                                max_pool_connections=LAMBDA_MAX_CONNECTIONS if service == "lambda" else 10)
                self._clients[service] = boto3.session.Session().client(
                    service, region_name=s.region, endpoint_url=s.endpoint_url, config=config)
            return self._clients[service]

    def call(self, service: str, operation: str, *, retry: bool = True, **params: Any) -> dict:
        """Run `client.<operation>(**params)`; retry throttling and 5xx up to max_attempts when
        `retry`, else try once. Raises ProvisionerError with a one-line message."""
        client = self.client(service)
        api_name = client.meta.method_to_api_mapping.get(operation, operation)
        attempts = self.settings.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return getattr(client, operation)(**params)
            except ClientError as error:
                code, status, message = _failure(error)
                # EC2 answers InsufficientInstanceCapacity with a 5xx too, but capacity does not
                # come back within a backoff's seconds: no retry, the caller falls back instead.
                retryable = code in THROTTLING_CODES or ((status or 0) >= 500 and not code.startswith("Insufficient"))
                if retryable and attempt < attempts:
                    self.sleep(backoff_delay_s(attempt, self.settings.base_delay_s,
                                               self.settings.max_delay_s, self.rng))
                    continue
                text = f"aws {service} {api_name}: {code}: {message}"
                if retryable and attempts > 1:
                    text += f" (gave up after {attempts} attempts)"
                elif code in CREDENTIAL_CODES:
                    text += " (check the AWS credentials: profile, keys or role)"
                elif code in ACCESS_CODES:
                    text += " (grant it with provisioners/data/iam_policy.json)"
                raise ProvisionerError(text, code, status, message) from None
            except NoCredentialsError:
                raise ProvisionerError(f"aws {service} {api_name}: no AWS credentials found (set AWS_PROFILE, "
                                       "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an IAM role)") from None
            except BotoCoreError as error:   # connection refused, timeouts, bad parameters
                where = f" at {self.settings.endpoint_url}" if self.settings.endpoint_url else ""
                raise ProvisionerError(f"aws {service} {api_name}{where}: {_one_line(str(error))}") from None
        raise AssertionError("unreachable: the loop returns or raises")


def _failure(error: ClientError) -> tuple[str, int | None, str]:
    response = error.response
    err = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(err.get("Code", "Unknown")), status, _one_line(str(err.get("Message", "")))


def _one_line(text: str) -> str:
    """Collapse whitespace and markup (moto answers unknown routes with an HTML page), then cut."""
    text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 3] + "..."
