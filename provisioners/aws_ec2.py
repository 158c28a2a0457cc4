"""EC2 provisioner: the fleet of Triton instances, with EC2 itself as the only source of truth.

Ownership is a tag: every instance carries spillway:fleet=<fleet_name>, and describe() is a
describe_instances filtered on it, so a restarted daemon (or a second provisioner object) adopts
the running fleet with no local state. terminate() refuses instances without that tag.

Idempotent launches, two layers:
  1. ClientToken, derived from (fleet, decision, requested key, candidate, count already present):
     when a RunInstances whose answer was lost is retried, real AWS returns the instances of the
     first call instead of launching again.
  2. Our own check, because moto ignores ClientToken (each call launches anew) and because a
     crashed daemon re-running a decision does not know what the first run launched: every
     instance is tagged spillway:decision=<decision_id> and spillway:request=<type>/<market> of
     the LaunchSpec, and launch() first counts the instances already carrying both tags (in any
     state, like a ClientToken) and launches only the missing count.
  Decision ids must therefore be unique across daemon restarts.

Capacity: InsufficientInstanceCapacity / Unsupported / SpotMaxPriceTooLow /
MaxSpotInstanceCountExceeded move on to the next candidate: every subnet (AZ) of the requested
type, then the types after it in settings.instance_types, then (market_fallback) the same in the
other market. After a partial launch (MinCount=1 gives fewer than MaxCount) the same candidate is
asked again for the remainder until EC2 answers with a capacity error, then the next one. (moto
launches MinCount instances per call, so against moto every launch goes one instance per call.) launch() returns what launched (possibly nothing) and says what
happened in `last_fallback`, for the decision's reason.

Spot interruption notices: AWS publishes the 2-minute warning to EventBridge and the instance's
metadata service, neither reachable from a control-plane poll. What the EC2 API shows is the spot
request's status: with interruption behaviour "terminate" it turns to
instance-terminated-no-capacity while the instance keeps running for its 2 minutes (or
marked-for-termination / marked-for-stop / *-by-price), see the EC2 user guide, "Spot request
status". interruption_notices() polls describe_spot_instance_requests for those codes, so it
sees a notice one poll interval late at worst; an EventBridge rule feeding the daemon would see
it at once (not built).
"""
from __future__ import annotations

import hashlib
import shlex
import time
from dataclasses import dataclass
from typing import Any, Callable

from provisioners.aws_common import AwsApi, AwsSettings, AwsSettingsError, ProvisionerError
from provisioners.base import DRAINING, PENDING, READY, TERMINATED, InstanceRecord, LaunchSpec

__all__ = ["Ec2Instance", "Ec2Provisioner", "render_user_data", "TAG_FLEET", "TAG_DECISION",
           "TAG_MARKET", "TAG_REQUEST", "CAPACITY_CODES"]

TAG_FLEET, TAG_DECISION = "spillway:fleet", "spillway:decision"
TAG_MARKET, TAG_REQUEST = "spillway:market", "spillway:request"
MARKETS = ("on-demand", "spot")
CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "Unsupported", "SpotMaxPriceTooLow",
                            "MaxSpotInstanceCountExceeded"})
# shutting-down is left out: billing stops there and the instance will never serve again.
FLEET_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")
INTERRUPTION_CODES = ("instance-terminated-no-capacity", "instance-terminated-by-price",
                      "instance-stopped-no-capacity", "instance-stopped-by-price",
                      "marked-for-termination", "marked-for-stop")
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"   # Triton 2.51, as served locally


@dataclass(frozen=True)
class Ec2Instance:
    """What a readiness probe sees of one running instance (it probes Triton at an address)."""
    id: str
    instance_type: str
    market: str
    launched_at_s: float
    private_ip: str | None
    public_ip: str | None


ReadinessProbe = Callable[[Ec2Instance], bool]


