"""Bad values over every command: each ends in one line and exit 2, never a traceback, a hang or a silent run.

The cases are those a demanding new user tried (issue 23): empty items in lists, sizes of zero through --set,
wrongly typed values, classes that do not exist, astronomical counts, non-finite numbers, shares without a unit,
paths that go down in fidelity, profiles with rows of the wrong type, and interrupted profiles under `check`.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.profile import Row, load_profile, save_profile
from tests.conftest import bare_profile

FACTORY = """
from torch import nn

def width(n: int = 8):
    return nn.Sequential(nn.Linear(8, n), nn.Linear(n, 4))

def task(config, trainable_layers, budget_fraction):
    return float(config["learning_rate"]) * trainable_layers + budget_fraction

task.layer_count = 3
"""


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A factory module, a CPU and a CUDA estimate of it, a correlate study of its task, a damaged profile."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "factory.py").write_text(textwrap.dedent(FACTORY))
    model = f"{root / 'factory.py'}:width"
    for target in ("cpu", "cuda"):
        result = run("estimate", model, "--input-shape", "8", "--target", target, "--batch-sizes", "2,4",
                     "--out", str(root / f"est-{target}.json"))  # fmt: skip
        assert result.exit_code == 0, result.output
    (root / "grid.json").write_text(json.dumps({"learning_rate": [0.1, 0.2, 0.3, 0.4]}))
    result = run("correlate", f"{root / 'factory.py'}:task", "--grid", str(root / "grid.json"), "--layers", "1,3",
                 "--budget-fractions", "0.5,1", "--workers", "1", "--out", str(root / "study"))  # fmt: skip
    assert result.exit_code == 0, result.output
    damaged = json.loads((root / "est-cpu.json").read_text())
    damaged["rows"][0]["trainable_layers"] = "two"
    (root / "damaged.json").write_text(json.dumps(damaged))
    interrupted = load_profile(root / "est-cpu.json")
    interrupted.complete = False
    interrupted.rows[-1].status = "unfinished"
    save_profile(interrupted, root / "interrupted.json")
    damage_profiles(root)
    return {"root": str(root), "model": model, "task": f"{root / 'factory.py'}:task"}


# damaged figures (issue 40): each file is measured.json with one figure of cell batch 4 z=2 (or of the CUDA
# estimate's cell batch 4 z=2) replaced
DAMAGE = {
    "nan-time": ("step_time_ms", math.nan),
    "negative-time": ("step_time_ms", -5.0),
    "zero-time": ("step_time_ms", 0),
    "null-time": ("step_time_ms", None),
    "nan-visit": ("visit_medians_ms", [12.0, math.nan]),
    "negative-peak": ("peak_memory_bytes", -1),
}


def damage_profiles(root: Path) -> None:
    """measured.json (two measured cells at each of batch 2 and 4), one damaged copy per DAMAGE entry, and the CUDA
    estimate with a negative predicted step time."""
    rows = [
        Row(b, z, "ok", step_time_ms=10.0 * b + z, visit_medians_ms=[10.0 * b + z] * 2, visits=2,
            peak_memory_bytes=1000 * b * z, trainable_params=z * 72, flops=b * z * 100)
        for b in (2, 4) for z in (1, 2)
    ]  # fmt: skip
    save_profile(bare_profile(rows, 2), root / "measured.json")
    data = json.loads((root / "measured.json").read_text())
    for name, (field, value) in DAMAGE.items():
        damaged = json.loads(json.dumps(data))
        damaged["rows"][3][field] = value
        (root / f"{name}.json").write_text(json.dumps(damaged))
    estimate = json.loads((root / "est-cuda.json").read_text())
    estimate["rows"][3]["predicted_step_time_ms"] = -5.0
    (root / "est-negative.json").write_text(json.dumps(estimate))


# (arguments with {model}, {root}, {task} filled in, the fragment the one error line holds)
CASES = [
    # empty items in lists, and lists given empty
    ("estimate {model} --input-shape 8 --batch-sizes ''", "--batch-sizes is empty"),
    ("estimate {model} --input-shape 8 --batch-sizes 1,,2", "--batch-sizes '1,,2' has an empty item"),
    ("profile {model} --input-shape 8 --batch-sizes 2,", "--batch-sizes '2,' has an empty item"),
    ("profile {model} --input-shape 8 --cpus 0,,1", "--cpus '0,,1' has an empty item"),
    ("estimate {model} --input-shape 8 --layers 1,,2", "--layers '1,,2' has an empty item"),
    ("correlate {task} --grid {root}/grid.json --budget-fractions 0.5,,1", "--budget-fractions '0.5,,1' has an empty"),
    ("plan {root}/est-cuda.json --cluster 2xH100,", "--cluster '2xH100,' has an empty item"),
    ("simulate {root}/study --paths layers,,budget", "--paths 'layers,,budget' has an empty item"),
    # astronomical counts: refused at once, not a sweep of failing cells or a plan that eats memory
    ("estimate {model} --input-shape 8 --batch-sizes 100000000000", "beyond the largest this takes, 16,777,216"),
    ("profile {model} --input-shape 8 --batch-sizes 99999999999999999999", "beyond the largest this takes"),
    ("plan {root}/est-cuda.json --cluster 100000000000000xH100", "beyond the 100,000 per kind"),
    # sizes of zero or less through --set, wrongly typed --set values, classes that do not exist
    ("layers {model} --input-shape 8 --set n=0", "--set n=0: a size or count must be a positive whole number"),
    ("layers paper-gpt-14m --set n_layer=0", "--set n_layer=0: a size or count must be a positive"),
    ("layers paper-gpt-14m --set n_embd=-128", "--set n_embd=-128: a size or count"),
    ("layers hf:llama --set num_hidden_layers=0", "--set num_hidden_layers=0: a size or count"),
    ("layers timm:resnet18 --set drop_rate=abc", "--set drop_rate: expects a number, got 'abc'"),
    ("layers {model} --input-shape 8 --unwrap NoSuchClass", "--unwrap NoSuchClass: "),
    ("layers {model} --input-shape 8 --unwrap ''", "--unwrap expects a class name"),
    ("profile {model} --input-shape 8 --max-time nan", "--max-time must be a positive number of seconds, got nan"),
    # empty names, values without units, non-finite numbers, shares beyond 1
    ("estimate {model} --input-shape 8 --gpu ''", "unknown --gpu ''"),
    ("fit {model} --input-shape 8 --memory 24", "--memory '24' has no unit; write e.g. 24GiB"),
    ("ladder {root}/est-cpu.json --eta inf", "--eta must be a number greater than 1 and at most 1000, got inf"),
    ("ladder {root}/est-cpu.json --eta nan", "--eta must be a number greater than 1"),
    ("ladder {root}/est-cpu.json --gpu-memory ''", "--gpu-memory '' not understood"),
    ("plan {root}/est-cuda.json --cluster 2xH100 --eta nan", "--eta must be a number greater than 1"),
    ("simulate {root}/study --eta 1e9", "--eta must be a number greater than 1 and at most 1000, got 1e+09"),
    ("simulate {root}/study --eta nan", "--eta must be a number greater than 1"),
    ("check {root}/est-cpu.json {root}/est-cpu.json --memory-tolerance 200", "write 200% if you mean that"),
    ("check {root}/est-cpu.json {root}/est-cpu.json --time-tolerance nan", "expects a finite share"),
    # paths that go down in fidelity, and beyond the task
    ("simulate {root}/study --path 3@0.5,1@1", "rung 1@1 after 3@0.5 does not raise the fidelity"),
    ("simulate {root}/study --path 1@1,1@0.5", "rung 1@0.5 after 1@1 does not raise the fidelity"),
    ("simulate {root}/study --path 1@0.5,5@1", "custom-1: z=5 is beyond the 3 layers of the task"),
    # profiles with rows of the wrong type: damage, under every command that reads them (exit 2, not 1)
    ("ladder {root}/damaged.json", "is a damaged layerprof profile: missing or bad row 0 field 'trainable_layers'"),
    ("check {root}/damaged.json {root}/est-cpu.json", "damaged layerprof profile"),
    ("check {root}/est-cpu.json {root}/damaged.json", "damaged layerprof profile"),
    ("report {root}/damaged.json --out {root}/report-damaged", "damaged layerprof profile"),
    ("report {root}/est-cpu.json --out {root}/grid.json", "grid.json' is a file; a report is a folder"),
    ("plan {root}/damaged.json --cluster 2xH100", "damaged layerprof profile"),
    # damaged figures (issue 40): refused on load by every reader, naming the cell and the field, never a pass,
    # a ladder of full training or a plan that runs for minutes
    ("check {root}/nan-time.json {root}/measured.json", "cell batch 4 z=2: step_time_ms is nan"),
    ("check {root}/measured.json {root}/nan-time.json", "cell batch 4 z=2: step_time_ms is nan"),
    ("check {root}/negative-time.json {root}/measured.json", "cell batch 4 z=2: step_time_ms is -5.0"),
    ("check {root}/zero-time.json {root}/measured.json", "cell batch 4 z=2: step_time_ms is 0 (a positive"),
    ("check {root}/null-time.json {root}/measured.json", "step_time_ms is None (a cell marked ok has its measured"),
    ("check {root}/nan-visit.json {root}/measured.json", "cell batch 4 z=2: visit_medians_ms[1] is nan"),
    ("check {root}/negative-peak.json {root}/measured.json", "cell batch 4 z=2: peak_memory_bytes is -1"),
    ("ladder {root}/nan-time.json", "nan-time.json' is a damaged layerprof profile"),
    ("ladder {root}/negative-peak.json", "peak_memory_bytes is -1"),
    ("report {root}/nan-visit.json --out {root}/report-nan", "visit_medians_ms[1] is nan"),
    ("plan {root}/est-negative.json --cluster 2xH100", "cell batch 4 z=2: predicted_step_time_ms is -5.0"),
    ("plan {root}/nan-time.json --cluster 2xH100", "step_time_ms is nan"),
    # found in review: another layerprof file given as a profile is named, not "re-run layerprof profile"; a file
    # outside a study given to simulate is named, not its directory
    ("ladder {root}/study/study.json", "is a correlate study's study.json, not a profile (schema layerprof.study/3)"),
    ("check {root}/study/result.json {root}/est-cpu.json", "is a correlate result.json, not a profile"),
    ("plan {root}/study/study.json --cluster 2xH100", "not a profile (schema layerprof.study/3); give one written"),
    ("simulate {root}/est-cpu.json", "est-cpu.json' is not in a correlate study (no study.json)"),
    # a gate must not pass on half a profile
    ("check {root}/interrupted.json {root}/est-cpu.json", "CURRENT"),
    ("check {root}/est-cpu.json {root}/interrupted.json", "BASELINE"),
    ("check {root}/interrupted.json {root}/new-baseline.json --update-baseline", "is incomplete"),
    # found in review (issue 40): a repeated rung; the
    # caps of other commands on plan's --budget-steps and layers --costs's --batch-size
    ("simulate {root}/study --path 1@0.5,1@0.5", "rung 1@0.5 after 1@0.5 does not raise the fidelity"),
    (
        "plan {root}/est-cuda.json --cluster 2xH100 --budget-steps 100000000000000000000",
        "--budget-steps 100,000,000,000,000,000,000 is beyond the largest this takes, 1,000,000,000",
    ),
    ("plan {root}/est-cuda.json --cluster 2xH100 --budget-steps 1000000001", "--budget-steps 1,000,000,001 is beyond"),
    ("ladder {root}/est-cuda.json --budget-steps 1000000001", "--budget-steps 1,000,000,001 is beyond the largest"),
    (
        "layers {model} --input-shape 8 --costs --batch-size 99999999999",
        "--batch-size 99,999,999,999 is beyond the largest this takes, 16,777,216",
    ),
    ("layers {model} --input-shape 8 --costs --batch-size 16777217", "--batch-size 16,777,217 is beyond"),
    # layer counts beyond the task's
    ("correlate {task} --grid {root}/grid.json --layers 1,2,4", "--layers 4 is outside 1..3"),
    # found in review: a range is checked as written, before it is expanded (1-10^12 hung, eating memory), and
    # the error names the item written, not the first number beyond the model
    ("estimate {model} --input-shape 8 --layers 1-1000000000000", "--layers 1-1000000000000 is outside 1..2"),
    ("fit {model} --input-shape 8 --gpu L4 --layers 2-9", "--layers 2-9 is outside 1..2 (this model has 2 layers)"),
    ("simulate {root}/study --layers 1-1000000000000", "a range of more than 16,777,216 layers"),
    ("fit {model} --input-shape 8 --gpu L4 --batch-size 99999999999", "--batch-size 99,999,999,999 is beyond the"),
    # found in review: astronomical counts that hung (a range of CPUs expanded, trials planned one by one)
    ("profile {model} --input-shape 8 --cpus 0-1000000000000", "--cpus 0-1000000000000 is beyond any machine's CPU"),
    ("correlate {task} --grid {root}/grid.json --seeds 1000000000000", "is beyond the 1,000,000 a study runs"),
    ("plan {root}/est-cuda.json --cluster 2xH100 --batch-size 2 --configs 1000000000000", "beyond the 10,000 a plan"),
    ("simulate {root}/study --repeats 1000000000000", "--repeats 1,000,000,000,000 is beyond the largest this"),
    ("ladder {root}/est-cpu.json --json --export optuna", "--json and --export both print to stdout; give one"),
    ("plan {root}/est-cuda.json --cluster 1xH100 --json --export ray", "--json and --export both print to stdout"),
    # what Typer refuses before a command runs: one line too, naming the command and where its options are listed
    ("ladder {root}/est-cpu.json --threads 2", "error: layerprof ladder: No such option: --threads (`layerprof ladder"),
    ("fit {model} --input-shape 8 --memory 1GiB --num-classes 0", "layerprof fit: Invalid value for '--num-classes'"),
    ("estimate {model} --input-shape 8 --precision fp32", "'fp32' is not one of '32-true', 'bf16-mixed'"),
    ("ladder", "layerprof ladder: Missing argument 'PROFILE...'."),
    ("rungs {root}/est-cpu.json", "layerprof: No such command 'rungs'."),
]


@pytest.mark.parametrize(("template", "fragment"), CASES, ids=[case[0][:60] for case in CASES])
def test_bad_value_is_one_line_and_exit_2(inputs: dict[str, str], template: str, fragment: str) -> None:
    import shlex

    args = shlex.split(template.format(**inputs))
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output
    assert "╭" not in result.output and "Usage:" not in result.output  # no usage box
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert fragment in " ".join(result.output.split()), result.output  # wrapped lines joined


def test_a_failed_report_leaves_no_directory(inputs: dict[str, str]) -> None:
    out = Path(inputs["root"]) / "report-damaged"
    assert run("report", f"{inputs['root']}/damaged.json", "--out", str(out)).exit_code == 2
    assert not out.exists()


def test_check_reports_an_unexpected_failure_as_exit_2_never_as_a_regression(
    inputs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import layerprof.outputs.check

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the comparison")

    monkeypatch.setattr(layerprof.outputs.check, "compare", broken)
    result = run("check", f"{inputs['root']}/est-cpu.json", f"{inputs['root']}/est-cpu.json")
    assert result.exit_code == 2, result.output
    assert "unexpected RuntimeError: a bug in the comparison" in result.output


def test_correlate_default_layers_fit_a_task_with_fewer_than_four(inputs: dict[str, str]) -> None:
    out = Path(inputs["root"]) / "default-layers"
    result = run("correlate", inputs["task"], "--grid", f"{inputs['root']}/grid.json", "--budget-fractions", "1",
                 "--workers", "1", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "result.json").read_text())["trainable_layer_counts"] == [1, 2, 3]


def test_correlate_on_an_unreachable_ray_cluster_fails_in_seconds(
    inputs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused after one 5-second connection attempt, before Ray is asked to connect (its own retries take
    minutes): `ray.init` is never called."""
    ray = pytest.importorskip("ray", reason="environment cannot be built: Ray is an optional extra")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("ray.init was called: Ray's own retries take minutes")

    monkeypatch.setattr(ray, "init", never)
    result = run("correlate", inputs["task"], "--grid", f"{inputs['root']}/grid.json", "--layers", "1,3",
                 "--executor", "ray", "--address", "127.0.0.1:1", "--out", f"{inputs['root']}/ray-study")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in result.output


