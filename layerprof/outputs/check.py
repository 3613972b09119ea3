"""Regression gates: compare a current profile with a baseline, cell by cell and figure by figure.

* Deterministic figures (parameter counts, FLOPs, optimizer-state bytes, and memory when both profiles are
  estimates) must be equal: any change is reported as a change, a regression unless accepted.
* Measured memory regresses when it grows by more than its tolerance.
* Step time regresses when its median grows by more than the tolerance *and* the recorded samples say so: the
  clean visits' medians of the two profiles (a one-sided exact rank test, p <= SIGNIFICANCE, against the baseline
  grown by the tolerance). Where the samples cannot tell such a slowdown from noise (too few visits, a noisy
  runner) the verdict is *inconclusive*, with its own exit code, never a silent pass. Where the visits are too
  few for the rank test ever to decide (one visit per cell, two against two) the steps inside them do: the
  current p10 above the baseline's p90 grown by the tolerance, each resting on at least MIN_STEP_SAMPLES steps
  (docs/check.md). Profiles without visit medians fall back to their step-time spread: the current p10 above
  the baseline's p90.
* A cell the baseline has but the current profile lacks, or that now fails (oom, error), is a regression.

Exit codes: 0 pass, 1 regression, 2 unusable input, 3 inconclusive.
"""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

from layerprof.errors import LayerprofError
from layerprof.profile import DETERMINISTIC_FIELDS, MEMORY_FIELDS, Profile, Row, load_profile, recipe_difference
from layerprof.stats import rank_sum_p_value

if TYPE_CHECKING:
    from rich.table import Table
    from typing_extensions import Unpack

VERDICTS = ("pass", "improvement", "accepted", "inconclusive", "regression")
SIGNIFICANCE = 0.05  # a slowdown counts once the samples make it this unlikely to be noise
INCONCLUSIVE_EXIT_CODE = 3
INCONCLUSIVE_FIX = (
    "measure again with more visits per cell (larger --min-steps and --steps) on a quieter runner, "
    "or widen --time-tolerance"
)
RELATIVE_NOISE = 1e-9  # floating noise in deterministic figures


class UnusableInput(LayerprofError):
    """Profiles that cannot be compared: exit 2."""

    exit_code = 2


Figure = float | str | None  # a compared figure's value: a number, or a cell's status


class Tolerances(TypedDict, total=False):
    """`compare`'s tolerances, as `check_files` passes them on."""

    time_tolerance: float
    memory_tolerance: float
    accept_changes: bool
    allow_device_mismatch: bool


@dataclass
class Finding:
    """One figure of one cell compared: baseline, current, the verdict and why."""

    batch_size: int
    trainable_layers: int
    figure: str
    baseline: Figure
    current: Figure
    verdict: str  # one of VERDICTS
    detail: str = ""


@dataclass
class DisturbedCell:
    """A compared cell whose step time other work disturbed, in the baseline, the current profile or both."""

    batch_size: int
    trainable_layers: int
    side: Literal["baseline", "current", "both"]


