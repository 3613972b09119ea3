"""The Profile: plain data with a versioned schema, written as JSON (with a CSV of the rows beside it).

Everything a profile holds is described here and nowhere else: what was profiled (`ModelInfo`, `WorkloadInfo`),
where (`EnvironmentInfo`), how (`SweepSettings`) and one `Row` per (batch_size, trainable_layers) cell. Row
fields fall in two groups that consumers treat differently: deterministic figures (`DETERMINISTIC_FIELDS`:
parameter counts, FLOPs, optimizer-state bytes) are the same on every run of the same model, stack and
settings; measured ones (times, memory peaks, throughput) carry noise. Every figure that can be absent (a
failed cell) is None.

Schema history: `layerprof.profile/1` kept the metadata as free-form mappings, with the dtype and optimizer
under `workload`; `/2` types them and moves the training recipe (optimizer, precision) to `settings`; `/3` marks
the cells an interrupted sweep left unfinished (status `unfinished`, one row for every planned cell), says the
order of the split (`model.order`), how many times a layer runs per forward pass (`calls`) and whether frozen
layers ran in eval mode (`settings.eval_frozen`); `/4` adds the rest of the training recipe (`settings.adapter` and
its LoRA settings, `settings.checkpointing`, `settings.compile_mode`; optimizers beyond adamw/adam/sgd) and a
row's recompute FLOPs. Files of every version load (a `/2` file that is not complete is incomplete without saying
which cells; a file before `/4` trained with no adapters, no checkpointing, eager); files are written as `/4`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

from layerprof.errors import LayerprofError, read_json
from layerprof.precision import get_precision

# A JSON object as a profile, study or report file holds it (and `--json` prints it): written from typed fields,
# and checked field by field where it is read back (`from_dict`), so its values are typed where they are used.
JsonDict = dict[str, Any]

SCHEMA = "layerprof.profile/4"
SCHEMA_V3 = "layerprof.profile/3"
SCHEMA_V2 = "layerprof.profile/2"
SCHEMA_V1 = "layerprof.profile/1"
SCHEMAS = (SCHEMA, SCHEMA_V3, SCHEMA_V2, SCHEMA_V1)

# ok: measured; oom: out of memory; error: the step failed; skipped: a smaller z ran out of memory at this batch
# size; unfinished: the sweep was interrupted before the cell was measured to the end (resume it)
CellStatus = Literal["ok", "oom", "error", "skipped", "unfinished"]
STATUSES: tuple[str, ...] = get_args(CellStatus)
FINISHED_STATUSES = ("ok", "oom", "error", "skipped")


class MemoryCategory(str, Enum):
    """What the live-tensor tracker's bytes hold at the step's peak; one row field each."""

    PARAMETERS = "parameters"
    GRADIENTS = "gradients"
    OPTIMIZER_STATE = "optimizer_state"
    OPTIMIZER_TEMPORARIES = "optimizer_temporaries"  # what the optimizer step allocates and frees again
    ACTIVATIONS = "activations"  # activations and temporaries of forward and backward
    INPUTS = "inputs"
    # allocator memory no live tensor holds: cuBLAS/cuBLASLt (and cuDNN) workspaces. Measured on CUDA as what
    # the allocator holds at the start of the instrumented step beyond the tracker's tensors; modelled by
    # `estimate --target cuda`; zero on the CPU.
    WORKSPACE = "workspace"

    @property
    def row_field(self) -> str:
        """The Row field that holds this category's bytes: `memory_<category>_bytes`."""
        return f"memory_{self.value}_bytes"

    @property
    def tracked(self) -> bool:
        """Whether the live-tensor tracker sees it (every category but the workspace)."""
        return self is not MemoryCategory.WORKSPACE

    @property
    def label(self) -> str:
        """The short name a table's column shows."""
        return CATEGORY_LABELS[self.value]

    @property
    def description(self) -> str:
        """The name a figure's legend shows."""
        return self.value.replace("_", " ")


CATEGORY_LABELS = {
    "parameters": "params",
    "gradients": "grads",
    "optimizer_state": "optim",
    "optimizer_temporaries": "opt tmp",
    "activations": "activ",
    "inputs": "inputs",
    "workspace": "wkspace",
}


EstimateBasis = Literal["traced", "composed"]
# How a row's step time and memory were taken: CUDA events or perf counters; the allocator, the tensor tracker, or
# an estimate for a target.
TimeSource = Literal["cuda-events-pipelined", "perf-counter"]
MemorySource = Literal["cuda-allocator", "cpu-tensor-tracker", "estimate-cuda", "estimate-cpu"]


