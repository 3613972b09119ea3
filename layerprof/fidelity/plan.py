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

import functools
import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from layerprof.devices import (
    CUDA_CONTEXT_RESERVE_BYTES,
    GPU_KINDS,
    GpuKind,
    InventoryItem,
    PriceBook,
    find_gpu,
    kind_of_device,
    peak_tflops,
    unknown_device_error,
)
from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import (
    Bracket,
    build_ladder,
    default_cost,
    hyperband,
    memory_need_bytes,
    successive_halving,
)
from layerprof.parsing import MAX_CONFIGS, check_budget_steps, check_eta
from layerprof.profile import JsonDict, Profile, Row, recipe_difference

PLAN_SCHEMA = "layerprof.plan/2"  # /2: `deadlines`, one per algorithm, for /1's `deadline`
ASSUMED_PEAK_SHARE = 0.4  # a step's kernels' FLOP/s over the GPU's dense peak for its precision
# What trials sharing a GPU lose to switching between them: two trials on an NVIDIA H200 took 2.23x (GPU-bound),
# 1.11x and 1.18x (host-bound) as long as one alone where taking turns alone accounts for 2x, 1x and 1x.
SHARING_OVERHEAD = 0.13
SCHEDULES = ("ladder", "best single kind", "budget only")
ASHA = "asha"  # the algorithm name of the asynchronous schedule
DEADLINE_ALGORITHMS = ("successive halving", "hyperband", ASHA)  # each gets its cheapest cluster under --deadline
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
    busy_seconds: float = 0.0  # all its GPUs' busy time, added up (a MIG slice's time, not scaled by its share)
    usd: float | None = None  # what that busy time costs at the kind's price (`ClusterPlan.prices` names it)


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
    usd: float | None = None  # its shares' busy time at their kinds' prices

    @property
    def time_sources(self) -> list[str]:
        """Where each share's step time comes from (measured, predicted or scaled), one per GPU kind used."""
        return [share.time_source for share in self.shares]


@dataclass
class Schedule:
    """One halving schedule (successive halving or a Hyperband bracket) placed rung by rung."""

    name: str  # one of SCHEDULES
    algorithm: str  # "successive halving" | "hyperband" | "asha"
    brackets: list[list[RungPlacement]]  # run one after another; rungs within a bracket too
    gpus: str = ""  # the kind a single-kind schedule uses
    makespan_seconds: float = 0.0
    gpu_hours: float = 0.0
    makespan_vs_ladder: float | None = None
    gpu_hours_vs_ladder: float | None = None
    usd: float | None = None  # the GPUs' busy time at their prices: billed per second, released when idle
    usd_held: float | None = None  # every GPU it may use (the inventory, or its one kind) held for the makespan

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


@functools.lru_cache(maxsize=65536)
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


# an inventory kind that holds a rung's trial: the item, the trial's cost there, trials that fit one GPU, a trial's
# seconds alone, and the run of n trials on one GPU for n = 0..configs
KindRuns = tuple[InventoryItem, TrialCost, int, float, list[GpuRun]]


def place(
    configs: int, z: int, steps: int, rung: int, profiles: ProfileSet, inventory: Sequence[InventoryItem]
) -> RungPlacement | None:
    """Spread the rung's trials over every GPU that holds one, each next trial where it ends the soonest (on a
    GPU already in use when that is no later): the makespan of identical trials. Then the same trials on as few
    GPU-hours as that makespan allows (`_fewest_gpu_hours`). A MIG slice's busy time counts its share of a GPU."""
    kinds: list[KindRuns] = []
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
                    sum(runs[n].seconds for n in used),
                )
            )
    busy = [(kinds[k][4][n].seconds, kinds[k][0].gpu.share_of_gpu) for (k, _), n in loads.items()]
    return RungPlacement(
        rung, z, steps, configs, shares, max(seconds for seconds, _ in busy), sum(s * f for s, f in busy) / 3600
    )


