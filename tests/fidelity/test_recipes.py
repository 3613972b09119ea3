"""Recipes across the decisions: each ladder, plan and report names its profile's recipe."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.fidelity.ladder import build_ladder
from layerprof.fidelity.plan import plan_cluster
from layerprof.measure.cluster import parse_inventory
from layerprof.outputs.report import write_report
from layerprof.outputs.tables import ladder_view, markdown_views, plan_views
from layerprof.profile import Profile, save_profile
from tests.fidelity.test_ladder import synthetic_profile
from tests.measure.test_cluster import h100_profile

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
