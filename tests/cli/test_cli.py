"""The command line end to end on tiny configurations, and every bad input it must refuse in one line."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.profile import load_profile

# pythia-14m's 50k-token head dominates its step; where the vocabulary is not the point, a small one is set
SMALL_VOCAB = ["--set", "padded_vocab_size=512"]
TINY_LM = ["pythia-14m", "--seq-len", "16", *SMALL_VOCAB]
FAST = ["--warmup", "1", "--min-steps", "3", "--steps", "3"]  # exactly 3 measured steps per cell


def run(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str, exit_code: int = 2) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_profile_end_to_end_writes_json_csv_and_tables(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    result = run(runner, "profile", *TINY_LM, "--batch-sizes", "1,2", "--layers", "1,9", *FAST, "--out", str(out))
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    assert profile.complete
    assert [(r.batch_size, r.trainable_layers) for r in profile.rows] == [(1, 1), (1, 9), (2, 1), (2, 9)]
    for row in profile.rows:
        assert row.status == "ok"
        assert row.step_time_ms > 0 and row.peak_memory_bytes > 0 and row.flops > 0
        assert row.measured_steps == 3 * row.visits  # 3 a visit; a busy machine may add visits
        assert row.throughput_per_s == pytest.approx(row.batch_size * 16 / (row.step_time_ms / 1000))
    for batch_size in (1, 2):
        low, full = profile.row(batch_size, 1), profile.row(batch_size, 9)
        assert low.trainable_params < full.trainable_params
        assert low.peak_memory_bytes < full.peak_memory_bytes and low.flops < full.flops
    assert [layer.name for layer in profile.model.layers][-1] == "lm_head"
    assert profile.workload.seq_len == 16 and profile.environment.device_kind == "cpu"
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("batch_size,trainable_layers,status")
    assert "batch 2" in result.output and "peak MiB" in result.output


def test_quick_profile_takes_the_doubling_cells_and_a_short_protocol_except_what_is_written(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "quick.json"
    result = run(runner, "profile", *TINY_LM, "--batch-sizes", "1", "--quick", "--min-steps", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    assert [row.trainable_layers for row in profile.rows] == [1, 2, 4, 8, 9]  # doubling, and n = 9
    settings = profile.settings
    assert (settings.warmup_steps, settings.min_steps, settings.max_steps) == (3, 3, 10)  # --min-steps as written
    assert settings.max_time_s == 120.0
    # at least --min-steps, at most --steps per visit; a busy machine adds visits (their count is the load's, not
    # the protocol's): every visit is in visit_medians_ms
    assert all(row.status == "ok" for row in profile.rows)
    assert all(3 <= row.measured_steps <= 10 * len(row.visit_medians_ms) for row in profile.rows)


def test_profile_markdown_tables(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "md.json"
    result = run(runner, "profile", *TINY_LM, "--batch-sizes", "1", "--layers", "9", *FAST, "--format", "md",
                 "--out", str(out), "--optimizer", "sgd")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| z | trainable % | step ms | × full | peak MiB | × full | GFLOPs | status |" in result.output
    assert load_profile(out).settings.optimizer == "sgd"


def test_layers_json_and_table(runner: CliRunner) -> None:
    result = run(runner, "layers", "resnet18", "--json")
    assert result.exit_code == 0, result.output
    layers = json.loads(result.output)
    assert len(layers) == 11
    assert {"index", "name", "type", "params"} <= set(layers[0])
    result = run(runner, "layers", "paper-gpt-14m")
    assert result.exit_code == 0 and "lm_head" in result.output and "transformer.wte" in result.output


def test_models_lists_every_source(runner: CliRunner) -> None:
    result = run(runner, "models", "--json")
    assert result.exit_code == 0
    names = json.loads(result.output)
    assert set(names) == {"preset", "torchvision", "litgpt", "timm", "hf"}  # timm and hf are dev dependencies
    assert "paper-gpt-14m" in names["preset"] and "resnet18" in names["torchvision"]
    assert "pythia-1.4b" in names["litgpt"]
    # timm and hf names are listed as they are accepted, with their prefix: each copies into a command
    assert all(name.startswith("timm:") for name in names["timm"]) and "timm:convnext_atto" in names["timm"]
    assert all(name.startswith("hf:") for name in names["hf"]) and "hf:gpt2" in names["hf"]
    assert run(runner, "layers", "timm:convnext_atto", "--json").exit_code == 0
    assert_one_line_error(run(runner, "layers", "convnext_atto"), "model 'convnext_atto' is a timm name: give timm:")


def test_prefix_disambiguates(runner: CliRunner) -> None:
    assert run(runner, "layers", "torchvision:resnet18", "--json").exit_code == 0
    assert run(runner, "layers", "litgpt:pythia-14m", "--json").exit_code == 0
    assert_one_line_error(run(runner, "layers", "litgpt:resnet18"), "unknown LitGPT config")


def write_factory(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "factory.py"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["layers", "resnet19"], ["unknown model 'resnet19'", "resnet18"]),
        (["layers", "missing_dir/model.py:make"], ["does not exist"]),
        (["profile", *TINY_LM, "--layers", "0"], ["--layers 0 is outside 1..9"]),
        (["profile", *TINY_LM, "--layers", "5-12"], ["outside 1..9"]),
        (["profile", *TINY_LM, "--layers", "two"], ["--layers expects"]),
        (["profile", *TINY_LM, "--batch-sizes", "0"], ["--batch-sizes expects positive integers"]),
        (["profile", *TINY_LM, "--batch-sizes", "8,x"], ["--batch-sizes"]),
        (["layers", "pythia-14m", "--set", "n_layer"], ["--set expects KEY=VALUE"]),
        (["layers", "pythia-14m", "--set", "n_layrs=3"], ["not a litgpt.Config field", "n_layer"]),
        (["layers", "pythia-14m", "--set", "n_layer=abc"], ["--set n_layer: expects an integer, got 'abc'"]),
        (["layers", "pythia-14m", "--set", "bias=maybe"], ["--set bias: expects true or false, got 'maybe'"]),
        (["layers", "resnet18", "--input-shape", "3,x,32"], ["--input-shape expects positive integers"]),
        (["layers", "resnet18", "--input-shape", "3,32"], ["must be C,H,W"]),
        (["layers", "pythia-14m", "--seq-len", "100000"], ["--seq-len must be in 1..512"]),
        (["profile", *TINY_LM, "--min-steps", "9", "--steps", "3"], ["--min-steps 9 exceeds --steps 3"]),
        (["profile", *TINY_LM, "--device", "tpu"], ["--device"]),
        (["profile", *TINY_LM, "--warmup", "0"], ["--warmup 0", "at least 1 warm-up step"]),
        (["models", "--source", "hub"], ["--source 'hub'"]),
    ],
)
def test_bad_input_is_one_line_and_nonzero(runner: CliRunner, args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run(runner, *args), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_cuda_without_cuda(runner: CliRunner) -> None:
    assert_one_line_error(run(runner, "profile", *TINY_LM, "--device", "cuda"), "CUDA is not available")


def test_unwritable_output(runner: CliRunner, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(run(runner, "profile", *TINY_LM, "--out", str(blocker / "p.json")), "cannot write")


def test_factory_that_raises_or_lacks_the_function(runner: CliRunner, tmp_path: Path) -> None:
    path = write_factory(
        tmp_path,
        """
        def make():
            raise ValueError("boom")
        """,
    )
    assert_one_line_error(run(runner, "layers", f"{path}:make"), "raised ValueError: boom")
    assert_one_line_error(run(runner, "layers", f"{path}:mkae"), "no callable 'mkae'", "make")
    broken = tmp_path / "broken.py"
    broken.write_text("this is not python(")
    assert_one_line_error(run(runner, "layers", f"{broken}:make"), "importing", "SyntaxError")
    assert_one_line_error(run(runner, "layers", "no_such_package_xyz.models:make"), "cannot import module")


def test_example_factories_profile(runner: CliRunner, tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "custom_model.py"
    result = run(runner, "profile", f"{example}:mlp", "--input-shape", "64", "--num-classes", "10",
                 "--batch-sizes", "4", "--layers", "1,8", *FAST, "--out", str(tmp_path / "mlp.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert all(row.ok for row in load_profile(tmp_path / "mlp.json").rows)
    result = run(runner, "profile", f"{example}:regression_task", "--set", "width=64", "--unwrap", "ResidualBlock",
                 "--batch-sizes", "4", "--layers", "1", *FAST, "--out", str(tmp_path / "reg.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    profile = load_profile(tmp_path / "reg.json")
    assert profile.layer_count == 14 and profile.model.overrides == {"width": 64}


OOM_FACTORY = """
import torch
from torch import nn
from layerprof import CustomWorkload

