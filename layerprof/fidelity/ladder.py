"""Fidelity ladders from a Profile: rungs of trainable layers whose cost grows by about eta, what each needs,
how many trials of a rung share one GPU, and what successive halving / Hyperband spend on them.

Everything here is a function of the Profile; nothing is measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from layerprof.devices import (
    CUDA_CONTEXT_RESERVE_BYTES,
    GpuKind,
    PriceBook,
    find_gpu,
    kind_of_device,
    peak_tflops,
)
from layerprof.errors import LayerprofError, read_json
from layerprof.parsing import check_budget_steps, check_eta
from layerprof.profile import JsonDict, Profile, Row, load_profile, ratio

if TYPE_CHECKING:
    from layerprof.fidelity.correlate import CorrelationResult

# A rung ratio counts as close to eta when it lies within eta^(1/2) .. eta^(3/2) (half a step in log space).
CLOSE_IN_LOG_STEPS = 0.5

CostName = Literal["time", "flops"]  # what rungs are spaced by: median step time or FLOPs per step
COSTS: tuple[CostName, ...] = get_args(CostName)


@dataclass
class Rung:
    """One rung: its z, its cost relative to full training, and what its trials need and spend."""

    trainable_layers: int
    trainable_fraction: float
    cost: float  # median step time (ms) or FLOPs per step, by `cost_kind`
    cost_vs_full: float
    cost_vs_previous: float | None
    step_time_ms: float | None
    time_vs_full: float | None
    peak_memory_bytes: int | None
    memory_vs_full: float | None
    memory_need_bytes: int | None  # what one trial holds on a GPU: allocator reservation plus context
    parallel_slots: int | None  # trials of this rung that fit on one GPU at once
    largest_batch_size: int | None = None  # from a linear fit of memory against batch size, if several
    budget_index: int = 1  # 1, eta, eta^2, ...: what an HPO library sees as the budget
    steps: int | None = None  # joint ladder: training steps at this rung
    spearman: float | None = None  # measured rank correlation with full training (from `layerprof correlate`)
    disturbed: bool = False  # its cell, or full training's, was disturbed by other work while timed
    usd_per_trial: float | None = None  # ladder --gpu: one trial alone on that GPU, for `Ladder.priced_steps`
    batch_limit: int | None = None  # ladder --batch-limits: the largest batch `fit` found fits at this z


@dataclass
class Bracket:
    """One successive-halving bracket: how many configurations run at each rung it uses."""

    first_rung: int  # index into the ladder's rungs
    configs_per_rung: list[int]
    cost_full_equivalents: float  # sum over rungs of configs x rung cost / full-training cost


@dataclass
class Ladder:
    """The recommended rungs for one profile and batch size, with the brackets halving runs over them."""

    model: str
    device: str
    batch_size: int
    eta: float
    cost_kind: str  # "time" | "flops"
    layer_count: int
    rungs: list[Rung]
    close_to_eta: bool
    fit_note: str
    gpu_memory_bytes: int | None
    context_reserve_bytes: int
    configs: int | None = None
    successive_halving: Bracket | None = None
    budget_successive_halving: dict[str, float] | None = None  # the same SH on training budget alone
    hyperband: list[Bracket] = field(default_factory=list)  # Li et al.'s layout, which SMAC3 runs too
    hyperband_neps: list[Bracket] = field(default_factory=list)  # NePS's, where it differs (integer eta only)
    joint: JsonDict | None = None
    times_predicted: bool = False  # step times come from the time model (an estimate), not from measurement
    gpu: str | None = None  # ladder --gpu: the kind whose memory gives the slots and whose price the dollars
    price: str | None = None  # its price and where it comes from
    priced_steps: str | None = None  # what a trial's dollars are for: "the rung's steps" or "1000 steps"
    priced_time_source: str | None = None  # "measured on H100" | "scaled from H100 by peak"
    successive_halving_usd: float | None = None  # --configs: every trial of the halving bracket, one after another
    batch_limits_source: str | None = None  # where the exported snippets' largest batch per rung comes from
    recipe: str = ""  # the profile's training recipe in words (SweepSettings.recipe_label)
    recipe_settings: JsonDict = field(default_factory=dict)  # and as data (SweepSettings.recipe)

    def max_batch(self) -> dict[int, int]:
        """Budget index -> the largest batch that fits one GPU at that rung: `fit`'s answers where attached
        (`attach_batch_limits`), else the profile's line of memory against batch size; rungs without either are
        left out."""
        limits = {}
        for rung in self.rungs:
            limit = rung.batch_limit if rung.batch_limit is not None else rung.largest_batch_size
            if limit is not None:
                limits[rung.budget_index] = limit
        return limits

    def to_dict(self) -> JsonDict:
        """The JSON form, with `budget_to_rung`: each budget index's z and steps, for a tuner to look up."""
        data = asdict(self)
        data["budget_to_rung"] = {
            str(rung.budget_index): {"trainable_layers": rung.trainable_layers, "steps": rung.steps}
            for rung in self.rungs
        }
        return data


