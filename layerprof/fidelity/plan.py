"""Rungs placed on the GPUs a team has (the paper's Figure 6): for every rung of the ladder, the GPU kind and
the trials per GPU that finish it soonest, and what successive halving and Hyperband then take in wall time and
GPU-hours, against (a) every rung on the best single kind of GPU and (b) halving on training steps alone.

Memory per trial comes from a profile measured on that kind, else from an estimate for CUDA. Step time comes
from a profile measured on that kind; where there is none, the step-time model predicts it (`predict`: each z's
step traced once, priced with the kind's peaks, constants fitted to the model's own measured profiles where there
are any) and labels it *predicted*; without a predictor (or for a model it cannot trace) it is scaled from another
measured kind by the two kinds' peaks for the trial's precision, or from the FLOPs of a step at an assumed share
of the kind's peak, and labelled *scaled*.

Trials that share a GPU take turns on it. A GPU-bound trial keeps it busy all the time it runs; a host-bound one
(launching its kernels takes about as long as its step, `Row.host_bound`) only for its kernels: its FLOPs at
ASSUMED_PEAK_SHARE of the precision's peak; a predicted one for the share of its predicted step the device is busy.
m trials together run max(1, the sum of those shares) times as long as one alone, plus SHARING_OVERHEAD for
switching between them. Measured on an NVIDIA H200 (benchmarks/results/nvidia-h200-2026-12-04/sharing/): two
GPU-bound pythia-1.4b 32-true trials 2.23x, two host-bound resnet18 trials 1.11x and 1.18x; this model says 2.26x,
1.13x and 1.13x.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from layerprof.devices import (
    CUDA_CONTEXT_RESERVE_BYTES,
    GPU_KINDS,
    GpuKind,
    InventoryItem,
    find_gpu,
    kind_of_device,
    peak_tflops,
    unknown_device_error,
)
from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import build_ladder, default_cost, hyperband, memory_need_bytes, successive_halving
from layerprof.parsing import MAX_CONFIGS, check_eta
from layerprof.profile import Profile, Row, recipe_difference

PLAN_SCHEMA = "layerprof.plan/1"
ASSUMED_PEAK_SHARE = 0.4  # a step's kernels' FLOP/s over the GPU's dense peak for its precision
# What trials sharing a GPU lose to switching between them: two trials on an NVIDIA H200 took 2.23x (GPU-bound),
# 1.11x and 1.18x (host-bound) as long as one alone where taking turns alone accounts for 2x, 1x and 1x.
SHARING_OVERHEAD = 0.13
SCHEDULES = ("ladder", "best single kind", "budget only")
# (z, GPU kind) -> (predicted step ms, where it comes from, the share of the step the GPU is busy), or None
StepPredictor = Callable[[int, GpuKind], "tuple[float, str, float] | None"]


# ---------------------------------------------------------------- what a trial costs on a kind


@dataclass
class TrialCost:
    """One trial of one z on one GPU kind, alone on the GPU."""

    step_time_ms: float
    time_source: (
        str  # "measured on L4" | "predicted for L4 (...)" | "scaled from H100 by peak" | "scaled from FLOPs ..."
    )
    memory_need_bytes: int
    memory_source: str
    gpu_share: float  # the share of its time alone that the trial keeps the GPU busy


@dataclass
class ProfileSet:
    """The profiles of one model at one batch size: measured ones by GPU kind, and an estimate."""

    model: str
    batch_size: int
    layer_count: int
    measured: dict[str, Profile]  # GPU kind name -> profile
    estimate: Profile | None
    precision: str = "32-true"
    tf32: bool = False  # float32 matmuls allowed TF32 (32-true runs at the TF32 peak)
    predictor: StepPredictor | None = None  # step times (and GPU-busy shares) on kinds nobody measured

    def peak(self, gpu: GpuKind) -> float:
        """The dense peak, TFLOP/s, the trials' precision runs at on `gpu`."""
        return peak_tflops(gpu, self.precision, self.tf32)

    def row(self, profile: Profile, z: int) -> Row | None:
        """The row of z at the set's batch size in `profile`, or None where it is missing or failed."""
        row = profile.row(self.batch_size, z)
        return row if row is not None and row.ok else None

    def reference(self) -> Profile:
        """What the ladder's rungs come from: the largest measured GPU's profile, else the estimate."""
        if self.measured:
            return max(self.measured.items(), key=lambda item: GPU_KINDS[item[0]].memory_mib)[1]
        assert self.estimate is not None
        return self.estimate

    def cost(self, z: int, gpu: GpuKind) -> TrialCost | None:
        """What a trial of z costs on `gpu`; None where no profile or estimate has the cell."""
        memory = self._memory(z, gpu)
        timing = self._time(z, gpu)
        if memory is None or timing is None:
            return None
        return TrialCost(timing[0], timing[1], memory[0], memory[1], timing[2])

    def _memory(self, z: int, gpu: GpuKind) -> tuple[int, str] | None:
        own = self.measured.get(gpu.name)
        if own is not None and (row := self.row(own, z)) and (need := memory_need_bytes(row)):
            return need, f"measured on {gpu.name}"
        if self.estimate is not None and (row := self.row(self.estimate, z)) and row.peak_memory_bytes:
            return row.peak_memory_bytes + CUDA_CONTEXT_RESERVE_BYTES, "estimate"
        for name, profile in self.measured.items():
            if (row := self.row(profile, z)) and (need := memory_need_bytes(row)):
                return need, f"measured on {name}"
        return None

    def _time(self, z: int, gpu: GpuKind) -> tuple[float, str, float] | None:
        own = self.measured.get(gpu.name)
        if own is not None and (row := self.row(own, z)) and row.step_time_ms:
            return row.step_time_ms, f"measured on {gpu.name}", self._gpu_share(row, gpu)
        if self.predictor is not None and (predicted := self.predictor(z, gpu)) is not None:
            return predicted  # its third figure: the share of the predicted step the GPU is busy
        for name, profile in self.measured.items():
            if (row := self.row(profile, z)) and row.step_time_ms:
                other = GPU_KINDS[name]
                return (
                    row.step_time_ms * self.peak(other) / self.peak(gpu),
                    f"scaled from {name} by peak",
                    self._gpu_share(row, other),
                )
        flops = next(
            (r.flops for p in [*self.measured.values(), self.estimate] if p and (r := self.row(p, z)) and r.flops),
            None,
        )
        if flops is None:
            return None
        step_ms = flops / (self.peak(gpu) * 1e12 * ASSUMED_PEAK_SHARE) * 1000
        return step_ms, f"scaled from FLOPs at {ASSUMED_PEAK_SHARE:.0%} of peak", 1.0  # all of it GPU time

    def _gpu_share(self, row: Row, gpu: GpuKind) -> float:
        """How much of its step a measured trial keeps `gpu` (the kind it was measured on) busy: all of it unless
        the cell is host-bound; a host-bound step its kernels' time, its FLOPs at ASSUMED_PEAK_SHARE of the
        precision's peak."""
        if not row.host_bound or not row.flops or not row.step_time_ms:
            return 1.0
        kernels_ms = row.flops / (self.peak(gpu) * 1e12 * ASSUMED_PEAK_SHARE) * 1000
        return min(1.0, kernels_ms / row.step_time_ms)


