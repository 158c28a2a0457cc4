"""The AWS provisioners against moto in server mode (a real HTTP endpoint on loopback), and the
paths moto cannot produce -- throttling, capacity errors, partial launches, spot notices,
provisioned concurrency, invoke results -- through botocore's Stubber on the provisioners' own
clients. No test sleeps: the retry helper's sleep is recorded instead."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from provisioners.aws_common import AwsApi, AwsSettings, AwsSettingsError, ProvisionerError
from provisioners.aws_ec2 import TAG_DECISION, TAG_FLEET, TAG_MARKET, TAG_REQUEST, Ec2Provisioner, render_user_data
from provisioners.aws_lambda import AsyncLambdaInvoker, LambdaProvisioner, parse_report
from provisioners.base import DRAINING, PENDING, READY, FunctionSpec, LaunchSpec
from serving.functions.client import FunctionInvokeError

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"
AMI = "ami-0123456789abcdef0"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/spillway-fn:1"
ROLE = "arn:aws:iam::123456789012:role/spillway-fn"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(**env: str) -> Iterator[str]:
    """`moto_server` as a subprocess on a free loopback port; yields its URL, always stops it."""
    port = free_port()
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server on port {port} did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Fake credentials only: never a real profile or the metadata service."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(key, raising=False)
        for key, value in FAKE_CREDENTIALS.items():
            mp.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def moto_url(aws_env) -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def fleet() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"   # one fleet per test: tests share the moto server


def settings_for(url: str | None, fleet_name: str, **overrides) -> AwsSettings:
    values = dict(region=REGION, fleet_name=fleet_name, endpoint_url=url, ami_id=AMI,
                  instance_types=("g4dn.xlarge", "g5.xlarge"), function_name=f"fn-{fleet_name}",
                  function_image_uri=IMAGE, function_role_arn=ROLE, connect_timeout_s=2, read_timeout_s=10)
    return AwsSettings(**{**values, **overrides})


def raw(url: str, service: str):
    """The test's own boto3 client, to look at moto's state independently of the provisioner."""
    return boto3.client(service, endpoint_url=url, region_name=REGION)


def tags_of(url: str, instance_id: str) -> dict[str, str]:
    reservations = raw(url, "ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return {t["Key"]: t["Value"] for t in reservations[0]["Instances"][0]["Tags"]}


def assert_one_line(error: BaseException, *needles: str) -> None:
    text = str(error)
    assert "\n" not in text and len(text) < 400, text
    for needle in needles:
        assert needle in text, text


# ---- EC2 against moto --------------------------------------------------------------------------

def test_launch_on_demand_and_spot_with_ownership_tags(moto_url, fleet):
    ec2 = Ec2Provisioner(settings_for(moto_url, fleet))
    on_demand = ec2.launch(LaunchSpec("g4dn.xlarge", "on-demand", 2, "d-1"))
    spot = ec2.launch(LaunchSpec("g5.xlarge", "spot", 1, "d-1"))
    assert [(r.instance_type, r.market, r.state, r.decision_id) for r in on_demand + spot] == [
        ("g4dn.xlarge", "on-demand", PENDING, "d-1")] * 2 + [("g5.xlarge", "spot", PENDING, "d-1")]
    assert ec2.last_fallback == ""
    tags = tags_of(moto_url, spot[0].id)
    assert tags[TAG_FLEET] == fleet and tags[TAG_DECISION] == "d-1" and tags[TAG_MARKET] == "spot"
    assert tags[TAG_REQUEST] == "g5.xlarge/spot" and tags["Name"] == f"spillway-{fleet}-g5.xlarge"
    described = {r.id: r for r in ec2.describe()}
    assert set(described) == {r.id for r in on_demand + spot}
    assert described[spot[0].id].market == "spot"
    assert all(abs(r.launched_at_s - time.time()) < 600 for r in described.values())


def test_describe_sees_only_its_own_fleet(moto_url, fleet):
    mine, theirs = Ec2Provisioner(settings_for(moto_url, fleet)), Ec2Provisioner(settings_for(moto_url, fleet + "-b"))
    own = mine.launch(LaunchSpec("g4dn.xlarge", "on-demand", 1, "d-1"))
    other = theirs.launch(LaunchSpec("g4dn.xlarge", "on-demand", 1, "d-1"))
    assert [r.id for r in mine.describe()] == [own[0].id]
    assert [r.id for r in theirs.describe()] == [other[0].id]


def test_relaunching_a_decision_launches_only_the_missing_count(moto_url, fleet):
    ec2 = Ec2Provisioner(settings_for(moto_url, fleet))
    first = ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 2, "d-7"))
    again = ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 3, "d-7"))   # a retry asking for one more
    assert {r.id for r in first} < {r.id for r in again} and len(again) == 3
    assert {r.id for r in ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 3, "d-7"))} == {r.id for r in again}
    assert len(ec2.describe()) == 3
    assert len(ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 1, "d-8"))) == 1   # a new decision launches


def test_a_new_provisioner_adopts_the_fleet_by_tag(moto_url, fleet):
    launched = Ec2Provisioner(settings_for(moto_url, fleet)).launch(LaunchSpec("g5.xlarge", "on-demand", 2, "d-1"))
    restarted = Ec2Provisioner(settings_for(moto_url, fleet))   # e.g. the daemon after a crash
    assert sorted(r.id for r in restarted.describe()) == sorted(r.id for r in launched)
    assert len(restarted.launch(LaunchSpec("g5.xlarge", "on-demand", 2, "d-1"))) == 2
    assert len(restarted.describe()) == 2                        # the re-run decision added nothing
    restarted.terminate([launched[0].id])
    assert [r.id for r in restarted.describe()] == [launched[1].id]


def test_terminate_refuses_other_owners_and_is_idempotent(moto_url, fleet):
    mine, theirs = Ec2Provisioner(settings_for(moto_url, fleet)), Ec2Provisioner(settings_for(moto_url, fleet + "-b"))
    own = [r.id for r in mine.launch(LaunchSpec("g4dn.xlarge", "on-demand", 2, "d-1"))]
    foreign = theirs.launch(LaunchSpec("g4dn.xlarge", "on-demand", 1, "d-1"))[0].id
    with pytest.raises(ProvisionerError) as caught:
        mine.terminate([own[0], foreign])
    assert_one_line(caught.value, foreign, f"{TAG_FLEET}={fleet}", "refusing")
    assert len(mine.describe()) == 2 and len(theirs.describe()) == 1   # nothing terminated at all
    mine.terminate(own)
    mine.terminate(own + ["i-0123456789abcdef0"])    # already gone, and unknown: both fine
    assert mine.describe() == []
    assert [r.id for r in theirs.describe()] == [foreign]


def test_readiness_after_grace_period_or_from_the_probe(moto_url, fleet):
    settings = settings_for(moto_url, fleet, ready_grace_s=60)
    launched = Ec2Provisioner(settings).launch(LaunchSpec("g4dn.xlarge", "on-demand", 2, "d-1"))
    t0 = max(r.launched_at_s for r in launched)
    late = Ec2Provisioner(settings, clock=lambda: t0 + 61).describe()
    assert all(r.state == READY and r.ready_at_s == r.launched_at_s + 60 for r in late) and len(late) == 2
    assert {r.state for r in Ec2Provisioner(settings, clock=lambda: t0 + 5).describe()} == {PENDING}
    seen = []
    probed = Ec2Provisioner(settings, clock=lambda: t0 + 5,
                            is_ready=lambda inst: seen.append(inst) or inst.id == launched[0].id)
    states = {r.id: (r.state, r.ready_at_s) for r in probed.describe()}
    assert states == {launched[0].id: (READY, t0 + 5), launched[1].id: (PENDING, None)}
    assert all(inst.private_ip for inst in seen)   # the probe gets an address to ask Triton at


def test_interruption_notices_query_runs_against_moto(moto_url, fleet):
    ec2 = Ec2Provisioner(settings_for(moto_url, fleet))
    ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 1, "d-1"))
    assert ec2.interruption_notices() == []   # moto never interrupts; the Stubber test below does


def test_launch_from_a_launch_template(moto_url, fleet):
    template = raw(moto_url, "ec2").create_launch_template(
        LaunchTemplateName=fleet, LaunchTemplateData={"ImageId": "ami-0fedcba9876543210", "InstanceType": "t3.micro"})
    ec2 = Ec2Provisioner(settings_for(moto_url, fleet, ami_id=None,
                                      launch_template_id=template["LaunchTemplate"]["LaunchTemplateId"]))
    (record,) = ec2.launch(LaunchSpec("g5.xlarge", "on-demand", 1, "d-1"))
    instance = raw(moto_url, "ec2").describe_instances(InstanceIds=[record.id])["Reservations"][0]["Instances"][0]
    assert (instance["ImageId"], instance["InstanceType"]) == ("ami-0fedcba9876543210", "g5.xlarge")


def test_a_failed_launch_leaves_nothing_behind(moto_url, fleet):
    ec2 = Ec2Provisioner(settings_for(moto_url, fleet, subnet_ids=("subnet-0000000000000000f",)))
    with pytest.raises(ProvisionerError) as caught:
        ec2.launch(LaunchSpec("g4dn.xlarge", "on-demand", 2, "d-1"))
    assert_one_line(caught.value, "RunInstances", "InvalidSubnetID.NotFound")
    assert ec2.describe() == []


def test_bad_launch_specs_fail_before_any_call(fleet):
    ec2 = Ec2Provisioner(settings_for("http://127.0.0.1:9", fleet))
    for spec, needle in [(LaunchSpec("g4dn.xlarge", "reserved", 1, "d"), "market 'reserved'"),
                         (LaunchSpec("g4dn.xlarge", "spot", 0, "d"), "count 0"),
                         (LaunchSpec("g4dn.xlarge", "spot", 1, ""), "decision_id")]:
        with pytest.raises(ProvisionerError) as caught:
            ec2.launch(spec)
        assert_one_line(caught.value, needle)


# ---- Lambda against moto -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def function_role(moto_url) -> str:
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "lambda.amazonaws.com"}}]}
    return raw(moto_url, "iam").create_role(RoleName="spillway-fn", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def test_lambda_create_update_publish_alias_and_reserved_concurrency(moto_url, fleet, function_role):
    settings = settings_for(moto_url, fleet, function_role_arn=function_role, function_memory_mb=2048)
    functions, lam, name = LambdaProvisioner(settings), raw(moto_url, "lambda"), settings.function_name
    assert functions.ensure_function() == "1"
    config = lam.get_function(FunctionName=name)
    assert config["Configuration"]["PackageType"] == "Image" and config["Code"]["ImageUri"] == IMAGE
    assert (config["Configuration"]["MemorySize"], config["Configuration"]["Timeout"]) == (2048, 30)
    assert config["Tags"] == {TAG_FLEET: fleet}
    assert functions.ensure_function() == "1"                       # unchanged: no new version
    assert functions.ensure_function(memory_mb=4096) == "2"         # configuration change
    assert lam.get_function_configuration(FunctionName=name, Qualifier="live")["MemorySize"] == 4096
    new_image = IMAGE.replace(":1", ":2")
    assert LambdaProvisioner(settings_for(moto_url, fleet, function_role_arn=function_role, function_memory_mb=4096,
                                          function_image_uri=new_image)).ensure_function() == "3"
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "3"
    assert lam.get_function(FunctionName=name, Qualifier="live")["Code"]["ImageUri"] == new_image
    functions.set_reserved_concurrency(40)
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 40


# ---- Stubber: the paths moto cannot produce ------------------------------------------------------

def stubbed(provisioner, service: str) -> Stubber:
    return Stubber(provisioner.api.client(service))


def instance(instance_id: str, itype: str, market: str, state: str = "pending", decision: str = "d-1") -> dict:
    out = {"InstanceId": instance_id, "InstanceType": itype, "State": {"Name": state},
           "LaunchTime": datetime(2026, 1, 1, tzinfo=timezone.utc), "PrivateIpAddress": "10.0.0.1",
           "Tags": [{"Key": TAG_FLEET, "Value": "f"}, {"Key": TAG_DECISION, "Value": decision}]}
    return {**out, "InstanceLifecycle": "spot"} if market == "spot" else out


def reservations(*instances: dict) -> dict:
    return {"Reservations": [{"Instances": list(instances)}] if instances else []}


def recording_api(settings: AwsSettings, sleeps: list[float]) -> AwsApi:
    return AwsApi(settings, sleep=sleeps.append, rng=random.Random(7))


def test_throttling_is_retried_with_jittered_backoff(aws_env):
    settings, sleeps = settings_for(None, "f", base_delay_s=0.5, max_delay_s=20), []
    ec2 = Ec2Provisioner(settings, api=recording_api(settings, sleeps))
    with stubbed(ec2, "ec2") as stub:
        stub.add_client_error("describe_instances", "RequestLimitExceeded", "Request limit exceeded.", 503)
        stub.add_client_error("describe_instances", "Throttling", "Rate exceeded", 400)
        stub.add_response("describe_instances", reservations(instance("i-1", "g4dn.xlarge", "on-demand")))
        assert [r.id for r in ec2.describe()] == ["i-1"]
        stub.assert_no_pending_responses()
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0   # full jitter ceilings
    print(f"\nbackoff sleeps recorded: {[round(s, 3) for s in sleeps]} s")


def test_throttling_forever_gives_up_with_one_line(aws_env):
    settings, sleeps = settings_for(None, "f", max_attempts=3), []
    ec2 = Ec2Provisioner(settings, api=recording_api(settings, sleeps))
    with stubbed(ec2, "ec2") as stub:
        for _ in range(3):
            stub.add_client_error("describe_instances", "RequestLimitExceeded", "Request limit exceeded.", 503)
        with pytest.raises(ProvisionerError) as caught:
            ec2.describe()
    assert_one_line(caught.value, "DescribeInstances", "RequestLimitExceeded", "gave up after 3 attempts")
    assert caught.value.code == "RequestLimitExceeded" and len(sleeps) == 2


def expect_run(stub: Stubber, itype: str, market: str, count: int, answer: list[dict] | str) -> None:
    params = {"InstanceType": itype, "MinCount": 1, "MaxCount": count, "ClientToken": ANY, "TagSpecifications": ANY,
              "ImageId": AMI, "MetadataOptions": ANY}
    if market == "spot":
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    if isinstance(answer, str):   # EC2 answers capacity errors with HTTP 500
        stub.add_client_error("run_instances", answer, "not enough capacity", 500, expected_params=params)
    else:
        stub.add_response("run_instances", {"Instances": answer}, params)


def test_insufficient_capacity_falls_back_to_the_next_type_and_says_so(aws_env):
    settings, sleeps = settings_for(None, "f"), []
    ec2 = Ec2Provisioner(settings, api=recording_api(settings, sleeps))
    with stubbed(ec2, "ec2") as stub:
        stub.add_response("describe_instances", reservations())
        expect_run(stub, "g4dn.xlarge", "spot", 2, "InsufficientInstanceCapacity")
        expect_run(stub, "g5.xlarge", "spot", 2, [instance("i-1", "g5.xlarge", "spot"), instance("i-2", "g5.xlarge", "spot")])
        records = ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 2, "d-1"))
        stub.assert_no_pending_responses()
    assert [(r.id, r.instance_type, r.market) for r in records] == [("i-1", "g5.xlarge", "spot"), ("i-2", "g5.xlarge", "spot")]
    assert ec2.last_fallback == "g4dn.xlarge/spot: InsufficientInstanceCapacity; fell back to g5.xlarge/spot for 2"
    assert sleeps == []                     # a capacity error is not retried, it falls back


def test_partial_launch_continues_with_the_next_candidate_then_the_other_market(aws_env):
    ec2 = Ec2Provisioner(settings_for(None, "f"))
    with stubbed(ec2, "ec2") as stub:
        stub.add_response("describe_instances", reservations())
        expect_run(stub, "g4dn.xlarge", "spot", 3, [instance("i-1", "g4dn.xlarge", "spot")])    # 1 of 3
        expect_run(stub, "g4dn.xlarge", "spot", 2, "InsufficientInstanceCapacity")
        expect_run(stub, "g5.xlarge", "spot", 2, "InsufficientInstanceCapacity")
        expect_run(stub, "g4dn.xlarge", "on-demand", 2, [instance("i-2", "g4dn.xlarge", "on-demand")])
        expect_run(stub, "g4dn.xlarge", "on-demand", 1, "InsufficientInstanceCapacity")
        expect_run(stub, "g5.xlarge", "on-demand", 1, "InsufficientInstanceCapacity")
        records = ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 3, "d-1"))
        stub.assert_no_pending_responses()
    assert [r.id for r in records] == ["i-1", "i-2"]
    assert ec2.last_fallback == (
        "g4dn.xlarge/spot: InsufficientInstanceCapacity after 1; g5.xlarge/spot: InsufficientInstanceCapacity; "
        "fell back to g4dn.xlarge/on-demand for 1; g4dn.xlarge/on-demand: InsufficientInstanceCapacity after 1; "
        "g5.xlarge/on-demand: InsufficientInstanceCapacity; launched 2 of 3")


def test_partial_launch_without_fallbacks_returns_what_launched(aws_env):
    ec2 = Ec2Provisioner(settings_for(None, "f", instance_types=("g4dn.xlarge",), market_fallback=False))
    with stubbed(ec2, "ec2") as stub:
        stub.add_response("describe_instances", reservations())
        expect_run(stub, "g4dn.xlarge", "on-demand", 3, [instance("i-1", "g4dn.xlarge", "on-demand")])
        expect_run(stub, "g4dn.xlarge", "on-demand", 2, "InsufficientInstanceCapacity")
        records = ec2.launch(LaunchSpec("g4dn.xlarge", "on-demand", 3, "d-1"))
    assert [r.id for r in records] == ["i-1"]
    assert ec2.last_fallback == "g4dn.xlarge/on-demand: InsufficientInstanceCapacity after 1; launched 1 of 3"


def test_spot_interruption_notice_marks_the_instance_draining(aws_env):
    ec2 = Ec2Provisioner(settings_for(None, "f"))
    fleet = reservations(instance("i-1", "g4dn.xlarge", "spot", "running"), instance("i-2", "g4dn.xlarge", "spot", "running"),
                         instance("i-3", "g4dn.xlarge", "on-demand", "running"))
    notice = {"SpotInstanceRequests": [{"InstanceId": "i-2", "Status": {"Code": "instance-terminated-no-capacity"}}]}
    with stubbed(ec2, "ec2") as stub:
        for _ in range(2):
            stub.add_response("describe_instances", fleet)
            stub.add_response("describe_spot_instance_requests", notice, {"Filters": [
                {"Name": "instance-id", "Values": ["i-1", "i-2"]}, {"Name": "status-code", "Values": ANY}]})
        assert ec2.interruption_notices() == ["i-2"]
        assert {r.id: r.state for r in ec2.describe()} == {"i-1": READY, "i-2": DRAINING, "i-3": READY}


def function_config(memory_mb: int = 3008, **extra) -> dict:
    return {"FunctionName": "fn-f", "MemorySize": memory_mb, "Timeout": 30, "Role": ROLE, "CodeSha256": "abc",
            "Architectures": ["x86_64"], "State": "Active", "LastUpdateStatus": "Successful", **extra}


def expect_unchanged_function(stub: Stubber, version: str = "3") -> None:
    stub.add_response("get_function", {"Configuration": function_config(), "Code": {"ImageUri": IMAGE}})
    stub.add_response("publish_version", {"Version": version}, {"FunctionName": "fn-f", "CodeSha256": "abc"})
    stub.add_response("get_alias", {"Name": "live", "FunctionVersion": version})


def test_configure_sets_reserved_and_provisioned_concurrency_in_a_safe_order(aws_env):
    functions = LambdaProvisioner(settings_for(None, "f"))
    target = {"FunctionName": "fn-f", "Qualifier": "live"}
    with stubbed(functions, "lambda") as stub:
        # growing from nothing: reserved first, then provisioned on the alias
        expect_unchanged_function(stub)
        stub.add_client_error("get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException",
                              "No Provisioned Concurrency Config found", 404)
        stub.add_response("put_function_concurrency", {"ReservedConcurrentExecutions": 50},
                          {"FunctionName": "fn-f", "ReservedConcurrentExecutions": 50})
        stub.add_response("put_provisioned_concurrency_config", {"RequestedProvisionedConcurrentExecutions": 5},
                          {**target, "ProvisionedConcurrentExecutions": 5})
        functions.configure(FunctionSpec(3008, 5, 50))
        # shrinking below the provisioned amount: provisioned first, then reserved
        expect_unchanged_function(stub)
        stub.add_response("get_provisioned_concurrency_config", {"RequestedProvisionedConcurrentExecutions": 5}, target)
        stub.add_response("put_provisioned_concurrency_config", {"RequestedProvisionedConcurrentExecutions": 2},
                          {**target, "ProvisionedConcurrentExecutions": 2})
        stub.add_response("put_function_concurrency", {"ReservedConcurrentExecutions": 4},
                          {"FunctionName": "fn-f", "ReservedConcurrentExecutions": 4})
        functions.configure(FunctionSpec(3008, 2, 4))
        # warm 0 removes the configuration
        expect_unchanged_function(stub)
        stub.add_response("get_provisioned_concurrency_config", {"RequestedProvisionedConcurrentExecutions": 2}, target)
        stub.add_response("delete_provisioned_concurrency_config", {}, target)
        stub.add_response("put_function_concurrency", {"ReservedConcurrentExecutions": 4})
        functions.configure(FunctionSpec(3008, 0, 4))
        # and describe_function reads the three back
        stub.add_response("get_function_configuration", function_config(), target)
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 4})
        stub.add_client_error("get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException", "", 404)
        assert functions.describe_function() == FunctionSpec(3008, 0, 4)
        stub.assert_no_pending_responses()
    with pytest.raises(ProvisionerError) as caught:
        functions.configure(FunctionSpec(3008, 9, 4))
    assert_one_line(caught.value, "warm_concurrency 9", "0..max_concurrency (4)")


def test_ensure_function_waits_for_lambda_to_finish_an_update(aws_env):
    settings, sleeps = settings_for(None, "f", function_memory_mb=4096), []
    functions = LambdaProvisioner(settings, api=recording_api(settings, sleeps), poll_s=0.25)
    with stubbed(functions, "lambda") as stub:
        stub.add_response("get_function", {"Configuration": function_config(2048), "Code": {"ImageUri": IMAGE}})
        stub.add_response("update_function_configuration", function_config(4096, LastUpdateStatus="InProgress"))
        stub.add_response("get_function_configuration", function_config(4096, LastUpdateStatus="InProgress"))
        stub.add_response("get_function_configuration", function_config(4096))
        stub.add_response("publish_version", {"Version": "4"})
        stub.add_client_error("get_alias", "ResourceNotFoundException", "Alias not found", 404)
        stub.add_response("create_alias", {"Name": "live", "FunctionVersion": "4"},
                          {"FunctionName": "fn-f", "Name": "live", "FunctionVersion": "4"})
        assert functions.ensure_function() == "4"
        stub.assert_no_pending_responses()
    assert sleeps == [0.25, 0.25]


def invoke_answer(log_tail: str, payload: bytes = b'{"ok": true}', **extra) -> dict:
    return {"StatusCode": 200, "LogResult": base64.b64encode(log_tail.encode()).decode(),
            "Payload": StreamingBody(io.BytesIO(payload), len(payload)), **extra}


COLD = ("START RequestId: 1 Version: 3\nEND RequestId: 1\nREPORT RequestId: 1\tDuration: 812.40 ms\t"
        "Billed Duration: 3225 ms\tMemory Size: 3008 MB\tMax Memory Used: 900 MB\tInit Duration: 2412.37 ms\t\n")
WARM = "REPORT RequestId: 2\tDuration: 12.10 ms\tBilled Duration: 13 ms\tMemory Size: 3008 MB\tMax Memory Used: 900 MB\t\n"


def test_invoke_reads_cold_start_and_billing_from_the_report_line(aws_env):
    settings, sleeps = settings_for(None, "f"), []
    functions = LambdaProvisioner(settings, api=recording_api(settings, sleeps))
    expected = {"FunctionName": "fn-f", "Qualifier": "live", "InvocationType": "RequestResponse", "LogType": "Tail",
                "Payload": b'{"x": 1}'}
    with stubbed(functions, "lambda") as stub:
        stub.add_response("invoke", invoke_answer(COLD), expected)
        stub.add_response("invoke", invoke_answer(WARM), expected)
        stub.add_response("invoke", invoke_answer(WARM, b'{"errorMessage": "boom"}', FunctionError="Unhandled"))
        stub.add_client_error("invoke", "TooManyRequestsException", "Rate Exceeded.", 429)
        cold, warm, failed, throttled = (functions.invoke(b'{"x": 1}') for _ in range(4))
        stub.assert_no_pending_responses()
    assert (cold.status, cold.body, cold.cold_start, cold.init_ms, cold.billed_ms, cold.ok) == (200, b'{"ok": true}', True, 2412, 3225, True)
    assert (warm.cold_start, warm.init_ms, warm.billed_ms) == (False, 0, 13)
    assert failed.function_error and not failed.ok
    assert (throttled.status, throttled.throttled, json.loads(throttled.body)["errorType"]) == (429, True, "TooManyRequestsException")
    assert sleeps == []                     # the data plane is not retried here: the router decides
    assert parse_report("no report here") == (0, None)


def test_async_invoker_runs_invoke_off_the_event_loop(aws_env):
    functions = LambdaProvisioner(settings_for(None, "f"))

    async def main():
        invoker = AsyncLambdaInvoker(functions, max_workers=2)
        try:
            return await invoker.invoke(b"{}")
        finally:
            await invoker.close()
    with stubbed(functions, "lambda") as stub:
        stub.add_response("invoke", invoke_answer(WARM))
        assert asyncio.run(main()).billed_ms == 13


# ---- faults: credentials, permissions, an unreachable endpoint -----------------------------------

def test_wrong_credentials_and_access_denied_are_one_line(aws_env):
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="2") as url:   # moto checks IAM after 2 free calls
        iam = raw(url, "iam")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        ec2 = Ec2Provisioner(settings_for(url, "f"))
        with pytest.raises(ProvisionerError) as caught:
            ec2.describe()                                      # "testing" is no key moto knows
        assert_one_line(caught.value, "DescribeInstances", "AuthFailure", "check the AWS credentials")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
            mp.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
            with pytest.raises(ProvisionerError) as caught:
                Ec2Provisioner(settings_for(url, "f")).launch(LaunchSpec("g4dn.xlarge", "spot", 1, "d-1"))
        assert_one_line(caught.value, "DescribeInstances", "AccessDenied", "iam_policy.json")
    functions = LambdaProvisioner(settings_for(None, "f"))   # moto's Lambda answers auth errors oddly
    with stubbed(functions, "lambda") as stub:
        stub.add_client_error("get_function", "UnrecognizedClientException",
                              "The security token included in the request is invalid.", 403)
        with pytest.raises(ProvisionerError) as caught:
            functions.ensure_function()
    assert_one_line(caught.value, "GetFunction", "UnrecognizedClientException", "check the AWS credentials")


def test_unreachable_endpoint_fails_fast_with_one_line(aws_env, fleet):
    url = f"http://127.0.0.1:{free_port()}"          # nothing listens there
    settings = settings_for(url, fleet, connect_timeout_s=1, max_attempts=5)
    ec2, functions = Ec2Provisioner(settings), LambdaProvisioner(settings)   # lazy: no network yet
    for call in (ec2.describe, lambda: ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 1, "d-1")), functions.ensure_function):
        with pytest.raises(ProvisionerError) as caught:
            call()
        assert_one_line(caught.value, url, "Could not connect")
    with pytest.raises(FunctionInvokeError) as caught:
        functions.invoke(b"{}")
    assert_one_line(caught.value, "Invoke", "Could not connect")


# ---- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, needle", [
    ({"region": "mars"}, "region = 'mars'"),
    ({"max_attempts": 0}, "max_attempts = 0: must be an integer in 1..20"),
    ({"function_timeout_s": 901}, "function_timeout_s = 901"),
    ({"base_delay_s": 2.0, "max_delay_s": 1.0}, "max_delay_s = 1.0: must be >= base_delay_s"),
    ({"instance_types": "g4dn.xlarge"}, "instance_types = 'g4dn.xlarge': must be a list"),
    ({"subnet_ids": ["subnet-1234567890abcdef0"] * 2}, "subnet_ids"),
    ({"launch_template_id": "lt-0123456789abcdef0"}, "either launch_template_id or ami_id"),
    ({"function_image_uri": "docker.io/me/model:1"}, "function_image_uri"),
    ({"endpoint_url": "127.0.0.1:5000"}, "endpoint_url"),
    ({"user_data": "x" * 17_000}, "EC2 allows at most 16384"),
    ({"market_fallback": "yes"}, "market_fallback = 'yes': must be true or false"),
])
def test_bad_settings_are_one_line_errors(overrides, needle):
    with pytest.raises(AwsSettingsError) as caught:
        settings_for(None, "f", **overrides)
    assert_one_line(caught.value, "aws settings: ", needle)


def test_settings_from_a_config_table_and_what_each_provisioner_requires():
    settings = AwsSettings.from_mapping({"region": REGION, "fleet_name": "prod", "ami_id": AMI,
                                         "instance_types": ["g4dn.xlarge", "g5.xlarge"]})
    assert settings.instance_types == ("g4dn.xlarge", "g5.xlarge") and settings.endpoint_url is None
    for table, needle in [({"region": REGION}, "fleet_name: missing"),
                          ({"region": REGION, "fleet_name": "p", "regoin": "x"}, "regoin = 'x': unknown key")]:
        with pytest.raises(AwsSettingsError) as caught:
            AwsSettings.from_mapping(table)
        assert_one_line(caught.value, needle)
    with pytest.raises(AwsSettingsError) as caught:
        LambdaProvisioner(settings)
    assert_one_line(caught.value, "function_name: missing (needed for the Lambda function)")
    with pytest.raises(AwsSettingsError) as caught:
        Ec2Provisioner(AwsSettings(region=REGION, fleet_name="p"))
    assert_one_line(caught.value, "ami_id: missing")


def test_user_data_starts_triton_on_the_model_repository():
    script = render_user_data("s3://models/resnet50", REGION)
    assert script.startswith("#!/bin/bash\n") and "docker pull nvcr.io/nvidia/tritonserver:24.10-py3" in script
    assert "--model-repository=s3://models/resnet50" in script and "--gpus all" in script
    assert "AWS_DEFAULT_REGION=us-east-1" in script
    local = render_user_data("/opt/models", REGION, gpus=False)
    assert "-v /opt/models:/opt/models:ro" in local and "--gpus" not in local
    with pytest.raises(AwsSettingsError) as caught:
        render_user_data("models/", REGION)
    assert_one_line(caught.value, "model_repository_uri")
    settings_for(None, "f", user_data=script)   # fits EC2's user-data limit
