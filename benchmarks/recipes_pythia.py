"""pythia-1.4b (T = 2048) on an H100 under every recipe, beside accelerate's and DeepSpeed's estimators.

    .venv/bin/python benchmarks/recipes_pythia.py ours                 # layerprof estimate per recipe (slow: traces)
    .venv/bin/python benchmarks/recipes_pythia.py fit                  # layerprof fit --gpu H100 per recipe (slower)
    .venv/bin/python benchmarks/recipes_pythia.py accelerate           # accelerate's estimate-memory, for real
    DS_PYTHON=/path/to/python-with-deepspeed \\
        .venv/bin/python benchmarks/recipes_pythia.py deepspeed        # DeepSpeed's ZeRO-2 estimator, for real
    .venv/bin/python benchmarks/recipes_pythia.py table                # the Markdown table of docs/recipes.md

`ours` writes one estimate per recipe (`layerprof estimate pythia-1.4b --seq-len 2048 --gpu H100 --precision
bf16-mixed --batch-sizes 1 --layers 1,27` with the recipe's options) into OUT (benchmarks/results/recipes-pythia/);
`fit` writes fit-<recipe>.json, the largest batch on the H100 per z under each recipe (`layerprof fit` with the
recipe's options), with the seconds it took.
`accelerate` and `deepspeed` write their figures as JSON beside them; `table` reads them all.

No model hub is reachable here: accelerate's `create_empty_model` asks the hub for the repository's metadata
(`verify_on_hub`) before it reads the config, so the run answers that lookup with "a transformers model without an
auto_map" and lets everything else run as `accelerate estimate-memory` does on a local folder holding pythia-1.4b's
`config.json` (written here from the published config). DeepSpeed is not a dependency of layerprof: its estimator
runs in another interpreter (DS_PYTHON) on the same config. On a model built on the meta device it counts one
tensor: it counts shared parameters once by `data_ptr()`, which is 0 for every meta tensor; so the model is then
given real, uninitialised storage (`to_empty`, bfloat16: 2.8 GB of RAM) and counted again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "recipes-pythia"
GIB = 2**30
ZS = (1, 27)  # z = 1 trains the output head only (under LoRA: its adapter), z = 27 every layer

# The recipes: name -> SweepSettings fields over (adamw, bf16-mixed)
RECIPES: dict[str, dict[str, object]] = {
    "AdamW": {},
    "AdamW + checkpointing": {"checkpointing": "trainable"},
    "8-bit AdamW": {"optimizer": "adamw8bit"},
    "LoRA r=8 (last z)": {"adapter": "lora"},
    "LoRA r=8 + checkpointing": {"adapter": "lora", "checkpointing": "trainable"},
}

# The recipes `fit` runs, every one (each a file of its own, fit-<recipe>.json), those with one z to search first
FITTED = ("AdamW", "8-bit AdamW", "LoRA r=8 (last z)", "LoRA r=8 + checkpointing", "AdamW + checkpointing")

# EleutherAI/pythia-1.4b's published config.json (the fields that shape the model)
PYTHIA_1_4B = {
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "vocab_size": 50304,
    "hidden_size": 2048,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 8192,
    "hidden_act": "gelu",
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "max_position_embeddings": 2048,
    "layer_norm_eps": 1e-05,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "initializer_range": 0.02,
    "torch_dtype": "float16",
}


def file_name(recipe: str) -> str:
    """The estimate's file for a recipe."""
    return "".join(c if c.isalnum() else "-" for c in recipe.lower()).strip("-") + ".json"


def ours() -> None:
    """Per recipe, an estimate at batch 1 (each written as it finishes: a rerun skips what exists)."""
    from layerprof.devices import gpu_kind
    from layerprof.predict.estimate import estimate_model
    from layerprof.profile import SweepSettings, save_profile
    from layerprof.sources.models import ModelOptions

    OUT.mkdir(parents=True, exist_ok=True)
    h100 = gpu_kind("H100")
    options = ModelOptions(seq_len=2048)
    base = SweepSettings((1,), ZS, precision="bf16-mixed", mode="estimate", target="cuda", target_gpu=h100.name)
    for recipe, fields in RECIPES.items():
        path = OUT / file_name(recipe)
        if not path.exists():
            settings = SweepSettings(**{**asdict_settings(base), **fields})  # type: ignore[arg-type]
            save_profile(estimate_model("pythia-1.4b", options, settings), path)
            print(f"wrote {path}", flush=True)


def fit() -> None:
    """`fit pythia-1.4b --seq-len 2048 --precision bf16-mixed --gpu H100 --layers 1,27` under each recipe of FITTED:
    the largest batch at each z, one file per recipe (written as it finishes: a rerun skips what exists); a z the
    recipe cannot build (LoRA at z = 1) is a row with its reason."""
    from layerprof.devices import gpu_kind
    from layerprof.parsing import LayerSelection
    from layerprof.predict.fit import fit_model
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import ModelOptions

    h100 = gpu_kind("H100")
    base = SweepSettings((1,), ZS, precision="bf16-mixed", mode="estimate", target="cuda", target_gpu=h100.name)
    selection = LayerSelection(",".join(map(str, ZS)))
    for recipe in FITTED:
        path = OUT / fit_file_name(recipe)
        if path.exists():
            continue
        settings = SweepSettings(**{**asdict_settings(base), **RECIPES[recipe]})  # type: ignore[arg-type]
        started = time.monotonic()
        result = fit_model("pythia-1.4b", ModelOptions(seq_len=2048), settings, h100.memory_mib * 2**20, selection,
                           keep_failures=True)  # fmt: skip
        data = {"recipe": recipe, "seconds": round(time.monotonic() - started), **result.to_dict()}
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path} ({data['seconds']} s, {result.traces} traces)", flush=True)


