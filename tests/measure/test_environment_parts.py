"""The machine description part by part (issue 40, `make mutate` survivors of measure/environment.py): the busy
share read from /proc/stat and its warning's edge, the CPU's name, a GPU's UUID and description, the device's file
name, every refusal of --device, and why torch cannot use a GPU the driver shows."""

from __future__ import annotations

import io
import types
from collections.abc import Iterator

import pytest
import torch

import layerprof.measure.environment as environment
from layerprof.errors import LayerprofError
from layerprof.profile import EnvironmentInfo


def _files(monkeypatch: pytest.MonkeyPatch, contents: dict[str, list[str]]) -> None:
    """`open` inside the module reads the given texts, one per call for each path, in order."""
    queues = {path: iter(texts) for path, texts in contents.items()}

    def fake_open(path: str, *args: object, **kwargs: object) -> io.StringIO:
        if path not in queues:
            raise OSError(2, "No such file", path)
        return io.StringIO(next(queues[path]))

    monkeypatch.setattr(environment, "open", fake_open, raising=False)


def test_the_busy_share_is_the_non_idle_share_of_the_cpu_time_between_two_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """user nice system idle iowait ...: totals 1000 -> 1800 (800), idle + iowait 800 -> 1500 (700): 1 - 7/8."""
    slept: list[float] = []
    monkeypatch.setattr(environment.time, "sleep", slept.append)
    first, second = "cpu  100 0 100 700 100 0 0 0\ncpu0 1 2 3 4\n", "cpu  150 0 150 1300 200 0 0 0\n"
    _files(monkeypatch, {"/proc/stat": [first, second]})
    assert environment.cpu_busy_share() == pytest.approx(0.125) and slept == [0.3]
    _files(monkeypatch, {"/proc/stat": ["cpu 1 0 1 8\n", "cpu 1 0 3 10\n"]})  # no iowait column: idle alone
    assert environment.cpu_busy_share() == pytest.approx(0.5)
    _files(monkeypatch, {"/proc/stat": ["cpu 1 0 1 8 2\n", "cpu 1 0 3 10 4\n"]})  # iowait, the fifth, is idle too
    assert environment.cpu_busy_share() == pytest.approx(1 - 4 / 6)  # totals 12 -> 18, idle 10 -> 14
    _files(monkeypatch, {"/proc/stat": [first, first]})  # no time passed: no share
    assert environment.cpu_busy_share() is None
    _files(monkeypatch, {"/proc/stat": [first, "cpu x\n"]})
    assert environment.cpu_busy_share() is None
    _files(monkeypatch, {})
    assert environment.cpu_busy_share() is None


@pytest.mark.parametrize(("share", "warned"), [(0.25, True), (0.2499, False), (None, False)])
def test_a_machine_is_busy_from_a_quarter_of_its_cpu_time(
    monkeypatch: pytest.MonkeyPatch, share: float | None, warned: bool
) -> None:
    monkeypatch.setattr(environment, "cpu_busy_share", lambda seconds=0.3: share)
    reason = environment.busy_machine_reason(torch.device("cpu"))
    if warned:
        assert reason == "other work kept the CPUs 25% busy as the sweep started; its step times will carry that"
    else:
        assert reason is None


def test_a_gpu_shared_with_other_processes_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprof.measure.nvml as nvml

    asked: list[str | None] = []
    monkeypatch.setattr(environment, "gpu_uuid", lambda device: "GPU-1234")
    monkeypatch.setattr(nvml, "other_gpu_processes", lambda uuid: asked.append(uuid) or 2)
    reason = environment.busy_machine_reason(torch.device("cuda", 0))
    assert reason == "2 other process(es) use the GPU; their work lands in the step times" and asked == ["GPU-1234"]
    monkeypatch.setattr(nvml, "other_gpu_processes", lambda uuid: 0)
    assert environment.busy_machine_reason(torch.device("cuda", 0)) is None