@dataclass
class Row:
    """One cell: a batch size and a trainable-layer count z, and what it cost."""

    batch_size: int
    trainable_layers: int  # z: the last z layers train
    status: CellStatus
    message: str | None = None
    # deterministic
    trainable_params: int | None = None
    trainable_fraction: float | None = None
    forward_flops: int | None = None
    backward_flops: int | None = None
    flops: int | None = None  # forward + backward per step (model FLOPs: recomputation left out)
    recompute_flops: int | None = None  # --checkpointing: the forward FLOPs backward runs again (None: none)
    optimizer_state_bytes: int | None = None
    # measured: time. step_time_ms is the median over the measured steps; the others describe their spread
    step_time_ms: float | None = None
    time_source: TimeSource | None = None
    step_time_mean_ms: float | None = None
    step_time_std_ms: float | None = None
    step_time_p10_ms: float | None = None
    step_time_p90_ms: float | None = None
    step_time_ci_low_ms: float | None = None  # 95% confidence interval of the median
    step_time_ci_high_ms: float | None = None
    measured_steps: int | None = None  # timed steps in the clean visits
    visits: int | None = None  # clean visits: step_time_ms is the median of their medians
    visit_medians_ms: list[float] | None = None  # every visit's median, in the order they ran
    slow_visits: list[int] | None = None  # positions in visit_medians_ms that other work slowed down
    disturbed: bool | None = None  # the clean visits did not settle: the figures may be off
    disturbed_reason: str | None = None
    compile_time_ms: float | None = None  # --compile: the cell's first step beyond its median step (compiling)
    host_time_ms: float | None = None  # CUDA: median time to launch one step onto an idle GPU queue
    host_bound: bool | None = None  # CUDA: launching takes at least 90% of the step (the GPU waits for Python)
    throughput_per_s: float | None = None  # items (samples or tokens, see workload.item_name) per second
    achieved_tflops: float | None = None
    # measured: memory
    peak_memory_bytes: int | None = None  # from memory_source
    memory_source: MemorySource | None = None
    peak_reserved_bytes: int | None = None  # CUDA caching allocator, reserved
    peak_requested_bytes: int | None = None  # CUDA caching allocator: what tensors asked for, before blocks
    alloc_retries: int | None = None  # CUDA: allocations that had to free cached blocks and retry in this cell
    nvml_process_bytes: int | None = None  # NVML's view of the process, CUDA context included
    nvml_note: str | None = None  # why nvml_process_bytes is missing, where it is
    device_used_bytes: int | None = None  # the whole GPU's used memory, other processes included
    device_used_source: str | None = None  # "nvml-device" | "cuda-mem-get-info"
    tracked_peak_bytes: int | None = None  # live-tensor tracker, any device
    memory_parameters_bytes: int | None = None  # the split at the tracker's peak, one per MemoryCategory
    memory_gradients_bytes: int | None = None
    memory_optimizer_state_bytes: int | None = None
    memory_optimizer_temporaries_bytes: int | None = None
    memory_activations_bytes: int | None = None
    memory_inputs_bytes: int | None = None
    memory_workspace_bytes: int | None = None
    peak_activations_bytes: int | None = None  # the activations' own peak during forward and backward
    # predicted (estimates): the step time the time model gives for the profile's device, never measured
    predicted_step_time_ms: float | None = None
    predicted_device_time_ms: float | None = None  # the kernels' time
    predicted_host_time_ms: float | None = None  # dispatching the step's operations
    predicted_host_bound: bool | None = None  # GPUs: the host, not the device, sets the step time
    # estimates: "traced" (its own fake-tensor step) or "composed" (from traced cells, layerprof.predict.compose)
    estimate_basis: EstimateBasis | None = None

    @property
    def ok(self) -> bool:
        """Whether the cell ran successfully (status `ok`); a failed row keeps its parameter counts, no other figure."""
        return self.status == "ok"

    @property
    def finished(self) -> bool:
        """Measured to the end (successfully or not): a resumed sweep keeps it."""
        return self.status in FINISHED_STATUSES

    @property
    def key(self) -> tuple[int, int]:
        """(batch size, z): what names the cell, once per profile."""
        return self.batch_size, self.trainable_layers

    def memory(self, category: MemoryCategory) -> int | None:
        """The bytes `category` held at the tracker's peak; None where the row has none (a failed or unfinished one)."""
        return getattr(self, category.row_field)


DETERMINISTIC_FIELDS = (
    "trainable_params",
    "trainable_fraction",
    "forward_flops",
    "backward_flops",
    "flops",
    "recompute_flops",
    "optimizer_state_bytes",
)
ROW_FIELDS = tuple(f.name for f in fields(Row))
MEMORY_FIELDS = tuple(category.row_field for category in MemoryCategory)
assert set(MEMORY_FIELDS) <= set(ROW_FIELDS), "Row needs one field per MemoryCategory"


@dataclass(frozen=True)
class Layer:
    """One layer of the split. Plain data: modules and parameters are found again by name."""

    index: int  # position in forward order, 0 = first to run
    name: str  # dotted module name
    type: str  # class name of the module
    params: int  # parameters this layer holds (adopted container parameters included)
    parameter_names: tuple[str, ...]  # dotted names of those parameters
    new_trainable_params: int  # of `params`, those no later layer holds: what turns trainable with this layer
    shared_with: tuple[str, ...] = ()  # other layers holding one of the same parameter tensors (tied weights)
    calls: int = 1  # times one forward pass runs it (a shared block runs more than once)
    # parameters the model's own code froze (requires_grad=False when it was built): they stay frozen at every z
    frozen_names: tuple[str, ...] = ()
    frozen_params: int = 0  # of `new_trainable_params`, those in `frozen_names`: they never train

    @property
    def trained_params(self) -> int:
        """Of `new_trainable_params`, those that train with this layer: the model's own frozen ones left out."""
        return self.new_trainable_params - self.frozen_params

    def to_dict(self) -> JsonDict:
        """The JSON form, as the profile file holds it."""
        return {
            "index": self.index,
            "name": self.name,
            "type": self.type,
            "params": self.params,
            "new_trainable_params": self.new_trainable_params,
            "parameter_names": list(self.parameter_names),
            "shared_with": list(self.shared_with),
            "calls": self.calls,
            "frozen_names": list(self.frozen_names),
            "frozen_params": self.frozen_params,
        }

    @classmethod
    def from_dict(cls, data: JsonDict) -> Layer:
        """From its JSON form; a file from before tied weights and shared blocks gets no `shared_with` and 1 call,
        one from before user-frozen parameters were kept none."""
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            type=str(data["type"]),
            params=int(data["params"]),
            new_trainable_params=int(data["new_trainable_params"]),
            parameter_names=tuple(data.get("parameter_names", ())),
            shared_with=tuple(data.get("shared_with", ())),
            calls=int(data.get("calls", 1)),
            frozen_names=tuple(data.get("frozen_names", ())),
            frozen_params=int(data.get("frozen_params", 0)),
        )