# ---------------------------------------------------------------- rung selection


def select_rungs(costs: dict[int, float], eta: float) -> tuple[list[int], bool, str]:
    """Choose z_1 < ... < z_K = n (n the largest key) whose costs grow by about `eta` from rung to rung.

    For each rung count K a dynamic programme finds the subset that minimises the squared log-distance of
    each neighbour ratio from eta (costs strictly rising; at equal error the larger z, which trains more for
    the same price). The largest K whose ratios all lie within half a log step of eta wins; if no K does,
    the K with the smallest mean error, and the note says so.
    """
    check_eta(eta)
    zs = sorted(costs)
    full = zs[-1]
    cheapest = min(costs.values())
    span = math.log(costs[full] / cheapest) / math.log(eta) if cheapest > 0 else 0.0
    if span < CLOSE_IN_LOG_STEPS:
        # a cost of zero (a hand-edited profile) has no ratio to any other: only full training is a rung
        spread = (
            f"changes only {costs[full] / cheapest:.2f}x over all z" if cheapest > 0 else f"is {cheapest:g} at some z"
        )
        note = f"no ladder comes close to eta={eta:g}: the cost {spread}, so only full training is a rung"
        return [full], False, note
    best: tuple[list[int], bool, float] | None = None
    log_eta = math.log(eta)
    for rung_count in range(2, math.ceil(span) + 2):
        chosen, error = _best_subset(zs, costs, rung_count, log_eta)
        if chosen is None:
            break
        ratios = [math.log(costs[b] / costs[a]) for a, b in zip(chosen, chosen[1:], strict=False)]
        close = all(abs(r - log_eta) <= CLOSE_IN_LOG_STEPS * log_eta for r in ratios)
        mean_error = error / (rung_count - 1)
        if close:
            best = (chosen, True, mean_error)
        elif best is None or (not best[1] and mean_error < best[2]):
            best = (chosen, False, mean_error)
    if best is None:
        return [full], False, f"no z is cheaper than full training by a useful margin at eta={eta:g}"
    chosen, close, _ = best
    ratios = [costs[b] / costs[a] for a, b in zip(chosen, chosen[1:], strict=False)]
    shown = ", ".join(f"{r:.2f}x" for r in ratios)
    if close:
        note = f"{len(chosen)} rungs; neighbour cost ratios {shown} (target {eta:g}x)"
    else:
        note = (
            f"no choice of z comes close to eta={eta:g}: the best {len(chosen)} rungs step by {shown}; "
            "the cost curve is a staircase here, consider another eta or --cost flops"
        )
    return chosen, close, note


def _best_subset(
    zs: Sequence[int], costs: dict[int, float], rung_count: int, log_eta: float
) -> tuple[list[int] | None, float]:
    """Dynamic programme over (rungs used, last z); the last rung is the largest z."""
    count = len(zs)
    infinity = math.inf
    error = [[infinity] * count for _ in range(rung_count + 1)]
    parent = [[-1] * count for _ in range(rung_count + 1)]
    for j in range(count):
        error[1][j] = 0.0
    for k in range(2, rung_count + 1):
        for j in range(count):
            for i in range(j):
                if error[k - 1][i] == infinity or costs[zs[j]] <= costs[zs[i]]:
                    continue
                candidate = error[k - 1][i] + (math.log(costs[zs[j]] / costs[zs[i]]) - log_eta) ** 2
                # <= prefers the later i (larger z) on ties: same cost, more layers trained
                if candidate <= error[k][j]:
                    error[k][j], parent[k][j] = candidate, i
    last = count - 1
    if error[rung_count][last] == infinity:
        return None, infinity
    chosen = [last]
    for k in range(rung_count, 1, -1):
        chosen.append(parent[k][chosen[-1]])
    return [zs[i] for i in reversed(chosen)], error[rung_count][last]