class Ec2Provisioner:
    """InstanceProvisioner over EC2. `is_ready(instance)` says whether the model server answers;
    without it an instance counts as ready `settings.ready_grace_s` after launch."""

    def __init__(self, settings: AwsSettings, is_ready: ReadinessProbe | None = None,
                 clock: Callable[[], float] = time.time, api: AwsApi | None = None):
        if not (settings.launch_template_id or settings.ami_id):
            raise AwsSettingsError("aws settings: ami_id: missing (needed for EC2 launches, "
                                   "or give launch_template_id)")
        self.settings, self.is_ready, self.clock = settings, is_ready, clock
        self.api = api or AwsApi(settings)
        self.last_fallback = ""                    # what the last launch() did instead, "" if nothing
        self._ready_seen_s: dict[str, float] = {}  # first time the probe said ready (a cache only)

    # ---- the verbs -------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> list[InstanceRecord]:
        _check_spec(spec)
        requested = f"{spec.instance_type}/{spec.market}"
        earlier = self._describe([*self._fleet_filter(), _tag_filter(TAG_DECISION, spec.decision_id),
                                  _tag_filter(TAG_REQUEST, requested)])
        records = [self._record(i) for i in earlier if i["State"]["Name"] not in GONE_STATES]
        missing = spec.count - len(earlier)
        notes: list[str] = []
        for itype, market, subnet in self._candidates(spec):
            if missing <= 0:
                break
            where = f"{itype}/{market}" + (f" in {subnet}" if subnet else "")
            got, failure = 0, ""
            while missing > 0 and not failure:   # ask again after a partial launch, until EC2 says no
                try:
                    new = self._run(spec, requested, itype, market, subnet, missing, spec.count - missing)
                except ProvisionerError as error:
                    if error.code not in CAPACITY_CODES:
                        raise
                    failure = error.code
                    continue
                got, missing = got + len(new), missing - len(new)
                records += [self._record(i) for i in new]
            if got and f"{itype}/{market}" != requested:
                notes.append(f"fell back to {where} for {got}")
            if failure:
                notes.append(f"{where}: {failure}" + (f" after {got}" if got else ""))
        if missing > 0:
            notes.append(f"launched {spec.count - missing} of {spec.count}")
        self.last_fallback = "; ".join(notes)
        return records

    def describe(self) -> list[InstanceRecord]:
        instances = self._describe([*self._fleet_filter(), {"Name": "instance-state-name",
                                                             "Values": list(FLEET_STATES)}])
        noticed = self._interrupted(instances)
        records = [self._record(i, noticed) for i in instances]
        present = {r.id for r in records}
        self._ready_seen_s = {k: v for k, v in self._ready_seen_s.items() if k in present}
        return records

    def terminate(self, ids: list[str]) -> None:
        """Terminate our instances; ids already gone are fine, ids of another owner are refused."""
        if not ids:
            return
        found = self._describe([{"Name": "instance-id", "Values": list(ids)}])
        foreign = sorted(i["InstanceId"] for i in found if _tags(i).get(TAG_FLEET) != self.settings.fleet_name)
        if foreign:
            raise ProvisionerError(f"ec2 terminate: {', '.join(foreign)} not tagged "
                                   f"{TAG_FLEET}={self.settings.fleet_name}; refusing to terminate them")
        alive = [i["InstanceId"] for i in found if i["State"]["Name"] not in GONE_STATES]
        if alive:
            self.api.call("ec2", "terminate_instances", InstanceIds=alive)

    def interruption_notices(self) -> list[str]:
        """Ids of our spot instances that have been given their interruption notice."""
        instances = self._describe([*self._fleet_filter(), {"Name": "instance-state-name",
                                                             "Values": ["pending", "running"]}])
        return sorted(self._interrupted(instances))

    # ---- helpers ---------------------------------------------------------------------------------

    def _candidates(self, spec: LaunchSpec) -> list[tuple[str, str, str | None]]:
        order = self.settings.instance_types
        later = order[order.index(spec.instance_type) + 1:] if spec.instance_type in order else order
        types = [spec.instance_type, *later]
        markets = [spec.market]
        if self.settings.market_fallback:
            markets.append(MARKETS[1 - MARKETS.index(spec.market)])
        subnets = self.settings.subnet_ids or (None,)
        return [(t, m, s) for m in markets for t in types for s in subnets]

    def _run(self, spec: LaunchSpec, requested: str, itype: str, market: str, subnet: str | None,
             count: int, present: int) -> list[dict]:
        s = self.settings
        tags = [{"Key": TAG_FLEET, "Value": s.fleet_name}, {"Key": TAG_DECISION, "Value": spec.decision_id},
                {"Key": TAG_REQUEST, "Value": requested}, {"Key": TAG_MARKET, "Value": market},
                {"Key": "Name", "Value": f"spillway-{s.fleet_name}-{itype}"}]
        resource_types = ["instance", "volume"] + (["spot-instances-request"] if market == "spot" else [])
        key = "|".join([s.fleet_name, spec.decision_id, requested, itype, market, subnet or "", str(present), str(count)])
        params: dict[str, Any] = {
            "InstanceType": itype, "MinCount": 1, "MaxCount": count,
            "ClientToken": hashlib.sha256(key.encode()).hexdigest(),   # 64 chars, AWS's maximum
            "TagSpecifications": [{"ResourceType": r, "Tags": tags} for r in resource_types]}
        if s.launch_template_id:
            params["LaunchTemplate"] = {"LaunchTemplateId": s.launch_template_id, "Version": s.launch_template_version}
        else:
            params["ImageId"] = s.ami_id
            params["MetadataOptions"] = {"HttpTokens": "required", "HttpEndpoint": "enabled"}   # IMDSv2 only
        if subnet:
            params["SubnetId"] = subnet
        if s.security_group_ids:
            params["SecurityGroupIds"] = list(s.security_group_ids)
        if s.key_name:
            params["KeyName"] = s.key_name
        if s.iam_instance_profile:
            arn = s.iam_instance_profile.startswith("arn:")
            params["IamInstanceProfile"] = {"Arn" if arn else "Name": s.iam_instance_profile}
        if s.user_data:
            params["UserData"] = s.user_data   # boto3 base64-encodes it
        if market == "spot":
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        return self.api.call("ec2", "run_instances", **params)["Instances"]

    def _describe(self, filters: list[dict]) -> list[dict]:
        out: list[dict] = []
        token: dict[str, str] = {}
        while True:
            page = self.api.call("ec2", "describe_instances", Filters=filters, MaxResults=1000, **token)
            out += [i for r in page["Reservations"] for i in r["Instances"]]
            if not page.get("NextToken"):
                return out
            token = {"NextToken": page["NextToken"]}

    def _interrupted(self, instances: list[dict]) -> set[str]:
        spot = [i["InstanceId"] for i in instances
                if i.get("InstanceLifecycle") == "spot" and i["State"]["Name"] in ("pending", "running")]
        if not spot:
            return set()
        page = self.api.call("ec2", "describe_spot_instance_requests", Filters=[
            {"Name": "instance-id", "Values": spot}, {"Name": "status-code", "Values": list(INTERRUPTION_CODES)}])
        return {r["InstanceId"] for r in page["SpotInstanceRequests"] if r.get("InstanceId")}

    def _fleet_filter(self) -> list[dict]:
        return [_tag_filter(TAG_FLEET, self.settings.fleet_name)]

    def _record(self, instance: dict, noticed: frozenset[str] | set[str] = frozenset()) -> InstanceRecord:
        aws_state = instance["State"]["Name"]
        view = Ec2Instance(instance["InstanceId"], instance["InstanceType"],
                           "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
                           instance["LaunchTime"].timestamp(), instance.get("PrivateIpAddress"),
                           instance.get("PublicIpAddress"))
        ready_at_s = self._ready_at(view) if aws_state == "running" else None
        if view.id in noticed or aws_state in ("stopping", "stopped"):
            state = DRAINING     # leaving: not counted towards the target, replaced by the loop
        elif aws_state in GONE_STATES:
            state = TERMINATED
        else:
            state = READY if ready_at_s is not None else PENDING
        return InstanceRecord(view.id, view.instance_type, view.market, state, view.launched_at_s,
                              ready_at_s, None, _tags(instance).get(TAG_DECISION, ""))

    def _ready_at(self, view: Ec2Instance) -> float | None:
        now_s = self.clock()
        if self.is_ready is None:
            ready_at_s = view.launched_at_s + self.settings.ready_grace_s
            return ready_at_s if now_s >= ready_at_s else None
        if not self.is_ready(view):
            self._ready_seen_s.pop(view.id, None)
            return None
        return self._ready_seen_s.setdefault(view.id, now_s)