def fit_file_name(recipe: str) -> str:
    """The fit's file for a recipe."""
    return "fit-" + file_name(recipe)


def asdict_settings(settings: object) -> dict[str, object]:
    """A SweepSettings' fields as keyword arguments."""
    from layerprof.fidelity.recipes import asdict_settings as fields

    return fields(settings)  # type: ignore[arg-type]


def accelerate() -> None:
    """accelerate's estimate-memory (its own `gather_data`) on a local folder with pythia-1.4b's config.json."""
    import argparse
    import types

    import accelerate.commands.estimate as estimate

    folder = OUT / "pythia-1.4b-config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(PYTHIA_1_4B, indent=2) + "\n")
    try:
        estimate.verify_on_hub(str(folder))
        hub = "answered"
    except Exception as error:  # noqa: BLE001  # no hub here: say what the lookup did
        hub = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    estimate.verify_on_hub = lambda repo, token=None: types.SimpleNamespace(config={}, library_name="transformers")
    args = argparse.Namespace(model_name=str(folder), library_name="transformers", dtypes=["float32", "float16"],
                              trust_remote_code=False)  # fmt: skip
    rows = estimate.gather_data(args)
    model = estimate.create_empty_model(str(folder), "transformers")
    result = {
        "accelerate": __import__("accelerate").__version__,
        "hub_lookup_without_hub": hub,
        "model_class": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "rows": [
            {
                "dtype": dtype,
                "largest_layer_bytes": int(largest),
                "total_bytes": int(total),
                "training": {key: int(value) for key, value in training.items()},
            }
            for dtype, largest, total, training in rows
        ],  # fmt: skip
    }
    (OUT / "accelerate.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


DEEPSPEED = r"""
import contextlib, io, json, sys
import torch, transformers, deepspeed
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_live
config = transformers.GPTNeoXConfig(**json.loads(sys.argv[1]))
with torch.device("meta"):
    model = transformers.GPTNeoXForCausalLM(config).to(torch.bfloat16)
out = {"deepspeed": deepspeed.__version__, "params": sum(p.numel() for p in model.parameters())}

def zero2(label):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        estimate_zero2_model_states_mem_needs_all_live(model, num_gpus_per_node=1, num_nodes=1)
    out[label] = text.getvalue()

zero2("zero2_meta")  # as built on the meta device: every data_ptr() is 0
model.to_empty(device="cpu")  # real (uninitialised) storage: one data_ptr per tensor
zero2("zero2")
for name, p in model.named_parameters():  # train only the output head (z = 1): DeepSpeed#5304
    p.requires_grad = name.startswith("embed_out")
out["trainable_params_frozen"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
zero2("zero2_frozen")
print(json.dumps(out))
"""


def deepspeed() -> None:
    """DeepSpeed's ZeRO-2 estimator on pythia-1.4b, in DS_PYTHON: built on the meta device, then given real
    (uninitialised, bfloat16) storage, then with every layer but the output head frozen."""
    python = os.environ.get("DS_PYTHON", sys.executable)
    done = subprocess.run([python, "-c", DEEPSPEED, json.dumps(PYTHIA_1_4B)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"DeepSpeed's estimator failed in {python}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    (OUT / "deepspeed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def table() -> None:
    """The Markdown table: ours per recipe and z (the estimate at batch 1, the fit's largest batch), then
    accelerate's and DeepSpeed's figures."""
    from layerprof.profile import load_profile

    print("| recipe (bf16-mixed) | z | trains | peak GiB, B=1 | weights+grads+optimizer GiB | activations' peak GiB, "
          "B=1 | largest batch on H100 |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for recipe in RECIPES:
        path = OUT / file_name(recipe)
        if not path.exists():
            print(f"| {recipe} | — | not estimated yet (run `ours`) | | | | |")
            continue
        profile = load_profile(path)
        for z in ZS:
            row = profile.row(1, z)
            if row is None or not row.ok:
                why = f"{row.status}: {(row.message or '').split('Error: ')[-1].split(';')[0]}" if row else "missing"
                print(f"| {recipe} | {z} | {why} | | | | |")
                continue
            largest = "—"
            fitted = OUT / fit_file_name(recipe)
            if fitted.exists():
                results = json.loads(fitted.read_text())["results"]
                largest = next((str(r["largest_batch_size"]) for r in results if r["trainable_layers"] == z), "—")
            state = sum(getattr(row, f"memory_{c}_bytes") or 0 for c in ("parameters", "gradients", "optimizer_state"))
            print(f"| {recipe} | {z} | {row.trainable_params:,} | {row.peak_memory_bytes / GIB:.2f} | "
                  f"{state / GIB:.2f} | {(row.peak_activations_bytes or 0) / GIB:.2f} | {largest} |")  # fmt: skip
    for name in ("accelerate", "deepspeed"):
        path = OUT / f"{name}.json"
        print(f"\n{name}: " + (path.read_text() if path.exists() else "not run yet"))


if __name__ == "__main__":
    parts = {"ours": ours, "fit": fit, "accelerate": accelerate, "deepspeed": deepspeed, "table": table}
    if len(sys.argv) != 2 or sys.argv[1] not in parts:
        raise SystemExit(f"usage: recipes_pythia.py {{{'|'.join(parts)}}}")
    parts[sys.argv[1]]()