def _fewest_gpu_hours(kinds: list[KindRuns], configs: int, makespan: float) -> dict[tuple[int, int], int]:
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
class DeadlineAnswer:
    """`plan --deadline`: for one algorithm over the ladder (successive halving, Hyperband or ASHA), the cheapest
    composition of the inventory's kinds (each at most its count) that ends by the deadline, its GPUs held (rented)
    for the makespan; or why none does."""

    deadline_seconds: float
    algorithm: str  # the schedule timed against the deadline over the ladder: one of DEADLINE_ALGORITHMS
    met: bool
    gpus: list[dict[str, str | int]]  # [{"gpu": "L4", "count": 3}, ...]; [] where none meets it
    makespan_seconds: float | None = None
    usd_held: float | None = None  # the composition held for the makespan: what renting it costs
    usd: float | None = None  # its busy time alone
    gpu_hours: float | None = None
    compositions_tried: int = 0
    reason: str = ""


@dataclass
class ClusterPlan:
    """`plan`'s answer: the schedules on the inventory, their makespan and GPU-hours, and notes."""

    model: str
    batch_size: int
    eta: float
    configs: int
    budget_steps: int
    inventory: list[dict[str, str | int]]  # [{"gpu": "L4", "count": 8}, ...]
    rungs: list[int]  # the ladder's z values
    cost_kind: str
    schedules: list[Schedule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    prices: dict[str, str] = field(default_factory=dict)  # GPU kind -> its price and where it comes from
    deadlines: list[DeadlineAnswer] = field(default_factory=list)  # one per DEADLINE_ALGORITHMS with --deadline
    recipe: str = ""  # the profiles' training recipe in words (SweepSettings.recipe_label)
    recipe_settings: JsonDict = field(default_factory=dict)  # and as data (SweepSettings.recipe)

    def deadline(self, algorithm: str) -> DeadlineAnswer:
        """The deadline's answer for that algorithm (StopIteration where `plan` had no deadline)."""
        return next(answer for answer in self.deadlines if answer.algorithm == algorithm)

    def schedule(self, name: str, algorithm: str) -> Schedule:
        """The schedule of that name and algorithm; `plan` makes one of each (StopIteration otherwise)."""
        return next(s for s in self.schedules if s.name == name and s.algorithm == algorithm)

    def to_dict(self) -> JsonDict:
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
    predict: Callable[[ProfileSet, Sequence[int]], StepPredictor] | None = None,
    prices: PriceBook | None = None,
    deadline_seconds: float | None = None,
) -> ClusterPlan:
    """The ladder of the profiles, each rung placed on the inventory, for halving and Hyperband; and the two
    alternatives placed the same way: the ladder on the best single kind of GPU (the quickest of the kinds that
    hold every rung), and halving on steps at full z. `predict` makes the step-time predictor for kinds nobody
    measured, given the set and the z values it will be asked for. With `prices`, every rung and schedule in
    dollars (a kind without a price: none, and a note); with `deadline_seconds` too, the cheapest composition of
    the inventory that meets it (`cheapest_cluster`)."""
    if deadline_seconds is not None and (not math.isfinite(deadline_seconds) or deadline_seconds <= 0):
        raise LayerprofError(f"--deadline must be a positive duration like 6h, got {deadline_seconds:g} s")
    check_eta(eta)
    check_budget_steps(budget_steps)
    group = profile_set(profiles, batch_size)
    reference = group.reference()
    ladder = build_ladder(
        reference, eta=eta, cost_kind=default_cost(reference), batch_size=group.batch_size, min_layers=min_layers
    )
    zs = [rung.trainable_layers for rung in ladder.rungs]
    if predict is not None:  # told every z it will be asked for: it can trace them in one go
        group.predictor = predict(group, (*zs, group.layer_count))
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
        recipe=reference.settings.recipe_label,
        recipe_settings=reference.settings.recipe(),
    )
    unit = [1.0] * rung_count
    layouts = {"successive halving": [successive_halving(unit, configs, eta)], "hyperband": hyperband(unit, eta)}
    for algorithm, brackets in layouts.items():
        result.schedules.append(_schedule("ladder", algorithm, brackets, ladder_rungs, inventory, group))
        # every rung on one kind alone, for each kind that holds them all (the kind that holds the ladder's
        # largest trial does): the quickest of these
        singles = [
            _schedule("best single kind", algorithm, brackets, ladder_rungs, [item], group, alone=True)
            for item in inventory
        ]
        fitting = [schedule for schedule in singles if schedule.brackets]
        result.schedules.append(min(fitting, key=lambda s: (s.makespan_seconds, s.gpu_hours)))
        result.schedules.append(_schedule("budget only", algorithm, brackets, budget_rungs, inventory, group))
    result.schedules.append(asha_schedule(configs, eta, ladder_rungs, inventory, group))
    for schedule in result.schedules:
        algorithm = "successive halving" if schedule.algorithm == ASHA else schedule.algorithm
        ladder_schedule = result.schedule("ladder", algorithm)
        schedule.makespan_vs_ladder = schedule.makespan_seconds / ladder_schedule.makespan_seconds
        schedule.gpu_hours_vs_ladder = schedule.gpu_hours / ladder_schedule.gpu_hours
    if prices is not None:
        _price_plan(result, prices, inventory)
        if deadline_seconds is not None:

            def build(algorithm: str, items: Sequence[InventoryItem]) -> Schedule:
                if algorithm == ASHA:
                    return asha_schedule(configs, eta, ladder_rungs, items, group)
                return _schedule("ladder", algorithm, layouts[algorithm], ladder_rungs, items, group)

            result.deadlines = [
                cheapest_cluster(deadline_seconds, algorithm, functools.partial(build, algorithm), inventory, prices)
                for algorithm in DEADLINE_ALGORITHMS
            ]
    elif deadline_seconds is not None:
        raise LayerprofError("--deadline needs prices to choose the cheapest cluster")
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
    brackets: Sequence[Bracket],
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