@dataclass
class CheckResult:
    """Everything a gate found, and the exit code it means (0 pass, 1 regression, 3 inconclusive)."""

    current: str
    baseline: str
    findings: list[Finding] = field(default_factory=list)
    cells_compared: int = 0
    disturbed: list[DisturbedCell] = field(default_factory=list)  # cells other work disturbed while timed

    @property
    def disturbed_note(self) -> str | None:
        """One sentence naming the compared cells whose step times other work disturbed, or None: their verdict
        on time (a pass included) is weak evidence until they are re-measured on a quiet runner."""
        if not self.disturbed:
            return None
        named = ", ".join(f"batch {c.batch_size} z={c.trainable_layers} ({c.side})" for c in self.disturbed[:6])
        more = f" and {len(self.disturbed) - 6} more" if len(self.disturbed) > 6 else ""
        return (
            f"{len(self.disturbed)} cell(s) were timed while other work disturbed the machine: {named}{more}; "
            "their step-time verdicts are weak evidence: re-measure them on a quiet runner"
        )

    @property
    def regressions(self) -> list[Finding]:
        """The findings judged a regression: any one fails the gate (exit 1)."""
        return [f for f in self.findings if f.verdict == "regression"]

    @property
    def inconclusive(self) -> list[Finding]:
        """The findings that could not be told from noise (exit 3 where nothing regressed)."""
        return [f for f in self.findings if f.verdict == "inconclusive"]

    @property
    def exit_code(self) -> int:
        """1 on a regression, else 3 where a figure could not be judged, else 0."""
        if self.regressions:
            return 1
        return INCONCLUSIVE_EXIT_CODE if self.inconclusive else 0

    def cell_verdict(self, batch_size: int, trainable_layers: int) -> str:
        """The worst verdict among the cell's findings (regression first), or `pass` where it has none."""
        verdicts = {
            f.verdict for f in self.findings if (f.batch_size, f.trainable_layers) == (batch_size, trainable_layers)
        }
        for verdict in ("regression", "inconclusive", "accepted", "improvement"):
            if verdict in verdicts:
                return verdict
        return "pass"

    def cells(self) -> list[tuple[int, int]]:
        """Every (batch size, z) with a finding, ascending."""
        return sorted({(f.batch_size, f.trainable_layers) for f in self.findings})

    def regression_summary(self) -> str:
        """`3 figure(s) in batch 8 z=2, batch 8 z=3`."""
        return _figures_in(self.regressions)

    def inconclusive_summary(self) -> str:
        """What could not be judged, and how to judge it."""
        return f"{_figures_in(self.inconclusive)} cannot be told from noise; {INCONCLUSIVE_FIX}"


def _figures_in(findings: list[Finding]) -> str:
    cells = sorted({(f.batch_size, f.trainable_layers) for f in findings})
    named = ", ".join(f"batch {b} z={z}" for b, z in cells)
    return f"{len(findings)} figure(s) in {named}"


def _comparable(current: Profile, baseline: Profile, allow_device_mismatch: bool) -> None:
    if current.model.spec != baseline.model.spec:
        raise UnusableInput(f"different models: current {current.model.spec!r}, baseline {baseline.model.spec!r}")
    now, then = current.workload.to_dict(), baseline.workload.to_dict()
    for key in sorted(set(now) | set(then)):
        if now.get(key) != then.get(key):
            raise UnusableInput(
                f"different workloads: {key} is {now.get(key)!r} now, {then.get(key)!r} in the baseline"
            )
    if differs := recipe_difference(current.settings, baseline.settings):
        key, now_value, then_value = differs
        raise UnusableInput(f"different training settings: {key} is {now_value!r} now, {then_value!r} in the baseline")
    if current.model.overrides != baseline.model.overrides:
        raise UnusableInput("different model overrides (--set) in current and baseline")
    now_numerics, then_numerics = current.environment.numerics, baseline.environment.numerics
    if now_numerics and then_numerics:  # both measured with the settings recorded
        for key in sorted(set(now_numerics) | set(then_numerics)):
            if now_numerics.get(key) != then_numerics.get(key):
                raise UnusableInput(
                    f"different numeric settings: {key} is {now_numerics.get(key)!r} now, "
                    f"{then_numerics.get(key)!r} in the baseline (--tf32/--no-tf32 and cuDNN flags change speed)"
                )
    here, there = current.environment.device_name, baseline.environment.device_name
    if here != there and not allow_device_mismatch:
        raise UnusableInput(
            f"profiles from different devices ({here!r} vs {there!r}); pass --allow-device-mismatch to compare anyway"
        )


def _is_estimate(row: Row) -> bool:
    return (row.memory_source or "").startswith("estimate")


def _relative(current: float, baseline: float) -> float:
    return (current - baseline) / baseline if baseline else (0.0 if current == baseline else math.inf)