def trainable_params(layers: Sequence[Layer], trainable_layers: int) -> int:
    """Unique parameters that are trainable when the last `trainable_layers` layers are (tied tensors once); those
    the model's own code froze (`Layer.frozen_names`) never are."""
    return sum(layer.trained_params for layer in layers[len(layers) - trainable_layers :])


def total_params(layers: Sequence[Layer]) -> int:
    """Parameters of the whole split, frozen or not (tied tensors once)."""
    return sum(layer.new_trainable_params for layer in layers)


def user_frozen_params(layers: Sequence[Layer]) -> int:
    """Parameters the model's own code froze: at no z do they train."""
    return sum(layer.frozen_params for layer in layers)


def _known(cls: type, data: JsonDict) -> JsonDict:
    """The keys of `data` that are fields of the dataclass `cls`."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def _tuple(value: Iterable[object] | None) -> tuple[object, ...] | None:
    return None if value is None else tuple(value)


# The training recipe's closed sets (torch-free, so that the command line lists them without torch).
# Optimizers: layerprof.measure.optimizers.OPTIMIZER_SPECS holds what each one is and how it is built.
OptimizerName = Literal["adamw", "adam", "sgd", "sgd-plain", "adafactor", "adamw-fused", "adamw-foreach", "adamw8bit"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
# none: every activation kept; trainable: each trainable layer recomputed in backward (non-reentrant)
CheckpointingMode = Literal["none", "trainable"]
CHECKPOINTING_MODES: tuple[str, ...] = get_args(CheckpointingMode)
# none: the trainable layers train in full; lora: LoRA adapters (PEFT) in their target modules train, nothing else
AdapterName = Literal["none", "lora"]
ADAPTERS: tuple[str, ...] = get_args(AdapterName)
# trainable: adapters in the last z layers only (the fidelity); all: in every layer, the plain-LoRA baseline
AdapterLayers = Literal["trainable", "all"]
ADAPTER_LAYERS: tuple[str, ...] = get_args(AdapterLayers)
# eager, or torch.compile of the model in one of its modes (measured only)
CompileMode = Literal["eager", "default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)

# How a model is fed (the synthetic batch and the loss follow from it)
Family = Literal["image-classification", "causal-lm", "tensor-input", "custom"]
# measure: cells timed on a device; estimate: cells predicted on fake tensors
SweepMode = Literal["measure", "estimate"]

# Where a profile's model came from: one entry each in layerprof.sources.registry.SOURCES (a test holds the two equal)
ModelSource = Literal["preset", "torchvision", "litgpt", "timm", "hf", "user"]


@dataclass
class ModelInfo:
    """What was profiled: the MODEL string, where it came from, and its split."""

    spec: str
    source: ModelSource
    name: str
    description: str = ""
    overrides: JsonDict = field(default_factory=dict)  # --set
    unwrap: tuple[str, ...] = ()
    layers: list[Layer] = field(default_factory=list)
    total_params: int = 0
    construction: str = ""  # how the split's model was built: "meta", "meta-parameters", "fake" or "cpu"
    order: str = "forward"  # "forward" (traced) or "registration" (no forward pass could be traced)
    order_reason: str = ""  # registration order: why

    def to_dict(self) -> JsonDict:
        """The JSON form, as the profile file holds it (the layers nested)."""
        data = asdict(self)
        data["unwrap"] = list(self.unwrap)
        data["layers"] = [layer.to_dict() for layer in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: JsonDict) -> ModelInfo:
        """From its JSON form; keys this layerprof does not know are dropped."""
        known = _known(cls, data)
        known["spec"] = current_spec(known["spec"])  # a spec naming a moved module, as written before the move
        known["unwrap"] = tuple(known.get("unwrap", ()))
        known["layers"] = [Layer.from_dict(layer) for layer in known.get("layers", [])]
        return cls(**known)


@dataclass
class WorkloadInfo:
    """How the model is fed: the family picks the synthetic batch and the loss."""

    family: Family
    input_shape: tuple[int, ...] | None = None  # per sample
    num_classes: int | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    items_per_sample: int | None = None  # custom workloads: e.g. tokens per sequence
    item_name: str = "samples"  # what throughput counts: samples or tokens

    def to_dict(self) -> JsonDict:
        """The JSON form, as the profile file holds it; unset (None) fields are left out."""
        data = {key: value for key, value in asdict(self).items() if value is not None}
        if self.input_shape is not None:
            data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: JsonDict) -> WorkloadInfo:
        """From its JSON form; keys this layerprof does not know are dropped."""
        known = _known(cls, data)
        known["input_shape"] = _tuple(known.get("input_shape"))
        return cls(**known)


@dataclass
class EnvironmentInfo:
    """The machine and software a profile was measured on (or, for an estimate, the device predicted for)."""

    device_kind: str  # "cpu" | "cuda"
    device_name: str
    total_memory_bytes: int | None = None
    estimated: bool = False
    torch_version: str | None = None
    layerprof_version: str | None = None
    python_version: str | None = None
    platform: str | None = None
    cpu_name: str | None = None
    cpu_count: int | None = None
    cpu_affinity: list[int] | None = None  # the CPUs this process may run on
    torch_threads: int | None = None
    cuda_version: str | None = None
    cudnn_version: int | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # the newest CUDA the driver supports
    mig_enabled: bool | None = None
    gpu_uuid: str | None = None  # GPU-... or MIG-...: the device NVML was asked about
    cluster_kind: str | None = None  # `profile --executor ray`: the --gpu-kinds label the sweep ran on
    cluster_node: str | None = None  # and the Ray node id
    numerics: JsonDict = field(default_factory=dict)  # TF32, matmul precision, cuDNN flags (see check)
    variables: dict[str, str] = field(default_factory=dict)  # PYTORCH_CUDA_ALLOC_CONF, CUBLAS_WORKSPACE_CONFIG, ...
    extra: JsonDict = field(default_factory=dict)  # keys written by other versions, kept as they were

    def to_dict(self) -> JsonDict:
        """The JSON form: unset fields left out, the keys other versions wrote (`extra`) back beside the rest."""
        data = {key: value for key, value in asdict(self).items() if key != "extra" and value not in (None, {})}
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: JsonDict) -> EnvironmentInfo:
        """From its JSON form; keys this layerprof does not know go to `extra`, so that rewriting keeps them."""
        known = _known(cls, data)
        known["extra"] = {key: value for key, value in data.items() if key not in known}
        return cls(**known)


@dataclass
class SweepSettings:
    """How the cells were run: which cells, the training recipe, and (measured profiles) the timing protocol."""

    batch_sizes: tuple[int, ...]
    trainable_layer_counts: tuple[int, ...]  # the z values run, ascending
    warmup_steps: int = 10  # at a cell's first visit
    min_steps: int = 15
    max_steps: int = 30  # timed steps per cell, over its clean visits
    median_tolerance: float = 0.02  # stop once the 95% CI of the median of visit medians is within +-2%
    steps_per_visit: int = 5  # timed steps per visit
    rewarm_steps: int = 1  # untimed steps at the start of every later visit (its first allocates optimizer state)
    max_time_s: float | None = None  # stop measuring again what other work disturbed after this long
    optimizer: OptimizerName = "adamw"
    learning_rate: float = 1e-3
    precision: str = "32-true"  # see layerprof.precision
    eval_frozen: bool = False  # frozen layers in eval mode (BatchNorm statistics kept, dropout off)
    checkpointing: CheckpointingMode = "none"
    adapter: AdapterName = "none"
    adapter_layers: AdapterLayers = "trainable"  # which layers hold adapters (--adapter lora)
    adapter_rank: int = 8  # LoRA's r
    adapter_alpha: float = 16.0  # LoRA's alpha: the update is scaled by alpha / r
    adapter_dropout: float = 0.0
    adapter_targets: tuple[str, ...] = ()  # module names (or name suffixes) that get adapters; () = the family's
    compile_mode: CompileMode = "eager"
    mode: SweepMode = "measure"
    target: str | None = None  # estimates: the device kind predicted for
    target_gpu: str | None = None  # estimates for CUDA: the GPU of layerprof.devices predicted for, if named

    @property
    def stopping_rule(self) -> str:
        """The timing protocol in one sentence, as a measured profile's settings state it."""
        limit = f"; at most {self.max_time_s:g} s in all" if self.max_time_s is not None else ""
        return (
            f"each cell timed in visits of {self.steps_per_visit} steps spread over rounds (after a first visit "
            f"with {self.warmup_steps} warm-up steps, {self.rewarm_steps} untimed steps per visit); visits that "
            "other work slowed are left out and made again; a cell stops once the 95% confidence interval of "
            f"the median of its visit medians is within +-{self.median_tolerance:.0%}, after {self.min_steps} "
            f"and at most {self.max_steps} clean timed steps{limit}"
        )

    def to_dict(self) -> JsonDict:
        """The JSON form with the precision in words; an estimate has no timing protocol, a measurement no target."""
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        data["trainable_layer_counts"] = list(self.trainable_layer_counts)
        data["adapter_targets"] = list(self.adapter_targets)
        data["precision_mode"] = get_precision(self.precision).description
        if self.mode == "estimate":  # nothing is timed
            for key in (
                "warmup_steps",
                "min_steps",
                "max_steps",
                "median_tolerance",
                "steps_per_visit",
                "rewarm_steps",
                "max_time_s",
            ):
                data.pop(key)
        else:
            data.pop("target")
            data.pop("target_gpu")
            data["stopping_rule"] = self.stopping_rule
        return data

    @classmethod
    def from_dict(cls, data: JsonDict) -> SweepSettings:
        """From its JSON form; KeyError without the batch sizes or z values (Profile.from_dict reports it)."""
        known = _known(cls, data)
        known["batch_sizes"] = tuple(known["batch_sizes"])
        known["trainable_layer_counts"] = tuple(known["trainable_layer_counts"])
        known["adapter_targets"] = tuple(known.get("adapter_targets", ()))
        return cls(**known)

    @property
    def recipe_text(self) -> str:
        """The recipe beyond the optimizer and precision in words: `LoRA r=8 (last z layers), checkpointing,
        compiled (default)`; empty for plain training (no adapters, no checkpointing, eager)."""
        parts = []
        if self.adapter == "lora":
            where = "every layer" if self.adapter_layers == "all" else "last z layers"
            parts.append(f"LoRA r={self.adapter_rank} alpha={self.adapter_alpha:g} ({where})")
        if self.checkpointing != "none":
            parts.append(f"checkpointing {self.checkpointing}")
        if self.compile_mode != "eager":
            parts.append(f"torch.compile ({self.compile_mode})")
        return ", ".join(parts)

    @property
    def recipe_label(self) -> str:
        """The whole recipe in words, every axis named even at its default, for headers that compare or report
        recipes: `adamw, 32-true, no adapters, no checkpointing, eager`."""
        parts = [self.optimizer, self.precision]
        if self.adapter == "lora":
            where = "every layer" if self.adapter_layers == "all" else "last z layers"
            parts.append(f"LoRA r={self.adapter_rank} alpha={self.adapter_alpha:g} ({where})")
        else:
            parts.append("no adapters")
        parts.append("checkpointing trainable" if self.checkpointing == "trainable" else "no checkpointing")
        parts.append("eager" if self.compile_mode == "eager" else f"torch.compile ({self.compile_mode})")
        if self.eval_frozen:
            parts.append("frozen layers in eval mode")
        return ", ".join(parts)

    def recipe(self) -> dict[str, object]:
        """The recipe settings (`RECIPE_SETTINGS`) as plain data, for the JSON of ladders, plans and fits."""
        return {
            key: list(value) if isinstance(value := getattr(self, key), tuple) else value for key in RECIPE_SETTINGS
        }


