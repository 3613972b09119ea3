"""GPU kinds on a cluster: the inventory a team has (typed, or read from a running Ray cluster), and profile
sweeps run as Ray tasks on nodes of each kind, one profile per kind.

A kind is a label and the Ray resource that marks its nodes: `L4` is `accelerator_type:L4`, which Ray sets on
nodes with that GPU; `small=my_resource` names a custom resource (MIG slices, or GPUs Ray labels ambiguously,
such as the A100's 40 and 80 GB models). Each (kind, batch size) sweep is one task holding a whole GPU, so that
no two sweeps share one; its profile is merged into the kind's file as soon as it returns.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from layerprof.devices import GPU_KINDS, GpuKind, InventoryItem, find_gpu
from layerprof.errors import LayerprofError
from layerprof.parsing import LayerSelection, parse_inventory, parse_ray_address, split_items
from layerprof.profile import JsonDict, Profile, SweepSettings

if TYPE_CHECKING:
    from layerprof.sources.models import ModelOptions

# Ray sets accelerator_type:<name> to 1 on a node with that GPU; a task asks for a sliver of it to land there.
KIND_RESOURCE_SHARE = 0.001
RETRIES = 1  # a sweep whose worker or node dies runs once more, where a node of its kind is still alive
# a kind's profile on disk continues only under the same timing protocol (and recipe)
PROTOCOL = ("mode", "warmup_steps", "min_steps", "max_steps", "steps_per_visit")


# ---------------------------------------------------------------- kinds and inventories


@dataclass(frozen=True)
class ClusterKind:
    """A GPU kind of a Ray cluster: what the user calls it and the resource that marks its nodes."""

    label: str  # what the user calls it: L4, H100, small
    resource: str  # the Ray resource that marks its nodes
    gpu: GpuKind | None  # the table's entry, where the label names one


def parse_gpu_kinds(text: str) -> list[ClusterKind]:
    """`L4,H100` (Ray's accelerator types) or `small=my_resource` (custom resources), comma-separated."""
    kinds = []
    for part in split_items(text, "--gpu-kinds", "L4,H100 or small=RESOURCE,big=RESOURCE"):
        label, equals, resource = (s.strip() for s in part.partition("="))
        gpu = find_gpu(label)
        if equals:
            if not label or not resource:
                raise LayerprofError(f"--gpu-kinds {part!r}: write KIND=RESOURCE, e.g. small=mig_1g")
            kinds.append(ClusterKind(label, resource, gpu))
        elif gpu is None:
            raise LayerprofError(
                f"--gpu-kinds: unknown GPU kind {label!r}; known: {', '.join(GPU_KINDS)}, or name the Ray resource "
                f"that marks its nodes: {label}=RESOURCE"
            )
        elif gpu.ray_accelerator is None:
            raise LayerprofError(
                f"--gpu-kinds: Ray does not label {gpu.name} nodes ({'a MIG slice' if gpu.mig_of else 'no type'}); "
                f"give the custom resource that marks them: {gpu.name}=RESOURCE"
            )
        else:
            kinds.append(ClusterKind(gpu.name, f"accelerator_type:{gpu.ray_accelerator}", gpu))
    labels = [kind.label for kind in kinds]
    if not kinds or len(set(labels)) != len(labels):
        raise LayerprofError(f"--gpu-kinds needs distinct kinds, e.g. L4,H100; got {text!r}")
    return kinds


def inventory_from_ray(address: str | None) -> list[InventoryItem]:
    """The GPUs of a running Ray cluster, by each alive node's accelerator_type and GPU count."""
    with ray_session(address) as ray:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
    counts: dict[str, int] = {}
    unknown = set()
    for node in nodes:
        resources = node.get("Resources", {})
        gpus = int(resources.get("GPU", 0))
        types = [key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")]
        if not gpus or not types:
            continue
        matches = [gpu for gpu in GPU_KINDS.values() if gpu.ray_accelerator == types[0]]
        if len(matches) != 1:
            unknown.add(types[0])
            continue
        counts[matches[0].name] = counts.get(matches[0].name, 0) + gpus
    if unknown:
        raise LayerprofError(
            f"the Ray cluster's {', '.join(sorted(unknown))} nodes do not say which GPU SKU they are (Ray names "
            "every H100 board H100, every A100 A100); give the inventory as --cluster COUNTxGPU,..."
        )
    if not counts:
        raise LayerprofError("the Ray cluster has no GPU nodes with an accelerator_type; give --cluster COUNTxGPU,...")
    return [InventoryItem(GPU_KINDS[name], count) for name, count in counts.items()]


# ---------------------------------------------------------------- Ray


def inventory_from_option(text: str) -> list[InventoryItem]:
    """`plan --cluster`: `ray` or `ray:ADDR` reads a running Ray cluster, anything else is a written inventory."""
    on_ray, address = parse_ray_address(text)
    return inventory_from_ray(address) if on_ray else parse_inventory(text)


def import_ray() -> ModuleType:
    """The ray module, or the one-line advice to install it."""
    try:
        import ray
    except ImportError:
        raise LayerprofError("the Ray executor needs Ray: pip install 'layerprof[ray]'") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at ADDRESS (or start a local instance); True when this call connected."""
    ray = import_ray()
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address is None or address.removeprefix("ray://") == current:
            return False
        ray.shutdown()  # connected elsewhere: this call asks for another cluster
    match = re.fullmatch(r"(?:ray://)?([\w.-]+):(\d+)", address or "")
    if match:  # fail in seconds, not after Ray's own minute-long retries
        try:
            socket.create_connection((match.group(1), int(match.group(2))), timeout=5).close()
        except OSError as error:
            raise LayerprofError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None
    try:
        # Ray's own notices ("Connecting to...", "Connected") stay out of layerprof's output
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as error:  # noqa: BLE001 - Ray raises many kinds
        raise LayerprofError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: {error}") from None
    return True


@contextmanager
def ray_session(address: str | None) -> Iterator[ModuleType]:
    """The one Ray connection of `profile`, `plan` and `correlate`: join ADDRESS (an unreachable one fails in
    seconds) or start a local instance, yield the ray module, and close what this call opened."""
    ray = import_ray()
    started = connect(address)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def alive_resources() -> dict[str, float]:
    """Every resource some alive node offers, summed over nodes."""
    import ray

    offered: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for key, value in node.get("Resources", {}).items():
                offered[key] = offered.get(key, 0.0) + value
    return offered


# ---------------------------------------------------------------- sweeps on Ray


@dataclass(frozen=True)
class SweepRequest:
    """What every sweep of a cluster run shares; each task adds a kind and a batch size."""

    spec: str
    options: ModelOptions
    settings: SweepSettings  # batch sizes resolved
    layer_selection: LayerSelection
    device: str  # "auto", "cuda" or "cpu": cpu asks Ray for no GPU
    tf32: bool | None = None
    threads: int | None = None


def plan_cluster_profile(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    layer_selection: LayerSelection,
    device: str,
    tf32: bool | None = None,
    threads: int | None = None,
) -> SweepRequest:
    """Check everything a sweep needs before any node works: settings, the split (on the meta device, no
    memory), the z values, and the batch sizes (the family's default when none are given)."""
    from layerprof.measure.jobs import resolve_settings, validate_settings
    from layerprof.sources.models import split_without_memory

    validate_settings(settings)
    if device not in ("auto", "cuda", "cpu"):
        raise LayerprofError(f"--device {device!r} with --executor ray: use auto, cuda or cpu (Ray picks the GPU)")
    loaded, layers = split_without_memory(spec, options)
    resolved = resolve_settings(settings, loaded.workload, len(layers), layer_selection)
    # each node resolves the z values again, on its own split (the same selection)
    settings = replace(settings, batch_sizes=resolved.batch_sizes)
    return SweepRequest(spec, options, settings, layer_selection, device, tf32, threads)


def sweep_on_node(request: SweepRequest, kind: ClusterKind, batch_size: int) -> JsonDict:
    """Run in a Ray worker: one batch size's sweep on this node's GPU; the profile comes back as data."""
    import tempfile

    import ray

    from layerprof.measure.jobs import plan_profile

    settings = replace(request.settings, batch_sizes=(batch_size,))
    with tempfile.TemporaryDirectory() as scratch:
        job = plan_profile(
            request.spec,
            request.options,
            settings,
            request.layer_selection,
            request.device,
            Path(scratch) / "sweep.json",
            request.tf32,
            request.threads,
        )
        profile = job.run()
    profile.environment.cluster_kind = kind.label
    profile.environment.cluster_node = ray.get_runtime_context().get_node_id()
    return profile.to_dict()


@dataclass
class KindOutcome:
    """What a cluster run did for one GPU kind: the batch sizes asked, done, skipped and lost."""

    kind: ClusterKind
    path: Path
    batch_sizes: list[int]  # asked for
    done: list[int] = field(default_factory=list)  # batch sizes in the profile
    skipped: list[int] = field(default_factory=list)  # already in the file before this run
    failures: list[str] = field(default_factory=list)  # sweeps lost or failed, one line each


@dataclass
class ClusterRun:
    """Every kind's outcome of one `profile --executor ray` run."""

    outcomes: list[KindOutcome]
    wall_seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """Whether any kind lost or failed a sweep (the CLI then exits 1)."""
        return any(outcome.failures for outcome in self.outcomes)


class SweepEventKind(str, Enum):
    """What happened to one (kind, batch size) sweep on the cluster."""

    skipped = "skipped"  # its batch size is already in the kind's profile
    submitted = "submitted"
    retry = "retry"  # its worker or node was lost; submitted again
    done = "done"
    failed = "failed"


# (event, outcome, batch size, detail)
SweepEvent = Callable[[SweepEventKind, KindOutcome, int, str], None]


def kind_path(directory: Path, spec: str, kind: ClusterKind) -> Path:
    """The profile one GPU kind's sweeps go to: MODEL-KIND.json in the output directory."""
    from layerprof.sources.models import model_slug

    label = re.sub(r"[^A-Za-z0-9.]+", "-", kind.label).strip("-") or "kind"
    return directory / f"{model_slug(spec)}-{label}.json"


def _batches_on_disk(path: Path, request: SweepRequest) -> tuple[Profile | None, list[int]]:
    """The kind's profile from an earlier run, and the batch sizes it finished; refuse one of another run."""
    from layerprof.profile import load_profile, recipe_difference

    if not path.exists():
        return None, []
    profile = load_profile(path)
    same = (
        profile.model.spec == request.spec and recipe_difference(profile.settings, request.settings, PROTOCOL) is None
    )
    if not same:
        raise LayerprofError(
            f"{str(path)!r} holds a profile of another model or recipe; move it or give another --out directory"
        )
    zs = set(request.layer_selection.resolve(profile.layer_count))
    finished = [b for b in profile.batch_sizes() if {row.trainable_layers for row in profile.rows_for(b)} >= zs]
    return profile, finished


def _merge(existing: Profile | None, result: JsonDict) -> Profile:
    """Add one batch size's rows to the kind's profile (the first result starts it)."""
    from layerprof.profile import Profile, SweepTiming

    incoming = Profile.from_dict(result)
    if existing is None:
        return incoming
    batch = incoming.settings.batch_sizes[0]
    existing.rows = [row for row in existing.rows if row.batch_size != batch] + incoming.rows
    existing.rows.sort(key=lambda row: row.key)
    existing.settings = replace(existing.settings, batch_sizes=tuple(existing.batch_sizes()))
    existing.timing = SweepTiming(
        existing.timing.sweep_wall_s + incoming.timing.sweep_wall_s,
        existing.timing.in_steps_s + incoming.timing.in_steps_s,
    )
    return existing


LOST_ERRORS = (
    "WorkerCrashedError",
    "NodeDiedError",
    "ActorDiedError",
    "ObjectLostError",
    "OwnerDiedError",
    "RaySystemError",
    "TaskUnschedulableError",
    "LocalRayletDiedError",
)


def _describe(error: BaseException) -> str:
    """One line: the sweep's own exception where Ray wraps one, else Ray's."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    text = lines[0] if isinstance(cause, LayerprofError) and lines else (lines[-1] if lines else "")
    text = text.split(". ")[0].rstrip(".")  # Ray's messages go on with advice for its own logs
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _lost(error: BaseException) -> bool:
    """The worker or its node died (retry), as opposed to the sweep itself raising (report)."""
    return type(error).__name__ in LOST_ERRORS


def profile_on_ray(
    request: SweepRequest,
    kinds: Sequence[ClusterKind],
    directory: Path,
    address: str | None = None,
    on_event: SweepEvent | None = None,
) -> ClusterRun:
    """One sweep per (kind, batch size) as a Ray task on a node of that kind; a rerun skips what is on disk."""
    began = time.perf_counter()
    outcomes, profiles = [], {}
    for kind in kinds:
        path = kind_path(directory, request.spec, kind)
        existing, finished = _batches_on_disk(path, request)
        wanted = list(request.settings.batch_sizes)
        outcome = KindOutcome(kind, path, wanted, done=[b for b in wanted if b in finished])
        outcome.skipped = list(outcome.done)
        outcomes.append(outcome)
        profiles[kind.label] = existing
    if on_event:
        for outcome in outcomes:
            for batch in outcome.skipped:
                on_event(SweepEventKind.skipped, outcome, batch, str(outcome.path))
    todo = [(o, b) for o in outcomes for b in o.batch_sizes if b not in o.done]
    if not todo:
        return ClusterRun(outcomes, time.perf_counter() - began)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LayerprofError(f"cannot create {str(directory)!r}: {error.strerror or error}") from None
    with ray_session(address) as ray:
        _check_kinds_offered(kinds)
        remote = ray.remote(sweep_on_node)
        gpus = 0 if request.device == "cpu" else 1

        def submit(outcome: KindOutcome, batch: int) -> object:  # a ray.ObjectRef
            options = {
                "num_cpus": 1,
                "num_gpus": gpus,
                "resources": {outcome.kind.resource: KIND_RESOURCE_SHARE},
                "max_retries": 0,
            }
            if on_event:
                on_event(SweepEventKind.submitted, outcome, batch, "")
            return remote.options(**options).remote(request, outcome.kind, batch)

        pending = {submit(o, b): (o, b, 0) for o, b in todo}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                outcome, batch, attempt = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as error:  # noqa: BLE001 - sorted below into lost (retry) or failed (report)
                    described = _describe(error)
                    if _lost(error) and attempt < RETRIES and outcome.kind.resource in alive_resources():
                        if on_event:
                            on_event(SweepEventKind.retry, outcome, batch, described)
                        pending[submit(outcome, batch)] = (outcome, batch, attempt + 1)
                        continue
                    why = "lost (its worker or node died)" if _lost(error) else "failed"
                    tried = f" after {attempt + 1} attempts" if attempt else ""
                    outcome.failures.append(f"batch {batch} {why}{tried}: {described}")
                    if on_event:
                        on_event(SweepEventKind.failed, outcome, batch, outcome.failures[-1])
                    continue
                from layerprof.profile import save_profile

                profiles[outcome.kind.label] = merged = _merge(profiles[outcome.kind.label], result)
                outcome.done.append(batch)
                merged.complete = set(outcome.done) >= set(outcome.batch_sizes)
                save_profile(merged, outcome.path)
                if on_event:
                    on_event(SweepEventKind.done, outcome, batch, str(outcome.path))
        except KeyboardInterrupt:
            for reference in pending:
                ray.cancel(reference, force=True)
            raise
    return ClusterRun(outcomes, time.perf_counter() - began)


def _check_kinds_offered(kinds: Sequence[ClusterKind]) -> None:
    offered = alive_resources()
    missing = [kind for kind in kinds if kind.resource not in offered]
    if missing:
        shown = ", ".join(f"{key} x{value:g}" for key, value in sorted(offered.items()) if not _builtin(key))
        raise LayerprofError(
            f"no alive node of the Ray cluster offers {', '.join(k.resource for k in missing)} "
            f"(it offers {shown or 'no custom resources or accelerator types'}); check --gpu-kinds"
        )


def _builtin(resource: str) -> bool:
    return resource in ("CPU", "GPU", "memory", "object_store_memory") or resource.startswith("node:")