def compare(
    current: Profile,
    baseline: Profile,
    time_tolerance: float = 0.10,
    memory_tolerance: float = 0.02,
    accept_changes: bool = False,
    allow_device_mismatch: bool = False,
    current_name: str = "current",
    baseline_name: str = "baseline",
) -> CheckResult:
    """Compare two profiles of one model and recipe cell by cell: deterministic figures exactly, memory
    and step time within their tolerances (a slowdown beyond the measured spread)."""
    if time_tolerance < 0 or memory_tolerance < 0:
        raise LayerprofError("tolerances must not be negative")
    _comparable(current, baseline, allow_device_mismatch)
    result = CheckResult(current=current_name, baseline=baseline_name)
    current_cells = {(r.batch_size, r.trainable_layers): r for r in current.rows}
    shared = [key for key in ((r.batch_size, r.trainable_layers) for r in baseline.rows) if key in current_cells]
    if not shared:
        raise UnusableInput("the profiles share no (batch size, trainable layers) cell")
    for old in sorted(baseline.rows, key=lambda r: (r.batch_size, r.trainable_layers)):
        key = (old.batch_size, old.trainable_layers)
        new = current_cells.get(key)
        add = result.findings.append
        if new is None:
            if old.ok:
                add(Finding(*key, "status", old.status, None, "regression", "cell missing from the current profile"))
            continue
        result.cells_compared += 1
        if old.ok and not new.ok:
            add(Finding(*key, "status", old.status, new.status, "regression", new.message or ""))
            continue
        if not old.ok:
            verdict = "improvement" if new.ok else "pass"
            add(Finding(*key, "status", old.status, new.status, verdict))
            continue
        _note_disturbed(result, key, old, new)
        _compare_deterministic(result, key, old, new, accept_changes)
        _compare_memory(result, key, old, new, memory_tolerance, accept_changes)
        _compare_time(result, key, old, new, time_tolerance)
    return result


def check_files(
    current: Path,
    baseline: Path,
    *,
    summary_md: Path | None = None,
    junit: Path | None = None,
    **tolerances: Unpack[Tolerances],
) -> CheckResult:
    """Compare two profile files (`tolerances` as for `compare`); write the Markdown and JUnit reports asked for."""
    if not baseline.exists():
        raise LayerprofError(f"baseline {str(baseline)!r} does not exist; create it with --update-baseline")
    result = compare(
        finished_profile(current, "CURRENT"),
        finished_profile(baseline, "BASELINE"),
        current_name=str(current),
        baseline_name=str(baseline),
        **tolerances,
    )
    for path, render in ((summary_md, markdown_summary), (junit, junit_xml)):
        if path is not None:
            try:
                path.write_text(render(result), encoding="utf-8")
            except OSError as error:
                raise LayerprofError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    return result


def finished_profile(path: Path, role: str) -> Profile:
    """The profile at PATH; one an interrupted sweep left incomplete is unusable input (exit 2): a gate that
    passed on half a profile would pass on cells nobody measured."""
    profile = load_profile(path)
    reason = profile.incomplete_reason()
    if reason is not None:
        raise UnusableInput(
            f"{role} {str(path)!r} is incomplete ({reason}); a gate compares finished profiles: rerun the command "
            "that wrote it to resume it"
        )
    return profile


def write_baseline(current: Path, baseline: Path) -> int:
    """Copy CURRENT (checked to be a finished profile) to BASELINE; returns its number of cells."""
    profile = finished_profile(current, "CURRENT")
    try:
        baseline.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(current, baseline)
    except OSError as error:
        raise LayerprofError(f"cannot write baseline {str(baseline)!r}: {error.strerror or error}") from None
    return len(profile.rows)