# The training recipe: the settings under which two profiles describe the same training run. The one
# definition of "same recipe": `check` compares only profiles of one recipe, a cluster run continues a kind's
# profile only under it, `plan` refuses a mixture.
class RecipeOptions(TypedDict, total=False):
    """The recipe options of a command as SweepSettings keyword arguments (`layerprof.cli.options.recipe_settings`)."""

    checkpointing: CheckpointingMode
    adapter: AdapterName
    adapter_layers: AdapterLayers
    adapter_rank: int
    adapter_alpha: float
    adapter_dropout: float
    adapter_targets: tuple[str, ...]
    compile_mode: CompileMode


class RecipeSettings(RecipeOptions, total=False):
    """The recipe options with the optimizer: a recipe as `layer_costs` takes it."""

    optimizer: OptimizerName


RECIPE_SETTINGS = (
    "optimizer",
    "precision",
    "eval_frozen",
    "checkpointing",
    "adapter",
    "adapter_layers",
    "adapter_rank",
    "adapter_alpha",
    "adapter_dropout",
    "adapter_targets",
    "compile_mode",
)


def recipe_difference(
    ours: SweepSettings, theirs: SweepSettings, also: Sequence[str] = ()
) -> tuple[str, object, object] | None:
    """The first recipe setting (then of `also`) in which two sweeps differ, with both values, or None."""
    for key in (*RECIPE_SETTINGS, *also):
        if getattr(ours, key) != getattr(theirs, key):
            return key, getattr(ours, key), getattr(theirs, key)
    return None