def make():
    model = nn.Sequential(*(nn.Linear(8, 8) for _ in range(4)))

    def make_batch(batch_size, device):
        return torch.randn(batch_size, 8, device=device)

    def loss(model, batch):
        trainable = sum(p.requires_grad for p in model.parameters())
        if batch.shape[0] >= 4 and trainable >= 4:  # z >= 2 (two tensors per layer) at batch >= 4
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(batch).pow(2).mean()

    return CustomWorkload(model=model, make_batch=make_batch, loss=loss)
"""


def test_out_of_memory_marks_the_cell_and_skips_larger_z(runner: CliRunner, tmp_path: Path) -> None:
    path = write_factory(tmp_path, OOM_FACTORY)
    out = tmp_path / "oom.json"
    result = run(runner, "profile", f"{path}:make", "--batch-sizes", "2,4", *FAST, "--out", str(out))
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    statuses = {(r.batch_size, r.trainable_layers): r.status for r in profile.rows}
    assert statuses == {
        (2, 1): "ok", (2, 2): "ok", (2, 3): "ok", (2, 4): "ok",
        (4, 1): "ok", (4, 2): "oom", (4, 3): "skipped", (4, 4): "skipped",
    }  # fmt: skip
    assert "out of memory" in profile.row(4, 2).message
    assert profile.complete


INTERRUPT_FACTORY = """
import torch
from torch import nn
from layerprof import CustomWorkload