# ---------------------------------------------------------------- memory


def memory_need_bytes(row: Row, context_reserve: int = CUDA_CONTEXT_RESERVE_BYTES) -> int | None:
    """What one trial holds on the GPU: NVML's figure where measured, else the allocator's peak plus a reserve."""
    if row.nvml_process_bytes:
        return row.nvml_process_bytes
    held = row.peak_reserved_bytes or row.peak_memory_bytes
    return None if held is None else held + context_reserve


def largest_batch_that_fits(points: Sequence[tuple[int, int]], gpu_memory: int, context_reserve: int) -> int | None:
    """Least-squares line of peak memory against batch size; the largest batch whose need fits."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    variance = sum((b - mean_b) ** 2 for b, _ in points)
    if variance == 0:
        return None
    slope = sum((b - mean_b) * (m - mean_m) for b, m in points) / variance
    intercept = mean_m - slope * mean_b
    if slope <= 0:
        return None
    return max(0, math.floor((gpu_memory - context_reserve - intercept) / slope))


# ---------------------------------------------------------------- brackets


def successive_halving(rung_costs: Sequence[float], configs: int, eta: float, first_rung: int = 0) -> Bracket:
    """Configs at rung i of a bracket are floor(configs / eta^i); cost in units of the last rung's cost."""
    full = rung_costs[-1]
    counts = [max(1, math.floor(configs / eta**i)) for i in range(len(rung_costs) - first_rung)]
    cost = sum(c * rung_costs[first_rung + i] / full for i, c in enumerate(counts))
    return Bracket(first_rung=first_rung, configs_per_rung=counts, cost_full_equivalents=cost)


