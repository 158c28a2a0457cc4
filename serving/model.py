"""The reference model served by Triton instances and by functions: a CIFAR-style ResNet-8.

Built in code from a fixed seed, so every process (Triton's Python-backend stub, a function
worker, a test) gets bit-identical weights without downloading anything. Also the KServe v2
JSON codec both serving paths share: `v2_request` builds a request body, `run_v2` validates
one, runs the model and returns the response body.

Size: widths 64/128/256 (1.2 M parameters). Measured on one thread of this 2-core machine
(`torch.set_num_threads(1)`, medians of 10 runs, other jobs sharing the cores): batch 1 takes
~8 ms, batch 4 ~27 ms, batch 16 ~130 ms, i.e. one core serves roughly 120 images/s in full
batches. Width 32 (4 ms / 45 ms) made one instance serve ~350 req/s, and then the per-request
Python work of the router, the function runtime and the load generator on the same two cores
swamped the model; at width 64 the model's compute dominates, as it does for a real model.

Thread count is NOT set here: whoever serves the model (Triton's model.py, the function
handler) calls torch.set_num_threads(1), because one Triton instance = one core and one
function = one vCPU, while importing this module must not change a caller's torch settings.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

MODEL_NAME = "resnet8"
INPUT_NAME = "INPUT"
OUTPUT_NAME = "OUTPUT"
INPUT_SHAPE = (3, 32, 32)
OUTPUT_SIZE = 10
DATATYPE = "FP32"

WEIGHT_SEED = 20190710  # fixed: identical weights in every process
BASE_WIDTH = 64         # chosen by measurement, see module docstring


class BadRequest(ValueError):
    """A v2 inference request that does not match the model's input (one-line message)."""


class _ResidualBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                          nn.BatchNorm2d(out_channels))
            if needs_projection else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


def _randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm non-trivial running statistics, as a trained network would have.

    Fresh BatchNorm has mean 0 / var 1 / weight 1 / bias 0, which makes eval-mode BN an
    identity; random statistics make the reference outputs exercise the whole layer."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))


def build_model() -> nn.Module:
    """ResNet-8 (stem conv + 3 residual blocks of 2 convs + linear = 8 weight layers), eval mode.

    Deterministic: the same weights in every process, whatever the caller's RNG state."""
    w = BASE_WIDTH
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's global RNG
        torch.manual_seed(WEIGHT_SEED)
        model = nn.Sequential(
            nn.Conv2d(INPUT_SHAPE[0], w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            _ResidualBlock(w, w, 1),            # 32x32
            _ResidualBlock(w, 2 * w, 2),        # 16x16
            _ResidualBlock(2 * w, 4 * w, 2),    # 8x8
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, OUTPUT_SIZE),
        )
        generator = torch.Generator().manual_seed(WEIGHT_SEED + 1)
        with torch.no_grad():
            _randomise_batchnorm(model, generator)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def example_inputs(batch: int, seed: int = 0) -> np.ndarray:
    """A deterministic float32 batch [batch, 3, 32, 32] of standard-normal 'images'."""
    if batch < 1:
        raise BadRequest(f"example_inputs: batch must be >= 1, got {batch}")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *INPUT_SHAPE), dtype=np.float32)


def v2_request(batch_inputs: np.ndarray) -> dict[str, Any]:
    """KServe v2 JSON request body for a float32 batch [b, 3, 32, 32]."""
    array = np.asarray(batch_inputs, dtype=np.float32)
    return {"inputs": [{
        "name": INPUT_NAME,
        "shape": list(array.shape),
        "datatype": DATATYPE,
        "data": array.ravel().tolist(),
    }]}


def _batch_from_request(request: Any) -> np.ndarray:
    """Validate a v2 JSON request and return its input as a float32 array [b, 3, 32, 32]."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest("request: expected a JSON object with an 'inputs' list")
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"request: expected exactly 1 input named {INPUT_NAME!r}, got {len(inputs)}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"request: input name must be {INPUT_NAME!r}, got {tensor.get('name')!r}")
    if tensor.get("datatype") != DATATYPE:
        raise BadRequest(f"request: input datatype must be {DATATYPE!r}, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) != 1 + len(INPUT_SHAPE)
            or not all(isinstance(d, int) for d in shape)
            or tuple(shape[1:]) != INPUT_SHAPE or shape[0] < 1):
        raise BadRequest(f"request: input shape must be [b>=1, 3, 32, 32], got {shape!r}")
    data = tensor.get("data")
    expected = int(np.prod(shape))
    if not isinstance(data, list) or len(data) != expected:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise BadRequest(f"request: input data must be a flat list of {expected} numbers, got {got}")
    try:
        return np.asarray(data, dtype=np.float32).reshape(shape)
    except (TypeError, ValueError):
        raise BadRequest("request: input data must contain only numbers") from None


def run_v2(model: nn.Module, request: dict[str, Any]) -> dict[str, Any]:
    """Validate a v2 JSON request, run the model, return the v2 JSON response body."""
    batch = _batch_from_request(request)
    with torch.inference_mode():
        logits = model(torch.from_numpy(batch)).numpy()
    return {
        "model_name": MODEL_NAME,
        "outputs": [{
            "name": OUTPUT_NAME,
            "datatype": DATATYPE,
            "shape": list(logits.shape),
            "data": logits.ravel().tolist(),
        }],
    }