def profile_set(profiles: Sequence[Profile], batch_size: int | None) -> ProfileSet:
    """Group the inputs by GPU kind; refuse mixtures of models, recipes or CPU profiles."""
    if not profiles:
        raise LayerprofError("give at least one profile or estimate of the model")
    first = profiles[0]
    measured: dict[str, Profile] = {}
    estimate = None
    for profile in profiles:
        if profile.model.spec != first.model.spec or profile.layer_count != first.layer_count:
            raise LayerprofError(f"the profiles are of different models: {first.model.spec}, {profile.model.spec}")
        if differs := recipe_difference(profile.settings, first.settings):
            key, value, first_value = differs
            raise LayerprofError(
                f"the profiles train with different recipes ({key} {value!r} and {first_value!r}); plan one recipe"
            )
        environment = profile.environment
        if profile.is_estimate:
            if environment.device_kind != "cuda":
                raise LayerprofError("an estimate for the CPU says nothing about GPU memory; use --target cuda")
            estimate = profile
            continue
        if environment.device_kind != "cuda":
            raise LayerprofError(
                f"{profile.model.spec} was profiled on {environment.device_name}, not a GPU; give profiles measured "
                "on GPUs or an estimate (--target cuda)"
            )
        # the device's own name decides; the --gpu-kinds label it ran under only where the table lacks that name
        gpu = kind_of_device(environment.device_name) or find_gpu(environment.cluster_kind or "")
        if gpu is None:
            raise unknown_device_error(environment.device_name, str(profile.model.spec))
        if gpu.name in measured:
            raise LayerprofError(f"two profiles were measured on {gpu.name}; give one per GPU kind")
        measured[gpu.name] = profile
    sizes = set.intersection(*(set(p.batch_sizes()) for p in profiles))
    if batch_size is None:
        if len(sizes) != 1:
            shown = ", ".join(map(str, sorted(sizes))) or "none"
            raise LayerprofError(f"choose --batch-size: the profiles share batch sizes {shown}")
        batch_size = sizes.pop()
    elif batch_size not in sizes:
        raise LayerprofError(f"--batch-size {batch_size} is not in every profile; they share {sorted(sizes)}")
    numerics = next((p.environment.numerics for p in profiles if p.environment.numerics), {})
    return ProfileSet(
        first.model.spec,
        batch_size,
        first.layer_count,
        measured,
        estimate,
        precision=first.settings.precision,
        tf32=bool(numerics.get("matmul_tf32")),
    )