def _note_disturbed(result: CheckResult, key: tuple[int, int], old: Row, new: Row) -> None:
    """Record a compared cell that other work disturbed while it was timed, on either side."""
    if old.disturbed and new.disturbed:
        result.disturbed.append(DisturbedCell(*key, "both"))
    elif old.disturbed or new.disturbed:
        result.disturbed.append(DisturbedCell(*key, "baseline" if old.disturbed else "current"))


def _compare_deterministic(result: CheckResult, key: tuple[int, int], old: Row, new: Row, accept: bool) -> None:
    for name in DETERMINISTIC_FIELDS:
        before, after = getattr(old, name), getattr(new, name)
        if before is None or after is None:
            continue
        changed = abs(after - before) > RELATIVE_NOISE * max(abs(before), abs(after), 1)
        verdict = ("accepted" if accept else "regression") if changed else "pass"
        detail = f"changed by {_relative(after, before):+.2%}" if changed else ""
        result.findings.append(Finding(*key, name, before, after, verdict, detail))


MEMORY_FIGURES = ("peak_memory_bytes", *MEMORY_FIELDS)


def _compare_memory(
    result: CheckResult, key: tuple[int, int], old: Row, new: Row, tolerance: float, accept: bool
) -> None:
    """The peak and every category of the tracker's split: exact between estimates, within tolerance otherwise."""
    both_estimates = _is_estimate(old) and _is_estimate(new)  # estimated memory is deterministic
    for name in MEMORY_FIGURES:
        before, after = getattr(old, name), getattr(new, name)
        if before is None or after is None:
            continue
        change = _relative(after, before)
        if both_estimates:
            changed = after != before
            verdict = ("accepted" if accept else "regression") if changed else "pass"
            detail = f"estimate changed by {change:+.2%}{_composed_note(old, new)}" if changed else ""
        elif change > tolerance:
            verdict, detail = "regression", f"{change:+.1%} exceeds +{tolerance:.0%}"
        elif change < -tolerance:
            verdict, detail = "improvement", f"{change:+.1%}"
        else:
            verdict, detail = "pass", f"{change:+.1%}"
        result.findings.append(Finding(*key, name, before, after, verdict, detail))


def _composed_note(old: Row, new: Row) -> str:
    """Which side of a changed estimate was composed from traced cells (`layerprof.predict.compose`), not traced."""
    sides = [name for name, row in (("baseline", old), ("current", new)) if row.estimate_basis == "composed"]
    return f" ({' and '.join(sides)} composed from traced cells)" if sides else ""


def clean_visit_medians(row: Row) -> list[float]:
    """The medians of the visits a row's step time rests on: those no other work slowed (all, where every visit
    was slowed, as the row's figure does)."""
    medians = row.visit_medians_ms or []
    slow = set(row.slow_visits or ())
    clean = [value for index, value in enumerate(medians) if index not in slow]
    return clean or list(medians)


# the fewest timed steps a profile's p10 and p90 must rest on for the step-sample rule (`has_step_samples`)
MIN_STEP_SAMPLES = 5


def rank_test_can_decide(visits: int, baseline_visits: int) -> bool:
    """Whether the rank test on this many visit medians can reach SIGNIFICANCE at all: its smallest p-value,
    complete separation, is 1 / C(n + m, n) (1 against any number of visits: 1 / (m + 1); 3 against 3: 1/20)."""
    return 1 / math.comb(visits + baseline_visits, visits) <= SIGNIFICANCE


def has_step_samples(old: Row, new: Row) -> bool:
    """Whether both rows record the spread (p10, p90) of at least MIN_STEP_SAMPLES timed steps."""
    return all(
        row.step_time_p10_ms is not None
        and row.step_time_p90_ms is not None
        and (row.measured_steps or 0) >= MIN_STEP_SAMPLES
        for row in (old, new)
    )


