"""provisioners/data/iam_policy.json allows exactly the AWS calls the provisioners make.

A full scenario runs every verb (against moto where moto can, through botocore's Stubber where it
cannot) while a botocore event hook on the provisioners' own clients records each operation and
its parameters. Every call site in the code must show up in that recording, every recorded call
must map to an allowed IAM action (plus the actions AWS checks implicitly: CreateTags for
TagSpecifications, PassRole for a role, ...), and the policy must allow nothing else."""
from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest

from provisioners.aws_common import AwsSettingsError
from provisioners.aws_ec2 import TAG_FLEET, Ec2Provisioner, render_user_data
from provisioners.aws_iam import IAM_POLICY_FILE, render_iam_policy
from provisioners.aws_lambda import LambdaProvisioner
from provisioners.base import FunctionSpec, LaunchSpec
from tests.test_aws_provisioners import (IMAGE, REGION, WARM, aws_env, expect_unchanged_function,  # noqa: F401
                                         function_role, invoke_answer, moto_url, raw, settings_for, stubbed)

SOURCES = [Path(__file__).resolve().parent.parent / "provisioners" / name for name in ("aws_ec2.py", "aws_lambda.py")]
# Boto3 operations whose IAM action has another name.
ACTION_NAMES = {("lambda", "Invoke"): "lambda:InvokeFunction"}


def actions_for(service: str, operation: str, params: dict) -> set[str]:
    """The IAM actions AWS authorises for one call, including the implicit ones."""
    actions = {ACTION_NAMES.get((service, operation), f"{service}:{operation}")}
    if "TagSpecifications" in params:
        actions.add("ec2:CreateTags")          # tagging on launch is authorised as CreateTags
    if "IamInstanceProfile" in params or "Role" in params:
        actions.add("iam:PassRole")            # handing a role to EC2 or Lambda
    if service == "lambda" and "Tags" in params:
        actions.add("lambda:TagResource")      # tags on CreateFunction
    if (service, operation) == ("lambda", "GetFunction"):
        actions.add("lambda:ListTags")         # GetFunction returns the tags of a tagged function
    return actions


class CallRecorder:
    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []

    def attach(self, *provisioners) -> None:
        for provisioner in provisioners:
            for service in ("ec2", "lambda"):
                provisioner.api.client(service).meta.events.register("provide-client-params.*.*", self._record)

    def _record(self, params, model, **_):
        self.calls.append((model.service_model.signing_name, model.name, dict(params)))


def call_sites() -> set[tuple[str, str]]:
    """(service, API operation) of every `api.call("service", "method", ...)` in the code."""
    sites = set()
    for source in SOURCES:
        for service, method in re.findall(r'api\.call\(\s*"(\w+)",\s*"(\w+)"', source.read_text()):
            client = boto3.client(service, region_name=REGION)
            sites.add((client.meta.service_model.signing_name, client.meta.method_to_api_mapping[method]))
    return sites


@pytest.fixture(scope="module")
def recorded(moto_url, function_role) -> CallRecorder:
    """Every verb once, with an instance profile and user data so that PassRole is exercised."""
    iam = raw(moto_url, "iam")
    iam.create_instance_profile(InstanceProfileName="spillway-triton")
    recorder = CallRecorder()
    settings = settings_for(moto_url, "iam-fleet", iam_instance_profile="spillway-triton",
                            user_data=render_user_data("s3://models/resnet50", REGION), function_role_arn=function_role)
    ec2, functions = Ec2Provisioner(settings), LambdaProvisioner(settings)
    changed = LambdaProvisioner(settings_for(moto_url, "iam-fleet", function_role_arn=function_role,
                                             function_image_uri=IMAGE.replace(":1", ":2"), function_memory_mb=1024))
    stubbed_functions = LambdaProvisioner(settings_for(None, "f"))
    recorder.attach(ec2, functions, changed, stubbed_functions)

    records = ec2.launch(LaunchSpec("g4dn.xlarge", "on-demand", 1, "d-1"))
    records += ec2.launch(LaunchSpec("g4dn.xlarge", "spot", 1, "d-1"))
    ec2.describe()
    ec2.interruption_notices()
    ec2.terminate([r.id for r in records])
    functions.ensure_function()
    changed.ensure_function()                  # update code and configuration, move the alias
    functions.set_reserved_concurrency(10)
    target = {"FunctionName": "fn-f", "Qualifier": "live"}
    with stubbed(stubbed_functions, "lambda") as stub:   # what moto lacks: provisioned concurrency, invoke
        expect_unchanged_function(stub)
        stub.add_response("get_provisioned_concurrency_config", {"RequestedProvisionedConcurrentExecutions": 3}, target)
        stub.add_response("put_function_concurrency", {"ReservedConcurrentExecutions": 10})
        stub.add_response("put_provisioned_concurrency_config", {"RequestedProvisionedConcurrentExecutions": 4})
        stubbed_functions.configure(FunctionSpec(3008, 4, 10))
        stub.add_response("delete_provisioned_concurrency_config", {}, target)
        stubbed_functions.set_warm_concurrency(0)
        stub.add_response("get_function_configuration", {"MemorySize": 3008})
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 10})
        stub.add_client_error("get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException", "", 404)
        stubbed_functions.describe_function()
        stub.add_response("invoke", invoke_answer(WARM))
        stubbed_functions.invoke(b"{}")
        stub.assert_no_pending_responses()
    return recorder