calls = []

def make():
    model = nn.Sequential(*(nn.Linear(8, 8) for _ in range(4)))

    def make_batch(batch_size, device):
        return torch.randn(batch_size, 8, device=device)

    def loss(model, batch):
        calls.append(1)
        # 1 call traces the split; each cell then runs 1 warm-up, 1 timed and 1 instrumented step: stop in the
        # third cell
        if len(calls) == 8:
            raise KeyboardInterrupt
        return model(batch).pow(2).mean()

    return CustomWorkload(model=model, make_batch=make_batch, loss=loss)
"""


def test_interrupt_marks_unfinished_cells_exits_130_and_the_same_command_resumes(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = write_factory(tmp_path, INTERRUPT_FACTORY)
    out = tmp_path / "interrupted.json"
    command = ["profile", f"{path}:make", "--batch-sizes", "2", "--warmup", "1", "--min-steps", "1", "--steps", "1",
               "--out", str(out)]  # fmt: skip
    result = run(runner, *command)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "rerun the same command to resume" in result.output
    profile = load_profile(out)
    assert not profile.complete
    # the cell the interrupt hit and the one after it are there, unfinished: the profile names every planned cell
    assert [(r.trainable_layers, r.status) for r in profile.rows] == [
        (1, "ok"), (2, "ok"), (3, "unfinished"), (4, "unfinished"),
    ]  # fmt: skip
    assert profile.unfinished_cells() == [(2, 3), (2, 4)]
    # --restart measures every cell anew: the fresh factory counter stops it in the third cell again (resumed, the
    # two cells left would take 7 calls and finish)
    result = run(runner, *command, "--restart")
    assert result.exit_code == 130, result.output
    assert "resuming" not in result.output
    profile = load_profile(out)
    kept = {z: profile.row(2, z).step_time_ms for z in (1, 2)}
    # the same command again measures only the two cells left
    result = run(runner, *command)
    assert result.exit_code == 0, result.output
    assert "resuming the interrupted" in result.output and "2 finished cell(s) kept, 2 to measure" in result.output
    resumed = load_profile(out)
    assert resumed.complete and [r.status for r in resumed.rows] == ["ok"] * 4
    assert {z: resumed.row(2, z).step_time_ms for z in (1, 2)} == kept  # kept, not measured again
    assert resumed.created_at == profile.created_at


def test_help_is_available_for_every_command(runner: CliRunner) -> None:
    for command in ([], ["profile"], ["layers"], ["models"]):
        result = run(runner, *command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output
    bare = run(runner)  # `layerprof` alone shows the help, and exits 2 as Click does for a missing command
    assert bare.exit_code == 2 and "Usage" in bare.output and "error:" not in bare.output
    assert run(runner, "--version").output.startswith("layerprof ")


@pytest.fixture(scope="module")
def measured_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ladder") / "pythia.json"
    result = CliRunner().invoke(app, ["profile", *TINY_LM, "--batch-sizes", "2", *FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ladder ·" in result.output  # the recommended ladder follows every profile
    return out


def test_ladder_cli_on_a_measured_profile(runner: CliRunner, measured_profile: Path) -> None:
    result = run(runner, "ladder", str(measured_profile), "--eta", "2", "--cost", "flops", "--json",
                 "--configs", "16", "--budget-steps", "400", "--gpu-memory", "16GiB")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    zs = [rung["trainable_layers"] for rung in data["rungs"]]
    assert zs[-1] == 9 and zs == sorted(set(zs))
    costs = [rung["cost"] for rung in data["rungs"]]
    assert costs == sorted(costs)
    assert data["successive_halving"]["configs_per_rung"][0] == 16
    assert data["joint"]["budget_steps"] == 400
    top = len(zs) - 1
    assert [rung["steps"] for rung in data["rungs"]] == [max(1, round(400 / 2 ** (top - i))) for i in range(len(zs))]
    assert all(rung["parallel_slots"] >= 1 for rung in data["rungs"])
    table = run(runner, "ladder", str(measured_profile), "--eta", "2", "--cost", "flops")
    assert table.exit_code == 0 and "ladder ·" in table.output
    snippet = run(runner, "ladder", str(measured_profile), "--eta", "2", "--cost", "flops", "--export", "optuna")
    assert snippet.exit_code == 0 and "HyperbandPruner" in snippet.output
    compile(snippet.output, "snippet.py", "exec")


def test_ladder_bad_input(runner: CliRunner, measured_profile: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    assert_one_line_error(run(runner, "ladder", str(foreign)), "not a layerprof profile")
    data = json.loads(measured_profile.read_text())
    data["schema"] = "layerprof.profile/0"
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert_one_line_error(run(runner, "ladder", str(old)), "schema 'layerprof.profile/0'")
    assert_one_line_error(run(runner, "ladder", str(measured_profile), "--eta", "1"), "greater than 1")
    assert_one_line_error(run(runner, "ladder", str(measured_profile), "--batch-size", "64"), "--batch-size 64")
    assert_one_line_error(run(runner, "ladder", str(measured_profile), "--gpu-memory", "1MiB"), "lowest rung")
    assert_one_line_error(run(runner, "ladder", str(measured_profile), "--gpu-memory", "big"), "not understood")
    assert_one_line_error(run(runner, "ladder", str(tmp_path / "absent.json")), "does not exist")


@pytest.fixture(scope="module")
def precision_profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """pythia-14m at T=256 (activations dominate: 32 MB against 16 MB of weights and optimizer state), measured on
    this CPU in three precisions. One timed step each: what the tests read (bytes per category, FLOPs) is the same
    in every step, and a bfloat16 step takes seconds on a CPU without bfloat16 matmul units."""
    folder = tmp_path_factory.mktemp("precision")
    profiles = {}
    for precision in ("32-true", "bf16-mixed", "bf16-true"):
        out = folder / f"{precision}.json"
        result = CliRunner().invoke(
            app, ["profile", "pythia-14m", "--seq-len", "256", *SMALL_VOCAB, "--batch-sizes", "2", "--layers", "9",
                  "--warmup", "1", "--min-steps", "1", "--steps", "1", "--precision", precision, "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        profiles[precision] = load_profile(out)
    return profiles


def test_precisions_are_applied_and_recorded(precision_profiles: dict) -> None:
    full, mixed, true = (precision_profiles[p].rows[0] for p in ("32-true", "bf16-mixed", "bf16-true"))
    assert full.ok and mixed.ok and true.ok
    assert precision_profiles["bf16-mixed"].settings.precision == "bf16-mixed"
    assert "autocast" in precision_profiles["bf16-mixed"].settings.to_dict()["precision_mode"]
    # *-true: everything in 2 bytes; *-mixed: float32 weights, gradients and optimizer state...
    assert true.memory_parameters_bytes * 2 == pytest.approx(full.memory_parameters_bytes, rel=0.01)
    assert mixed.memory_parameters_bytes == full.memory_parameters_bytes
    assert mixed.optimizer_state_bytes == full.optimizer_state_bytes
    assert 2 * true.optimizer_state_bytes == pytest.approx(full.optimizer_state_bytes, rel=0.01)  # (float32 steps)
    # ...and activations in the lower precision where autocast runs matmuls
    assert mixed.memory_activations_bytes < 0.75 * full.memory_activations_bytes
    assert mixed.flops == full.flops == true.flops  # FLOPs do not depend on the precision


def test_float16_mixed_runs_with_a_gradient_scaler(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "f16.json"
    result = run(runner, "profile", *TINY_LM, "--batch-sizes", "2", "--layers", "1,9", *FAST, "--precision",
                 "16-mixed", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert all(row.ok for row in load_profile(out).rows)


def test_dtype_is_an_alias_of_the_true_precisions(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "alias.json"
    result = run(runner, "estimate", *TINY_LM, "--batch-sizes", "1", "--layers", "9", "--dtype", "bfloat16",
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_profile(out).settings.precision == "bf16-true"
    contradicting = run(runner, "estimate", *TINY_LM, "--dtype", "float16", "--precision", "bf16-mixed")
    assert_one_line_error(contradicting, "--dtype float16 contradicts --precision bf16-mixed")


def test_ctrl_c_in_a_study_says_what_is_kept_and_exits_130(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study's interrupt goes through the one Ctrl-C handler the sweeps use (render.interrupt_keeps)."""
    import layerprof.fidelity.correlate as correlate

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(correlate, "run_study", interrupted)
    result = run(runner, "correlate", "digits", "--layers", "1", "--budget-fractions", "1", "--out", str(tmp_path))
    assert result.exit_code == 130, result.output
    text = " ".join(result.output.split())
    assert "interrupted: finished trials are in" in text and "trials.jsonl; rerun to resume" in text