@dataclass
class SweepTiming:
    """Where a sweep's wall time went: in all, and inside training steps."""

    sweep_wall_s: float = 0.0
    in_steps_s: float = 0.0  # seconds inside warm-up, timed and instrumented steps

    @property
    def share_in_steps(self) -> float:
        """The share (0 to 1) of the sweep's wall time spent inside steps; 0 when no time was recorded."""
        return self.in_steps_s / self.sweep_wall_s if self.sweep_wall_s else 0.0


# the other files layerprof writes, by the word of their schema: a profile command given one names it
FOREIGN_KINDS = {
    "study": "a correlate study's study.json",
    "correlation": "a correlate result.json",
    "simulation": "a simulate result",
    "layer-costs": "a `layers --costs` table",
    "plan": "a `plan --json` result",
}


@dataclass
class Profile:
    """One sweep's result: what, where and how it was profiled, and one row per cell."""

    model: ModelInfo
    workload: WorkloadInfo
    environment: EnvironmentInfo
    settings: SweepSettings
    rows: list[Row] = field(default_factory=list)
    complete: bool = False
    created_at: str = ""
    timing: SweepTiming = field(default_factory=SweepTiming)
    schema: str = SCHEMA
    time_model: JsonDict | None = None  # estimates: the peaks and constants behind predicted times
    layer_times: list[JsonDict] | None = None  # `profile --per-layer`: layerprof.measure.layertimes.LayerTimes

    @property
    def predicts_time(self) -> bool:
        """Whether its step times are predictions (an estimate with a time model), not measurements."""
        return self.is_estimate and any(row.predicted_step_time_ms for row in self.rows)

    def step_time_ms(self, row: Row) -> float | None:
        """The row's step time: measured, or predicted where the profile is an estimate."""
        return row.predicted_step_time_ms if self.is_estimate else row.step_time_ms

    @property
    def layer_count(self) -> int:
        """n, the layers of the split: the largest z a sweep can train."""
        return len(self.model.layers)

    @property
    def is_estimate(self) -> bool:
        """Whether `layerprof estimate` predicted the cells on fake tensors rather than a device measuring them."""
        return self.settings.mode == "estimate"

    def batch_sizes(self) -> list[int]:
        """The batch sizes its rows cover, ascending."""
        return sorted({row.batch_size for row in self.rows})

    def rows_for(self, batch_size: int) -> list[Row]:
        """The rows of one batch size by z, ascending; empty where the batch size has none."""
        return sorted((r for r in self.rows if r.batch_size == batch_size), key=lambda r: r.trainable_layers)

    def row(self, batch_size: int, trainable_layers: int) -> Row | None:
        """The row of one cell, or None where the profile has none."""
        return next((r for r in self.rows if r.key == (batch_size, trainable_layers)), None)

    def planned_cells(self) -> list[tuple[int, int]]:
        """Every (batch size, z) the settings ask for, in sweep order."""
        return [(b, z) for b in self.settings.batch_sizes for z in self.settings.trainable_layer_counts]

    def unfinished_cells(self) -> list[tuple[int, int]]:
        """Planned cells without a finished row: unfinished rows, and cells an interrupted sweep never reached."""
        finished = {row.key for row in self.rows if row.finished}
        return [key for key in self.planned_cells() if key not in finished]

    def incomplete_reason(self) -> str | None:
        """Why the profile is not the whole sweep it set out to be (None when it is): say it before using it."""
        if self.complete:
            return None
        unfinished = self.unfinished_cells()
        reason = "the sweep was interrupted"
        if unfinished:
            reason += f": {len(unfinished)} of {len(self.planned_cells())} cells unfinished ({_cells_text(unfinished)})"
        if self.schema in (SCHEMA_V2, SCHEMA_V1):  # written before unfinished cells were marked
            reason += "; an older layerprof wrote it, so its cells marked ok may rest on a single visit"
        return reason

    def failure_summary(self) -> str | None:
        """When every cell failed: the reasons, grouped, each with the cells it stopped (None otherwise; an
        interrupted profile's unfinished cells did not fail, `incomplete_reason` speaks for them)."""
        if not self.rows or any(row.ok or row.status == "unfinished" for row in self.rows):
            return None
        groups: dict[str, list[tuple[int, int]]] = {}
        for row in sorted(self.rows, key=lambda r: r.key):
            groups.setdefault(f"{row.status}: {row.message or row.status}", []).append(row.key)
        parts = [f"{len(cells)} x {reason} ({_cells_text(cells, 3)})" for reason, cells in groups.items()]
        advice = "smaller batch sizes may fit" if all(r.status in ("oom", "skipped") for r in self.rows) else ""
        return f"every cell failed: {'; '.join(parts)}" + (f"; {advice}" if advice else "")

    def to_dict(self) -> JsonDict:
        """The JSON form, as the profile file holds it, always in the current schema."""
        return {
            "schema": SCHEMA,
            "created_at": self.created_at,
            "complete": self.complete,
            "model": self.model.to_dict(),
            "workload": self.workload.to_dict(),
            "environment": self.environment.to_dict(),
            "settings": self.settings.to_dict(),
            "timing": asdict(self.timing),
            **({"time_model": self.time_model} if self.time_model else {}),
            **({"layer_times": self.layer_times} if self.layer_times else {}),
            "rows": [asdict(row) for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: JsonDict, source: str = "profile") -> Profile:
        """From a profile file's JSON of a schema in SCHEMAS; LayerprofError naming `source` otherwise or on damage."""
        if not isinstance(data, dict) or "schema" not in data:
            raise LayerprofError(f"{source} is not a layerprof profile (no 'schema' field)")
        kind = str(data["schema"]).removeprefix("layerprof.").partition("/")[0]
        if data["schema"] not in SCHEMAS and kind in FOREIGN_KINDS:  # another layerprof file: name it, not "re-run"
            raise LayerprofError(
                f"{source} is {FOREIGN_KINDS[kind]}, not a profile (schema {data['schema']}); give one written by "
                "`layerprof profile` or `layerprof estimate`"
            )
        if data["schema"] not in SCHEMAS:
            raise LayerprofError(
                f"{source} has schema {data['schema']!r}; this layerprof reads {', '.join(map(repr, SCHEMAS))} "
                "(re-run `layerprof profile` to regenerate it)"
            )
        try:
            if data["schema"] == SCHEMA_V1:
                data = upgrade_v1(data)
            return cls(
                model=ModelInfo.from_dict(data["model"]),
                workload=WorkloadInfo.from_dict(data["workload"]),
                environment=EnvironmentInfo.from_dict(data["environment"]),
                settings=SweepSettings.from_dict(data["settings"]),
                rows=_rows(data["rows"], str(data["settings"].get("mode", "measure"))),
                complete=bool(data.get("complete", False)),
                created_at=str(data.get("created_at", "")),
                timing=SweepTiming(**_known(SweepTiming, data.get("timing", {}))),
                schema=str(data["schema"]),
                time_model=data.get("time_model"),
                layer_times=data.get("layer_times"),
            )
        except FigureDamage as error:
            raise LayerprofError(f"{source} is a damaged layerprof profile: {error}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise LayerprofError(f"{source} is a damaged layerprof profile: missing or bad {error}") from None


def _cells_text(cells: Sequence[tuple[int, int]], shown: int = 6) -> str:
    """`batch 32 z=1, batch 32 z=2 and 4 more`."""
    named = ", ".join(f"batch {b} z={z}" for b, z in cells[:shown])
    return named + (f" and {len(cells) - shown} more" if len(cells) > shown else "")


def _row(data: object, index: int) -> Row:
    """A row, its figures checked against Row's types: a row with `"step_time_ms": "fast"` is damage to report,
    not a value for a comparison to trip over later."""
    if not isinstance(data, dict):
        raise TypeError(f"row {index} (not an object)")
    known = _known(Row, data)
    for name, value in known.items():
        expected = ROW_TYPES[name]
        if value is None and name not in REQUIRED_ROW_FIELDS:
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if expected is int and isinstance(value, bool) or not isinstance(value, expected):
            raise TypeError(f"row {index} field {name!r} ({value!r}, expected {expected.__name__})")
    if known.get("status") not in STATUSES:
        raise ValueError(f"row {index} status {known.get('status')!r} (expected one of {', '.join(STATUSES)})")
    return Row(**known)


class FigureDamage(ValueError):
    """A row's figure no measurement gives (NaN, negative, a missing step time): Profile.from_dict names it."""


def _rows(data: object, mode: str) -> list[Row]:
    """Every row, typed (`_row`) and its figures checked (`figure_damage`): a NaN, negative or missing step time
    in one cell is damage to refuse on load, not a number for `check` to pass or `ladder` to rank."""
    if not isinstance(data, list):
        raise TypeError("'rows' (not a list)")
    rows = [_row(row, index) for index, row in enumerate(data)]
    for row in rows:
        damage = figure_damage(row, mode)
        if damage:
            raise FigureDamage(f"cell batch {row.batch_size} z={row.trainable_layers}: {damage}")
    return rows


# What each kind of figure may be: (test, what is right). Times and sizes are finite and not negative; a step time
# (measured or predicted) is more than zero; a share is 0 to 1.
_FIGURE_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda v: math.isfinite(v) and v > 0, "a positive finite number"),
    "non-negative": (lambda v: math.isfinite(v) and v >= 0, "a finite number, 0 or more"),
    "share": (lambda v: math.isfinite(v) and 0 <= v <= 1, "a share from 0 to 1"),
}
_POSITIVE_FIELDS = (
    "batch_size",
    "step_time_ms",
    "predicted_step_time_ms",
    "step_time_p10_ms",
    "step_time_p90_ms",
    "step_time_mean_ms",
    "step_time_ci_low_ms",
    "step_time_ci_high_ms",
)


