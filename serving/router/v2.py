"""Checks that a request body is a KServe v2 inference request, without converting its data.

The router forwards the original bytes, so it only needs to know the body is well formed:
JSON, an "inputs" list, each input with a name, a shape of whole numbers >= 0, a datatype and
as many data elements as the shape holds (flat, or nested row-major as the v2 protocol allows).
"""
from __future__ import annotations

import math
from typing import Any

import orjson


class BadRequest(ValueError):
    """The body is not a v2 inference request (one-line message)."""


def _count(data: list) -> int:
    """Elements of a flat or nested list (a nested one is counted recursively)."""
    if not data or not isinstance(data[0], list):
        return len(data)
    return sum(_count(x) if isinstance(x, list) else 1 for x in data)


def check_request(body: bytes) -> dict[str, Any]:
    """Parse and check a v2 inference request body; raises BadRequest."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest("not a v2 inference request: expected a JSON object with a non-empty 'inputs' list")
    for k, tensor in enumerate(request["inputs"]):
        where = f"inputs[{k}]"
        if not isinstance(tensor, dict):
            raise BadRequest(f"{where}: expected an object with name, shape, datatype and data")
        missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
        if missing:
            raise BadRequest(f"{where}: missing {', '.join(missing)}")
        if not isinstance(tensor["name"], str) or not isinstance(tensor["datatype"], str):
            raise BadRequest(f"{where}: name and datatype must be strings")
        shape = tensor["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise BadRequest(f"{where}: shape must be a list of whole numbers >= 0, got {shape!r}"[:200])
        if not isinstance(tensor["data"], list):
            raise BadRequest(f"{where}: data must be a list")
        expected, got = math.prod(shape), _count(tensor["data"])
        if got != expected:
            raise BadRequest(f"{where}: data has {got} elements, shape {shape} holds {expected}")
    return request
