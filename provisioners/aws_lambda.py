"""Lambda provisioner: one container-image function behind an alias, and the spill-path invoke.

ensure_function() converges the function on the settings (create or update code/configuration,
wait until Lambda has applied it, publish a version, point the alias at it); it is idempotent,
because Lambda's PublishVersion returns the latest version unchanged when neither code nor
configuration changed since. Reserved concurrency (the function's cap, = max_concurrency) is set
on the function; provisioned concurrency (warm_concurrency) on the alias.

invoke() calls the alias synchronously with LogType=Tail and returns serving.functions.client's
InvokeResult: the 4 KB log tail ends with the REPORT line, whose "Billed Duration" is the billed
time and whose "Init Duration" appears only on a cold start. invoke() makes ONE attempt: a 429 is
information for the router (throttled=True), and retrying a non-idempotent inference is the
router's call, not ours.

The caller needs no ECR permission as long as the image's ECR repository policy lets
lambda.amazonaws.com pull (ecr:BatchGetImage, ecr:GetDownloadUrlForLayer).
"""
from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError

from provisioners.aws_common import LAMBDA_MAX_CONNECTIONS, AwsApi, AwsSettings, ProvisionerError
from provisioners.aws_ec2 import TAG_FLEET
from provisioners.base import FunctionSpec
from serving.functions.client import FunctionInvokeError, InvokeResult

__all__ = ["AsyncLambdaInvoker", "LambdaProvisioner", "parse_report"]

NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "ProvisionedConcurrencyConfigNotFoundException"})
_BILLED = re.compile(r"Billed Duration: (\d+) ms")
_INIT = re.compile(r"Init Duration: ([\d.]+) ms")


def parse_report(log_tail: str) -> tuple[int, int | None]:
    """(billed ms, init ms or None) from the REPORT line of a Lambda log tail, e.g.
    "REPORT RequestId: ... Duration: 12.10 ms Billed Duration: 13 ms ... Init Duration: 2412.37 ms"
    gives (13, 2412); without an Init Duration the invocation was warm."""
    report = next((line for line in reversed(log_tail.splitlines()) if line.startswith("REPORT")), "")
    billed, init = _BILLED.search(report), _INIT.search(report)
    return (int(billed.group(1)) if billed else 0), (round(float(init.group(1))) if init else None)