def _figure_rule(name: str) -> str | None:
    """The rule of `_FIGURE_RULES` a Row field's figure follows (None: not a figure: names, flags, lists)."""
    if name in _POSITIVE_FIELDS:
        return "positive"
    if name == "trainable_fraction":
        return "share"
    if ROW_TYPES[name] in (int, float):
        return "non-negative"
    return None


def figure_damage(row: Row, mode: str = "measure") -> str | None:
    """What is wrong with a row's figures (`step_time_ms is nan (a positive finite number)`), or None. A measured
    row that is ok has a step time; every visit median is a positive finite number; no figure is NaN or negative."""
    for name in ROW_FIELDS:
        value = getattr(row, name)
        rule = _figure_rule(name)
        if value is None or rule is None or isinstance(value, bool):
            continue
        test, right = _FIGURE_RULES[rule]
        if not test(value):
            return f"{name} is {value!r} ({right} is right)"
    for position, median in enumerate(row.visit_medians_ms or ()):
        test, right = _FIGURE_RULES["positive"]
        if not isinstance(median, (int, float)) or isinstance(median, bool) or not test(median):
            return f"visit_medians_ms[{position}] is {median!r} ({right} is right)"
    if mode == "measure" and row.ok and row.step_time_ms is None:
        return "step_time_ms is None (a cell marked ok has its measured step time)"
    return None