# ---------------------------------------------------------------- placing rungs


@dataclass
class KindShare:
    """The part of a rung one GPU kind runs."""

    gpu: str
    gpus: int  # GPUs of this kind that run trials of the rung
    trials: int
    trials_per_gpu: int  # run at once on one GPU
    slots_per_gpu: int  # trials that fit on one GPU
    waves: int  # on the busiest GPU of this kind
    trial_seconds: float  # one trial alone on the GPU
    time_source: str
    memory_need_bytes: int
    memory_source: str


@dataclass
class RungPlacement:
    """One rung placed: the GPU kind, trials side by side per GPU, GPUs used and the rung's time."""

    rung: int  # index in the ladder
    trainable_layers: int
    steps: int
    configs: int
    shares: list[KindShare]
    makespan_seconds: float  # until the last trial of the rung ends
    gpu_hours: float  # busy time of every GPU used

    @property
    def time_sources(self) -> list[str]:
        """Where each share's step time comes from (measured, predicted or scaled), one per GPU kind used."""
        return [share.time_source for share in self.shares]


@dataclass
class Schedule:
    """One halving schedule (successive halving or a Hyperband bracket) placed rung by rung."""

    name: str  # one of SCHEDULES
    algorithm: str  # "successive halving" | "hyperband"
    brackets: list[list[RungPlacement]]  # run one after another; rungs within a bracket too
    gpus: str = ""  # the kind a single-kind schedule uses
    makespan_seconds: float = 0.0
    gpu_hours: float = 0.0
    makespan_vs_ladder: float | None = None
    gpu_hours_vs_ladder: float | None = None

    @property
    def scaled(self) -> bool:
        """Whether any rung's step time was predicted or scaled rather than measured on its GPU kind."""
        return any(not source.startswith("measured") for b in self.brackets for p in b for source in p.time_sources)


@dataclass(frozen=True)
class GpuRun:
    """How one GPU runs n trials of a rung soonest: in `waves` waves of at most `at_once` trials."""

    seconds: float
    waves: int
    at_once: int


