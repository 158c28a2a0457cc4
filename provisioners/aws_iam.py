"""The least-privilege IAM policy for the daemon, filled in for one deployment.

provisioners/data/iam_policy.json allows exactly the API calls of provisioners.aws_ec2 and
provisioners.aws_lambda (tests/test_iam_policy.py checks both directions), with {{placeholders}}
for the account, region, fleet and function. Controls that ride on conditions:
  - RunInstances may create instances, volumes and spot requests only when they carry
    spillway:fleet=<fleet> (aws:RequestTag), and CreateTags works only inside RunInstances;
  - TerminateInstances applies only to instances tagged spillway:fleet=<fleet> (aws:ResourceTag);
  - iam:PassRole passes the instance role only to EC2 and the function role only to Lambda;
  - InvokeFunction reaches only the alias.
Not granted, do once by hand: the spot service-linked role (`aws iam create-service-linked-role
--aws-service-name spot.amazonaws.com`) and an ECR repository policy letting lambda.amazonaws.com
pull the function image. ARNs use the "aws" partition (edit for GovCloud or China).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from provisioners.aws_common import AwsSettings, AwsSettingsError

__all__ = ["IAM_POLICY_FILE", "render_iam_policy"]

IAM_POLICY_FILE = Path(__file__).resolve().parent / "data" / "iam_policy.json"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render_iam_policy(settings: AwsSettings, account_id: str, instance_role_arn: str | None = None) -> dict:
    """The policy document for this deployment. Statements whose placeholders have no value are
    left out: no function settings -> no Lambda statements, no instance role -> no PassRole to EC2."""
    if not re.fullmatch(r"\d{12}", account_id):
        raise AwsSettingsError(f"aws settings: account_id = {account_id!r}: must be 12 digits")
    if settings.iam_instance_profile and not instance_role_arn:
        raise AwsSettingsError("aws settings: instance_role_arn: missing (iam_instance_profile is set, "
                               "so the daemon must be allowed to pass the profile's role)")
    values = {"region": settings.region, "account_id": account_id, "fleet_name": settings.fleet_name,
              "function_name": settings.function_name, "function_alias": settings.function_alias,
              "function_role_arn": settings.function_role_arn if settings.function_name else None,
              "instance_role_arn": instance_role_arn}
    document = json.loads(IAM_POLICY_FILE.read_text())
    statements = []
    for statement in document["Statement"]:
        text = json.dumps(statement)
        names = set(_PLACEHOLDER.findall(text))
        if all(values[name] for name in names):
            statements.append(json.loads(_PLACEHOLDER.sub(lambda m: values[m.group(1)], text)))
    return {**document, "Statement": statements}