class LambdaProvisioner:
    """FunctionProvisioner over AWS Lambda. `poll_s`/`settle_timeout_s` bound the wait for Lambda
    to finish a create or update (the function refuses further updates meanwhile)."""

    def __init__(self, settings: AwsSettings, api: AwsApi | None = None, poll_s: float = 1.0,
                 settle_timeout_s: float = 300.0):
        settings.require("function_name", "function_image_uri", "function_role_arn", purpose="the Lambda function")
        self.settings, self.poll_s, self.settle_timeout_s = settings, poll_s, settle_timeout_s
        self.api = api or AwsApi(settings)
        self.name = settings.function_name

    # ---- FunctionProvisioner ---------------------------------------------------------------------

    def configure(self, spec: FunctionSpec) -> None:
        _check_spec(spec)
        self.ensure_function(spec.memory_mb)
        # Lambda refuses provisioned concurrency above the reserved concurrency, so the order
        # matters: from (reserved 50, warm 40) to (20, 10), lowering reserved first fails while 40
        # are provisioned; lower warm first. When warm grows, raise reserved first.
        if spec.warm_concurrency < self.warm_concurrency():
            self.set_warm_concurrency(spec.warm_concurrency)
            self.set_reserved_concurrency(spec.max_concurrency)
        else:
            self.set_reserved_concurrency(spec.max_concurrency)
            self.set_warm_concurrency(spec.warm_concurrency)

    def describe_function(self) -> FunctionSpec:
        """Memory of the version behind the alias, provisioned concurrency on the alias, and the
        reserved concurrency (0 when none is reserved: the function shares the account's pool)."""
        config = self.api.call("lambda", "get_function_configuration", FunctionName=self.name,
                               Qualifier=self.settings.function_alias)
        reserved = self.api.call("lambda", "get_function_concurrency", FunctionName=self.name)
        return FunctionSpec(config["MemorySize"], self.warm_concurrency(),
                            reserved.get("ReservedConcurrentExecutions", 0))

    # ---- management ------------------------------------------------------------------------------

    def ensure_function(self, memory_mb: int | None = None) -> str:
        """Create or update the function, publish, point the alias; returns the alias's version."""
        s = self.settings
        wanted = {"MemorySize": memory_mb or s.function_memory_mb, "Timeout": s.function_timeout_s,
                  "Role": s.function_role_arn}
        try:
            before = self.api.call("lambda", "get_function", FunctionName=self.name)
        except ProvisionerError as error:
            if error.code not in NOT_FOUND_CODES:
                raise
            config = self.api.call("lambda", "create_function", FunctionName=self.name, PackageType="Image",
                                   Code={"ImageUri": s.function_image_uri}, Architectures=[s.function_architecture],
                                   Tags={TAG_FLEET: s.fleet_name}, **wanted)
        else:
            config = before["Configuration"]
            if (before["Code"].get("ImageUri") != s.function_image_uri
                    or config.get("Architectures", ["x86_64"]) != [s.function_architecture]):
                self._settled(config)
                config = self.api.call("lambda", "update_function_code", FunctionName=self.name,
                                       ImageUri=s.function_image_uri, Architectures=[s.function_architecture])
            if any(before["Configuration"].get(key) != value for key, value in wanted.items()):
                self._settled(config)
                config = self.api.call("lambda", "update_function_configuration", FunctionName=self.name,
                                       **wanted)
        latest = self._settled(config)
        if "Failed" in (latest.get("State"), latest.get("LastUpdateStatus")):
            reason = latest.get("StateReason") or latest.get("LastUpdateStatusReason") or "no reason given"
            raise ProvisionerError(f"aws lambda {self.name}: update failed: {reason}")
        version = self.api.call("lambda", "publish_version", FunctionName=self.name,
                                CodeSha256=latest["CodeSha256"])["Version"]
        try:
            alias = self.api.call("lambda", "get_alias", FunctionName=self.name, Name=s.function_alias)
        except ProvisionerError as error:
            if error.code not in NOT_FOUND_CODES:
                raise
            self.api.call("lambda", "create_alias", FunctionName=self.name, Name=s.function_alias,
                          FunctionVersion=version)
        else:
            if alias["FunctionVersion"] != version:
                self.api.call("lambda", "update_alias", FunctionName=self.name, Name=s.function_alias,
                              FunctionVersion=version)
        return version

    def set_reserved_concurrency(self, max_concurrency: int) -> None:
        self.api.call("lambda", "put_function_concurrency", FunctionName=self.name,
                      ReservedConcurrentExecutions=max_concurrency)

    def set_warm_concurrency(self, warm_concurrency: int) -> None:
        """Provisioned concurrency on the alias; 0 removes it (idempotent)."""
        if warm_concurrency > 0:
            self.api.call("lambda", "put_provisioned_concurrency_config", FunctionName=self.name,
                          Qualifier=self.settings.function_alias, ProvisionedConcurrentExecutions=warm_concurrency)
            return
        try:
            self.api.call("lambda", "delete_provisioned_concurrency_config", FunctionName=self.name,
                          Qualifier=self.settings.function_alias)
        except ProvisionerError as error:
            if error.code not in NOT_FOUND_CODES:
                raise

    def warm_concurrency(self) -> int:
        """Provisioned concurrency requested on the alias (0 when none is configured)."""
        try:
            config = self.api.call("lambda", "get_provisioned_concurrency_config", FunctionName=self.name,
                                   Qualifier=self.settings.function_alias)
        except ProvisionerError as error:
            if error.code not in NOT_FOUND_CODES:
                raise
            return 0
        return config["RequestedProvisionedConcurrentExecutions"]

    # ---- data plane ------------------------------------------------------------------------------

    def invoke(self, payload: bytes) -> InvokeResult:
        """One synchronous invocation of the alias (blocking; see AsyncLambdaInvoker for the router)."""
        try:
            response = self.api.call("lambda", "invoke", retry=False, FunctionName=self.name,
                                     Qualifier=self.settings.function_alias, InvocationType="RequestResponse",
                                     LogType="Tail", Payload=payload)
            body = response["Payload"].read()
        except ProvisionerError as error:
            if error.http_status is None:   # no answer at all: the endpoint is unreachable
                raise FunctionInvokeError(str(error)) from None
            document = json.dumps({"errorType": error.code, "errorMessage": error.aws_message}).encode()
            return InvokeResult(error.http_status, document, cold_start=False, billed_ms=0, init_ms=0,
                                throttled=error.http_status == 429, function_error=False)
        except BotoCoreError as error:      # the connection broke while the result streamed in
            raise FunctionInvokeError(f"aws lambda Invoke {self.name}: {error}") from None
        billed_ms, init_ms = parse_report(base64.b64decode(response.get("LogResult", "")).decode(errors="replace"))
        return InvokeResult(response["StatusCode"], body, cold_start=init_ms is not None, billed_ms=billed_ms,
                            init_ms=init_ms or 0, throttled=False, function_error="FunctionError" in response)

    def _settled(self, config: dict) -> dict:
        """$LATEST's configuration once Lambda has finished creating or updating it (polling
        every poll_s); the given configuration when it is already settled."""
        for _ in range(max(1, math.ceil(self.settle_timeout_s / self.poll_s))):
            if config.get("State") != "Pending" and config.get("LastUpdateStatus") != "InProgress":
                return config
            self.api.sleep(self.poll_s)
            config = self.api.call("lambda", "get_function_configuration", FunctionName=self.name)
        raise ProvisionerError(f"aws lambda {self.name}: still being updated after {self.settle_timeout_s:g} s")


class AsyncLambdaInvoker:
    """The router's FunctionInvoker (async invoke) over LambdaProvisioner.invoke: boto3 blocks, so
    each call runs on a thread pool sized for the spill concurrency."""

    def __init__(self, provisioner: LambdaProvisioner, max_workers: int = LAMBDA_MAX_CONNECTIONS):
        self.provisioner = provisioner
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lambda-invoke")

    async def invoke(self, payload: bytes) -> InvokeResult:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.provisioner.invoke, payload)

    async def close(self) -> None:
        self._pool.shutdown(wait=False)


def _check_spec(spec: FunctionSpec) -> None:
    if not 128 <= spec.memory_mb <= 10_240:
        raise ProvisionerError(f"lambda configure: memory_mb {spec.memory_mb}: must be in 128..10240")
    if spec.max_concurrency < 1:
        raise ProvisionerError(f"lambda configure: max_concurrency {spec.max_concurrency}: must be >= 1")
    if not 0 <= spec.warm_concurrency <= spec.max_concurrency:
        raise ProvisionerError(f"lambda configure: warm_concurrency {spec.warm_concurrency}: must be in "
                               f"0..max_concurrency ({spec.max_concurrency})")