def together(trials: int, gpu_share: float) -> float:
    """How many times as long as one alone `trials` trials take on one GPU together: they take turns once their
    shares add up to more than the whole GPU, and lose SHARING_OVERHEAD to switching between them."""
    if trials <= 1:
        return 1.0
    return max(1.0, trials * gpu_share) * (1 + SHARING_OVERHEAD)


def one_gpu(trials: int, trial_seconds: float, gpu_share: float, slots: int) -> GpuRun:
    """n trials on one GPU in waves of at most `slots` (what fits) at once, each wave taking
    `together(size, gpu_share)` times one trial: the number of waves that finishes soonest."""
    if trials == 0:
        return GpuRun(0.0, 0, 0)
    best = None
    for waves in range(math.ceil(trials / slots), trials + 1):
        fuller, size = trials % waves, trials // waves  # `fuller` waves of size + 1, the rest of size
        waves_alike = fuller * together(size + 1, gpu_share) + (waves - fuller) * together(size, gpu_share)
        seconds = trial_seconds * waves_alike
        if best is None or seconds < best.seconds - 1e-9:
            best = GpuRun(seconds, waves, size + (1 if fuller else 0))
    assert best is not None
    return best


def place(
    configs: int, z: int, steps: int, rung: int, profiles: ProfileSet, inventory: Sequence[InventoryItem]
) -> RungPlacement | None:
    """Spread the rung's trials over every GPU that holds one, each next trial where it ends the soonest (on a
    GPU already in use when that is no later): the makespan of identical trials. Then the same trials on as few
    GPU-hours as that makespan allows (`_fewest_gpu_hours`). A MIG slice's busy time counts its share of a GPU."""
    kinds = []
    for item in inventory:
        cost = profiles.cost(z, item.gpu)
        slots = 0 if cost is None else item.gpu.memory_mib * 2**20 // cost.memory_need_bytes
        if cost is None or slots < 1:
            continue
        trial_seconds = cost.step_time_ms * steps / 1000
        runs = [one_gpu(n, trial_seconds, cost.gpu_share, slots) for n in range(configs + 1)]
        kinds.append((item, cost, slots, trial_seconds, runs))
    if not kinds:
        return None
    # a heap of (seconds after one more trial, kind, GPU) per GPU
    loads = {(k, g): 0 for k in range(len(kinds)) for g in range(kinds[k][0].count)}
    heap = [(kinds[k][4][1].seconds, k, g) for k, g in loads]
    heapq.heapify(heap)
    for _ in range(configs):
        _, k, g = heapq.heappop(heap)
        loads[(k, g)] += 1
        runs = kinds[k][4]
        after = runs[loads[(k, g)] + 1].seconds if loads[(k, g)] < configs else math.inf
        heapq.heappush(heap, (after, k, g))
    makespan = max(kinds[k][4][n].seconds for (k, _), n in loads.items())
    loads = _fewest_gpu_hours(kinds, configs, makespan)
    shares = []
    for k, (item, cost, slots, trial_seconds, runs) in enumerate(kinds):
        used = [loads[(k, g)] for g in range(item.count) if loads[(k, g)]]
        if used:
            busiest = runs[max(used)]
            shares.append(
                KindShare(
                    item.gpu.name,
                    len(used),
                    sum(used),
                    busiest.at_once,
                    slots,
                    busiest.waves,
                    trial_seconds,
                    cost.time_source,
                    cost.memory_need_bytes,
                    cost.memory_source,
                )  # fmt: skip
            )
    busy = [(kinds[k][4][n].seconds, kinds[k][0].gpu.share_of_gpu) for (k, _), n in loads.items()]
    return RungPlacement(
        rung, z, steps, configs, shares, max(seconds for seconds, _ in busy), sum(s * f for s, f in busy) / 3600
    )