def test_a_busy_machine_is_said_before_the_sweep_runs_not_at_its_end(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU load reading, injected (no competing process, no timing): the warning comes before the sweep's
    header, as it is detected (it used to come after the tables); and the header names the device."""
    import layerprof.measure.environment as environment

    monkeypatch.setattr(environment, "cpu_busy_share", lambda seconds=0.3: 0.93)
    example = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
    result = run(runner, "profile", f"{example}:mlp", "--input-shape", "64", "--num-classes", "10", "--batch-sizes",
                 "2", "--layers", "1", "--warmup", "1", "--min-steps", "1", "--steps", "1", "--out",
                 str(tmp_path / "p.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    warning = next(i for i, line in enumerate(lines) if "other work kept the CPUs 93% busy" in line)
    header = next(i for i, line in enumerate(lines) if line.startswith(f"{example}:mlp: "))
    assert warning < header
    assert "batch sizes 2 · z = 1 · cpu" in " ".join(result.output.split())  # the device, however it wraps
    assert sum("93% busy" in line for line in lines) == 1  # said once, not again at the end


def test_the_sweep_bar_hears_rounds_and_visits_and_says_a_busy_machine_at_once() -> None:
    from rich.console import Console

    from layerprof.cli.render import SweepProgress, time_left_text

    console = Console(file=io.StringIO(), width=100, force_terminal=False)
    with SweepProgress(console) as bar:
        bar.round_started(1, 2, 90.0)
        bar.visit_finished(1, 1, 2)
        bar.machine_busy("other work is slowing this machine")
    assert bar.events == [("round_started", 1, 2, 90.0), ("visit_finished", 1, 1, 2),
                          ("machine_busy", "other work is slowing this machine")]  # fmt: skip
    assert "warning: other work is slowing this machine" in console.file.getvalue()
    assert time_left_text(100.0 + 125, 100.0) == "~0:02:05 left"
    assert time_left_text(None, 100.0) == "-:--:-- left"
    assert time_left_text(90.0, 100.0) == "~0:00:00 left"  # past the estimate: never negative