# ---------------------------------------------------------------- dollars and deadlines


def price_schedule(schedule: Schedule, prices: PriceBook, held: Sequence[InventoryItem]) -> None:
    """Dollars of a placed schedule: each share's busy time at its kind's price, added up per rung and schedule;
    and `held`'s GPUs rented for the whole makespan. Raises LayerprofError for a kind without a price."""
    for bracket in schedule.brackets:
        for placement in bracket:
            for share in placement.shares:
                share.usd = prices.usd(GPU_KINDS[share.gpu], share.busy_seconds)
            placement.usd = sum(share.usd or 0.0 for share in placement.shares)
    schedule.usd = sum(p.usd or 0.0 for b in schedule.brackets for p in b)
    schedule.usd_held = sum(prices.usd(item.gpu, schedule.makespan_seconds) * item.count for item in held)


def _price_plan(plan: ClusterPlan, prices: PriceBook, inventory: Sequence[InventoryItem]) -> None:
    """Every schedule of the plan in dollars, and the prices it used; where a kind has none, a note instead."""
    missing = [item.gpu.name for item in inventory if prices.find(item.gpu) is None]
    if missing:
        try:
            prices.price(GPU_KINDS[missing[0]])
        except LayerprofError as error:
            plan.notes.append(f"{error}: the plan shows no dollars")
        return
    plan.prices = {item.gpu.name: prices.price(item.gpu).label for item in inventory}
    for schedule in plan.schedules:
        held = [item for item in inventory if item.gpu.name == schedule.gpus] if schedule.gpus else inventory
        price_schedule(schedule, prices, held)


