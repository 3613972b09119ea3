"""Parts of the profile file pinned with hand-worked values: the row fields' types as validation checks them, the
recipe in words, the first recipe difference, and an output whose every write bit is off."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.profile import Layer, SweepSettings, _row_types, ensure_writable, recipe_difference


def test_row_types_are_each_fields_type_without_none() -> None:
    types = _row_types()
    assert (types["batch_size"], types["status"], types["step_time_ms"]) == (int, str, float)
    assert (types["visit_medians_ms"], types["disturbed"], types["estimate_basis"]) == (list, bool, str)


def test_the_recipe_in_words_names_checkpointing() -> None:
    settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,), checkpointing="trainable")
    assert settings.recipe_text == "checkpointing trainable"
    assert settings.recipe_label == "adamw, 32-true, no adapters, checkpointing trainable, eager"
    plain = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,))
    assert plain.recipe_text == ""
    assert plain.recipe_label == "adamw, 32-true, no adapters, no checkpointing, eager"


def test_the_first_recipe_difference_has_both_values() -> None:
    ours = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,))
    theirs = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,), optimizer="sgd", checkpointing="trainable")
    assert recipe_difference(ours, theirs) == ("optimizer", "adamw", "sgd")
    assert recipe_difference(ours, ours) is None


def test_an_output_with_no_write_bit_is_refused_even_when_others_may_run_it(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{}")
    path.chmod(0o555)  # r-x for all: no write bit (the others' execute bit is no write bit)
    try:
        with pytest.raises(LayerprofError, match="is read-only"):
            ensure_writable(path)
    finally:
        path.chmod(0o644)


def test_a_layer_keeps_its_ties_through_the_file() -> None:
    layer = Layer(1, "head", "Linear", 10, ("embed.weight",), 0, shared_with=("embed",), calls=2)
    assert layer.to_dict()["shared_with"] == ["embed"]
    assert Layer.from_dict(layer.to_dict()) == layer


def test_the_recipe_label_names_lora_and_eval_mode_frozen_layers() -> None:
    plain = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,))
    assert plain.recipe_label == "adamw, 32-true, no adapters, no checkpointing, eager"
    lora = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,), adapter="lora", eval_frozen=True)
    assert lora.recipe_label == (
        f"adamw, 32-true, LoRA r={lora.adapter_rank} alpha={lora.adapter_alpha:g} (last z layers), no checkpointing, "
        "eager, frozen layers in eval mode"
    )


def test_a_models_unwrap_is_read_back_as_a_tuple_and_another_layerprof_file_is_named() -> None:
    from layerprof.profile import ModelInfo, Profile

    info = ModelInfo.from_dict({"spec": "m", "source": "user", "name": "m", "unwrap": ["encoder"], "layers": []})
    assert info.unwrap == ("encoder",)
    with pytest.raises(LayerprofError, match=r"^x.json is a `layers --costs` table, not a profile"):
        Profile.from_dict({"schema": "layerprof.layer-costs/1"}, "x.json")


def test_sweep_settings_as_json_hold_lists_not_tuples() -> None:
    data = SweepSettings(batch_sizes=(8, 16), trainable_layer_counts=(1, 2)).to_dict()
    assert (data["batch_sizes"], data["trainable_layer_counts"], data["adapter_targets"]) == ([8, 16], [1, 2], [])


def test_the_output_lock_holds_this_runs_pid_alone_and_survives_its_file_removed(tmp_path: Path) -> None:
    import os

    from layerprof.profile import OutputLock, lock_path_for

    path = tmp_path / "p.json"
    lock_file = lock_path_for(path)
    lock_file.write_text("123456789012")  # left by a dead run, longer than any PID: overwritten whole
    with OutputLock(path) as lock:
        assert lock.holder is None and lock_file.read_text() == str(os.getpid())
        lock_file.unlink()  # removed under the holder (a cleanup): releasing is still quiet
    assert lock.descriptor is None
