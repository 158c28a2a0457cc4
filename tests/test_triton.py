"""Real tritonserver (nvidia-pytriton wheel) serving the reference model over loopback HTTP."""
from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from serving import model as ref
from serving.triton import server as triton_server
from serving.triton.repository import TritonConfigError, TritonModelConfig, write_model_repository
from serving.triton.server import TritonError, TritonServer, TritonSpec

TOLERANCE = 1e-4
CONCURRENT_REQUESTS = 32


@pytest.fixture(scope="module")
def reference_model():
    return ref.build_model()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    # A 5 ms queue delay lets the batcher gather the concurrent requests of the batching test.
    repository = write_model_repository(root / "models", TritonModelConfig(max_queue_delay_ms=5.0))
    triton = TritonServer(TritonSpec(repository, log_path=root / "triton.log"))
    try:
        yield triton.start()
    finally:
        triton.stop()


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def logits(response: dict) -> np.ndarray:
    output = response["outputs"][0]
    assert output["name"] == ref.OUTPUT_NAME
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def wait_for_metric(triton: TritonServer, name: str, at_least: float) -> dict[str, float]:
    """Triton updates its counters as responses complete; poll briefly instead of racing."""
    deadline = time.monotonic() + 10.0
    metrics = triton.metrics()
    while metrics.get(name, 0.0) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
        metrics = triton.metrics()
    return metrics


def test_server_is_ready_on_loopback(server):
    assert server.is_ready()
    assert server.url.startswith("127.0.0.1:")
    assert server.infer_url(ref.MODEL_NAME) == f"http://{server.url}/v2/models/resnet8/infer"
    client = triton_http.InferenceServerClient(server.url)
    assert client.is_model_ready(ref.MODEL_NAME)
    client.close()


def test_tritonclient_inference_equals_in_process_model(server, reference_model):
    batch = ref.example_inputs(3, seed=1)
    expected = logits(ref.run_v2(reference_model, ref.v2_request(batch)))
    client = triton_http.InferenceServerClient(server.url)
    infer_input = triton_http.InferInput(ref.INPUT_NAME, list(batch.shape), "FP32")
    infer_input.set_data_from_numpy(batch)
    result = client.infer(ref.MODEL_NAME, [infer_input])
    client.close()
    got = result.as_numpy(ref.OUTPUT_NAME)
    assert got.shape == (3, ref.OUTPUT_SIZE)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_raw_v2_json_post_equals_in_process_model(server, reference_model):
    body = ref.v2_request(ref.example_inputs(2, seed=2))
    response = post_json(server.infer_url(ref.MODEL_NAME), body)
    assert response["model_name"] == ref.MODEL_NAME
    expected = logits(ref.run_v2(reference_model, body))
    np.testing.assert_allclose(logits(response), expected, atol=TOLERANCE, rtol=0)


def test_concurrent_requests_are_batched_dynamically(server):
    before = server.metrics()
    bodies = [ref.v2_request(ref.example_inputs(1, seed=i)) for i in range(CONCURRENT_REQUESTS)]
    with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
        responses = list(pool.map(lambda b: post_json(server.infer_url(ref.MODEL_NAME), b), bodies))
    assert all(logits(r).shape == (1, ref.OUTPUT_SIZE) for r in responses)
    after = wait_for_metric(server, "nv_inference_request_success",
                            before["nv_inference_request_success"] + CONCURRENT_REQUESTS)
    items = after["nv_inference_count"] - before["nv_inference_count"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert items == CONCURRENT_REQUESTS
    assert executions < items, f"no batching: {executions} executions for {items} items"


def test_metrics_expose_triton_counters_by_name(server):
    metrics = server.metrics()
    for name in ("nv_inference_request_success", "nv_inference_queue_duration_us",
                 "nv_inference_exec_count", "nv_inference_count"):
        assert name in metrics
        assert metrics[name] >= 0.0


def test_kill_leaves_no_server_or_stub_process(tmp_path):
    repository = write_model_repository(tmp_path / "models", TritonModelConfig(instances=2))
    triton = TritonServer(TritonSpec(repository, log_path=tmp_path / "triton.log")).start()
    try:
        members = triton_server.process_group_members(triton.pid)
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in members}
        assert "tritonserver" in names
        assert any(n.startswith("triton_python") for n in names), names  # comm is cut at 15 chars
    finally:
        triton.kill()
    alive = [pid for pid in members if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert alive == []
    assert not triton.is_ready()
    triton.stop()  # idempotent after kill


def test_broken_model_repository_fails_fast_with_one_line(tmp_path):
    repository = write_model_repository(tmp_path / "models")
    (repository / ref.MODEL_NAME / "config.pbtxt").write_text("max_batch_size: [not a number\n")
    triton = TritonServer(TritonSpec(repository, log_path=tmp_path / "triton.log",
                                     startup_timeout_s=20.0))
    with pytest.raises(TritonError) as error:
        triton.start()
    message = str(error.value)
    assert "\n" not in message
    assert "exited with code" in message and "triton.log" in message
    assert "config.pbtxt" in message  # the error line that names the cause, not the last lines
    assert triton_server.process_group_members(triton.pid) == []


def test_startup_timeout_kills_the_server(tmp_path):
    repository = write_model_repository(tmp_path / "models")
    triton = TritonServer(TritonSpec(repository, log_path=tmp_path / "triton.log",
                                     startup_timeout_s=0.2))
    with pytest.raises(TritonError, match=r"did not become ready within 0.2 s; last log lines"):
        triton.start()
    assert triton_server.process_group_members(triton.pid) == []


def test_missing_repository_and_missing_wheel_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(TritonError, match="is not a directory"):
        TritonServer(TritonSpec(tmp_path / "nope")).start()
    monkeypatch.setattr(triton_server.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TritonError, match=r"tritonserver not found: install nvidia-pytriton==0.7.0 --no-deps"):
        triton_server.find_tritonserver()


@pytest.mark.parametrize("mutate, problem", [
    (lambda t: t.update(name="IMAGE"), "input name"),
    (lambda t: t.update(datatype="FP16"), "datatype"),
    (lambda t: t.update(shape=[1, 3, 32, 31]), "shape"),
    (lambda t: t.update(data=t["data"][:-1]), "3072 numbers"),
])
def test_run_v2_rejects_bad_requests_in_one_line(reference_model, mutate, problem):
    body = ref.v2_request(ref.example_inputs(1))
    mutate(body["inputs"][0])
    with pytest.raises(ref.BadRequest, match=problem) as error:
        ref.run_v2(reference_model, body)
    assert "\n" not in str(error.value)


def test_model_config_rejects_impossible_batching():
    with pytest.raises(TritonConfigError, match="preferred_batch_sizes"):
        TritonModelConfig(max_batch_size=8, preferred_batch_sizes=(4, 16))