def _row_types() -> dict[str, type]:
    """Each Row field's type without None (int, float, bool, str, list)."""
    import typing

    types = {}
    for name, hint in typing.get_type_hints(Row).items():
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
        if typing.get_origin(hint) is Literal:
            options = [type(get_args(hint)[0])]
        elif typing.get_origin(options[0]) is Literal:  # an optional Literal (estimate_basis)
            options = [type(get_args(options[0])[0])]
        types[name] = typing.get_origin(options[0]) or options[0]
    return types


ROW_TYPES = _row_types()
REQUIRED_ROW_FIELDS = ("batch_size", "trainable_layers", "status")

V1_DTYPES = {"float32": "32-true", "bfloat16": "bf16-true", "float16": "16-true"}

# Modules that moved into the concept folders (old name under `layerprof.` -> new module). Profiles and studies written
# before the move name a task's workload by the old module (`layerprof.tasks:digits_workload`); reading them rewrites
# the name (`current_spec`), so that they compare equal to files written since. The old names no longer import.
MOVED_MODULES = {
    **{name: f"layerprof.sources.{name}" for name in ("models", "hub_models", "workloads", "layers")},
    **{
        name: f"layerprof.measure.{name}"
        for name in ("rounds", "nvml", "layertimes", "environment", "amp", "optimizers", "cluster")
    },
    "sweep": "layerprof.measure.jobs",  # the sweep's own module then, split into measure.cells and measure.jobs
    **{name: f"layerprof.predict.{name}" for name in ("estimate", "compose", "timemodel", "layercosts")},
    **{
        name: f"layerprof.fidelity.{name}"
        for name in ("ladder", "granularity", "correlate", "grids", "tasks", "trials", "simulate", "plan")
    },
    **{name: f"layerprof.outputs.{name}" for name in ("tables", "check", "report", "figures", "exporters")},
    "options": "layerprof.cli.options",
    "render": "layerprof.cli.render",
}