def _check_spec(spec: LaunchSpec) -> None:
    if spec.market not in MARKETS:
        raise ProvisionerError(f"ec2 launch: market {spec.market!r}: must be one of {', '.join(MARKETS)}")
    if spec.count < 1:
        raise ProvisionerError(f"ec2 launch: count {spec.count}: must be >= 1")
    if not spec.decision_id:
        raise ProvisionerError("ec2 launch: decision_id is empty; it makes launches idempotent")


def _tag_filter(key: str, value: str) -> dict:
    return {"Name": f"tag:{key}", "Values": [value]}


def _tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def render_user_data(model_repository_uri: str, region: str, triton_image: str = DEFAULT_TRITON_IMAGE,
                     gpus: bool = True) -> str:
    """A first-boot script (cloud-init runs it as root) that pulls the Triton container and serves
    the model repository on ports 8000 (HTTP, /v2/health/ready) and 8002 (metrics).

    It assumes an AMI with Docker and, for GPUs, the NVIDIA container toolkit (e.g. the AWS Deep
    Learning Base GPU AMI). An s3:// repository is read by Triton itself with the instance
    profile's credentials; host networking keeps the metadata service within IMDSv2's hop limit
    of 1. Not run here (no Docker, no EC2): tests check only what it says."""
    if not (model_repository_uri.startswith("s3://") or model_repository_uri.startswith("/")):
        raise AwsSettingsError(f"aws settings: model_repository_uri = {model_repository_uri!r}: "
                               "must be s3://bucket/path or an absolute path on the AMI")
    mount = "" if model_repository_uri.startswith("s3://") else \
        f"-v {shlex.quote(model_repository_uri)}:{shlex.quote(model_repository_uri)}:ro "
    return "\n".join([
        "#!/bin/bash",
        "# spillway: serve the model repository with Triton (first boot only)",
        "set -euo pipefail",
        f"docker pull {shlex.quote(triton_image)}",
        f"docker run -d --name triton --restart unless-stopped --network host {'--gpus all ' if gpus else ''}"
        f"--shm-size 1g -e AWS_DEFAULT_REGION={shlex.quote(region)} {mount}{shlex.quote(triton_image)} "
        f"tritonserver --model-repository={shlex.quote(model_repository_uri)} --strict-readiness=true",
        ""])