def _compare_time(result: CheckResult, key: tuple[int, int], old: Row, new: Row, tolerance: float) -> None:
    """A median beyond the tolerance is a regression (an improvement) only where the samples make it unlikely to
    be noise; a slowdown they cannot decide is inconclusive."""
    before, after = old.step_time_ms, new.step_time_ms
    if before is None or after is None:
        return
    change = _relative(after, before)
    add = result.findings.append
    if abs(change) <= tolerance:
        add(Finding(*key, "step_time_ms", before, after, "pass", f"{change:+.1%}"))
        return
    then, now = clean_visit_medians(old), clean_visit_medians(new)
    if then and now and not rank_test_can_decide(len(now), len(then)) and has_step_samples(old, new):
        # too few visits for the rank test ever to reach SIGNIFICANCE: the steps inside them decide
        grown = 1 + tolerance if change > 0 else 1 - tolerance
        if change > 0:
            assert new.step_time_p10_ms is not None and old.step_time_p90_ms is not None  # has_step_samples
            decided = new.step_time_p10_ms > old.step_time_p90_ms * grown
            sides = f"p10 {new.step_time_p10_ms:.4g} ms now, baseline p90 {old.step_time_p90_ms:.4g} ms"
        else:
            assert new.step_time_p90_ms is not None and old.step_time_p10_ms is not None  # has_step_samples
            decided = new.step_time_p90_ms < old.step_time_p10_ms * grown
            sides = f"p90 {new.step_time_p90_ms:.4g} ms now, baseline p10 {old.step_time_p10_ms:.4g} ms"
        evidence = (
            f"{len(now)} visit(s) against {len(then)}, too few to rank; steps ({new.measured_steps} against "
            f"{old.measured_steps}): {sides}"
        )
    elif then and now:
        if change > 0:  # current slower than the baseline grown by the tolerance?
            p_value = rank_sum_p_value(now, [value * (1 + tolerance) for value in then])
        else:  # the baseline slower than the current grown by the tolerance?
            p_value = rank_sum_p_value([value * (1 - tolerance) for value in then], now)
        decided = p_value <= SIGNIFICANCE
        evidence = f"{len(now)} visit(s) against {len(then)}, p = {p_value:.2g}"
    else:  # no visit medians recorded: the step-time spreads must not overlap
        old_low, old_high = old.step_time_p10_ms or before, old.step_time_p90_ms or before
        new_low, new_high = new.step_time_p10_ms or after, new.step_time_p90_ms or after
        decided = new_low > old_high if change > 0 else new_high < old_low
        evidence = "step-time spreads (p10-p90) of profiles without visit medians"
    if change > 0:
        if decided:
            detail = f"{change:+.1%} exceeds +{tolerance:.0%} beyond noise ({evidence})"
            add(Finding(*key, "step_time_ms", before, after, "regression", detail))
        else:
            detail = f"{change:+.1%} exceeds +{tolerance:.0%} but cannot be told from noise ({evidence})"
            add(Finding(*key, "step_time_ms", before, after, "inconclusive", detail))
    elif decided:
        add(Finding(*key, "step_time_ms", before, after, "improvement", f"{change:+.1%} ({evidence})"))
    else:
        detail = f"{change:+.1%} but inside the measured noise ({evidence})"
        add(Finding(*key, "step_time_ms", before, after, "pass", detail))


# ---------------------------------------------------------------- reports


def _cell_summary(result: CheckResult, batch_size: int, trainable_layers: int) -> dict[str, str]:
    by_figure = {
        f.figure: f for f in result.findings if (f.batch_size, f.trainable_layers) == (batch_size, trainable_layers)
    }

    def show(name: str, scale: float, unit: str) -> str:
        finding = by_figure.get(name)
        before, after = (finding.baseline, finding.current) if finding is not None else (None, None)
        if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):  # missing (or a status)
            return "—"
        change = _relative(after, before)
        return f"{before / scale:,.1f} → {after / scale:,.1f}{unit} ({change:+.1%})"

    notes = [
        f"{f.figure}: {f.detail or f.verdict}"
        for f in by_figure.values()
        if f.verdict in ("regression", "inconclusive", "accepted", "improvement")
    ]
    notes += [
        f"disturbed while timed ({cell.side})"
        for cell in result.disturbed
        if (cell.batch_size, cell.trainable_layers) == (batch_size, trainable_layers)
    ]
    return {
        "step time": show("step_time_ms", 1, " ms"),
        "peak memory": show("peak_memory_bytes", 2**20, " MiB"),
        "flops": "changed" if by_figure.get("flops") and by_figure["flops"].verdict != "pass" else "same",
        "verdict": result.cell_verdict(batch_size, trainable_layers),
        "notes": "; ".join(notes),
    }