def neps_hyperband(rung_costs: Sequence[float], eta: float) -> list[Bracket]:
    """NePS's brackets (neps.optimizers.utils.brackets): bracket s starts floor(K / (s + 1)) * eta^s
    configurations (K rungs) and keeps n // eta^i at its i-th rung."""
    rung_count = len(rung_costs)
    full = rung_costs[-1]
    brackets = []
    for s in range(rung_count - 1, -1, -1):
        configs = math.floor(rung_count / (s + 1)) * round(eta**s)
        counts = [configs // round(eta**i) for i in range(s + 1)]
        first = rung_count - 1 - s
        cost = sum(c * rung_costs[first + i] / full for i, c in enumerate(counts))
        brackets.append(Bracket(first_rung=first, configs_per_rung=counts, cost_full_equivalents=cost))
    return brackets


def hyperband(rung_costs: Sequence[float], eta: float) -> list[Bracket]:
    """Li et al.'s brackets over the ladder: s_max = K - 1; bracket s starts ceil((s_max+1)/(s+1) eta^s)
    configurations at rung s_max - s."""
    s_max = len(rung_costs) - 1
    brackets = []
    for s in range(s_max, -1, -1):
        configs = math.ceil((s_max + 1) / (s + 1) * eta**s)
        brackets.append(successive_halving(rung_costs, configs, eta, first_rung=s_max - s))
    return brackets


# ---------------------------------------------------------------- the ladder


def _profile_rows(profile: Profile, batch_size: int | None) -> tuple[int, dict[int, Row]]:
    ok = [row for row in profile.rows if row.ok]
    if not ok:
        why = profile.incomplete_reason() or profile.failure_summary() or "it has no rows"
        raise LayerprofError(f"the profile has no successful cells: {why}")
    sizes = sorted({row.batch_size for row in ok})
    if batch_size is None:
        batch_size = max(sizes, key=lambda b: (sum(r.batch_size == b for r in ok), b))
    elif batch_size not in {row.batch_size for row in profile.rows}:
        raise LayerprofError(
            f"--batch-size {batch_size} is not in the profile; it has {', '.join(map(str, profile.batch_sizes()))}"
        )
    rows = {row.trainable_layers: row for row in ok if row.batch_size == batch_size}
    if not rows:
        raise LayerprofError(f"no successful cells at batch size {batch_size}; try one of {', '.join(map(str, sizes))}")
    return batch_size, rows


def default_cost(profile: Profile) -> str:
    """Step time where the profile measured or predicted it, else FLOPs."""
    return "time" if any(profile.step_time_ms(row) for row in profile.rows if row.ok) else "flops"


def build_ladder(
    profile: Profile,
    eta: float = 3.0,
    cost_kind: str = "time",
    batch_size: int | None = None,
    min_layers: int = 1,
    gpu_memory: int | None = None,
    configs: int | None = None,
    budget_steps: int | None = None,
    context_reserve: int = CUDA_CONTEXT_RESERVE_BYTES,
    gpu: GpuKind | None = None,
    prices: PriceBook | None = None,
) -> Ladder:
    """The recommended rungs for a profile, what each needs, and what halving over them spends. On `gpu` (its
    memory where `gpu_memory` is not given): with `prices`, each rung's trial in dollars (`price_ladder`)."""
    _validate(profile, eta, cost_kind, min_layers, configs, budget_steps)
    if gpu is not None and gpu_memory is None:
        gpu_memory = gpu.memory_mib * 2**20
    batch_size, rows = _profile_rows(profile, batch_size)
    costs = _rung_costs(profile, rows, batch_size, cost_kind, min_layers)
    chosen, close, note = select_rungs(costs, eta)
    if gpu_memory is None and profile.environment.device_kind == "cuda" and not profile.environment.estimated:
        gpu_memory = profile.environment.total_memory_bytes
    rungs = _rungs(profile, rows, chosen, costs, eta, gpu_memory, context_reserve)
    if gpu_memory is not None and rungs[0].memory_need_bytes and rungs[0].memory_need_bytes > gpu_memory:
        raise LayerprofError(
            f"--gpu-memory {gpu_memory / 2**30:.1f} GiB is less than the lowest rung needs "
            f"({rungs[0].memory_need_bytes / 2**30:.2f} GiB at z={rungs[0].trainable_layers}, batch {batch_size})"
        )
    ladder = Ladder(
        model=profile.model.spec,
        device=profile.environment.device_name,
        batch_size=batch_size,
        eta=eta,
        cost_kind=cost_kind,
        layer_count=profile.layer_count,
        rungs=rungs,
        close_to_eta=close,
        fit_note=note,
        gpu_memory_bytes=gpu_memory,
        context_reserve_bytes=context_reserve,
        configs=configs,
        times_predicted=profile.predicts_time,
        recipe=profile.settings.recipe_label,
        recipe_settings=profile.settings.recipe(),
    )
    _add_brackets(ladder, configs)
    if any(rung.largest_batch_size is not None for rung in rungs) and gpu_memory is not None:
        ladder.batch_limits_source = f"the profile's batch sizes, a line per z, {gpu_memory / 2**30:.1f} GiB"
    if budget_steps is not None:
        ladder.joint = joint_ladder(ladder, budget_steps, configs)
    if gpu is not None and prices is not None:
        price_ladder(ladder, profile, gpu, prices)
    return ladder


PRICED_STEPS = 1000  # a trial's dollars without --budget-steps: this many steps


def time_scale(profile: Profile, gpu: GpuKind, command: str) -> tuple[float, str]:
    """What the profile's step times are multiplied by to stand for `gpu`'s, and what they then are: measured on
    it, predicted for it, or scaled from the profile's GPU by the two kinds' peaks for the profile's precision. A
    CPU profile's times say nothing about a GPU: an input error naming `command`."""
    environment = profile.environment
    source = find_gpu(environment.cluster_kind or "") or kind_of_device(environment.device_name)
    if source is None and environment.estimated and environment.device_kind == "cuda":
        source = find_gpu(profile.settings.target_gpu or "H100")  # an estimate predicts for its --gpu (H100's peaks)
    if source is None:
        raise LayerprofError(
            f"{command} --gpu {gpu.name}: the profile's step times are {environment.device_name}'s, not a GPU "
            "layerprof knows; price a profile measured on a GPU or an estimate for --target cuda"
        )
    precision, tf32 = profile.settings.precision, bool((environment.numerics or {}).get("matmul_tf32"))
    scale = peak_tflops(source, precision, tf32) / peak_tflops(gpu, precision, tf32)
    label = (
        f"measured on {source.name}"
        if source.name == gpu.name and not environment.estimated
        else f"predicted for {source.name}"
        if source.name == gpu.name
        else f"scaled from {source.name} by peak"
    )
    return scale, label


def price_ladder(ladder: Ladder, profile: Profile, gpu: GpuKind, prices: PriceBook) -> None:
    """Each rung's trial in dollars on `gpu`: its step time (the profile's, scaled by the two kinds' peaks for the
    profile's precision where it was measured or predicted for another kind) times its steps (the joint ladder's,
    else PRICED_STEPS) at the kind's price; with --configs, the whole halving bracket. A CPU profile's step times
    say nothing about a GPU: an input error."""
    scale, ladder.priced_time_source = time_scale(profile, gpu, "ladder")
    price = prices.price(gpu)
    ladder.gpu, ladder.price = gpu.name, price.label
    ladder.priced_steps = "the rung's steps" if ladder.joint is not None else f"{PRICED_STEPS} steps"
    for rung in ladder.rungs:
        if rung.step_time_ms is not None:
            seconds = rung.step_time_ms * scale * (rung.steps or PRICED_STEPS) / 1000
            rung.usd_per_trial = prices.usd(gpu, seconds)
    if ladder.successive_halving is not None and all(rung.usd_per_trial is not None for rung in ladder.rungs):
        counts = ladder.successive_halving.configs_per_rung
        ladder.successive_halving_usd = sum(
            count * (rung.usd_per_trial or 0.0) for count, rung in zip(counts, ladder.rungs, strict=False)
        )


def rungs_at(
    profile: Profile,
    zs: Sequence[int],
    batch_size: int,
    eta: float,
    gpu_memory: int | None,
    context_reserve: int = CUDA_CONTEXT_RESERVE_BYTES,
) -> dict[int, Rung]:
    """The rungs another ladder chose (`zs`), as this profile's cells at `batch_size` make them: its memory, slots
    and step time at each z it has a successful cell for (its cost by FLOPs, spaced as that ladder's). A z without
    one is left out; so are all of them when the profile lacks the batch size or full training."""
    rows = {row.trainable_layers: row for row in profile.rows if row.ok and row.batch_size == batch_size}
    if profile.layer_count not in rows:
        return {}
    costs = {z: float(row.flops or 0) or 1.0 for z, row in rows.items()}
    present = [z for z in zs if z in rows]
    rungs = _rungs(profile, rows, present, costs, eta, gpu_memory, context_reserve)
    for z, rung in zip(present, rungs, strict=True):
        rung.budget_index = round(eta ** zs.index(z)) if float(eta).is_integer() else zs.index(z) + 1
    return {rung.trainable_layers: rung for rung in rungs}


def recommended_ladder(profile: Profile) -> tuple[Ladder | None, str | None]:
    """The ladder a sweep recommends (default eta and cost), or None and why: a profile whose full-training cell
    failed has none."""
    try:
        return build_ladder(profile, cost_kind=default_cost(profile)), None
    except LayerprofError as error:
        return None, str(error)


def _validate(
    profile: Profile, eta: float, cost_kind: str, min_layers: int, configs: int | None, budget_steps: int | None
) -> None:
    if cost_kind not in COSTS:
        raise LayerprofError(f"--cost must be time or flops, got {cost_kind!r}")
    check_eta(eta)
    n = profile.layer_count
    if not 1 <= min_layers <= n:
        raise LayerprofError(f"--min-layers must be in 1..{n}, got {min_layers}")
    if configs is not None and configs < 1:
        raise LayerprofError(f"--configs must be at least 1, got {configs}")
    if budget_steps is not None:
        check_budget_steps(budget_steps)


def _rung_costs(
    profile: Profile, rows: dict[int, Row], batch_size: int, cost_kind: str, min_layers: int
) -> dict[int, float]:
    """Cost per z at or above --min-layers: median step time or FLOPs; full training must be among them."""
    n = profile.layer_count
    if n not in rows:
        full = profile.row(batch_size, n)
        state = f" (it is {full.status}: {full.message})" if full is not None and full.message else ""
        raise LayerprofError(
            f"the profile has no successful full-training cell (z={n}) at batch size {batch_size}{state}; "
            "a ladder needs the top rung measured"
        )

    def cost(row: Row) -> float | None:
        return profile.step_time_ms(row) if cost_kind == "time" else row.flops

    costs = {z: float(value) for z, row in rows.items() if z >= min_layers and (value := cost(row)) is not None}
    if not costs:
        what = "step times (an estimate without a time model has none)" if cost_kind == "time" else "FLOPs"
        raise LayerprofError(f"the profile has no {what}; use --cost flops")
    return costs


def _rungs(
    profile: Profile,
    rows: dict[int, Row],
    chosen: list[int],
    costs: dict[int, float],
    eta: float,
    gpu_memory: int | None,
    context_reserve: int,
) -> list[Rung]:
    """Per chosen z: its cost against full training and the previous rung, its memory and GPU slots."""
    n = profile.layer_count
    full = rows[n]
    memory_points: dict[int, list[tuple[int, int]]] = {}
    for row in profile.rows:
        if row.ok and row.peak_memory_bytes is not None:
            point = memory_need_bytes(row, context_reserve) or 0
            memory_points.setdefault(row.trainable_layers, []).append((row.batch_size, point - context_reserve))
    rungs: list[Rung] = []
    for index, z in enumerate(chosen):
        row = rows[z]
        need = memory_need_bytes(row, context_reserve)
        rungs.append(
            Rung(
                trainable_layers=z,
                trainable_fraction=row.trainable_fraction or 0.0,
                cost=costs[z],
                cost_vs_full=costs[z] / costs[n],
                cost_vs_previous=None if index == 0 else costs[z] / costs[chosen[index - 1]],
                step_time_ms=profile.step_time_ms(row),
                time_vs_full=ratio(profile.step_time_ms(row), profile.step_time_ms(full)),
                peak_memory_bytes=row.peak_memory_bytes,
                memory_vs_full=ratio(row.peak_memory_bytes, full.peak_memory_bytes),
                memory_need_bytes=need,
                parallel_slots=gpu_memory // need if gpu_memory is not None and need else None,
                largest_batch_size=None
                if gpu_memory is None
                else largest_batch_that_fits(memory_points.get(z, []), gpu_memory, context_reserve),
                budget_index=round(eta**index) if float(eta).is_integer() else index + 1,
                disturbed=bool(row.disturbed or full.disturbed),
            )
        )
    return rungs


def _add_brackets(ladder: Ladder, configs: int | None) -> None:
    """Successive halving over the rungs (and on training budget alone) for --configs; Hyperband's brackets."""
    rung_costs = [rung.cost for rung in ladder.rungs]
    eta = ladder.eta
    if configs is not None:
        ladder.successive_halving = successive_halving(rung_costs, configs, eta)
        rung_count = len(ladder.rungs)
        budget_costs = [eta ** -(rung_count - 1 - i) for i in range(rung_count)]
        from_scratch = successive_halving(budget_costs, configs, eta)
        counts = from_scratch.configs_per_rung
        continued = sum(c * (budget_costs[i] - (budget_costs[i - 1] if i else 0.0)) for i, c in enumerate(counts))
        ladder.budget_successive_halving = {
            "from_scratch_full_equivalents": from_scratch.cost_full_equivalents,
            "with_continuation_full_equivalents": continued,
        }
    if len(ladder.rungs) > 1:
        ladder.hyperband = hyperband(rung_costs, eta)
        if float(eta).is_integer():
            neps = neps_hyperband(rung_costs, eta)
            if [b.configs_per_rung for b in neps] != [b.configs_per_rung for b in ladder.hyperband]:
                ladder.hyperband_neps = neps


def ladder_for(
    profile_path: str | Path,
    correlation: CorrelationResult | None = None,
    batch_limits: Path | None = None,
    **options: Any,  # build_ladder's keyword arguments, each of its own type
) -> tuple[Ladder, list[str]]:
    """The ladder of a profile file (`options` as for `build_ladder`), with each rung's measured rank
    correlation from a correlate result (`layerprof.fidelity.correlate.load_result`: this module never imports the
    study's) and each rung's largest batch from `fit --json`'s output (`batch_limits`); the notes name rungs the
    result lacks."""
    profile = load_profile(profile_path)
    notes: list[str] = []
    reason = profile.incomplete_reason()
    if reason is not None:
        notes.append(
            f"{profile_path} is incomplete ({reason}); the ladder rests on its finished cells only: rerun the "
            "command that wrote it to resume it"
        )
    if options.get("cost_kind") is None:
        options["cost_kind"] = default_cost(profile)
    ladder = build_ladder(profile, **options)
    if batch_limits is not None:
        fit = read_json(batch_limits, "fit result", "the output of `layerprof fit ... --json`")
        attach_batch_limits(ladder, fit if isinstance(fit, dict) else {}, str(batch_limits))
    if correlation is not None:
        notes += attach_correlation(ladder, correlation)
    return ladder, notes


def attach_batch_limits(ladder: Ladder, fit: JsonDict, source: str) -> None:
    """Each rung's largest batch from `fit --json`'s answers: at its z, else at the nearest larger z that fit
    searched (more trainable layers never need less memory, so that batch fits the rung too). A rung above every
    z fit searched is an input error naming them."""
    answers = {int(r["trainable_layers"]): int(r["largest_batch_size"]) for r in fit.get("results", [])}
    if not answers:
        raise LayerprofError(f"--batch-limits {source}: no `results` with largest batches; give `fit --json`'s output")
    for rung in ladder.rungs:
        above = [z for z in answers if z >= rung.trainable_layers]
        if not above:
            raise LayerprofError(
                f"--batch-limits {source}: fit searched z up to {max(answers)}, the ladder's rung z="
                f"{rung.trainable_layers} is above it; run fit with --layers all"
            )
        rung.batch_limit = answers[min(above)]
    memory = fit.get("memory_bytes")
    ladder.batch_limits_source = f"layerprof fit ({source})" + (f", {memory / 2**30:.1f} GiB" if memory else "")


def attach_correlation(ladder: Ladder, result: CorrelationResult) -> list[str]:
    """Per rung, Spearman's rho at the full budget from a correlate result; notes for rungs it lacks."""
    notes = []
    for rung in ladder.rungs:
        budget = max(result.budget_fractions)
        cell = result.cell(rung.trainable_layers, budget)
        if cell is None:
            notes.append(f"the correlation result has no z={rung.trainable_layers}")
        else:
            rung.spearman = cell.spearman
    return notes


def joint_ladder(ladder: Ladder, budget_steps: int, configs: int | None) -> JsonDict:
    """The paper's diagonal schedule: rung k trains z_k layers for budget_steps / eta^(K-1-k) steps.

    Compared with successive halving on training steps alone (every rung at z = n): cost in step-time
    units (ms of training) and the peak memory each needs.
    """
    rungs = ladder.rungs
    top = len(rungs) - 1
    full = rungs[-1]
    joint_rows: list[JsonDict] = []
    for index, rung in enumerate(rungs):
        steps = max(1, round(budget_steps / ladder.eta ** (top - index)))
        rung.steps = steps
        joint_rows.append(
            {
                "trainable_layers": rung.trainable_layers,
                "steps": steps,
                "joint_cost_ms": (rung.step_time_ms or 0.0) * steps,
                "steps_only_cost_ms": (full.step_time_ms or 0.0) * steps,
                "joint_peak_memory_bytes": rung.peak_memory_bytes,
                "steps_only_peak_memory_bytes": full.peak_memory_bytes,
            }
        )
    counts = (
        successive_halving([1.0] * len(rungs), configs, ladder.eta).configs_per_rung if configs else [1] * len(rungs)
    )
    joint_total = sum(c * r["joint_cost_ms"] for c, r in zip(counts, joint_rows, strict=True))
    steps_total = sum(c * r["steps_only_cost_ms"] for c, r in zip(counts, joint_rows, strict=True))
    return {
        "budget_steps": budget_steps,
        "rungs": joint_rows,
        "configs_per_rung": counts,
        "joint_total_ms": joint_total,
        "steps_only_total_ms": steps_total,
        "saving": 1 - joint_total / steps_total if steps_total else 0.0,
        "joint_lowest_peak_memory_bytes": joint_rows[0]["joint_peak_memory_bytes"],
        "steps_only_peak_memory_bytes": full.peak_memory_bytes,
    }