def test_set_refuses_sizes_of_zero_but_not_rates_identifiers_or_counts_where_zero_means_none() -> None:
    from layerprof.errors import LayerprofError
    from layerprof.parsing import parse_overrides

    for item in ("n_layer=0", "num_hidden_layers=0", "hidden_size=-64", "width=0", "head_dim=0", "n=0"):
        with pytest.raises(LayerprofError, match="a size or count must be a positive whole number"):
            parse_overrides([item])
    kept = ["hidden_dropout_prob=0", "layer_norm_eps=0", "pad_token_id=0", "n_expert=0", "num_classes=0", "bias=0"]
    assert parse_overrides(kept) == {item.split("=")[0]: "0" for item in kept}


def test_fit_says_when_its_answer_is_the_search_limit(inputs: dict[str, str]) -> None:
    """A model so small that 2^24 samples fit: the search stops there, and the answer is a lower bound."""
    result = run("fit", inputs["model"], "--input-shape", "8", "--gpu", "L4", "--layers", "1")
    assert result.exit_code == 0, result.output
    assert "≥16,777,216" in result.output and "the search stops at 16,777,216" in " ".join(result.output.split())
    result = run("fit", inputs["model"], "--input-shape", "8", "--gpu", "L4", "--layers", "1", "--json")
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)["results"]
    assert (only["largest_batch_size"], only["at_search_limit"]) == (16_777_216, True)
