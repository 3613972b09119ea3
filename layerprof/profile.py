"""The Profile: plain data with a versioned schema, written as JSON (with a CSV of the rows beside it).

One row per (batch_size, trainable_layers). Row fields fall in two groups that consumers treat differently:
deterministic figures (`DETERMINISTIC_FIELDS`: parameter counts, FLOPs, optimizer-state bytes) are the same on
every run of the same model, stack and settings; measured ones (`MEASURED_FIELDS`: times, memory peaks,
throughput) carry noise. Every figure that can be absent (a failed cell) is None.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from layerprof.errors import LayerprofError

SCHEMA = "layerprof.profile/1"

STATUSES = ("ok", "oom", "error", "skipped")


@dataclass
class Row:
    batch_size: int
    trainable_layers: int
    status: str  # one of STATUSES
    message: str | None = None
    # deterministic
    trainable_params: int | None = None
    trainable_fraction: float | None = None
    forward_flops: int | None = None
    backward_flops: int | None = None
    flops: int | None = None  # forward + backward per step
    optimizer_state_bytes: int | None = None
    # measured: time
    step_time_ms: float | None = None  # median
    step_time_mean_ms: float | None = None
    step_time_std_ms: float | None = None
    step_time_p10_ms: float | None = None
    step_time_p90_ms: float | None = None
    step_time_ci_low_ms: float | None = None
    step_time_ci_high_ms: float | None = None
    measured_steps: int | None = None
    throughput_per_s: float | None = None  # items (samples or tokens, see workload.item_name) per second
    achieved_tflops: float | None = None
    # measured: memory
    peak_memory_bytes: int | None = None  # from memory_source
    memory_source: str | None = None  # "cuda-allocator" | "cpu-tensor-tracker"
    peak_reserved_bytes: int | None = None  # CUDA caching allocator, reserved
    nvml_process_bytes: int | None = None  # NVML's view of the process, CUDA context included
    tracked_peak_bytes: int | None = None  # live-tensor tracker, any device
    memory_parameters_bytes: int | None = None  # the tracker's split at its peak
    memory_gradients_bytes: int | None = None
    memory_optimizer_state_bytes: int | None = None
    memory_activations_bytes: int | None = None
    memory_inputs_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


DETERMINISTIC_FIELDS = (
    "trainable_params",
    "trainable_fraction",
    "forward_flops",
    "backward_flops",
    "flops",
    "optimizer_state_bytes",
)
ROW_FIELDS = tuple(f.name for f in fields(Row))
MEASURED_FIELDS = tuple(name for name in ROW_FIELDS[4:] if name not in DETERMINISTIC_FIELDS and name != "memory_source")


@dataclass
class Profile:
    model: dict[str, Any]  # spec, source, name, description, overrides, unwrap, layers, total_params
    workload: dict[str, Any]  # family, shapes, dtype and how it was applied, optimizer
    environment: dict[str, Any]  # device kind/name/memory, versions
    settings: dict[str, Any]  # warm-up, step bounds, stopping rule, batch sizes, layer counts
    rows: list[Row] = field(default_factory=list)
    complete: bool = False
    created_at: str = ""
    timing: dict[str, float] = field(default_factory=dict)  # sweep wall time and time inside training steps
    schema: str = SCHEMA

    @property
    def layer_count(self) -> int:
        return len(self.model["layers"])

    def batch_sizes(self) -> list[int]:
        return sorted({row.batch_size for row in self.rows})

    def rows_for(self, batch_size: int) -> list[Row]:
        return sorted((r for r in self.rows if r.batch_size == batch_size), key=lambda r: r.trainable_layers)

    def row(self, batch_size: int, trainable_layers: int) -> Row | None:
        return next(
            (r for r in self.rows if r.batch_size == batch_size and r.trainable_layers == trainable_layers), None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "created_at": self.created_at,
            "complete": self.complete,
            "model": self.model,
            "workload": self.workload,
            "environment": self.environment,
            "settings": self.settings,
            "timing": self.timing,
            "rows": [asdict(row) for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "profile") -> Profile:
        if not isinstance(data, dict) or "schema" not in data:
            raise LayerprofError(f"{source} is not a layerprof profile (no 'schema' field)")
        if data["schema"] != SCHEMA:
            raise LayerprofError(
                f"{source} has schema {data['schema']!r}; this layerprof reads {SCHEMA!r} "
                "(re-run `layerprof profile` to regenerate it)"
            )
        try:
            rows = [Row(**{k: v for k, v in row.items() if k in ROW_FIELDS}) for row in data["rows"]]
            return cls(
                model=data["model"],
                workload=data["workload"],
                environment=data["environment"],
                settings=data["settings"],
                rows=rows,
                complete=bool(data.get("complete", False)),
                created_at=str(data.get("created_at", "")),
                timing=dict(data.get("timing", {})),
            )
        except (KeyError, TypeError) as error:
            raise LayerprofError(f"{source} is a damaged layerprof profile: missing or bad {error}") from None


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
    return path.with_suffix(".csv")


def rows_csv(profile: Profile) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ROW_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in sorted(profile.rows, key=lambda r: (r.batch_size, r.trainable_layers)):
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
    return path


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayerprofError(f"profile {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LayerprofError(f"cannot read profile {str(path)!r}: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise LayerprofError(f"{str(path)!r} is not JSON; expected a profile written by `layerprof profile`") from None
    return Profile.from_dict(data, source=repr(str(path)))