def summary_rows(result: CheckResult) -> list[list[str]]:
    """One row per cell for the gate's tables: figures before and after, the verdict and its notes."""
    rows = []
    for batch_size, trainable_layers in result.cells():
        cell = _cell_summary(result, batch_size, trainable_layers)
        rows.append([str(batch_size), str(trainable_layers), *cell.values()])
    return rows


SUMMARY_HEADERS = ["batch", "z", "step time", "peak memory", "FLOPs", "verdict", "notes"]


def markdown_summary(result: CheckResult) -> str:
    """The gate's Markdown summary (for $GITHUB_STEP_SUMMARY): verdict, counts and the cells."""
    from layerprof.outputs.tables import markdown_table

    regressions, inconclusive = result.regressions, result.inconclusive
    status = "❌ regression" if regressions else "⚠️ inconclusive" if inconclusive else "✅ pass"
    lines = [
        f"### layerprof check: {status}",
        "",
        f"`{result.current}` against `{result.baseline}`: {result.cells_compared} cells compared, "
        f"{len(regressions)} regressing figure(s), {len(inconclusive)} inconclusive.",
        "",
        markdown_table(SUMMARY_HEADERS, summary_rows(result), [True, True, True, True, False, False, False]),
    ]
    if inconclusive:
        lines += ["", f"Inconclusive: {result.inconclusive_summary()}."]
    if result.disturbed_note:
        lines += ["", f"Disturbed: {result.disturbed_note}."]
    return "\n".join(lines) + "\n"


CHECK_STYLES = {"regression": "red", "inconclusive": "magenta", "improvement": "green", "accepted": "yellow"}


def rich_check_table(result: CheckResult) -> Table:
    """The gate's cells in a terminal, coloured by verdict (the Markdown summary's rows)."""
    from rich.table import Table

    table = Table(title=f"{result.current} vs {result.baseline}", title_justify="left", header_style="bold")
    for header in SUMMARY_HEADERS:
        table.add_column(header, justify="right" if header in ("batch", "z") else "left")
    for values in summary_rows(result):
        table.add_row(*values, style=CHECK_STYLES.get(values[SUMMARY_HEADERS.index("verdict")]))
    return table


def junit_xml(result: CheckResult) -> str:
    """One test case per cell and figure; regressions are failures, inconclusive figures skipped (not judged)."""
    suite = ET.Element(
        "testsuite",
        name="layerprof.check",
        tests=str(len(result.findings)),
        failures=str(len(result.regressions)),
        errors="0",
        skipped=str(len(result.inconclusive)),
    )
    for finding in result.findings:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"layerprof.batch{finding.batch_size}.z{finding.trainable_layers}",
            name=finding.figure,
        )
        if finding.verdict == "regression":
            failure = ET.SubElement(case, "failure", message=finding.detail or "regression")
            failure.text = f"baseline {finding.baseline!r}, current {finding.current!r}"
        elif finding.verdict == "inconclusive":
            ET.SubElement(case, "skipped", message=f"inconclusive: {finding.detail}; {INCONCLUSIVE_FIX}")
        elif finding.verdict != "pass":
            ET.SubElement(case, "system-out").text = f"{finding.verdict}: {finding.detail}"
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
