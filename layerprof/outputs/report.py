"""Reports: the figures of one or more profiles (overlaid) as PNG/SVG, with a Markdown index beside them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from layerprof.errors import LayerprofError
from layerprof.profile import Profile, load_profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ImageFormat = Literal["png", "svg"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = get_args(ImageFormat)


@dataclass
class Report:
    """The figures `report` drew and the notes on what it could not draw."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be drawn, and why


def _save(figure: Figure, report: Report, name: str) -> None:
    import matplotlib.pyplot as plt

    path = report.directory / name
    figure.savefig(path, dpi=120)
    plt.close(figure)
    report.files.append(path)


def _index(profiles: list[tuple[str, Profile]], report: Report) -> Path:
    from layerprof.fidelity.ladder import build_ladder, default_cost
    from layerprof.outputs.tables import cell_view, ladder_view

    lines = ["# layerprof report", ""]
    for name, profile in profiles:
        env = profile.environment
        lines.append(
            f"- **{name}**: {profile.model.spec} on {env.device_name} "
            f"(torch {env.torch_version}), {profile.layer_count} layers, "
            f"{'complete' if profile.complete else 'incomplete'}, created {profile.created_at}; "
            f"recipe: {profile.settings.recipe_label}"
        )
    lines.append("")
    for path in report.files:
        lines += [f"![{path.stem.replace('_', ' ')}]({path.name})", ""]
    for name, profile in profiles:
        lines += [f"## {name}", ""]
        for batch_size in profile.batch_sizes():
            lines += [cell_view(profile, batch_size).markdown(), ""]
        try:
            lines += [ladder_view(build_ladder(profile, cost_kind=default_cost(profile))).markdown(), ""]
        except LayerprofError as error:
            lines += [f"No ladder: {error}", ""]
    if report.notes:
        lines += ["## Not drawn", ""] + [f"- {note}" for note in report.notes] + [""]
    path = report.directory / "index.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_report(profiles: list[tuple[str, Profile]], directory: str | Path, image_format: str = "png") -> Report:
    """Write the figures and index.md into `directory`; returns what was written and what was not."""
    if image_format not in IMAGE_FORMATS:
        raise LayerprofError(f"--format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    directory = Path(directory)
    created = not directory.exists()
    if directory.exists() and not directory.is_dir():
        raise LayerprofError(f"--out {str(directory)!r} is a file; a report is a folder: give a new or an empty one")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".layerprof-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise LayerprofError(f"cannot write to {str(directory)!r}: {error.strerror or error}") from None
    try:
        return _draw(profiles, Report(directory), image_format)
    except BaseException:
        if created:  # a report that failed half-way leaves no directory behind that it made
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _draw(profiles: list[tuple[str, Profile]], report: Report, image_format: str) -> Report:
    for name, profile in profiles:
        reason = profile.incomplete_reason()
        if reason is not None:
            report.notes.append(f"{name} is incomplete ({reason}): only its finished cells are drawn")
    drawable = [(name, p) for name, p in profiles if any(row.ok for row in p.rows)]
    for name, profile in profiles:
        if (name, profile) not in drawable:
            statuses = ", ".join(sorted({r.status for r in profile.rows}))
            what = "no cell finished" if profile.incomplete_reason() else "every cell failed"
            report.notes.append(f"{name}: {what} ({statuses}); nothing to plot")
    if drawable:
        from layerprof.outputs.figures import (
            cost_curves_figure,
            has_step_times,
            memory_breakdown_figure,
            params_flops_figure,
        )

        _save(cost_curves_figure(drawable), report, f"cost_curves.{image_format}")
        if not has_step_times(drawable):
            report.notes.append("no step times in these profiles (estimates): time curves not drawn")
        _save(params_flops_figure(drawable), report, f"params_flops.{image_format}")
        for index, (name, profile) in enumerate(drawable):
            figure = memory_breakdown_figure(name, profile)
            if figure is None:
                report.notes.append(f"{name}: no memory breakdown in the profile")
                continue
            stem = "memory_breakdown" if len(drawable) == 1 else f"memory_breakdown_{index + 1}"
            _save(figure, report, f"{stem}.{image_format}")
    report.files.append(_index(profiles, report))
    return report


def report_profiles(paths: list[Path], directory: str | Path, image_format: str = "png") -> Report:
    """Load the profiles and write their report; each is named by its file stem, with its folder where two
    stems are the same."""
    stems = [path.stem for path in paths]
    named = [
        (stem if stems.count(stem) == 1 else f"{path.parent.name}/{stem}", load_profile(path))
        for stem, path in zip(stems, paths, strict=True)
    ]
    return write_report(named, directory, image_format)
