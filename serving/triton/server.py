"""Start, watch and stop real `tritonserver` processes (the binary of the nvidia-pytriton wheel).

Three facts make that binary run here (see DESIGN.md, "Serving"):
- the Python backend directory must hold the 3.11 `triton_python_backend_stub` beside
  `libtriton_python.so`; we assemble it in a cache folder, never in site-packages;
- LD_LIBRARY_PATH must include this interpreter's LIBDIR (else the stub loads the system
  libpython) and the wheel's bundled libraries (the backend's RPATH is relative to the wheel,
  so it no longer resolves from the cache copy);
- the stub embeds Python and finds its prefix by looking up `python3` on PATH, so the venv's
  bin directory goes first on PATH: that is how the stub sees the venv's torch (without it
  the model fails to load with "No module named 'torch'"; without the wheel's libraries the
  stub cannot load libcudart and Triton waits forever, hence the startup timeout).

Each server runs in its own session (process group): its backend stubs inherit the group,
so stop()/kill() can signal the whole group and then wait until no member is left.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families

PYTRITON_VERSION = "0.7.0"
INSTALL_HINT = f"install nvidia-pytriton=={PYTRITON_VERSION} --no-deps (make install does)"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
POLL_INTERVAL_S = 0.1
LOG_TAIL_LINES = 3
LOG_LINE_CHARS = 300
# Triton error lines start "E1122 18:28:14.398409 ..." (glog), "error: ..." or come from
# protobuf; a stub that cannot start prints the dynamic loader's message.
_ERROR_LINE = re.compile(r"^(E\d{4} |error:|\[libprotobuf ERROR)|error while loading shared libraries")
# Logged at every start on a host without a GPU; never the reason for a failure.
_CPU_HOST_NOISE = "CudaDriverHelper has not been initialized"


class TritonError(RuntimeError):
    """Triton could not be found, started, or reached (one-line message)."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel keeps the server binary, its bundled libraries and the Python backend."""
    binary: Path
    libs_dir: Path
    python_backend_dir: Path
    stub: Path


