"""Recipes across the decisions: each ladder, plan and report names its profile's recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.cli.options import parse_recipes
from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import build_ladder
from layerprof.fidelity.plan import plan_cluster
from layerprof.fidelity.recipes import RecipePlan, chosen_plan, fit_recipes, plan_recipes, recipe_ladder
from layerprof.measure.cells import failed_row
from layerprof.measure.cluster import parse_inventory
from layerprof.outputs.recipes import recipe_views
from layerprof.outputs.report import write_report
from layerprof.outputs.tables import ladder_view, markdown_views, plan_views
from layerprof.parsing import LayerSelection, price_book
from layerprof.profile import Profile, SweepSettings, save_profile
from layerprof.sources.models import ModelOptions
from tests.cli.test_cli import assert_one_line_error
from tests.fidelity.test_ladder import synthetic_profile
from tests.measure.test_cluster import H100_NAME, gpu_profile, h100_profile
from tests.predict.test_layercosts import EXAMPLE

LORA_CKPT = {"adapter": "lora", "adapter_rank": 4, "checkpointing": "trainable", "optimizer": "adamw8bit"}


def with_recipe(profile: Profile, **recipe: object) -> Profile:
    for key, value in recipe.items():
        setattr(profile.settings, key, value)
    return profile


def test_the_recipe_label_names_every_axis_even_at_its_default() -> None:
    plain = synthetic_profile({1: 1.0, 2: 3.0}).settings
    assert plain.recipe_label == "adamw, 32-true, no adapters, no checkpointing, eager"
    lora = with_recipe(synthetic_profile({1: 1.0, 2: 3.0}), **LORA_CKPT, compile_mode="default").settings
    assert lora.recipe_label == (
        "adamw8bit, 32-true, LoRA r=4 alpha=16 (last z layers), checkpointing trainable, torch.compile (default)"
    )
    assert lora.recipe()["adapter"] == "lora" and lora.recipe()["adapter_targets"] == []
    assert set(lora.recipe()) >= {"optimizer", "precision", "adapter", "checkpointing", "compile_mode"}


def test_ladder_names_the_recipe_in_its_json_and_heading(tmp_path: Path) -> None:
    profile = with_recipe(synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}), **LORA_CKPT)
    ladder = build_ladder(profile, eta=3.0)
    assert ladder.recipe_settings["checkpointing"] == "trainable" and ladder.recipe_settings["adapter_rank"] == 4
    assert "recipe: adamw8bit, 32-true, LoRA r=4" in ladder_view(ladder).markdown()
    path = tmp_path / "lora.json"
    save_profile(profile, path)
    result = CliRunner().invoke(app, ["ladder", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["recipe_settings"]["optimizer"] == "adamw8bit" and "checkpointing trainable" in data["recipe"]


def test_plan_names_the_recipe_in_its_json_and_title() -> None:
    profile = with_recipe(h100_profile(), checkpointing="trainable")
    plan = plan_cluster([profile], parse_inventory("1xH100"), eta=3, configs=9, budget_steps=100)
    assert plan.recipe_settings["checkpointing"] == "trainable" and plan.to_dict()["recipe"] == plan.recipe
    assert "recipe: adamw, 32-true, no adapters, checkpointing trainable, eager" in markdown_views(plan_views(plan))


def test_report_index_names_each_profiles_recipe(tmp_path: Path) -> None:
    plain = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    lora = with_recipe(synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}), **LORA_CKPT)
    report = write_report([("plain", plain), ("lora", lora)], tmp_path / "report")
    index = (tmp_path / "report" / "index.md").read_text()
    assert report.files[-1].name == "index.md"
    assert "**plain**" in index and "recipe: adamw, 32-true, no adapters, no checkpointing, eager" in index
    assert "recipe: adamw8bit, 32-true, LoRA r=4 alpha=16 (last z layers), checkpointing trainable, eager" in index


# ---------------------------------------------------------------- decisions across recipes

GIB = 2**30


def cuda_profile(costs: dict[int, float], memory_gib: dict[int, float], **recipe: object) -> Profile:
    """A measured CUDA profile (80 GiB) of the synthetic 3-layer model under a recipe."""
    memory = {z: int(gib * GIB) for z, gib in memory_gib.items()}
    return with_recipe(synthetic_profile(costs, memory, device="cuda"), **recipe)


def test_each_rung_goes_to_the_recipe_that_fits_the_most_trials_then_the_quicker_step() -> None:
    """Rungs spaced on the plain recipe (z = 1, 2, 3). Checkpointing holds less and runs 1.3x as long: at z = 1 and
    2 it fits more trials on the 80 GiB GPU (13 against 7, 8 against 3, with the 0.75 GiB context reserve); at
    z = 3 both fit 2 (39 and 35 GiB), and the quicker plain step wins."""
    plain = cuda_profile({1: 1.0, 2: 3.0, 3: 9.0}, {1: 10, 2: 20, 3: 39})
    checkpointed = cuda_profile({1: 1.3, 2: 3.9, 3: 11.7}, {1: 5, 2: 9, 3: 35}, checkpointing="trainable")
    result = recipe_ladder([("plain.json", plain), ("ckpt.json", checkpointed)], eta=3.0)
    assert [rung.trainable_layers for rung in result.rungs] == [1, 2, 3]
    assert [[option.parallel_slots for option in rung.options] for rung in result.rungs] == [[7, 13], [3, 8], [2, 2]]
    ckpt = checkpointed.settings.recipe_label
    assert [rung.chosen for rung in result.rungs] == [ckpt, ckpt, plain.settings.recipe_label]
    assert result.rungs[2].reason == "most trials per GPU (2), then the lowest step time"
    assert result.reference == plain.settings.recipe_label and result.most_trials == ckpt
    assert result.to_dict()["schema"] == "layerprof.recipes/1"


def test_without_a_gpu_memory_the_smaller_need_gives_the_rung() -> None:
    plain = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}, {1: 10 * GIB, 2: 20 * GIB, 3: 30 * GIB})
    eight_bit = with_recipe(
        synthetic_profile({1: 1.1, 2: 3.3, 3: 9.9}, {1: 9 * GIB, 2: 25 * GIB, 3: 20 * GIB}), optimizer="adamw8bit"
    )
    result = recipe_ladder([("a", plain), ("b", eight_bit)], eta=3.0)
    assert result.gpu_memory_bytes is None
    assert [rung.chosen.split(",")[0] for rung in result.rungs] == ["adamw8bit", "adamw", "adamw8bit"]
    assert result.rungs[0].reason == "the smallest memory need, then the lowest step time"


def test_ladder_cli_across_recipes_and_its_refusals(tmp_path: Path) -> None:
    plain, lora = tmp_path / "plain.json", tmp_path / "lora.json"
    save_profile(cuda_profile({1: 1.0, 2: 3.0, 3: 9.0}, {1: 10, 2: 20, 3: 39}), plain)
    save_profile(cuda_profile({1: 0.8, 2: 2.0, 3: 5.0}, {1: 4, 2: 5, 3: 6}, adapter="lora"), lora)
    runner = CliRunner()
    result = runner.invoke(app, ["ladder", str(plain), str(lora), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the note on adapters goes to stderr
    assert data["decision"] == "ladder" and len(data["recipes"]) == 2
    assert all("LoRA" in rung["chosen"] for rung in data["rungs"])
    on_h100 = json.loads(runner.invoke(app, ["ladder", str(plain), str(lora), "--gpu", "H100", "--json"]).stdout)
    assert on_h100["gpu_memory_bytes"] == 81_559 * 2**20  # --gpu's memory gives the slots
    table = runner.invoke(app, ["ladder", str(plain), str(lora), "--format", "md"])
    assert table.exit_code == 0 and "| budget | z | given by | why |" in table.output
    other = tmp_path / "other.json"
    profile = cuda_profile({1: 1.0, 2: 3.0, 3: 9.0}, {1: 10, 2: 20, 3: 39})
    profile.model.spec = "another"
    save_profile(profile, other)
    assert_one_line_error(runner.invoke(app, ["ladder", str(plain), str(other)]), "different models")
    assert_one_line_error(runner.invoke(app, ["ladder", str(plain), str(plain)]), "one profile per recipe")
    assert_one_line_error(
        runner.invoke(app, ["ladder", str(plain), str(lora), "--export", "optuna"]), "--export takes one PROFILE"
    )


def test_plan_across_recipes_chooses_the_soonest_and_names_the_most_trials_per_gpu() -> None:
    """One H100, 9 configurations, rungs z = 1 and 3, GPU-bound trials taking turns: plain runs 9 x 10 s + 3 x 30 s
    = 180 s; checkpointing 1.3x as long (234 s) though an H100 holds 21 and 8 of its trials against 10 and 2."""
    plain = h100_profile()
    checkpointed = with_recipe(
        gpu_profile(H100_NAME, 79.6, {1: 13.0, 2: 26.0, 3: 39.0}, {1: 3.0, 2: 6.0, 3: 9.0}), checkpointing="trainable"
    )
    result = plan_recipes([plain, checkpointed], parse_inventory("1xH100"), eta=3, configs=9, budget_steps=1000)
    assert isinstance(result, RecipePlan)
    assert [(s.rungs, s.trials_per_gpu) for s in result.recipes] == [([1, 3], [10, 2]), ([1, 3], [21, 8])]
    assert [s.makespan_seconds for s in result.recipes] == pytest.approx([180.0, 234.0])
    assert result.chosen == plain.settings.recipe_label and result.best.recipe == result.chosen
    assert result.most_trials == checkpointed.settings.recipe_label
    assert chosen_plan(result) is result.best and result.to_dict()["decision"] == "plan"
    alone = plan_recipes([plain], parse_inventory("1xH100"), eta=3, configs=9, budget_steps=1000)
    assert chosen_plan(alone) is alone and alone.recipe == plain.settings.recipe_label


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("checkpointing=sometimes", "checkpointing must be one of none, trainable"),
        ("rank=4", "is not KEY=VALUE"),
        ("lora-rank=0", "lora-rank 0 is out of range"),
        ("lora-alpha=high", "lora-alpha must be a number"),
        (",", "changes nothing"),
    ],
)
def test_bad_recipe_is_one_line(spec: str, message: str) -> None:
    with pytest.raises(LayerprofError, match=message):
        parse_recipes([spec])


def test_parse_recipes() -> None:
    assert parse_recipes(["adapter=lora,lora-rank=16", "optimizer=adamw8bit"]) == [
        {"adapter": "lora", "adapter_rank": 16},
        {"optimizer": "adamw8bit"},
    ]


def test_fit_across_recipes_gives_each_z_the_largest_batch(tmp_path: Path) -> None:
    """A small residual MLP on 1 MiB (CPU): checkpointing keeps less of each trainable block, so at every z its batch
    is at least plain training's."""
    model = f"{EXAMPLE}:mlp"
    args = ["fit", model, "--input-shape", "16", "--num-classes", "10", "--set", "width=32", "--set", "depth=2",
            "--set", "features=16",
            "--memory", "1MiB", "--target", "cpu", "--layers", "1,4", "--recipe", "checkpointing=trainable",
            "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    plain, ckpt = data["recipes"]
    assert data["decision"] == "fit" and "checkpointing trainable" in ckpt and "no checkpointing" in plain
    assert data["names"] == ["options", "checkpointing=trainable"] and data["most_trials"] == ckpt
    # z = 1: the one trainable layer (the head) keeps no more under checkpointing; z = 4: every block recomputed
    assert [[c["largest_batch_sizes"][plain], c["largest_batch_sizes"][ckpt]] for c in data["choices"]] == [
        [2266, 2266], [876, 1185],
    ]  # fmt: skip
    assert [choice["chosen"] for choice in data["choices"]] == [plain, ckpt]  # a tie: the first recipe
    assert [fit["recipe"] for fit in data["fits"]] == [plain, ckpt]
    assert_one_line_error(CliRunner().invoke(app, [*args[:-1], "--recipe", "optimizer=adamw"]), "one recipe twice")


# ---------------------------------------------------------------- a recipe or a z without an answer

H100_USD = 3.9492  # the built-in price (Modal's list, 2026-05-07)
PLAN_FAILURE = (
    "the profile has no successful full-training cell (z=3) at batch size 1 (it is oom: out of memory); a ladder "
    "needs the top rung measured"
)
LORA_Z1 = (
    "z=1, batch 1: cannot estimate: LayerprofError: --adapter lora: no target module (the family's default) in the "
    "last 1 layer(s); a larger z, or --adapter-targets naming modules there"
)


def test_a_rung_a_recipe_cannot_give_is_its_own_row_with_its_reason(tmp_path: Path) -> None:
    """LoRA's z = 1 cell failed (the head holds no target): the rung goes to plain training, the LoRA row says why."""
    plain = cuda_profile({1: 1.0, 2: 3.0, 3: 9.0}, {1: 10, 2: 20, 3: 39})
    lora = cuda_profile({1: 0.8, 2: 2.0, 3: 5.0}, {1: 4, 2: 5, 3: 6}, adapter="lora")
    assert lora.rows[0].trainable_layers == 1
    lora.rows[0] = failed_row(lora.rows[0], "error", "cannot estimate: --adapter lora: no target module")
    result = recipe_ladder([("plain.json", plain), ("lora.json", lora)], eta=3.0)
    assert [rung.chosen for rung in result.rungs] == [plain.settings.recipe_label, *[lora.settings.recipe_label] * 2]
    assert [(f.name, f.trainable_layers, f.reason) for f in result.failures] == [
        ("lora.json", 1, "the cell failed (error): cannot estimate: --adapter lora: no target module")
    ]
    paths = [tmp_path / "plain.json", tmp_path / "lora.json"]
    save_profile(plain, paths[0])
    save_profile(lora, paths[1])
    done = CliRunner().invoke(app, ["ladder", *map(str, paths), "--json"])
    assert done.exit_code == 0, done.output
    assert [(f["name"], f["trainable_layers"]) for f in json.loads(done.stdout)["failures"]] == [(str(paths[1]), 1)]
    table = CliRunner().invoke(app, ["ladder", *map(str, paths), "--format", "md"])
    assert "| recipe | z | why |" in table.output and "no target module" in table.output


def test_fit_across_recipes_keeps_a_z_a_recipe_cannot_build_as_its_own_row() -> None:
    """LoRA on pythia-14m: z = 1 trains the output head alone, which the default targets leave out; that z is a row
    with the reason, every other (recipe, z) answers. Only where nothing answers is it a one-line error."""
    settings = SweepSettings((1,), (1,), mode="estimate", target="cpu")
    result = fit_recipes("pythia-14m", ModelOptions(seq_len=16), settings, [{"adapter": "lora"}], 256 * 2**20,
                         LayerSelection("1,3"))  # fmt: skip
    data = result.to_dict()
    plain, lora = data["recipes"]
    assert data["failures"] == [{"recipe": lora, "name": "adapter=lora", "trainable_layers": 1, "reason": LORA_Z1}]
    assert [c["largest_batch_sizes"] for c in data["choices"]] == [{plain: 16}, {plain: 16, lora: 21}]
    assert [c["chosen"] for c in data["choices"]] == [plain, lora]
    assert data["fits"][1]["results"][0]["error"] == LORA_Z1
    batches, failures = recipe_views(result)
    assert [row[1:] for row in batches.rows] == [["16", "failed", "options"], ["16", "21", "adapter=lora"]]
    assert failures.headers == ["recipe", "z", "why"] and failures.rows == [["adapter=lora", "1", LORA_Z1]]
    args = ["fit", "pythia-14m", "--seq-len", "16", "--memory", "256MiB", "--target", "cpu", "--layers", "1"]
    nothing = CliRunner().invoke(app, [*args, "--adapter", "lora", "--recipe", "lora-rank=4"])
    assert_one_line_error(nothing, "no z can be fitted: " + LORA_Z1)


def test_a_recipe_that_cannot_be_planned_is_its_own_row_and_the_others_answer(tmp_path: Path) -> None:
    """Checkpointing's full-training cell failed: its ladder has no top rung, so it has no plan; plain training's
    plan answers. Only where no recipe can be planned is it a one-line error."""
    plain = h100_profile()
    broken = with_recipe(h100_profile(), checkpointing="trainable")
    broken.rows[-1] = failed_row(broken.rows[-1], "oom", "out of memory")
    result = plan_recipes([plain, broken], parse_inventory("1xH100"), eta=3, configs=9, budget_steps=1000)
    assert isinstance(result, RecipePlan) and [s.recipe for s in result.recipes] == [plain.settings.recipe_label]
    assert [(f.recipe, f.trainable_layers) for f in result.failures] == [(broken.settings.recipe_label, None)]
    assert result.failures[0].reason == PLAN_FAILURE
    paths = [tmp_path / "plain.json", tmp_path / "broken.json"]
    save_profile(plain, paths[0])
    save_profile(broken, paths[1])
    runner = CliRunner()
    done = runner.invoke(app, ["plan", *map(str, paths), "--cluster", "1xH100", "--configs", "9", "--json"])
    assert done.exit_code == 0, done.output
    assert [f["reason"] for f in json.loads(done.stdout)["failures"]] == [PLAN_FAILURE]
    alone = with_recipe(h100_profile(), optimizer="sgd")
    alone.rows[-1] = failed_row(alone.rows[-1], "oom", "out of memory")
    save_profile(alone, paths[0])
    assert_one_line_error(
        runner.invoke(app, ["plan", *map(str, paths), "--cluster", "1xH100", "--configs", "9"]), PLAN_FAILURE
    )


def test_plan_across_recipes_answers_the_deadline_for_every_recipe_and_marks_the_cheapest(tmp_path: Path) -> None:
    """Up to 2 H100s at $3.9492/h, 9 configurations, rungs z = 1 and 3, GPU-bound trials taking turns. Successive
    halving over the ladder: plain training takes 9 x 10 s + 3 x 30 s = 180 s on one H100, checkpointing
    9 x 13 s + 3 x 39 s = 234 s on one and 5 x 13 s + 2 x 39 s = 143 s on two. By 200 s plain training holds one
    H100 for 180 s ($0.1975), checkpointing two for 143 s ($0.3137). Hyperband (3 configurations to z = 1, one on
    to z = 3, and 2 at z = 3) on one H100: plain 3 x 10 + 30 + 2 x 30 = 120 s ($0.1316), the cheapest of all;
    checkpointing 3 x 13 + 39 + 2 x 39 = 156 s ($0.1711)."""
    plain = h100_profile()
    checkpointed = with_recipe(
        gpu_profile(H100_NAME, 79.6, {1: 13.0, 2: 26.0, 3: 39.0}, {1: 3.0, 2: 6.0, 3: 9.0}), checkpointing="trainable"
    )
    result = plan_recipes([plain, checkpointed], parse_inventory("2xH100"), eta=3, configs=9, budget_steps=1000,
                          prices=price_book([], environ={}), deadline_seconds=200)  # fmt: skip
    halving = {d.recipe: d.answer for d in result.deadlines if d.answer.algorithm == "successive halving"}
    ours, theirs = halving[plain.settings.recipe_label], halving[checkpointed.settings.recipe_label]
    assert ours.gpus == [{"gpu": "H100", "count": 1}] and ours.makespan_seconds == pytest.approx(180.0)
    assert ours.usd_held == pytest.approx(H100_USD * 180 / 3600)
    assert theirs.gpus == [{"gpu": "H100", "count": 2}] and theirs.makespan_seconds == pytest.approx(143.0)
    assert theirs.usd_held == pytest.approx(2 * H100_USD * 143 / 3600)
    assert [(d.recipe == plain.settings.recipe_label, d.answer.algorithm, d.answer.met) for d in result.deadlines] == [
        (True, "successive halving", True), (True, "hyperband", True), (True, "asha", True),
        (False, "successive halving", True), (False, "hyperband", True), (False, "asha", True),
    ]  # fmt: skip
    cheapest = result.cheapest_deadline
    assert cheapest is not None and [d.cheapest for d in result.deadlines].count(True) == 1
    met = [d for d in result.deadlines if d.answer.met]
    assert cheapest.answer.usd_held == min(d.answer.usd_held for d in met)
    assert (cheapest.recipe, cheapest.answer.algorithm) == (plain.settings.recipe_label, "hyperband")
    assert cheapest.answer.makespan_seconds == pytest.approx(120.0)
    assert cheapest.answer.usd_held == pytest.approx(H100_USD * 120 / 3600)
    hyperband = next(d.answer for d in result.deadlines[3:] if d.answer.algorithm == "hyperband")
    assert hyperband.makespan_seconds == pytest.approx(156.0) and hyperband.gpus == [{"gpu": "H100", "count": 1}]
    data = result.to_dict()
    assert data["deadline_cheapest"] == {"recipe": cheapest.recipe, "algorithm": cheapest.answer.algorithm}
    assert [d["cheapest"] for d in data["deadlines"]].count(True) == 1 and len(data["deadlines"]) == 6
    views = recipe_views(result)
    deadline = next(view for view in views if view.title.startswith("the cheapest cluster"))
    assert [row[0].endswith(" *") for row in deadline.rows] == [d.cheapest for d in result.deadlines]
    assert [row[3] for row in deadline.rows][0::3] == ["1×H100", "2×H100"]
    paths = [tmp_path / "plain.json", tmp_path / "ckpt.json"]
    save_profile(plain, paths[0])
    save_profile(checkpointed, paths[1])
    args = ["plan", *map(str, paths), "--cluster", "2xH100", "--configs", "9", "--deadline", "200s"]
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["deadline_cheapest"] == {"recipe": plain.settings.recipe_label,
                                                            "algorithm": "hyperband"}  # fmt: skip
    table = CliRunner().invoke(app, [*args, "--format", "md"])
    assert f"| {checkpointed.settings.recipe_label} | successive halving | 3.33 min | 2×H100 |" in table.output
