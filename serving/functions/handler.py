"""The Lambda function: `handler(event, context)` runs the reference model on one CPU thread.

The same module runs unchanged under AWS Lambda (container image, see Dockerfile here) and under
the local runtime (`awslambdaric` in worker processes). The model is built at import time, i.e.
in Lambda's INIT phase, so a cold start pays torch import + model build once and every warm
invocation pays only the forward pass.

Contract (decided here, relied on by the router):
- Direct invoke (the router, `lambda invoke`): the event IS the KServe v2 JSON request dict.
  Success returns the v2 response dict unchanged (`model_name`, `outputs`).
  A bad request returns {"statusCode": 400, "error": "<one line>"} -- a normal (successful)
  invocation, so Lambda does not count it as a function error and nobody retries it.
- API-Gateway / Function-URL proxy events ({"body": "<json string>", "isBase64Encoded": ...}):
  the same, wrapped in the proxy response shape those front doors require
  ({"statusCode", "headers", "body": "<json string>"}); returning a bare dict there gives 502.
- Anything unexpected (a bug, out of memory) raises: Lambda reports it as a function error
  (X-Amz-Function-Error: Unhandled), which is what it is.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import torch

from serving.model import BadRequest, build_model, run_v2

# One function = one vCPU-ish slot (2,048 MB is 1.16 vCPU on Lambda): one intra-op thread
# avoids oversubscribing the host when several environments run side by side.
torch.set_num_threads(1)
MODEL = build_model()

BAD_REQUEST_STATUS = 400
_JSON_HEADERS = {"Content-Type": "application/json"}


def _is_proxy_event(event: Any) -> bool:
    return isinstance(event, dict) and "body" in event and "inputs" not in event


def _decode_proxy_body(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if not isinstance(body, str):
        raise BadRequest(f"request: proxy event 'body' must be a JSON string, got {type(body).__name__}")
    try:
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body, validate=True).decode("utf-8")
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"request: proxy event 'body' is not valid JSON ({error})") from None


def _bad_request(message: str) -> dict[str, Any]:
    return {"statusCode": BAD_REQUEST_STATUS, "error": message}


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda entry point: v2 request in, v2 response out (see module docstring)."""
    if _is_proxy_event(event):
        try:
            result = run_v2(MODEL, _decode_proxy_body(event))
            status = 200
        except BadRequest as error:
            result, status = _bad_request(str(error)), BAD_REQUEST_STATUS
        return {"statusCode": status, "headers": _JSON_HEADERS, "body": json.dumps(result)}
    try:
        return run_v2(MODEL, event)
    except BadRequest as error:
        return _bad_request(str(error))
