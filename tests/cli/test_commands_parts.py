"""Parts of the commands pinned: what each hands the library from its options (the library call stood in for by one
that records its arguments and stops the command: only the command's own wiring is under test), and what each
prints by default."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from layerprof.cli import render
from layerprof.cli.commands import app
from layerprof.errors import LayerprofError

DATA = Path(__file__).parents[1] / "data"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def stop_recording(seen: list[object], name: str):
    def stand_in(*args: object, **kwargs: object) -> None:
        seen.append(kwargs[name])
        raise LayerprofError("stopped here")

    return stand_in


def stop(*args: object, **kwargs: object) -> None:
    raise LayerprofError("stopped here")


def test_models_prints_names_unless_asked_for_json() -> None:
    plain = invoke("models")
    assert plain.exit_code == 0, plain.output
    assert not plain.output.lstrip().startswith(("{", "["))
    assert json.loads(invoke("models", "--json").output)


def test_profile_times_layers_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    monkeypatch.setattr("layerprof.measure.jobs.plan_profile", stop_recording(seen, "per_layer"))
    assert "stopped here" in invoke("profile", "pythia-14m").output
    assert "stopped here" in invoke("profile", "pythia-14m", "--per-layer").output
    assert seen == [False, True]


def test_profile_on_ray_asks_for_the_gpu_kinds() -> None:
    result = invoke("profile", "pythia-14m", "--executor", "ray")
    assert result.exit_code == 2, result.output
    assert "--executor ray needs --gpu-kinds" in result.output


def test_audit_prints_its_report(monkeypatch: pytest.MonkeyPatch) -> None:
    report = SimpleNamespace(exit_code=0)
    shown: list[tuple[object, bool]] = []
    monkeypatch.setattr("layerprof.predict.audit.audit", lambda *args: report)
    monkeypatch.setattr(render, "audit", lambda report, as_json: shown.append((report, as_json)))
    result = invoke("audit", "setup.py:step", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert shown == [(report, False)]


def test_a_ladder_without_a_split_report_prints_the_ladder_alone() -> None:
    result = invoke("ladder", str(DATA / "profile-v1-measured.json"))
    assert result.exit_code == 0, result.output
    assert "ladder" in result.output


def test_correlate_hands_over_its_layer_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def plan_study(task: str, selection: object, *rest: object) -> None:
        seen.append(selection)
        raise LayerprofError("stopped here")

    monkeypatch.setattr("layerprof.fidelity.correlate.plan_study", plan_study)
    assert "stopped here" in invoke("correlate", "digits").output
    assert "stopped here" in invoke("correlate", "digits", "--layers", "1,3").output
    assert seen[0] is None
    assert seen[1] is not None and seen[1].resolve(4) == (1, 3)  # type: ignore[attr-defined]


def test_simulate_hands_over_its_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    monkeypatch.setattr("layerprof.fidelity.simulate.simulate", stop_recording(seen, "gpu_memory"))
    assert "stopped here" in invoke("simulate", "study").output
    assert "stopped here" in invoke("simulate", "study", "--gpu-memory", "8GiB").output
    assert seen == [None, 8 * 2**30]


def test_estimate_resumes_unless_told_to_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def plan_estimate(*args: object) -> None:
        seen.append(args[7])  # model, options, settings, selection, out, calibrate, threads, restart
        raise LayerprofError("stopped here")

    monkeypatch.setattr("layerprof.predict.jobs.plan_estimate", plan_estimate)
    assert "stopped here" in invoke("estimate", "pythia-14m").output
    assert "stopped here" in invoke("estimate", "pythia-14m", "--restart").output
    assert seen == [False, True]


def test_a_ladder_priced_without_a_gpu_is_refused() -> None:
    result = invoke("ladder", str(DATA / "profile-v1-measured.json"), "--price", "H100=2")
    assert result.exit_code == 2, result.output
    assert "give --gpu too" in result.output


def test_a_ladder_with_the_split_report_prints_it(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[object] = []
    monkeypatch.setattr("layerprof.fidelity.granularity.choose_split_for_profile", lambda *args: "REPORT")
    monkeypatch.setattr(render, "split_report", lambda report, output_format: shown.append(report))
    result = invoke("ladder", str(DATA / "profile-v1-measured.json"), "--split", "auto")
    assert result.exit_code == 0, result.output
    assert shown == ["REPORT"]


def test_correlate_hands_over_no_continued_chains_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def plan_study(*args: object) -> None:
        seen.append(args[6])  # task, selection, fractions, seeds, grid, preset, continued, judge seeds
        raise LayerprofError("stopped here")

    monkeypatch.setattr("layerprof.fidelity.correlate.plan_study", plan_study)
    assert "stopped here" in invoke("correlate", "digits").output
    assert seen == [()]


def test_simulate_prints_tables_unless_asked_for_json(monkeypatch: pytest.MonkeyPatch) -> None:
    simulation = SimpleNamespace(notes=[], study="s", to_dict=lambda: {"study": "s"})
    shown: list[str] = []
    monkeypatch.setattr("layerprof.fidelity.simulate.simulate", lambda *args, **kwargs: simulation)
    monkeypatch.setattr("layerprof.outputs.studies.write_simulation", lambda *args: [])
    monkeypatch.setattr(render, "simulation", lambda *args: shown.append("tables"))
    monkeypatch.setattr(render, "as_json", lambda data: shown.append(f"json {data}"))
    assert invoke("simulate", "study").exit_code == 0
    assert invoke("simulate", "study", "--json").exit_code == 0
    assert shown == ["tables", "json {'study': 's'}"]


def test_plan_prints_the_plan_unless_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[object] = []
    monkeypatch.setattr("layerprof.measure.cluster.inventory_from_option", lambda cluster: None)
    monkeypatch.setattr("layerprof.fidelity.recipes.plan_recipes", lambda *args, **kwargs: "PLAN")
    monkeypatch.setattr(render, "cluster_plan", lambda result, output_format, wide: shown.append(result))
    result = invoke("plan", str(DATA / "profile-v1-measured.json"), "--cluster", "2xH100")
    assert result.exit_code == 0, result.output
    assert shown == ["PLAN"]


def test_check_says_what_the_updated_baseline_holds(tmp_path: Path) -> None:
    baseline = tmp_path / f"baseline-{'b' * 120}.json"  # wider than any terminal
    result = invoke("check", str(DATA / "profile-v1-measured.json"), str(baseline), "--update-baseline")
    assert result.exit_code == 0, result.output
    # one line, the paths whole however long (a copyable path is never wrapped), at any terminal width
    assert result.output == f"baseline {baseline} now holds {DATA / 'profile-v1-measured.json'} (6 cells)\n"


def test_fit_sizes_its_settings_at_one_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def fit_recipes(model: str, options: object, settings: object, *args: object, **kwargs: object) -> None:
        seen.append((settings.batch_sizes, settings.trainable_layer_counts))  # type: ignore[attr-defined]
        raise LayerprofError("stopped here")

    monkeypatch.setattr("layerprof.fidelity.recipes.fit_recipes", fit_recipes)
    assert "stopped here" in invoke("fit", "pythia-14m", "--memory", "8GiB").output
    assert seen == [((1,), (1,))]


def test_layers_notes_only_a_depth_it_could_not_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    deepest = SimpleNamespace(depth=2, unwrap=("gpt_neox",))
    monkeypatch.setattr("layerprof.fidelity.granularity.splits_by_depth", lambda *args: [deepest])
    monkeypatch.setattr("layerprof.sources.models.split_model", stop)
    reached = invoke("layers", "pythia-14m", "--depth", "2").output
    assert "nothing below depth" not in reached and "stopped" in reached
    assert "nothing below depth 2 to descend into" in " ".join(
        invoke("layers", "pythia-14m", "--depth", "3").output.split()
    )


def test_profile_on_ray_prints_each_sweeps_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    run = SimpleNamespace(failed=[])
    shown: list[object] = []
    request = SimpleNamespace(settings=SimpleNamespace(batch_sizes=(8,)))
    monkeypatch.setattr("layerprof.measure.cluster.plan_cluster_profile", lambda *args: request)
    monkeypatch.setattr("layerprof.measure.cluster.profile_on_ray", lambda *args: run)
    monkeypatch.setattr(render, "ray_outcomes", shown.append)
    result = invoke("profile", "pythia-14m", "--executor", "ray", "--gpu-kinds", "L4")
    assert result.exit_code == 0, result.output
    assert shown == [run]


def test_an_estimate_against_a_measured_profile_prints_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    result = SimpleNamespace(failure_summary=lambda: None)
    job = SimpleNamespace(time_model=None, environment=SimpleNamespace(device_name="d"), path=None)
    shown: list[object] = []
    monkeypatch.setattr("layerprof.predict.jobs.plan_estimate", lambda *args: job)
    monkeypatch.setattr("layerprof.predict.timemodel.check_predictions", lambda result, measured: "CHECKS")
    for name in ("calibration", "cell_tables", "breakdown", "sweep_end"):
        monkeypatch.setattr(render, name, lambda *args: None)
    monkeypatch.setattr(render, "run_job", lambda *args: result)
    monkeypatch.setattr(render, "prediction_check", lambda checks, measured, output_format: shown.append(checks))
    outcome = invoke("estimate", "pythia-14m", "--against", str(DATA / "profile-v1-measured.json"))
    assert outcome.exit_code == 0, outcome.output
    assert shown == ["CHECKS"]


def test_layers_costs_hands_over_its_optimizer_saves_the_table_and_prints_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved: list[object] = []
    table = SimpleNamespace(save=saved.append)
    seen: list[tuple] = []
    monkeypatch.setattr("layerprof.predict.layercosts.layer_costs", lambda *args: seen.append(args) or table)
    monkeypatch.setattr(render, "layer_costs", lambda *args: seen.append(args))
    out = tmp_path / "costs.json"
    result = invoke("layers", "pythia-14m", "--costs", "--optimizer", "sgd", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    (_, _, batch_size, precision, target, recipe_fields), shown = seen
    assert (batch_size, precision, target, recipe_fields["optimizer"]) == (1, "32-true", "cuda", "sgd")
    assert saved == [out]
    assert shown == (table, out, True, "table")


def test_layers_notes_how_the_model_was_built_unless_asked_for_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.sources.builders import CONSTRUCTION_NOTES

    construction = next(iter(CONSTRUCTION_NOTES))
    notes: list[object] = []
    monkeypatch.setattr(
        "layerprof.sources.models.split_model", lambda *args: SimpleNamespace(construction=construction)
    )
    monkeypatch.setattr(render, "layer_split", lambda *args: None)
    monkeypatch.setattr(render, "note", lambda text, *args: notes.append(text))
    assert invoke("layers", "pythia-14m").exit_code == 0
    assert notes == [CONSTRUCTION_NOTES[construction]]
    assert invoke("layers", "pythia-14m", "--json").exit_code == 0
    assert notes == [CONSTRUCTION_NOTES[construction]]  # none more


def test_profile_on_ray_keeps_its_profiles_in_profiles_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    request = SimpleNamespace(settings=SimpleNamespace(batch_sizes=(8,)))
    monkeypatch.setattr("layerprof.measure.cluster.plan_cluster_profile", lambda *args: request)
    monkeypatch.setattr("layerprof.measure.cluster.profile_on_ray", stop_recording_argument(seen := [], 2))
    invoke("profile", "pythia-14m", "--executor", "ray", "--gpu-kinds", "L4")
    invoke("profile", "pythia-14m", "--executor", "ray", "--gpu-kinds", "L4", "--out", "elsewhere")
    assert seen == [Path("profiles"), Path("elsewhere")]


def stop_recording_argument(seen: list[object], index: int):
    def stand_in(*args: object, **kwargs: object) -> None:
        seen.append(args[index])
        raise LayerprofError("stopped here")

    return stand_in


def test_an_estimate_prints_its_cells_and_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    result = SimpleNamespace(failure_summary=lambda: None)
    job = SimpleNamespace(time_model=None, environment=SimpleNamespace(device_name="d"), path="P")
    shown: list[tuple] = []
    monkeypatch.setattr("layerprof.predict.jobs.plan_estimate", lambda *args: job)
    for name in ("calibration", "breakdown"):
        monkeypatch.setattr(render, name, lambda *args: None)
    monkeypatch.setattr(render, "run_job", lambda *args: result)
    monkeypatch.setattr(render, "cell_tables", lambda *args: shown.append(("cells", *args)))
    monkeypatch.setattr(render, "sweep_end", lambda *args: shown.append(("end", *args)))
    outcome = invoke("estimate", "pythia-14m", "--format", "md")
    assert outcome.exit_code == 0, outcome.output
    assert shown == [("cells", result, "md"), ("end", result, "P", "md")]


def test_a_ladder_as_json_holds_the_split_report_under_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass

    @dataclass
    class Report:
        chosen: str

    monkeypatch.setattr("layerprof.fidelity.granularity.choose_split_for_profile", lambda *args: Report("blocks"))
    result = invoke("ladder", str(DATA / "profile-v1-measured.json"), "--split", "auto", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["split"] == {"chosen": "blocks"}


def test_report_says_each_file_written_and_each_figure_not_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    written = SimpleNamespace(files=[Path("r/a.png"), Path("r/b.png")], notes=["no memory categories"])
    monkeypatch.setattr("layerprof.outputs.report.report_profiles", lambda *args: written)
    lines: list[str] = []
    monkeypatch.setattr(render, "line", lines.append)
    monkeypatch.setattr(render, "note", lambda text, label, colour: lines.append(f"{label}: {text}"))
    result = invoke("report", str(DATA / "profile-v1-measured.json"))
    assert result.exit_code == 0, result.output
    assert lines == ["wrote r/a.png", "wrote r/b.png", "not drawn: no memory categories"]


def test_correlate_says_what_it_will_run_first(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = SimpleNamespace(configs=[1, 2], trainable_layer_counts=(1, 3), budget_fractions=(0.5, 1.0), chains=(),
                           trial_count=8)  # fmt: skip
    monkeypatch.setattr("layerprof.fidelity.correlate.plan_study", lambda *args: plan)
    monkeypatch.setattr("layerprof.fidelity.correlate.run_study", stop)
    lines: list[str] = []
    monkeypatch.setattr(render, "line", lines.append)
    invoke("correlate", "digits-mlp")
    assert lines == ["digits-mlp: 2 configurations x (z 1,3 x budgets 0.5,1) x 1 seed(s) = 8 trials · local"]


def test_the_console_script_runs_the_app(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from layerprof.cli.commands import main

    monkeypatch.setattr("sys.argv", ["layerprof", "models", "--json"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 0
    assert json.loads(capsys.readouterr().out)


def _recorded(shown: list[tuple], name: str):
    return lambda *args: shown.append((name, *args))


def _status(shown: list[tuple]):
    from contextlib import nullcontext

    return lambda text: shown.append(("status", text)) or nullcontext()


def test_a_profile_builds_on_its_device_and_prints_cells_layer_times_end_and_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = SimpleNamespace(failure_summary=lambda: None)
    job = SimpleNamespace(device="cpu", path="P")
    shown: list[tuple] = []
    monkeypatch.setattr("layerprof.measure.jobs.plan_profile", lambda *args, **kwargs: shown.append(args[2]) or job)
    monkeypatch.setattr(render, "status", _status(shown))
    monkeypatch.setattr(render, "run_job", lambda *args: result)
    for name in ("cell_tables", "layer_times", "sweep_end", "sweep_warnings"):
        monkeypatch.setattr(render, name, _recorded(shown, name))
    assert invoke("profile", "pythia-14m").exit_code == 0
    status, settings, *printed = shown
    assert (status, settings.eval_frozen) == (("status", "building pythia-14m"), False)
    assert printed == [
        ("cell_tables", result, "table"), ("layer_times", result, "table"), ("sweep_end", result, "P", "table"),
        ("sweep_warnings", result),
    ]  # fmt: skip
    shown.clear()
    assert invoke("profile", "pythia-14m", "--device", "cpu").exit_code == 0
    assert shown[0] == ("status", "building pythia-14m on cpu")


def test_an_estimate_calibrates_nothing_unless_asked_and_prints_calibration_and_breakdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = SimpleNamespace(failure_summary=lambda: None)
    job = SimpleNamespace(time_model="MODEL", environment=SimpleNamespace(device_name="d"), path="P")
    shown: list[tuple] = []
    monkeypatch.setattr("layerprof.predict.jobs.plan_estimate", lambda *args: shown.append(args) or job)
    monkeypatch.setattr(render, "run_job", lambda *args: result)
    for name in ("calibration", "breakdown", "cell_tables", "sweep_end"):
        monkeypatch.setattr(render, name, _recorded(shown, name))
    assert invoke("estimate", "pythia-14m").exit_code == 0
    (arguments, *printed) = shown
    assert (arguments[2].eval_frozen, arguments[5]) == (False, ())
    assert [p for p in printed if p[0] in ("calibration", "breakdown")] == [
        ("calibration", "MODEL"), ("breakdown", result, "table"),
    ]  # fmt: skip


def test_an_audit_that_fails_unexpectedly_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("the step broke")

    monkeypatch.setattr("layerprof.predict.audit.audit", broken)
    monkeypatch.setattr("layerprof.measure.environment.resolve_device", lambda device: "cpu")
    result = invoke("audit", f"{DATA / 'profile-v1-measured.json'}:x")
    assert result.exit_code == 2, result.output


def test_check_gates_strictly_by_default_and_prints_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = SimpleNamespace(exit_code=0)
    shown: list[object] = []
    monkeypatch.setattr("layerprof.outputs.check.check_files", lambda *args, **kwargs: shown.append(kwargs) or verdict)
    monkeypatch.setattr(render, "check_result", shown.append)
    path = str(DATA / "profile-v1-measured.json")
    assert invoke("check", path, path).exit_code == 0
    settings, printed = shown
    assert (settings["accept_changes"], settings["allow_device_mismatch"], printed) == (False, False, verdict)


def test_layers_at_a_depth_names_its_unwrap_unless_asked_for_json(monkeypatch: pytest.MonkeyPatch) -> None:
    deepest = SimpleNamespace(depth=2, unwrap=("gpt_neox", "layers"))
    monkeypatch.setattr("layerprof.fidelity.granularity.splits_by_depth", lambda *args: [deepest])
    monkeypatch.setattr("layerprof.sources.models.split_model", stop)
    lines: list[str] = []
    monkeypatch.setattr(render, "line", lines.append)
    invoke("layers", "pythia-14m", "--depth", "2")
    assert lines == ["depth 2: --unwrap gpt_neox,layers"]
    invoke("layers", "pythia-14m", "--depth", "2", "--json")
    assert lines == ["depth 2: --unwrap gpt_neox,layers"]  # none more