def find_triton_install() -> TritonInstall:
    """Locate tritonserver inside the installed nvidia-pytriton wheel, without importing it."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonError(f"tritonserver not found: {INSTALL_HINT}")
    package_dir = Path(spec.origin).parent
    dist = package_dir / "tritonserver"
    install = TritonInstall(
        binary=dist / "bin" / "tritonserver",
        libs_dir=package_dir.parent / "nvidia_pytriton.libs",
        python_backend_dir=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub",
    )
    for path in (install.binary, install.python_backend_dir, install.stub):
        if not path.exists():
            raise TritonError(f"tritonserver not found ({path} is missing): {INSTALL_HINT}")
    return install


def find_tritonserver() -> Path:
    """Path of the tritonserver binary, or TritonError naming how to install it."""
    return find_triton_install().binary


def cache_dir() -> Path:
    """Spillway's cache folder: $SPILLWAY_CACHE_DIR, else ~/.cache/spillway."""
    configured = os.environ.get("SPILLWAY_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "spillway"


def prepare_backend_directory(install: TritonInstall, cache_root: Path | None = None) -> Path:
    """Return a --backend-directory whose python/ holds the backend plus our Python's stub.

    Built once per (wheel version, Python version) and reused. It is assembled in a scratch
    directory and renamed into place, so concurrent test processes never see half a copy."""
    root = (cache_root or cache_dir()) / "triton-backends"
    target = root / f"pytriton-{PYTRITON_VERSION}-py{PYTHON_VERSION}"
    if (target / "python" / install.stub.name).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        backend = scratch / "python"
        shutil.copytree(install.python_backend_dir, backend,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(install.stub, backend / install.stub.name)
        try:
            scratch.rename(target)
        except OSError:  # another process won the race; its copy is identical
            if not (target / "python" / install.stub.name).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _server_environment(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    library_path = [libdir, str(install.libs_dir)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(library_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_loopback_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together so they differ).

    The OS may hand a port to someone else between our close and Triton's bind; startup then
    fails with a clear TritonError naming the log, and the caller may simply retry."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def process_group_members(pgid: int) -> list[int]:
    """PIDs of live (non-zombie) processes in process group `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may contain spaces or ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class TritonSpec:
    """How to launch one tritonserver. Ports 0 mean "pick a free loopback port"."""
    model_repository: Path
    http_port: int = 0
    metrics_port: int = 0
    log_path: Path | None = None
    startup_timeout_s: float = 120.0
    cpus: tuple[int, ...] = ()     # CPU affinity of the server and its backend stubs; () = any CPU


class TritonServer:
    """One real tritonserver process serving `spec.model_repository` on loopback HTTP."""

    def __init__(self, spec: TritonSpec) -> None:
        self.spec = spec
        self._process: subprocess.Popen | None = None
        self._http_port = spec.http_port
        self._metrics_port = spec.metrics_port
        self.log_path: Path | None = spec.log_path

    # --- addresses -------------------------------------------------------------------------

    def _require_started(self) -> subprocess.Popen:
        if self._process is None:
            raise TritonError("tritonserver has not been started: call start() first")
        return self._process

    @property
    def url(self) -> str:
        """host:port of the HTTP endpoint (the form tritonclient.http expects)."""
        self._require_started()
        return f"127.0.0.1:{self._http_port}"

    def infer_url(self, model: str) -> str:
        return f"http://{self.url}/v2/models/{model}/infer"

    @property
    def metrics_url(self) -> str:
        self._require_started()
        return f"http://127.0.0.1:{self._metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> "TritonServer":
        if self._process is not None:
            raise TritonError(f"tritonserver already started (pid {self._process.pid})")
        repository = Path(self.spec.model_repository)
        if not repository.is_dir():
            raise TritonError(f"model repository {repository} is not a directory")
        install = find_triton_install()
        backend_dir = prepare_backend_directory(install)
        picked = iter(free_loopback_ports(2))
        self._http_port = self.spec.http_port or next(picked)
        self._metrics_port = self.spec.metrics_port or next(picked)
        if self.log_path is None:
            self.log_path = Path(tempfile.mkdtemp(prefix="spillway-triton-")) / "tritonserver.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(install.binary),
            f"--model-repository={repository.resolve()}",
            f"--backend-directory={backend_dir}",
            "--http-address=127.0.0.1", f"--http-port={self._http_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self._metrics_port}",
            "--allow-grpc=false", "--allow-gpu-metrics=false",
            "--exit-on-error=true", "--exit-timeout-secs=5",
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_server_environment(install), start_new_session=True,
                preexec_fn=_affinity(self.spec.cpus))
        try:
            self._wait_until_ready(repository)
        except BaseException:
            self.kill()
            raise
        return self

    def _model_names(self, repository: Path) -> list[str]:
        return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))

    def _wait_until_ready(self, repository: Path) -> None:
        process = self._require_started()
        models = self._model_names(repository)
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TritonError(f"tritonserver exited with code {process.returncode} during "
                                  f"startup; last log lines: {self._log_tail()}")
            if self.is_ready(models):
                return
            time.sleep(POLL_INTERVAL_S)
        raise TritonError(f"tritonserver did not become ready within {self.spec.startup_timeout_s:g} s; "
                          f"last log lines: {self._log_tail()}")

    def is_ready(self, models: list[str] | None = None) -> bool:
        """Server live and ready, and each model (default: all in the repository) ready."""
        if self._process is None or self._process.poll() is not None:
            return False
        if models is None:
            models = self._model_names(Path(self.spec.model_repository))
        try:
            client = triton_http.InferenceServerClient(self.url, connection_timeout=2.0,
                                                       network_timeout=2.0)
            try:
                return client.is_server_ready() and all(client.is_model_ready(m) for m in models)
            finally:
                client.close()
        except Exception:  # refused / reset while starting: simply "not ready yet"
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server (it unloads models and ends its stubs), SIGKILL what remains."""
        process = self._process
        if process is None or self._group_gone(process):
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group(process)

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (for failure tests); waits until gone."""
        process = self._process
        if process is None or self._group_gone(process):
            return
        self._kill_group(process)

    def _group_gone(self, process: subprocess.Popen) -> bool:
        return process.poll() is not None and not process_group_members(process.pid)

    def _kill_group(self, process: subprocess.Popen, timeout_s: float = 10.0) -> None:
        # start_new_session made the server the leader of a group whose id is its pid.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        deadline = time.monotonic() + timeout_s
        while process_group_members(process.pid):
            if time.monotonic() > deadline:
                raise TritonError(f"processes of tritonserver group {process.pid} survived SIGKILL: "
                                  f"{process_group_members(process.pid)}")
            time.sleep(0.02)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- observation -----------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Triton's Prometheus metrics by the name Triton exports, summed over labels.

        E.g. nv_inference_count (items inferred) and nv_inference_exec_count (model
        executions): with dynamic batching the first grows faster than the second.
        Histogram buckets and summary quantiles are left out (a sum over their `le` or
        `quantile` labels means nothing); their _count and _sum samples are kept."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5.0) as response:
                text = response.read().decode()
        except OSError as error:
            raise TritonError(f"cannot read Triton metrics at {self.metrics_url}: {error}") from None
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if "le" in sample.labels or "quantile" in sample.labels:
                    continue
                # The parser renames counter samples to <name>_total; Triton's name has no suffix.
                name = family.name if sample.name == family.name + "_total" else sample.name
                totals[name] = totals.get(name, 0.0) + sample.value
        return totals

    def _log_tail(self) -> str:
        """The log's last error lines (else its last lines), joined into one line."""
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines()]
        except OSError:
            return f"(no log at {self.log_path})"
        errors = [line for line in lines if _ERROR_LINE.search(line) and _CPU_HOST_NOISE not in line]
        tail = (errors or [line for line in lines if line])[-LOG_TAIL_LINES:]
        shortened = [line if len(line) <= LOG_LINE_CHARS else line[:LOG_LINE_CHARS] + "..."
                     for line in tail]
        return " | ".join(shortened) + f" (full log: {self.log_path})"


def _affinity(cpus: tuple[int, ...]):
    """A preexec_fn pinning the new process (and so the backend stubs it spawns) to `cpus`."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)
