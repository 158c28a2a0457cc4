"""Write a Triton model repository that serves the reference model with the Python backend.

Layout (Triton's standard one):

    <root>/resnet8/config.pbtxt      batching, tensors, instance count
    <root>/resnet8/1/model.py        from the packaged template model_py.txt

The same repository shape runs in the NGC Triton container on GPU hosts; here it runs on the
`tritonserver` binary of the nvidia-pytriton wheel (see serving/triton/server.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import serving
from serving.model import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, OUTPUT_NAME, OUTPUT_SIZE

MODEL_TEMPLATE = "model_py.txt"


class TritonConfigError(ValueError):
    """A TritonModelConfig that Triton would reject (one-line message)."""


@dataclass(frozen=True)
class TritonModelConfig:
    """What config.pbtxt says about batching and parallelism.

    max_queue_delay_ms is how long the dynamic batcher may hold the first request of a batch
    waiting for more (Triton's max_queue_delay_microseconds / 1000). preferred_batch_sizes,
    if given, make the batcher dispatch as soon as one of those sizes is reached. instances
    is the number of model copies (stub processes), each meant to own one core.
    """
    max_batch_size: int = 16
    max_queue_delay_ms: float = 2.0
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise TritonConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not self.max_queue_delay_ms >= 0:
            raise TritonConfigError(f"max_queue_delay_ms must be >= 0, got {self.max_queue_delay_ms}")
        if self.instances < 1:
            raise TritonConfigError(f"instances must be >= 1, got {self.instances}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise TritonConfigError(
                f"preferred_batch_sizes must lie in 1..{self.max_batch_size}, got {list(bad)}")


def _dims(shape: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def render_config_pbtxt(config: TritonModelConfig) -> str:
    """The text of config.pbtxt for the reference model under `config`."""
    delay_us = round(config.max_queue_delay_ms * 1000)
    preferred = (f"\n  preferred_batch_size: {_dims(config.preferred_batch_sizes)}"
                 if config.preferred_batch_sizes else "")
    return f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {config.max_batch_size}
input [
  {{ name: "{INPUT_NAME}", data_type: TYPE_FP32, dims: {_dims(INPUT_SHAPE)} }}
]
output [
  {{ name: "{OUTPUT_NAME}", data_type: TYPE_FP32, dims: {_dims((OUTPUT_SIZE,))} }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}{preferred}
}}
instance_group [
  {{ count: {config.instances}, kind: KIND_CPU }}
]
"""


def render_model_py() -> str:
    """The Python-backend model.py, pointing the stub at the directory that holds `serving`."""
    project_root = str(Path(serving.__file__).resolve().parent.parent)
    template = resources.files("serving.triton").joinpath(MODEL_TEMPLATE).read_text()
    return Template(template).substitute(project_root=repr(project_root))


def write_model_repository(root: Path, config: TritonModelConfig = TritonModelConfig()) -> Path:
    """Write (or overwrite) the repository for the reference model under `root`; return root."""
    root = Path(root)
    version_dir = root / MODEL_NAME / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (root / MODEL_NAME / "config.pbtxt").write_text(render_config_pbtxt(config))
    (version_dir / "model.py").write_text(render_model_py())
    return root