def _fewest_gpu_hours(kinds: list[Any], configs: int, makespan: float) -> dict[tuple[int, int], int]:
    """Trials per GPU that finish by `makespan` on the fewest GPU-hours: each GPU takes as many trials as it runs
    by then, the GPUs that spend the least per trial there first (trials that fit together share one GPU instead
    of keeping two busy)."""
    capacity = [max(n for n, run in enumerate(runs) if run.seconds <= makespan + 1e-9) for *_, runs in kinds]

    def hours_per_trial(k: int) -> float:
        runs, gpu = kinds[k][4], kinds[k][0].gpu
        return runs[capacity[k]].seconds * gpu.share_of_gpu / capacity[k] if capacity[k] else math.inf

    loads: dict[tuple[int, int], int] = {}
    left = configs
    for k in sorted(range(len(kinds)), key=hours_per_trial):
        for g in range(kinds[k][0].count):
            loads[(k, g)] = min(capacity[k], left)
            left -= loads[(k, g)]
    assert left == 0, "the soonest placement fits, so the fullest one does"
    return loads


@dataclass
class ClusterPlan:
    """`plan`'s answer: the schedules on the inventory, their makespan and GPU-hours, and notes."""

    model: str
    batch_size: int
    eta: float
    configs: int
    budget_steps: int
    inventory: list[dict[str, Any]]
    rungs: list[int]  # the ladder's z values
    cost_kind: str
    schedules: list[Schedule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def schedule(self, name: str, algorithm: str) -> Schedule:
        """The schedule of that name and algorithm; `plan` makes one of each (StopIteration otherwise)."""
        return next(s for s in self.schedules if s.name == name and s.algorithm == algorithm)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with its schema."""
        return {"schema": PLAN_SCHEMA, **asdict(self)}


def plan_cluster(
    profiles: Sequence[Profile],
    inventory: Sequence[InventoryItem],
    *,
    eta: float = 3.0,
    configs: int | None = None,
    budget_steps: int = 1000,
    batch_size: int | None = None,
    min_layers: int = 1,
    predict: Callable[[ProfileSet], StepPredictor] | None = None,
) -> ClusterPlan:
    """The ladder of the profiles, each rung placed on the inventory, for halving and Hyperband; and the two
    alternatives placed the same way: the ladder on the best single kind of GPU (the quickest of the kinds that
    hold every rung), and halving on steps at full z. `predict` makes the step-time predictor for kinds nobody
    measured."""
    check_eta(eta)
    if budget_steps < 1:
        raise LayerprofError(f"--budget-steps must be at least 1, got {budget_steps}")
    group = profile_set(profiles, batch_size)
    if predict is not None:
        group.predictor = predict(group)
    reference = group.reference()
    ladder = build_ladder(
        reference, eta=eta, cost_kind=default_cost(reference), batch_size=group.batch_size, min_layers=min_layers
    )
    zs = [rung.trainable_layers for rung in ladder.rungs]
    rung_count = len(zs)
    configs_given = configs is not None
    configs = configs or round(eta ** (rung_count - 1))
    if configs > MAX_CONFIGS:  # placing each trial: 10^5 took minutes, 10^12 hung
        given = f"--configs {configs:,}" if configs_given else f"eta^{rung_count - 1} = {configs:,} configurations"
        raise LayerprofError(f"{given} is beyond the {MAX_CONFIGS:,} a plan places; give a smaller --configs")
    ladder_rungs = [(z, budget_steps) for z in zs]
    full = group.layer_count  # halving on steps: full training, budget_steps / eta^(K-1-i) steps at rung i
    budget_rungs = [(full, max(1, round(budget_steps / eta ** (rung_count - 1 - i)))) for i in range(rung_count)]
    result = ClusterPlan(
        model=group.model,
        batch_size=group.batch_size,
        eta=eta,
        configs=configs,
        budget_steps=budget_steps,
        inventory=[{"gpu": item.gpu.name, "count": item.count} for item in inventory],
        rungs=zs,
        cost_kind=ladder.cost_kind,
    )
    unit = [1.0] * rung_count
    layouts = {"successive halving": [successive_halving(unit, configs, eta)], "hyperband": hyperband(unit, eta)}
    for algorithm, brackets in layouts.items():
        result.schedules.append(_schedule("ladder", algorithm, brackets, ladder_rungs, inventory, group))
        # every rung on one kind alone, for each kind that holds them all (the kind that holds the ladder's
        # largest trial does): the quickest of these
        singles = [_schedule("best single kind", algorithm, brackets, ladder_rungs, [item], group, alone=True)
                   for item in inventory]  # fmt: skip
        fitting = [schedule for schedule in singles if schedule.brackets]
        result.schedules.append(min(fitting, key=lambda s: (s.makespan_seconds, s.gpu_hours)))
        result.schedules.append(_schedule("budget only", algorithm, brackets, budget_rungs, inventory, group))
    for schedule in result.schedules:
        ladder_schedule = result.schedule("ladder", schedule.algorithm)
        schedule.makespan_vs_ladder = schedule.makespan_seconds / ladder_schedule.makespan_seconds
        schedule.gpu_hours_vs_ladder = schedule.gpu_hours / ladder_schedule.gpu_hours
    if configs_given:
        result.notes.append(
            f"--configs {configs} sets successive halving's starting configurations; Hyperband's brackets follow "
            f"from eta and the {rung_count} rungs alone (Li et al.)"
        )
    if any(s.scaled for s in result.schedules):
        result.notes.append(
            "predicted or scaled: some step times were not measured on that GPU kind (see each rung's time source)"
        )
    result.notes.append(ladder.fit_note)
    for profile in profiles:
        reason = profile.incomplete_reason()
        if reason is not None:
            result.notes.append(f"the profile of {profile.environment.device_name} is incomplete ({reason})")
    return result


def _schedule(
    name: str,
    algorithm: str,
    brackets: Sequence[Any],
    rungs: Sequence[tuple[int, int]],
    kinds: Sequence[InventoryItem],
    group: ProfileSet,
    alone: bool = False,
) -> Schedule:
    """Every bracket's rungs placed on `kinds`, one after another. A rung that fits none of them is an error, or
    (`alone`: one kind tried on its own) a schedule without brackets."""
    schedule = Schedule(name, algorithm, [], gpus=kinds[0].gpu.name if alone else "")
    for bracket in brackets:
        placed = []
        for offset, count in enumerate(bracket.configs_per_rung):
            index = bracket.first_rung + offset
            z, steps = rungs[index]
            placement = place(count, z, steps, index, group, kinds)
            if placement is None:
                if alone:
                    return Schedule(name, algorithm, [], gpus=schedule.gpus)
                raise _unplaceable(group, z, kinds, name)
            placed.append(placement)
        schedule.brackets.append(placed)
    schedule.makespan_seconds = sum(p.makespan_seconds for b in schedule.brackets for p in b)
    schedule.gpu_hours = sum(p.gpu_hours for b in schedule.brackets for p in b)
    return schedule


def _unplaceable(group: ProfileSet, z: int, kinds: Sequence[InventoryItem], schedule: str) -> LayerprofError:
    needs = [(item.gpu, group.cost(z, item.gpu)) for item in kinds]
    known = [(gpu, cost) for gpu, cost in needs if cost is not None]
    if not known:
        return LayerprofError(f"no profile or estimate has z={z} at batch {group.batch_size}; profile that cell")
    need = min(cost.memory_need_bytes for _, cost in known)
    biggest = max(kinds, key=lambda item: item.gpu.memory_mib).gpu
    return LayerprofError(
        f"no GPU in the inventory holds a trial of z={z} ({schedule}): it needs {need / 2**30:.1f} GiB, the largest "
        f"GPU ({biggest.name}) has {biggest.memory_mib / 1024:.1f} GiB; add a larger GPU to --cluster"
    )