def _counts_to_try(most: int) -> list[int]:
    """0..most where that is short, else 0, 1, 2, 3, 4, 6, 8, 12, 16, ... and `most`: the counts of a kind the
    deadline search tries while it searches another kind's count exactly."""
    if most <= 16:
        return list(range(most + 1))
    counts, power = {0, most}, 1
    while power <= most:
        counts.update(c for c in (power, power * 3 // 2) if c <= most)
        power *= 2
    return sorted(counts)


def cheapest_cluster(
    deadline_seconds: float,
    algorithm: str,
    build: Callable[[Sequence[InventoryItem]], Schedule],
    inventory: Sequence[InventoryItem],
    prices: PriceBook,
) -> DeadlineAnswer:
    """The composition of `inventory`'s kinds (0 to each kind's count) whose schedule (`build`: the algorithm over
    the ladder on those GPUs; a LayerprofError where they cannot hold a rung) ends by `deadline_seconds` for the
    fewest dollars, its GPUs held (rented) for the whole makespan: idle GPUs in the narrow top rungs cost as much as
    busy ones. For each count of every kind but the last (all counts up to 16, else a geometric choice,
    `_counts_to_try`), the last kind's smallest count that meets the deadline, found by bisection (more GPUs never
    end a schedule later). Or, where even the whole inventory is too slow, why."""
    for item in inventory:
        prices.price(item.gpu)  # a kind without a price is an input error here: the answer needs every price
    tried: dict[tuple[int, ...], Schedule | None] = {}

    def schedule_of(counts: tuple[int, ...]) -> Schedule | None:
        if counts not in tried:
            items = [InventoryItem(item.gpu, count) for item, count in zip(inventory, counts, strict=True) if count]
            schedule = None
            if items:
                try:
                    schedule = build(items)
                    price_schedule(schedule, prices, items)
                except LayerprofError:  # a rung no kind of this composition holds
                    schedule = None
            tried[counts] = schedule
        return tried[counts]

    def meets(counts: tuple[int, ...]) -> bool:
        schedule = schedule_of(counts)
        return schedule is not None and schedule.makespan_seconds <= deadline_seconds * (1 + 1e-9)

    everything = tuple(item.count for item in inventory)
    whole = schedule_of(everything)
    if whole is None or not meets(everything):
        took = "cannot place every rung" if whole is None else f"takes {_hours(whole.makespan_seconds)}"
        shown = ", ".join(f"{item.count}x{item.gpu.name}" for item in inventory)
        return DeadlineAnswer(
            deadline_seconds,
            algorithm,
            False,
            [],
            compositions_tried=len(tried),
            reason=f"even all of --cluster ({shown}) {took} for {_named(algorithm)} over the ladder, beyond the "
            f"deadline of {_hours(deadline_seconds)}: add GPUs or faster kinds, or lower --configs or --budget-steps",
        )
    best: tuple[tuple[float, float, int], tuple[int, ...]] | None = None
    last = inventory[-1].count
    for head in itertools.product(*(_counts_to_try(item.count) for item in inventory[:-1])):
        if not meets((*head, last)):
            continue
        low, high = 0, last
        while low < high:
            middle = (low + high) // 2
            if meets((*head, middle)):
                high = middle
            else:
                low = middle + 1
        counts = (*head, low)
        schedule = schedule_of(counts)
        assert schedule is not None and schedule.usd_held is not None
        key = (schedule.usd_held, schedule.makespan_seconds, sum(counts))
        if best is None or key < best[0]:
            best = (key, counts)
    assert best is not None, "the whole inventory meets the deadline, so some composition does"
    counts = best[1]
    schedule = schedule_of(counts)
    assert schedule is not None
    return DeadlineAnswer(
        deadline_seconds,
        algorithm,
        True,
        [{"gpu": item.gpu.name, "count": count} for item, count in zip(inventory, counts, strict=True) if count],
        schedule.makespan_seconds,
        schedule.usd_held,
        schedule.usd,
        schedule.gpu_hours,
        len(tried),
    )


def _named(algorithm: str) -> str:
    return "ASHA" if algorithm == ASHA else algorithm


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h"


# ---------------------------------------------------------------- asynchronous halving


def asha_schedule(
    configs: int, eta: float, rungs: Sequence[tuple[int, int]], inventory: Sequence[InventoryItem], group: ProfileSet
) -> Schedule:
    """ASHA over the ladder on the inventory. Each GPU holds w trials at once: as many as its share of a GPU-busy
    step lets share it (1 for a GPU-bound trial, `together`'s model) and every rung it can hold fits w times; each
    such trial takes `together(w)` times as long as alone. Whenever a place is free it takes the highest waiting
    promotion (a trial of rung k goes on once floor(completions at k / eta) says one more may: Li et al.'s count,
    what the libraries promote on average), else a new configuration, where it ends soonest among the places that
    hold it. No rung waits for the one below to finish, so rungs overlap: the makespan is when the last trial ends.
    A GPU's busy time is its trials' time over w. Each rung's line adds up its trials per kind (`waves`: the most
    one place ran)."""
    count = len(rungs)
    costs = [[group.cost(z, item.gpu) for item in inventory] for z, _ in rungs]
    memory = [item.gpu.memory_mib * 2**20 for item in inventory]
    at_once = []
    for kind in range(len(inventory)):
        held = [c for c in (row[kind] for row in costs) if c is not None and c.memory_need_bytes <= memory[kind]]
        lowest = held[0] if held else None
        by_share = math.floor(1 / lowest.gpu_share + 1e-9) if lowest and lowest.gpu_share > 0 else 1
        fits = min((memory[kind] // c.memory_need_bytes for c in held), default=1)
        at_once.append(max(1, min(by_share, fits)))
    gpus = [(item, number) for kind, item in enumerate(inventory) for number in range(item.count * at_once[kind])]
    seconds: list[list[float | None]] = []
    for (_, steps), row in zip(rungs, costs, strict=True):
        seconds.append(
            [
                None
                if cost is None or cost.memory_need_bytes * at_once[kind] > memory[kind]
                else cost.step_time_ms * steps / 1000 * together(at_once[kind], cost.gpu_share)
                for kind, cost in enumerate(row)
            ]
        )
    kind_of = {item.gpu.name: index for index, item in enumerate(inventory)}
    completions, promoted, waiting = [0] * count, [0] * count, [0] * count  # waiting: promotions not yet started
    started_new = 0
    free_at = {gpu: 0.0 for gpu in range(len(gpus))}
    idle = set(free_at)
    running: list[tuple[float, int, int, int]] = []  # (ends, order, GPU, rung)
    order = 0
    busy: dict[tuple[int, int], list[float]] = {}  # (rung, kind) -> busy seconds per trial
    per_gpu: dict[tuple[int, int], int] = {}  # (rung, GPU) -> trials
    spans: dict[int, list[float]] = {}  # rung -> [first start, last end]
    now = 0.0

    def jobs() -> list[int]:
        """The rungs of the jobs waiting, most urgent first: promotions from the top down, then a new trial."""
        return [k for k in range(count - 1, 0, -1) if waiting[k]] + ([0] if started_new < configs else [])

    while True:
        placed = True
        while idle and placed:
            placed = False
            for rung in jobs():
                options = [
                    (now + secs, gpu)
                    for gpu in idle
                    if (secs := seconds[rung][kind_of[gpus[gpu][0].gpu.name]]) is not None
                ]
                if not options:
                    continue
                ends, gpu = min(options)
                idle.discard(gpu)
                heapq.heappush(running, (ends, order, gpu, rung))
                order += 1
                if rung == 0:
                    started_new += 1
                else:
                    waiting[rung] -= 1
                kind = kind_of[gpus[gpu][0].gpu.name]
                busy.setdefault((rung, kind), []).append((ends - now) / at_once[kind])
                per_gpu[(rung, gpu)] = per_gpu.get((rung, gpu), 0) + 1
                span = spans.setdefault(rung, [now, ends])
                span[1] = max(span[1], ends)
                placed = True
                break
        if not running:
            break
        now, _, gpu, rung = heapq.heappop(running)
        idle.add(gpu)
        completions[rung] += 1
        if rung + 1 < count and math.floor(completions[rung] / eta + 1e-9) > promoted[rung]:
            promoted[rung] += 1
            waiting[rung + 1] += 1
    if started_new < configs or any(waiting):
        raise _unplaceable(group, rungs[0][0], inventory, "asha")
    placements = []
    for rung, (z, steps) in enumerate(rungs):
        shares = []
        for kind, item in enumerate(inventory):
            times = busy.get((rung, kind))
            if not times:
                continue
            used = [n for (k, g), n in per_gpu.items() if k == rung and gpus[g][0] is item]
            cost = costs[rung][kind]
            assert cost is not None
            slots = item.gpu.memory_mib * 2**20 // cost.memory_need_bytes
            shares.append(
                KindShare(
                    item.gpu.name,
                    -(-len(used) // at_once[kind]),
                    len(times),
                    at_once[kind],
                    slots,
                    max(used),
                    times[0] * at_once[kind],
                    cost.time_source,
                    cost.memory_need_bytes,
                    cost.memory_source,
                    sum(times),
                )
            )
        trials = sum(share.trials for share in shares)
        first, last = spans.get(rung, [0.0, 0.0])
        hours = sum(share.busy_seconds * GPU_KINDS[share.gpu].share_of_gpu for share in shares) / 3600
        placements.append(RungPlacement(rung, z, steps, trials, shares, last - first, hours))
    schedule = Schedule("ladder", ASHA, [placements])
    schedule.makespan_seconds = now
    schedule.gpu_hours = sum(p.gpu_hours for p in placements)
    return schedule
