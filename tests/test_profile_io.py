"""The Profile file format: round trip, schema check, clear errors for foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.profile import (
    ROW_FIELDS,
    SCHEMA,
    EnvironmentInfo,
    Layer,
    MemoryCategory,
    Profile,
    Row,
    SweepSettings,
    SweepTiming,
    ensure_writable,
    load_profile,
    ratio,
    rows_csv,
    save_profile,
    total_params,
    trainable_params,
    upgrade_v1,
)
from tests.conftest import bare_profile


def small_profile() -> Profile:
    rows = [
        Row(2, 1, "ok", trainable_params=10, step_time_ms=1.5, peak_memory_bytes=100, flops=7),
        Row(2, 2, "oom", message="OutOfMemoryError: CUDA out of memory"),
    ]
    return bare_profile(rows, 2, spec="m")


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = save_profile(small_profile(), tmp_path / "p.json")
    loaded = load_profile(path)
    assert loaded.to_dict() == small_profile().to_dict()
    assert loaded.schema == SCHEMA
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == ROW_FIELDS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.json"]  # no temporary files left


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    data = small_profile().to_dict()
    data["schema"] = "layerprof.profile/99"
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="schema 'layerprof.profile/99'"):
        load_profile(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json at all", "is not JSON"), ('{"rows": []}', "not a layerprof profile"), ("[1, 2]", "not a layerprof")],
)
def test_foreign_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "foreign.json"
    path.write_text(content)
    with pytest.raises(LayerprofError, match=message):
        load_profile(path)


def test_missing_and_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(LayerprofError, match="does not exist"):
        load_profile(tmp_path / "absent.json")
    data = small_profile().to_dict()
    del data["workload"]
    (tmp_path / "damaged.json").write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="damaged"):
        load_profile(tmp_path / "damaged.json")


def test_unwritable_output_is_caught_before_measuring(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LayerprofError, match="cannot write"):
        ensure_writable(blocker / "sub" / "p.json")
    with pytest.raises(LayerprofError, match="end in .json"):
        ensure_writable(tmp_path / "p.txt")
    with pytest.raises(LayerprofError, match="is a directory"):
        ensure_writable(tmp_path)


DATA = Path(__file__).parent / "data"


def test_schema_1_measured_profile_loads_and_upgrades(tmp_path: Path) -> None:
    from layerprof.outputs.check import compare
    from layerprof.profile import SCHEMA_V1

    original = json.loads((DATA / "profile-v1-measured.json").read_text())
    assert original["schema"] == SCHEMA_V1 and original["workload"]["dtype"] == "bfloat16"
    profile = load_profile(DATA / "profile-v1-measured.json")
    assert profile.settings.precision == "bf16-true" and profile.settings.optimizer == "adamw"
    assert profile.settings.mode == "measure" and profile.settings.trainable_layer_counts == (1, 5, 9)
    assert profile.settings.batch_sizes == (1, 2) and profile.settings.max_steps == 3
    assert profile.workload.seq_len == 16 and profile.workload.item_name == "tokens"
    assert [layer.name for layer in profile.model.layers][-1] == "lm_head" and profile.layer_count == 9
    assert profile.environment.device_kind == "cpu" and profile.environment.torch_version
    assert [row.key for row in profile.rows] == [(b, z) for b in (1, 2) for z in (1, 5, 9)]
    for raw, row in zip(original["rows"], profile.rows, strict=True):
        assert {name: getattr(row, name) for name in raw} == raw  # every figure kept
    # written again, it is a /2 profile with the same content, and the gate compares the two
    upgraded = load_profile(save_profile(profile, tmp_path / "v2.json"))
    assert json.loads((tmp_path / "v2.json").read_text())["schema"] == SCHEMA
    assert upgraded.to_dict() == profile.to_dict()
    result = compare(upgraded, profile)
    assert result.exit_code == 0 and result.cells_compared == 6


def test_schema_1_estimate_loads_with_its_target() -> None:
    profile = load_profile(DATA / "profile-v1-estimate.json")
    assert profile.is_estimate and profile.settings.target == "cpu"
    assert profile.settings.precision == "32-true" and profile.environment.estimated
    assert all(row.memory_source == "estimate-cpu" and row.memory_parameters_bytes for row in profile.rows)


def test_schema_2_interrupted_profile_loads_and_says_it_is_incomplete() -> None:
    from layerprof.profile import SCHEMA_V2

    original = json.loads((DATA / "profile-v2-interrupted.json").read_text())
    assert original["schema"] == SCHEMA_V2 and original["complete"] is False
    profile = load_profile(DATA / "profile-v2-interrupted.json")
    assert profile.schema == SCHEMA_V2 and not profile.settings.eval_frozen and profile.model.order == "forward"
    assert all(layer.calls == 1 for layer in profile.model.layers)
    # /2 had no unfinished rows: the cells never reached are what the settings planned and the rows lack
    assert profile.unfinished_cells() == [(4, 2), (4, 3)]
    reason = profile.incomplete_reason()
    assert reason is not None and "2 of 6 cells unfinished (batch 4 z=2, batch 4 z=3)" in reason
    assert "an older layerprof wrote it" in reason


def test_unfinished_rows_round_trip_and_the_incomplete_reason_names_them(tmp_path: Path) -> None:
    from tests.conftest import bare_profile

    rows = [Row(2, z, "ok", step_time_ms=1.0, flops=10) for z in (1, 2)] + [Row(2, 3, "unfinished", message="x")]
    profile = bare_profile(rows, 3)
    assert profile.incomplete_reason() is None  # complete
    profile.complete = False
    loaded = load_profile(save_profile(profile, tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text())["schema"] == "layerprof.profile/4"
    assert [row.finished for row in loaded.rows] == [True, True, False]
    assert loaded.unfinished_cells() == [(2, 3)]
    assert loaded.incomplete_reason() == "the sweep was interrupted: 1 of 3 cells unfinished (batch 2 z=3)"
    assert loaded.failure_summary() is None  # unfinished is not failed


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("trainable_layers", "two", "row 0 field 'trainable_layers' ('two', expected int)"),
        ("step_time_ms", "fast", "row 0 field 'step_time_ms' ('fast', expected float)"),
        ("batch_size", None, "row 0 field 'batch_size' (None, expected int)"),
        ("batch_size", True, "row 0 field 'batch_size' (True, expected int)"),
        ("status", "done", "row 0 status 'done' (expected one of ok, oom, error, skipped, unfinished)"),
        ("visit_medians_ms", 3.0, "row 0 field 'visit_medians_ms' (3.0, expected list)"),
    ],
)
def test_rows_of_the_wrong_type_are_damage(tmp_path: Path, field: str, value: object, fragment: str) -> None:
    from tests.conftest import bare_profile

    data = bare_profile([Row(2, 1, "ok", step_time_ms=1.5, visit_medians_ms=[1.5])], 1).to_dict()
    data["rows"][0][field] = value
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="damaged layerprof profile") as caught:
        load_profile(tmp_path / "bad.json")
    assert fragment in str(caught.value)


def test_an_integer_where_a_float_is_declared_is_a_float(tmp_path: Path) -> None:
    from tests.conftest import bare_profile

    data = bare_profile([Row(2, 1, "ok", step_time_ms=1.5)], 1).to_dict()
    data["rows"][0]["step_time_ms"] = 2
    (tmp_path / "good.json").write_text(json.dumps(data))
    assert load_profile(tmp_path / "good.json").rows[0].step_time_ms == 2


# ---------------------------------------------------------------- what the plain data says about itself


def test_row_ok_and_finished() -> None:
    assert [Row(1, 1, status).ok for status in ("ok", "oom", "error", "skipped", "unfinished")] == [
        True, False, False, False, False,
    ]  # fmt: skip
    assert [Row(1, 1, status).finished for status in ("ok", "oom", "unfinished")] == [True, True, False]


def test_only_the_workspace_is_untracked() -> None:
    assert [c for c in MemoryCategory if not c.tracked] == [MemoryCategory.WORKSPACE]


def test_trainable_params_count_the_last_layers() -> None:
    """Layers holding 1, 2, 3, 4 new parameters, in forward order: the last z train."""
    layers = [Layer(i, f"l{i}", "Linear", n, (f"l{i}.weight",), n) for i, n in enumerate((1, 2, 3, 4))]
    assert [trainable_params(layers, z) for z in (1, 2, 3, 4)] == [4, 7, 9, 10]
    assert total_params(layers) == 10


def test_ratio_is_none_where_either_side_is_missing_or_full_is_zero() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None and ratio(1.0, None) is None and ratio(1.0, 0.0) is None
    assert ratio(0.0, 4.0) == 0.0  # a zero value is a value


def test_share_in_steps() -> None:
    assert SweepTiming(sweep_wall_s=4.0, in_steps_s=3.0).share_in_steps == 0.75
    assert SweepTiming().share_in_steps == 0.0  # nothing ran: no division by zero


def test_environment_writes_only_what_is_known_and_keeps_foreign_keys() -> None:
    assert EnvironmentInfo("cpu", "x").to_dict() == {"device_kind": "cpu", "device_name": "x", "estimated": False}
    environment = EnvironmentInfo.from_dict({"device_kind": "cuda", "device_name": "H100", "future_key": [1]})
    assert environment.extra == {"future_key": [1]} and environment.device_name == "H100"
    assert environment.to_dict()["future_key"] == [1] and "extra" not in environment.to_dict()


def test_settings_write_the_timing_protocol_only_for_measured_sweeps() -> None:
    timing = {"warmup_steps", "min_steps", "max_steps", "median_tolerance", "steps_per_visit", "rewarm_steps"}
    measured = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1,)).to_dict()
    assert timing <= set(measured) and "stopping_rule" in measured
    assert "target" not in measured and "target_gpu" not in measured
    estimate = SweepSettings((2,), (1,), mode="estimate", target="cuda", target_gpu="H100").to_dict()
    assert not timing & set(estimate) and "max_time_s" not in estimate and "stopping_rule" not in estimate
    assert (estimate["target"], estimate["target_gpu"]) == ("cuda", "H100")


def test_predicts_time_only_for_estimates_with_a_predicted_time() -> None:
    rows = [Row(2, 1, "ok", predicted_step_time_ms=None), Row(2, 2, "ok", predicted_step_time_ms=3.0)]
    profile = bare_profile(rows, 2)
    assert not profile.predicts_time  # measured: its step times are measurements
    profile.settings = SweepSettings((2,), (1, 2), mode="estimate")
    assert profile.predicts_time  # one predicted row is enough
    rows[1].predicted_step_time_ms = None
    assert not profile.predicts_time


def test_rows_for_and_row_look_up_one_batch_size_and_cell() -> None:
    rows = [Row(4, 2, "ok"), Row(2, 2, "ok"), Row(4, 1, "ok")]
    profile = bare_profile(rows, 2)
    assert [r.key for r in profile.rows_for(4)] == [(4, 1), (4, 2)]
    assert profile.row(2, 2) is rows[1] and profile.row(2, 1) is None


def test_failure_summary_groups_reasons_and_advises_only_for_memory() -> None:
    rows = [
        Row(2, 1, "oom", message="CUDA out of memory"),
        Row(2, 2, "oom", message="CUDA out of memory"),
        Row(4, 1, "skipped"),
    ]
    profile = bare_profile(rows, 2)
    assert profile.failure_summary() == (
        "every cell failed: 2 x oom: CUDA out of memory (batch 2 z=1, batch 2 z=2); 1 x skipped: skipped "
        "(batch 4 z=1); smaller batch sizes may fit"
    )
    rows[2].status, rows[2].message = "error", "boom"
    assert profile.failure_summary().endswith("1 x error: boom (batch 4 z=1)")  # no advice: not all memory
    rows[2].status = "ok"
    assert profile.failure_summary() is None  # one cell succeeded
    rows[2].status = "unfinished"
    assert profile.failure_summary() is None  # an interrupted cell did not fail
    assert bare_profile([], 2).failure_summary() is None


def test_incomplete_reason_names_six_cells_then_counts_the_rest() -> None:
    profile = bare_profile([], 3)
    profile.complete = False
    profile.settings = SweepSettings(batch_sizes=(2, 4), trainable_layer_counts=(1, 2, 3))
    assert profile.incomplete_reason() == (
        "the sweep was interrupted: 6 of 6 cells unfinished "
        "(batch 2 z=1, batch 2 z=2, batch 2 z=3, batch 4 z=1, batch 4 z=2, batch 4 z=3)"
    )
    profile.settings = SweepSettings(batch_sizes=(2, 4, 8), trainable_layer_counts=(1, 2, 3))
    assert profile.incomplete_reason().endswith("batch 4 z=2, batch 4 z=3 and 3 more)")


def test_a_profile_without_the_complete_key_is_incomplete(tmp_path: Path) -> None:
    data = small_profile().to_dict()
    del data["complete"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    assert load_profile(tmp_path / "p.json").complete is False


def test_an_integer_in_a_float_field_does_not_end_the_type_checks(tmp_path: Path) -> None:
    data = bare_profile([Row(2, 1, "ok", step_time_ms=1.5, visit_medians_ms=[1.5])], 1).to_dict()
    data["rows"][0]["step_time_ms"] = 2  # fine, and before visit_medians_ms in a row
    data["rows"][0]["visit_medians_ms"] = "many"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="row 0 field 'visit_medians_ms' \\('many', expected list\\)"):
        load_profile(tmp_path / "bad.json")


def test_row_field_types_without_none() -> None:
    from layerprof.profile import _row_types

    types = _row_types()
    assert (types["batch_size"], types["step_time_ms"], types["message"], types["disturbed"]) == (int, float, str, bool)
    assert types["status"] is str  # a Literal of strings
    assert types["estimate_basis"] is str  # an optional Literal of strings
    assert types["visit_medians_ms"] is list and types["slow_visits"] is list


def test_upgrade_v1_moves_dtype_and_optimizer_to_the_settings() -> None:
    v1 = {
        "schema": "layerprof.profile/1",
        "workload": {"family": "image", "dtype": "float16", "dtype_mode": "all float16", "optimizer": "sgd"},
        "settings": {"batch_sizes": [2], "trainable_layers": [1, 2], "dtype": "float16"},
    }
    upgraded = upgrade_v1(v1)
    assert upgraded["workload"] == {"family": "image"}
    assert upgraded["settings"] == {
        "batch_sizes": [2], "trainable_layer_counts": [1, 2], "optimizer": "sgd", "precision": "16-true",
        "mode": "measure",
    }  # fmt: skip
    assert v1["workload"]["optimizer"] == "sgd"  # the document read is left as it was
    both = {**v1, "settings": {**v1["settings"], "optimizer": "adam"}}
    upgraded = upgrade_v1(both)  # the settings' optimizer wins; the workload's is dropped all the same
    assert (upgraded["workload"], upgraded["settings"]["optimizer"]) == ({"family": "image"}, "adam")


def test_saved_files_follow_the_umask_and_leave_it_alone(tmp_path: Path) -> None:
    import os
    import stat

    previous = os.umask(0o022)
    try:
        save_profile(small_profile(), tmp_path / "p.json")
        assert os.umask(0o022) == 0o022  # save_profile restored it
    finally:
        os.umask(previous)
    for name in ("p.json", "p.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644  # 0o666 & ~0o022, not mkstemp's 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = save_profile(small_profile(), tmp_path / "p.json")
    before = (tmp_path / "p.csv").read_text()
    profile = small_profile()
    profile.rows[0].message = "\ud800"  # a lone surrogate: the JSON escapes it, the CSV cannot encode it
    with pytest.raises(UnicodeEncodeError):
        save_profile(profile, path)
    assert (tmp_path / "p.csv").read_text() == before  # the CSV being written is not torn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.json"]


def test_csv_has_one_line_per_cell_sorted() -> None:
    rows = [Row(4, 1, "ok", step_time_ms=2.5), Row(2, 2, "oom"), Row(2, 1, "ok", step_time_ms=1.5)]
    lines = rows_csv(bare_profile(rows, 2)).splitlines()
    assert len(lines) == 4
    assert [line.split(",")[:3] for line in lines[1:]] == [["2", "1", "ok"], ["2", "2", "oom"], ["4", "1", "ok"]]


def test_ensure_writable_makes_the_folder(tmp_path: Path) -> None:
    path = ensure_writable(tmp_path / "new" / "deeper" / "p.json")
    assert path.parent.is_dir() and not path.exists()


def test_a_profile_before_schema_4_loads_as_no_adapters_no_checkpointing_eager() -> None:
    baseline = Path(__file__).parents[1] / "profiles" / "baselines" / "cpu" / "paper-resnet18-cifar100.json"
    assert json.loads(baseline.read_text())["schema"] == "layerprof.profile/2"
    settings = load_profile(baseline).settings
    assert (settings.adapter, settings.checkpointing, settings.compile_mode) == ("none", "none", "eager")
    assert settings.adapter_targets == () and settings.recipe_text == ""
    assert all(row.recompute_flops is None for row in load_profile(baseline).rows)


def test_the_recipe_round_trips_and_a_different_recipe_is_a_different_sweep(tmp_path: Path) -> None:
    from dataclasses import replace

    from layerprof.profile import recipe_difference
    from tests.conftest import bare_profile

    profile = bare_profile([Row(2, 1, "ok", step_time_ms=1.0, flops=10, recompute_flops=4)], 1)
    profile.settings = replace(profile.settings, adapter="lora", adapter_rank=4, adapter_targets=("qkv", "proj"),
                               checkpointing="trainable", optimizer="adamw8bit")  # fmt: skip
    loaded = load_profile(save_profile(profile, tmp_path / "p.json"))
    assert loaded.settings == profile.settings and loaded.row(2, 1).recompute_flops == 4
    assert loaded.settings.recipe_text == "LoRA r=4 alpha=16 (last z layers), checkpointing trainable"
    plain = replace(profile.settings, adapter="none")
    assert recipe_difference(plain, profile.settings) == ("adapter", "none", "lora")
    assert recipe_difference(profile.settings, replace(profile.settings, checkpointing="none")) == (
        "checkpointing", "trainable", "none",
    )  # fmt: skip


# ---------------------------------------------------------------- moved modules, rewritten on load

OLD_TASK = "layerprof.tasks:digits_workload"  # as profiles written before the modules moved name it
NEW_TASK = "layerprof.fidelity.tasks:digits_workload"


def test_a_spec_naming_a_moved_module_gets_its_new_name_and_no_other_spec_changes() -> None:
    from layerprof.profile import MOVED_MODULES, current_spec

    assert current_spec(OLD_TASK) == NEW_TASK
    assert current_spec("layerprof.sweep:fn") == "layerprof.measure.jobs:fn"
    unchanged = [NEW_TASK, "digits", "resnet18", "litgpt:pythia-14m", "examples/custom_model.py:mlp"]
    unchanged += ["layerprof.nowhere:fn", "mypkg.tasks:fn", "layerprof.tasks"]
    assert [current_spec(spec) for spec in unchanged] == unchanged
    assert len(MOVED_MODULES) == 31  # the 33 modules that moved, but cli and measure (folders now)


def test_the_old_module_names_no_longer_import() -> None:
    with pytest.raises(ModuleNotFoundError):
        __import__("layerprof.tasks")


def test_a_profile_naming_an_old_task_module_loads_under_the_new_name(tmp_path: Path) -> None:
    profile = bare_profile([Row(32, 1, "ok", step_time_ms=1.0)], 1, spec=OLD_TASK)
    path = save_profile(profile, tmp_path / "old.json")
    assert json.loads(path.read_text())["model"]["spec"] == OLD_TASK  # written as it was
    assert load_profile(path).model.spec == NEW_TASK


def test_a_profile_with_an_old_task_name_passes_check_and_plan_against_one_with_the_new_name(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from layerprof.cli.commands import app
    from tests.measure.test_cluster import H100_NAME, gpu_profile

    runner = CliRunner()
    baseline = json.loads(Path("profiles/baselines/cpu/paper-resnet18-cifar100.json").read_text())
    for name, spec in (("old", OLD_TASK), ("new", NEW_TASK), ("other", "layerprof.fidelity.tasks:pydoc_lm_workload")):
        (tmp_path / f"{name}.json").write_text(json.dumps({**baseline, "model": {**baseline["model"], "spec": spec}}))
    check = runner.invoke(app, ["check", str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    assert check.exit_code == 0, check.output
    other = runner.invoke(app, ["check", str(tmp_path / "other.json"), str(tmp_path / "new.json")])
    assert other.exit_code == 2 and "different models" in other.output  # the comparison still tells models apart

    def gpu(name: str, spec: str, device: str, memory_gib: float) -> str:
        profile = gpu_profile(device, memory_gib, {1: 10.0, 3: 30.0}, {1: 7.0, 3: 20.0})
        profile.model.spec = spec
        return str(save_profile(profile, tmp_path / f"{name}-gpu.json"))

    h100, l4 = gpu("old", OLD_TASK, H100_NAME, 79.6), gpu("new", NEW_TASK, "NVIDIA L4", 22.0)
    plan = runner.invoke(app, ["plan", h100, l4, "--cluster", "2xL4,1xH100", "--json"])
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["model"] == NEW_TASK
    mixed = runner.invoke(app, ["plan", h100, gpu("other", "elsewhere:fn", "NVIDIA L4", 22.0), "--cluster", "2xL4"])
    assert mixed.exit_code == 2 and "different models" in mixed.output


@pytest.mark.parametrize(
    ("field", "good", "bad", "fragment"),
    [
        ("step_time_ms", 1e-9, 0.0, "step_time_ms is 0.0 (a positive finite number is right)"),
        ("step_time_ms", 1e308, float("inf"), "step_time_ms is inf"),
        ("predicted_step_time_ms", 0.001, -0.001, "predicted_step_time_ms is -0.001"),
        ("peak_memory_bytes", 0, -1, "peak_memory_bytes is -1 (a finite number, 0 or more is right)"),
        ("memory_activations_bytes", 0, -8, "memory_activations_bytes is -8"),
        ("host_time_ms", 0.0, -0.5, "host_time_ms is -0.5"),
        ("step_time_std_ms", 0.0, float("nan"), "step_time_std_ms is nan"),
        ("trainable_fraction", 1.0, 1.0001, "trainable_fraction is 1.0001 (a share from 0 to 1 is right)"),
        ("trainable_fraction", 0.0, -0.0001, "trainable_fraction is -0.0001"),
        ("flops", 0, -1, "flops is -1"),
        ("batch_size", 1, 0, "batch_size is 0"),
        ("visit_medians_ms", [1e-9], [1.0, 0.0], "visit_medians_ms[1] is 0.0"),
        ("visit_medians_ms", [], [float("nan")], "visit_medians_ms[0] is nan"),
    ],
)
def test_figures_are_checked_on_load_at_their_edge(
    tmp_path: Path, field: str, good: object, bad: object, fragment: str
) -> None:
    """The last good value loads; the first bad one is damage naming the cell and the field (issue 40)."""
    data = small_profile().to_dict()
    data["rows"][0][field] = good
    (tmp_path / "good.json").write_text(json.dumps(data))
    assert getattr(load_profile(tmp_path / "good.json").rows[0], field) == good
    data["rows"][0][field] = bad
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(LayerprofError) as caught:
        load_profile(tmp_path / "bad.json")
    assert f"'{tmp_path / 'bad.json'}' is a damaged layerprof profile" in str(caught.value)
    assert f"damaged layerprof profile: cell batch {data['rows'][0]['batch_size']} z=1: {fragment}" in str(caught.value)


def test_an_ok_measured_cell_needs_its_step_time_an_estimate_or_failed_cell_does_not(tmp_path: Path) -> None:
    data = small_profile().to_dict()
    data["rows"][0]["step_time_ms"] = None
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match=r"cell batch 2 z=1: step_time_ms is None \(a cell marked ok has"):
        load_profile(tmp_path / "p.json")
    data["settings"]["mode"] = "estimate"  # an estimate predicts its time, or has none
    (tmp_path / "p.json").write_text(json.dumps(data))
    assert load_profile(tmp_path / "p.json").rows[0].step_time_ms is None
    assert small_profile().rows[1].step_time_ms is None  # the oom cell: no figures at all
    save_profile(small_profile(), tmp_path / "q.json")
    assert load_profile(tmp_path / "q.json").rows[1].status == "oom"


def test_a_skipped_cell_is_finished_and_a_resume_does_not_run_it_again() -> None:
    """Skipped (a smaller z ran out of memory at this batch size), oom and error cells are finished: only the
    unfinished cell is left (issue 40: "2 of 3 cells unfinished", and a resume ran the skipped one again)."""
    rows = [Row(2, 1, "oom"), Row(2, 2, "skipped"), Row(2, 3, "unfinished"), Row(4, 1, "error")]
    profile = bare_profile(rows, 3)
    profile.settings.batch_sizes, profile.settings.trainable_layer_counts = (2, 4), (1, 2, 3)
    profile.complete = False
    assert [row.finished for row in rows] == [True, True, False, True]
    assert profile.unfinished_cells() == [(2, 3), (4, 2), (4, 3)]  # (4, 2) and (4, 3) were never reached
    assert profile.incomplete_reason() == (
        "the sweep was interrupted: 3 of 6 cells unfinished (batch 2 z=3, batch 4 z=2, batch 4 z=3)"
    )


def test_a_read_only_output_or_csv_is_refused_and_a_writable_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    save_profile(small_profile(), path)
    assert ensure_writable(path) == path
    path.chmod(0o444)  # refused even as root, who could write it: read-only says "keep me"
    with pytest.raises(LayerprofError, match=r"^--out '.*p\.json' is read-only; make it writable \(chmod u\+w\)"):
        ensure_writable(path)
    path.chmod(0o200)  # write permission for the owner alone is enough
    assert ensure_writable(path) == path
    path.chmod(0o644)
    path.with_suffix(".csv").chmod(0o400)
    with pytest.raises(LayerprofError, match=r"p\.csv' is read-only"):
        ensure_writable(path)


def test_the_output_lock_is_held_once_names_its_holder_and_goes_with_it(tmp_path: Path) -> None:
    import os

    from layerprof.profile import OutputLock, lock_path_for

    path = tmp_path / "p.json"
    lock_file = lock_path_for(path)
    assert lock_file == tmp_path / ".p.json.lock"
    with OutputLock(path) as first:
        assert first.holder is None and first.descriptor is not None
        assert lock_file.read_text() == str(os.getpid())
        with OutputLock(path) as second:  # another open of the lock: refused, naming the holder
            assert second.holder == os.getpid() and second.descriptor is None
            with pytest.raises(LayerprofError, match=rf"being written by another layerprof run \(PID {os.getpid()}\)"):
                second.refuse_if_held()
        assert lock_file.exists()  # the refused one did not take the holder's file away
        with pytest.raises(LayerprofError, match="PID"):
            ensure_writable(path)
    assert not lock_file.exists() and first.descriptor is None
    with OutputLock(path) as third:  # free again
        assert third.holder is None
        third.refuse_if_held()
    lock_file.write_text("12345")  # a file left by a run that died holds no lock
    with OutputLock(path) as fourth:
        assert fourth.holder is None and lock_file.read_text() == str(os.getpid())