def test_the_cpu_name_is_the_first_model_name_line(monkeypatch: pytest.MonkeyPatch) -> None:
    info = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Fancy CPU 9000 @ 2.0GHz: rev 1\nmodel name\t: Other\n"
    _files(monkeypatch, {"/proc/cpuinfo": [info]})
    assert environment.cpu_name() == "Fancy CPU 9000 @ 2.0GHz: rev 1"
    _files(monkeypatch, {})
    monkeypatch.setattr(environment.platform, "processor", lambda: "")
    monkeypatch.setattr(environment.platform, "machine", lambda: "x86_64")
    assert environment.cpu_name() == "x86_64"
    _files(monkeypatch, {"/proc/cpuinfo": ["processor\t: 0\n"]})
    monkeypatch.setattr(environment.platform, "processor", lambda: "arm")
    assert environment.cpu_name() == "arm"


def test_the_cpu_memory_is_pages_times_page_size(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1000}
    monkeypatch.setattr(environment.os, "sysconf", lambda name: values[name])
    assert environment._cpu_memory_bytes() == 4_096_000

    def refuse(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(environment.os, "sysconf", refuse)
    assert environment._cpu_memory_bytes() is None


@pytest.fixture
def h100(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=85 * 2**30, major=9, minor=0, uuid="ab-12")
    monkeypatch.setattr(environment.torch.cuda, "get_device_properties", lambda device: props)
    yield props


def test_a_gpus_uuid_is_spelled_as_nvml_spells_it(h100: types.SimpleNamespace) -> None:
    device = torch.device("cuda", 0)
    assert environment.gpu_uuid(device) == "GPU-ab-12"
    for spelled in ("GPU-ab-12", "MIG-ab-12"):
        h100.uuid = spelled
        assert environment.gpu_uuid(device) == spelled
    h100.uuid = None
    assert environment.gpu_uuid(device) is None


def test_a_gpu_is_described_by_its_properties_and_its_driver(
    monkeypatch: pytest.MonkeyPatch, h100: types.SimpleNamespace
) -> None:
    asked: list[str | None] = []

    def facts(uuid: str | None) -> dict[str, object]:
        asked.append(uuid)
        return {"driver_version": "580.1", "cuda_driver_version": "13.0", "mig_enabled": False}

    monkeypatch.setattr(environment, "driver_facts", facts)
    monkeypatch.setattr(environment.torch.version, "cuda", "12.8")
    info = environment.describe_environment(torch.device("cuda", 0))
    assert (info.device_kind, info.device_name, info.total_memory_bytes) == ("cuda", h100.name, 85 * 2**30)
    assert (info.cuda_version, info.compute_capability, info.gpu_uuid) == ("12.8", "9.0", "GPU-ab-12")
    assert (info.driver_version, info.cuda_driver_version, info.mig_enabled) == ("580.1", "13.0", False)
    assert asked == ["GPU-ab-12"] and info.cpu_name == environment.cpu_name()
    assert environment.device_slug(info) == "nvidia-h100-80gb-hbm3"


def test_the_cpu_is_described_without_gpu_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "cpu_name", lambda: "Fancy CPU")
    monkeypatch.setattr(environment, "_cpu_memory_bytes", lambda: 123)
    info = environment.describe_environment(torch.device("cpu"))
    described = (info.device_kind, info.device_name, info.cpu_name, info.total_memory_bytes)
    assert described == ("cpu", "Fancy CPU", "Fancy CPU", 123)
    assert info.driver_version is None and info.gpu_uuid is None and info.compute_capability is None
    assert info.torch_threads == torch.get_num_threads()
    assert environment.device_slug(info) == "cpu"


def test_the_cpus_this_process_may_use_are_recorded_sorted(two_cpus: list[tuple[int, set[int]]]) -> None:
    assert environment.describe_environment(torch.device("cpu")).cpu_affinity == [0, 1]