def policy() -> dict:
    return json.loads(IAM_POLICY_FILE.read_text())


def allowed_actions(document: dict) -> set[str]:
    return {action for statement in document["Statement"] for action in statement["Action"]}


def test_the_scenario_exercises_every_call_site(recorded):
    assert {(service, op) for service, op, _ in recorded.calls} == call_sites()


def test_every_call_is_allowed_and_nothing_else(recorded):
    needed = set().union(*(actions_for(service, op, params) for service, op, params in recorded.calls))
    allowed = allowed_actions(policy())
    assert needed - allowed == set(), "the code calls what the policy does not allow"
    assert allowed - needed == set(), "the policy allows what the code never calls"
    assert not any("*" in action for action in allowed)
    print(f"\nIAM actions needed and allowed: {len(needed)} ({len(recorded.calls)} calls recorded)")


def test_conditions_and_resources_hold_the_least_privilege():
    for statement in policy()["Statement"]:
        actions, condition = set(statement["Action"]), statement.get("Condition", {}).get("StringEquals", {})
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        if "*" in resources:      # only the describe calls, which support no resource-level permissions
            assert all(action.startswith("ec2:Describe") for action in actions), statement["Sid"]
        if "ec2:TerminateInstances" in actions:
            assert condition == {f"aws:ResourceTag/{TAG_FLEET}": "{{fleet_name}}"}
        if "ec2:CreateTags" in actions:
            assert condition == {"ec2:CreateAction": "RunInstances"}
        if "ec2:RunInstances" in actions and any(":instance/" in r for r in resources):
            assert condition == {f"aws:RequestTag/{TAG_FLEET}": "{{fleet_name}}"}
        if "iam:PassRole" in actions:
            assert set(condition) == {"iam:PassedToService"} and len(resources) == 1
        if any(action.startswith("lambda:") for action in actions):
            assert all(":function:{{function_name}}" in r for r in resources)
        if "lambda:InvokeFunction" in actions:
            assert resources == ["arn:aws:lambda:{{region}}:{{account_id}}:function:{{function_name}}:{{function_alias}}"]


def test_rendered_policy_for_one_deployment():
    settings = settings_for(None, "prod", iam_instance_profile="spillway-triton")
    document = render_iam_policy(settings, "123456789012", instance_role_arn="arn:aws:iam::123456789012:role/triton")
    text = json.dumps(document)
    assert "{{" not in text and '"aws:ResourceTag/spillway:fleet": "prod"' in text
    assert "arn:aws:lambda:us-east-1:123456789012:function:fn-prod:live" in text
    assert allowed_actions(document) == allowed_actions(policy())
    ec2_only = render_iam_policy(settings_for(None, "prod", function_name=None), "123456789012")
    assert not any(a.startswith("lambda:") for a in allowed_actions(ec2_only))
    assert "iam:PassRole" not in allowed_actions(ec2_only)      # no instance profile, no function role
    for call, needle in [(lambda: render_iam_policy(settings, "12345"), "account_id = '12345'"),
                         (lambda: render_iam_policy(settings, "123456789012"), "instance_role_arn: missing")]:
        with pytest.raises(AwsSettingsError) as caught:
            call()
        assert needle in str(caught.value) and "\n" not in str(caught.value)