def current_spec(spec: str) -> str:
    """A MODEL or TASK string with a moved layerprof module renamed (`layerprof.tasks:digits_workload` ->
    `layerprof.fidelity.tasks:digits_workload`); any other string as it is."""
    module, colon, name = spec.partition(":")
    moved = MOVED_MODULES.get(module.removeprefix("layerprof.")) if module.startswith("layerprof.") else None
    return f"{moved}:{name}" if colon and moved else spec


def upgrade_v1(data: JsonDict) -> JsonDict:
    """A `/1` document in `/2`'s layout: dtype and optimizer move from the workload to the settings."""
    workload = dict(data["workload"])
    settings = dict(data["settings"])
    dtype = workload.pop("dtype", None) or settings.pop("dtype", None) or "float32"
    workload.pop("dtype_mode", None)
    settings.pop("dtype", None)
    settings.setdefault("optimizer", workload.pop("optimizer", "adamw"))  # the workload's popped either way
    settings["precision"] = V1_DTYPES[dtype]
    settings["trainable_layer_counts"] = settings.pop("trainable_layers")
    settings.setdefault("mode", "measure")
    return {**data, "workload": workload, "settings": settings}


def ratio(value: float | None, full: float | None) -> float | None:
    """value / full, or None where either is missing (a failed cell) or full is zero."""
    if value is None or not full:
        return None
    return value / full


def _atomic_write(path: Path, text: str) -> None:
    """Write by rename, so that a crash mid-write never leaves a torn file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide profiles from teammates and CI
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def csv_path_for(path: Path) -> Path:
    """The CSV written beside a profile's JSON."""
    return path.with_suffix(".csv")


def rows_csv(profile: Profile) -> str:
    """A profile's rows as CSV, one line per cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ROW_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in sorted(profile.rows, key=lambda r: r.key):
        writer.writerow(asdict(row))
    return buffer.getvalue()


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write PATH (JSON) and PATH with .csv beside it; returns the JSON path."""
    path = Path(path)
    _atomic_write(path, json.dumps(profile.to_dict(), indent=2) + "\n")
    _atomic_write(csv_path_for(path), rows_csv(profile))
    return path


def ensure_writable(path: str | Path) -> Path:
    """Fail before any measuring when PATH (and its CSV) cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise LayerprofError(f"--out {str(path)!r} is a directory; give a file path ending in .json")
    if path.suffix != ".json":
        raise LayerprofError(f"--out must end in .json (a CSV is written beside it), got {str(path)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".layerprof-probe-"):
            pass
    except OSError as error:
        raise LayerprofError(f"cannot write to {str(path.parent)!r}: {error.strerror or error}") from None
    for target in (path, csv_path_for(path)):  # a file made read-only says "keep me", even to root
        if target.exists() and (not os.access(target, os.W_OK) or not target.stat().st_mode & 0o222):
            raise LayerprofError(
                f"--out {str(target)!r} is read-only; make it writable (chmod u+w) or give another --out"
            )
    with OutputLock(path) as lock:  # taken and let go at once: the sweep holds it while it runs (SweepJob.run)
        lock.refuse_if_held()
    return path


def lock_path_for(path: Path) -> Path:
    """The lock file beside an output: `.NAME.lock`, holding the PID of the run that writes NAME."""
    return path.with_name(f".{path.name}.lock")


class OutputLock:
    """An exclusive lock on an output a sweep writes, held while the sweep runs: a second run with the same --out
    refuses, naming the first's PID, instead of measuring everything again and silently replacing the first's
    file. An advisory `flock` on `.NAME.lock` (released by the system when the holder dies, so a crash leaves no
    stale lock); where the system has none (Windows), no lock."""

    def __init__(self, path: Path) -> None:
        """Not taken yet: `with OutputLock(path) as lock` tries once; `lock.holder` is the other run's PID if any."""
        self.path, self.lock_path = path, lock_path_for(path)
        self.descriptor: int | None = None
        self.holder: int | None = None

    def __enter__(self) -> OutputLock:
        """Take the lock if no other run holds it; else leave `holder` set to that run's PID."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        while True:
            descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                text = os.read(descriptor, 32).decode(errors="replace").strip()
                os.close(descriptor)
                self.holder = int(text) if text.isdigit() else 0
                return self
            try:  # the file may have been removed by a holder that just finished: lock the one at the path
                same = os.fstat(descriptor).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self.descriptor = descriptor
        return self

    def __exit__(self, *_exc: object) -> None:
        """Release the lock and remove its file."""
        if self.descriptor is not None:
            self.lock_path.unlink(missing_ok=True)
            os.close(self.descriptor)
            self.descriptor = None

    def refuse_if_held(self) -> None:
        """LayerprofError when another run holds the lock: one line naming its PID."""
        if self.holder is not None:
            who = f"PID {self.holder}" if self.holder else "another process"
            raise LayerprofError(
                f"--out {str(self.path)!r} is being written by another layerprof run ({who}); wait for it to end, "
                "or give another --out"
            )


def load_profile(path: str | Path) -> Profile:
    """Read a profile of any schema version; a file that is none is an input error."""
    data = read_json(path, "profile", "a profile written by `layerprof profile`")
    return Profile.from_dict(data, source=repr(str(path)))