@pytest.mark.parametrize(
    ("name", "slug"), [("NVIDIA A100-SXM4-80GB", "nvidia-a100-sxm4-80gb"), ("  L4  ", "l4"), ("!!!", "cuda")]
)
def test_a_gpus_file_name_is_its_name_lower_case_with_dashes(name: str, slug: str) -> None:
    info = EnvironmentInfo(device_kind="cuda", device_name=name)
    assert environment.device_slug(info) == slug


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tpu", "unknown --device 'tpu'; use auto, cpu, cuda or cuda:N"),
        ("meta", "--device 'meta' is not supported; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_device_torch_does_not_know_or_layerprof_does_not_measure_is_refused(name: str, message: str) -> None:
    with pytest.raises(LayerprofError) as refused:
        environment.resolve_device(name)
    assert str(refused.value) == message


def test_cuda_devices_are_counted_at_their_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs: cuda:1 is the last good one, cuda:2 the first bad; bare `cuda` is the current device."""
    monkeypatch.setattr(environment.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(environment.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(environment.torch.cuda, "current_device", lambda: 1)
    assert environment.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert environment.resolve_device("cuda") == torch.device("cuda", 1)
    assert environment.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(LayerprofError, match=r"^--device cuda:2: only 2 CUDA device\(s\) here$"):
        environment.resolve_device("cuda:2")


@pytest.mark.parametrize(
    ("gpus", "build", "reason"),
    [
        (None, None, "torch {version} is a CPU-only build and no NVIDIA driver answers"),
        (0, None, "torch {version} is a CPU-only build and no NVIDIA driver answers"),
        (None, "12.8", None),
        (2, None, "the NVIDIA driver shows 2 GPU(s) but torch {version} is a CPU-only build"),
        (
            1,
            "13.0",
            "the NVIDIA driver shows 1 GPU(s) but torch {version} (built for CUDA 13.0) cannot use them: driver 535.1 "
            "supports CUDA up to 12.2 (a CUDA 13 wheel needs an R580+ driver)",
        ),
    ],
)
def test_why_torch_cannot_use_a_gpu(
    monkeypatch: pytest.MonkeyPatch, gpus: int | None, build: str | None, reason: str | None
) -> None:
    monkeypatch.setattr(environment.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(environment, "gpus_the_driver_sees", lambda: gpus)
    monkeypatch.setattr(environment.torch.version, "cuda", build)
    facts = {"driver_version": "535.1", "cuda_driver_version": "12.2"}
    monkeypatch.setattr(environment, "driver_facts", lambda uuid: facts if uuid is None else {})
    expected = None if reason is None else reason.format(version=torch.__version__)
    assert environment.cuda_unusable_reason() == expected
    if reason is None:
        assert environment.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(LayerprofError, match="^--device cuda: CUDA is not available here$"):
            environment.resolve_device("cuda")


def test_tf32_is_set_for_matmuls_and_convolutions_together_and_none_leaves_both() -> None:
    matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        environment.apply_tf32(True)
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == ("high", True)
        assert environment.numeric_settings()["matmul_tf32"] is True
        environment.apply_tf32(None)
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == ("high", True)
        environment.apply_tf32(False)
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == ("highest", False)
        settings = environment.numeric_settings()
        assert settings["matmul_tf32"] is False and settings["float32_matmul_precision"] == "highest"
        assert settings["cudnn_conv_tf32"] is False
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = conv


def test_dynamo_limits_are_raised_to_the_entries_asked_and_put_back() -> None:
    import torch._dynamo

    before = environment.dynamo_cache_limits()
    assert before and set(before) <= set(environment.DYNAMO_CACHE_LIMITS)
    name = next(iter(before))
    with environment.ProcessSettings(compile_cache_entries=before[name] + 5).applied():
        assert getattr(torch._dynamo.config, name) == before[name] + 5
    assert environment.dynamo_cache_limits() == before
    environment.set_dynamo_cache_limits({})  # nothing given: nothing set
    assert environment.dynamo_cache_limits() == before


def test_the_numeric_settings_are_recorded_under_the_names_check_compares() -> None:
    settings = environment.numeric_settings()
    assert list(settings) == [
        "float32_matmul_precision",
        "matmul_tf32",
        "cudnn_conv_tf32",
        "cudnn_benchmark",
        "cudnn_deterministic",
        "deterministic_algorithms",
    ]
    assert settings["cudnn_benchmark"] is bool(torch.backends.cudnn.benchmark)
    assert settings["deterministic_algorithms"] is torch.are_deterministic_algorithms_enabled()


class _Convolutions:
    fp32_precision = "tf32"


class _NewCudnnApi:
    """torch >= 2.9 once the new API was used: the old flag refuses to be read."""

    conv = _Convolutions()

    @property
    def allow_tf32(self) -> bool:
        raise RuntimeError("you have used the new fp32_precision API")

    @allow_tf32.setter
    def allow_tf32(self, value: bool) -> None:  # the suite's per-test restoring sets it
        pass


def test_convolution_tf32_is_read_from_the_new_api_where_the_old_flag_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment.torch.backends, "cudnn", _NewCudnnApi())
    assert environment._cudnn_conv_tf32() is True
    monkeypatch.setattr(_Convolutions, "fp32_precision", "ieee")
    assert environment._cudnn_conv_tf32() is False


def test_the_cpus_a_run_moved_to_are_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever ran inside moved the process to CPU 1 of {0, 1}: leaving puts it back on both (set once)."""
    state = {"cpus": {0, 1}, "sets": 0}

    def set_cpus(pid: int, cpus: set[int]) -> None:
        state["cpus"], state["sets"] = set(cpus), state["sets"] + 1

    monkeypatch.setattr(environment.os, "sched_getaffinity", lambda pid: set(state["cpus"]) if pid == 0 else {0, 1, 2})
    monkeypatch.setattr(environment.os, "sched_setaffinity", set_cpus)
    with environment.ProcessSettings().applied():
        environment.os.sched_setaffinity(0, {1})
    assert state == {"cpus": {0, 1}, "sets": 2}
    with environment.ProcessSettings().applied():  # unchanged: nothing set
        pass
    assert state["sets"] == 2


def test_tf32_changed_inside_is_put_back() -> None:
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    with environment.ProcessSettings().applied():
        environment.apply_tf32(not before[1])
        assert torch.backends.cudnn.allow_tf32 is (not before[1])
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, set[int]]]:
    """A process that may run on CPUs {0, 1} of a 2-CPU machine (another process's: {0, 1, 2}); the calls that set
    affinity, with the process id they name."""
    calls: list[tuple[int, set[int]]] = []
    state = {"cpus": {0, 1}}

    def set_cpus(pid: int, cpus: set[int]) -> None:
        calls.append((pid, set(cpus)))
        if not set(cpus) <= {0, 1}:
            raise OSError(22, "Invalid argument")
        state["cpus"] = set(cpus)

    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(environment.os, "sched_getaffinity", lambda pid: set(state["cpus"]) if pid == 0 else {0, 1, 2})
    monkeypatch.setattr(environment.os, "sched_setaffinity", set_cpus)
    return calls


def test_cpus_set_this_process_and_are_put_back(two_cpus: list[tuple[int, set[int]]]) -> None:
    with environment.ProcessSettings(cpus=(1,)).applied():
        assert environment.os.sched_getaffinity(0) == {1}
    assert two_cpus == [(0, {1}), (0, {0, 1})]


def test_cpus_this_process_may_not_use_name_the_ones_it_may(
    two_cpus: list[tuple[int, set[int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 3)
    with pytest.raises(LayerprofError) as refused:
        environment.apply_threads(None, (2,))
    assert str(refused.value) == "--cpus 2: Invalid argument; this process may run on CPUs 0,1"


def test_a_machine_whose_cpu_count_is_unknown_has_one_cpu(
    two_cpus: list[tuple[int, set[int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment.os, "cpu_count", lambda: None)
    with pytest.raises(LayerprofError, match=r"^--cpus 1 does not exist; this machine has CPUs 0\.\.0$"):
        environment.apply_threads(None, (1,))
    environment.apply_threads(None, (0,))
    assert two_cpus == [(0, {0})]
