"""Every command-line value layerprof reads from text: sizes, lists, ranges, shares, overrides and shapes.

Each parser raises a LayerprofError that names the option, what it got and what it expects.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprof.devices import (
    GPU_KINDS,
    GPUS,
    PRICES_VARIABLE,
    GpuPrice,
    InventoryItem,
    PriceBook,
    PriceOrigin,
    find_gpu,
    gpu_memory_bytes,
)
from layerprof.errors import LayerprofError

# The largest batch size a sweep takes (fit searches up to it too): beyond it every cell could only fail.
MAX_BATCH_SIZE = 1 << 24
# The largest eta: rungs a thousandfold apart already leave one or two rungs; beyond, counts overflow.
MAX_ETA = 1000.0
# Counts beyond which a command would run for days or exhaust memory planning (found in review: each hung)
MAX_REPEATS = 1_000_000  # simulate --repeats: auto stops at 32,000
MAX_CONFIGS = 10_000  # plan --configs: placing 10,000 trials per rung takes about a minute
MAX_TRIALS = 1_000_000  # correlate: training runs in one study
MAX_CPUS = 1 << 16  # --cpus: Linux numbers CPUs below 8,192
MAX_BUDGET_STEPS = 1_000_000_000  # --budget-steps: a billion training steps per full-budget trial


def check_count(value: int, option: str, largest: int) -> int:
    """A count of 1 to `largest`; LayerprofError naming `option` otherwise."""
    if value < 1:
        raise LayerprofError(f"{option} must be at least 1, got {value}")
    if value > largest:
        raise LayerprofError(f"{option} {value:,} is beyond the largest this takes, {largest:,}")
    return value


def check_budget_steps(value: int, option: str = "--budget-steps") -> int:
    """A full-budget trial's training steps: 1 to MAX_BUDGET_STEPS (10^20 ran past 300 s in `plan`)."""
    return check_count(value, option, MAX_BUDGET_STEPS)


def check_batch_size(value: int, option: str = "--batch-size") -> int:
    """One batch size: 1 to MAX_BATCH_SIZE, as every sweep takes it."""
    return check_count(value, option, MAX_BATCH_SIZE)


def split_items(text: str, option: str, example: str) -> list[str]:
    """Comma-separated items, stripped. Nothing at all, or an empty item (`1,,2`, a trailing comma), is an error:
    a list with a hole in it is a typo more often than a wish."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip():
        raise LayerprofError(f"{option} is empty; write e.g. {example}")
    if any(not part for part in parts):
        raise LayerprofError(
            f"{option} {text!r} has an empty item (two commas, or one at an end); write e.g. {example}"
        )
    return parts


def parse_names(text: str, option: str, known: tuple[str, ...], what: str = "name") -> list[str]:
    """`a,b` -> ["a", "b"], each one of `known`; an unknown one names the choices."""
    names = split_items(text, option, ",".join(known))
    for name in names:
        if name not in known:
            raise LayerprofError(f"{option}: unknown {what} {name!r}; choose from {', '.join(known)}")
    return names


def parse_ray_address(text: str) -> tuple[bool, str | None]:
    """`ray` -> (True, None: RAY_ADDRESS or local), `ray:ADDR` -> (True, ADDR), anything else -> (False, None)."""
    if text == "ray" or text.startswith("ray:"):
        return True, text.partition(":")[2] or None
    return False, None


def parse_positive_ints(text: str, option: str, largest: int = MAX_BATCH_SIZE) -> tuple[int, ...]:
    """`1,8,32` -> (1, 8, 32), sorted and without duplicates; each in 1..`largest`."""
    parts = split_items(text, option, "1,8,32")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise LayerprofError(f"{option} expects positive integers like 1,8,32, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise LayerprofError(f"{option} expects positive integers like 1,8,32, got {text!r}")
    if any(v > largest for v in values):
        raise LayerprofError(f"{option} {max(values):,} is beyond the largest this takes, {largest:,}")
    return tuple(sorted(set(values)))


def check_eta(eta: float, option: str = "--eta") -> float:
    """eta, a finite number in (1, MAX_ETA]: each rung costs about eta times the one below."""
    if not math.isfinite(eta) or not 1 < eta <= MAX_ETA:
        raise LayerprofError(f"{option} must be a number greater than 1 and at most {MAX_ETA:g}, got {eta:g}")
    return eta


@dataclass(frozen=True)
class LayerSelection:
    """Trainable-layer counts as written (`all`, `1,2,4`, `1-5`, `1,2,all`, `doubling`), checked against a model's n
    later.

    `all` alone means every z from 1 to n; in a list it stands for n (full training). `doubling` is 1, 2, 4, ... up
    to n, and n: a first look at the whole staircase in log2(n) + 1 cells.
    """

    text: str
    option: str = "--layers"

    def _parse(self) -> tuple[bool, list[tuple[int, int, str]]]:
        """(whether `all` appears, the spans given as (low, high, the item as written)); a range is not expanded
        here, so that `1-1000000000000` costs nothing before `resolve` refuses it."""
        spans: list[tuple[int, int, str]] = []
        has_all = False
        for part in split_items(self.text, self.option, "all, doubling, 1,2,4 or 1-5"):
            if part.lower() in ("all", "doubling"):
                has_all = has_all or part.lower() == "all"
                continue
            low, dash, high = part.partition("-")
            try:
                span = (int(low), int(high)) if dash else (int(part), int(part))
            except ValueError:
                raise LayerprofError(f"{self.option} expects all, doubling, 1,2,4 or 1-5, got {self.text!r}") from None
            if span[0] > span[1]:
                raise LayerprofError(f"{self.option} range {part!r} is empty; write LOW-HIGH with LOW <= HIGH")
            spans.append((*span, part))
        return has_all, spans

    @property
    def mentions_doubling(self) -> bool:
        """Whether `doubling` was written, alone or in a list."""
        return any(part.lower() == "doubling" for part in split_items(self.text, self.option, "all"))

    @property
    def mentions_all(self) -> bool:
        """Whether `all` was written, alone or in a list; LayerprofError on a malformed text."""
        return self._parse()[0]

    def resolve(self, layer_count: int | None) -> tuple[int, ...]:
        """The z values, ascending, each in 1..layer_count; `all` needs a known layer count."""
        has_all, spans = self._parse()
        for low, high, part in spans:
            if low < 1 or (layer_count is not None and high > layer_count):
                bound = f"1..{layer_count} (this model has {layer_count} layers)" if layer_count else "1.."
                raise LayerprofError(f"{self.option} {part} is outside {bound}")
        if layer_count is None and any(high - low > MAX_BATCH_SIZE for low, high, _ in spans):
            raise LayerprofError(f"{self.option} {self.text}: a range of more than {MAX_BATCH_SIZE:,} layers")
        values = {z for low, high, _ in spans for z in range(low, high + 1)}
        if self.mentions_doubling:
            if layer_count is None:
                raise LayerprofError(f"{self.option} doubling needs the number of layers; give numbers instead")
            values |= {2**power for power in range(layer_count.bit_length())}  # 2^(bits - 1) <= n < 2^bits
            values.add(layer_count)
        if has_all:
            if layer_count is None:
                raise LayerprofError(f"{self.option} all needs the number of layers; give numbers instead")
            values |= set(range(1, layer_count + 1)) if not values else {layer_count}
        return tuple(sorted(values))


def parse_layer_selection(text: str, option: str = "--layers") -> LayerSelection:
    """Checks the syntax now, before any model is built; `resolve(n)` checks the range."""
    selection = LayerSelection(text, option)
    selection._parse()
    return selection


def parse_fractions(text: str, option: str = "--budget-fractions") -> tuple[float, ...]:
    """Fractions in (0, 1], ascending; 1 (full fidelity) is always added."""
    try:
        values = tuple(sorted({float(part) for part in split_items(text, option, "0.1,0.25,0.5,1")}))
    except ValueError:
        values = ()
    if not values or any(not 0 < v <= 1 for v in values):
        raise LayerprofError(f"{option} expects fractions in (0, 1] like 0.1,0.25,0.5,1, got {text!r}")
    if values[-1] != 1.0:
        values = (*values, 1.0)
    return values


def parse_rungs(text: str, option: str = "--path", rising: bool = False) -> list[tuple[int, float]]:
    """`1@0.25,3@0.5,6@1` -> [(1, 0.25), (3, 0.5), (6, 1.0)]: trainable layers at a budget fraction per rung.
    With `rising`, a rung that does not raise the fidelity (z and budget kept or raised, one of them raised) is
    refused."""
    refused = LayerprofError(f"{option} expects rungs like 1@0.25,3@0.5,6@1 (z@budget fraction), got {text!r}")
    rungs: list[tuple[int, float]] = []
    for part in text.split(","):
        z, at, fraction = part.strip().partition("@")
        try:
            rung = (int(z), float(fraction))
        except ValueError:
            raise refused from None
        if not at or rung[0] < 1 or not 0 < rung[1] <= 1:
            raise refused
        if rising and rungs and (rung[0] < rungs[-1][0] or rung[1] < rungs[-1][1] or rung == rungs[-1]):
            before = f"{rungs[-1][0]}@{rungs[-1][1]:g}"
            raise LayerprofError(
                f"{option} {text}: rung {rung[0]}@{rung[1]:g} after {before} does not raise the fidelity; each "
                "rung keeps or raises both z and the budget fraction, and raises one of them"
            )
        rungs.append(rung)
    return rungs


def parse_repeats(text: str, option: str = "--repeats") -> int | None:
    """`auto` (None: until stable) or a positive number of repeats."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise LayerprofError(f"{option} expects a positive number of repeats or auto, got {text!r}")
    if value > MAX_REPEATS:
        raise LayerprofError(
            f"{option} {value:,} is beyond the largest this takes, {MAX_REPEATS:,} (auto stops at "
            "32,000, once every figure is stable)"
        )
    return value


def parse_share(text: str, option: str) -> float:
    """`10%` or `0.1` -> 0.1. A bare number above 1 is refused (`200` is 200%, written so if meant)."""
    percent = text.strip().endswith("%")
    try:
        value = float(text.strip().rstrip("%")) / (100 if percent else 1)
    except ValueError:
        raise LayerprofError(f"{option} expects a share like 10% or 0.1, got {text!r}") from None
    if not math.isfinite(value):
        raise LayerprofError(f"{option} expects a finite share like 10% or 0.1, got {text!r}")
    if value < 0:
        raise LayerprofError(f"{option} must not be negative, got {text!r}")
    if value > 1 and not percent:
        raise LayerprofError(
            f"{option} {text}: a share is a fraction up to 1 (0.1) or a percentage ({value:g}%); "
            f"write {value:g}% if you mean that"
        )
    return value


def parse_memory(text: str, option: str = "memory size") -> int:
    """`80GiB`, `24GB`, `40G`, `512MiB`, `4096B`. GB means 10^9, GiB 2^30; a bare G means GiB. A number without a
    unit is refused: `--memory 24` means 24 GiB to a reader and 24 bytes to a parser."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?)(B?)\s*", text, flags=re.IGNORECASE)
    if not match or (match.group(2) == "" and match.group(3)):
        raise LayerprofError(f"{option} {text!r} not understood; write e.g. 80GiB, 24GB or 512MiB")
    if not match.group(2) and not match.group(4):
        raise LayerprofError(f"{option} {text!r} has no unit; write e.g. {text.strip()}GiB, {text.strip()}GB or 512MiB")
    number, prefix, binary, unit = match.groups()
    power = "KMGT".find(prefix.upper()) + 1 if prefix else 0
    decimal = unit and not binary and prefix  # "24GB": SI; "24G" and "24GiB": binary
    base = 1000 if decimal else 1024
    return int(float(number) * base**power)


# --set keys whose last word names a size or a count (n_layer, n_embd, num_hidden_layers, hidden_size, width,
# depth, head_dim, ...): a whole number given for one must be positive. Rates, probabilities and epsilons
# (hidden_dropout_prob=0), identifiers (pad_token_id) and counts where 0 means "none" (n_expert, num_classes)
# end in other words and are left alone.
SIZE_KEY = re.compile(
    r"(?:^|_)(?:n|size|width|depth|dim|embd|embed|layer|layers|head|heads|hidden|channels|features|block|blocks|"
    r"positions|length|len|vocab|groups)$"
)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`key=value` pairs for --set, as text: each value takes the type of its target (a config field, a
    factory argument) where the model is built (`coerce`). A whole number of zero or less for a key that names a
    size or a count (SIZE_KEY) is refused here: a model with 0 layers or a 0-wide layer profiles nothing."""
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise LayerprofError(f"--set expects KEY=VALUE with KEY a Python identifier, got {item!r}")
        raw = raw.strip()
        if SIZE_KEY.search(key.lower()):
            try:
                number = int(raw)
            except ValueError:
                number = None
            if number is not None and number <= 0:
                raise LayerprofError(f"--set {key}={raw}: a size or count must be a positive whole number")
        overrides[key] = raw
    return overrides


def coerce(key: str, raw: object, annotation: object) -> object:
    """A --set value in the type its target declares (int, float, bool, str, None, unions and literals of
    them); undeclared targets read it as `parse_value` does. A value that does not fit says what would."""
    if not isinstance(raw, str):
        return raw
    if annotation in (None, Any, inspect.Parameter.empty):
        return parse_value(raw)
    try:
        return _coerce(raw, annotation)
    except (TypeError, ValueError):
        raise LayerprofError(f"--set {key}: expects {_describe(annotation)}, got {raw!r}") from None


def _coerce(raw: str, annotation: object) -> object:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _coerce(raw, option)
            except (TypeError, ValueError):
                continue
        raise ValueError(raw)
    if origin is typing.Literal:
        for option in args:
            if str(option) == raw or (isinstance(option, bool) and raw.lower() == str(option).lower()):
                return option
        raise ValueError(raw)
    if annotation is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(raw)
    if annotation is int:
        return int(raw)
    if annotation is float:
        return float(raw)
    if annotation is str:
        return raw
    return parse_value(raw)


def _describe(annotation: object) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    names: dict[object, str] = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "text",
        type(None): "none",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def parse_value(raw: str) -> bool | int | float | str | None:
    """A --set value read as bool, None, int or float where it looks like one, else kept as text."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_input_shape(text: str) -> tuple[int, ...]:
    """`3,224,224` (or `3x224x224`) -> (3, 224, 224)."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(size <= 0 for size in shape):
        raise LayerprofError(f"--input-shape expects positive integers like 3,224,224, got {text!r}")
    return shape


def parse_memory_budget(memory: str | None, gpu: str | None) -> int:
    """Exactly one of --memory SIZE or --gpu NAME, as bytes."""
    if (memory is None) == (gpu is None):
        raise LayerprofError(f"give exactly one of --memory SIZE or --gpu NAME (known: {', '.join(GPUS)})")
    return parse_memory(memory, "--memory") if memory is not None else gpu_memory_bytes(gpu or "")


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """`0-3`, `0,2` or a mix: CPU numbers, as taskset takes them."""
    values: set[int] = set()
    for part in split_items(text, "--cpus", "0-3 or 0,2"):
        low, dash, high = part.partition("-")
        try:
            span = range(int(low), int(high) + 1) if dash else range(int(part), int(part) + 1)
        except ValueError:
            raise LayerprofError(f"--cpus expects CPU numbers like 0-3 or 0,2, got {text!r}") from None
        if not span or span.start < 0:
            raise LayerprofError(f"--cpus range {part!r} is empty or negative; write LOW-HIGH with 0 <= LOW <= HIGH")
        if span.stop > MAX_CPUS:  # checked before the range is expanded: 0-1000000000000 hung
            raise LayerprofError(f"--cpus {part} is beyond any machine's CPU numbers (below {MAX_CPUS:,})")
        values.update(span)
    if not values:
        raise LayerprofError(f"--cpus expects CPU numbers like 0-3 or 0,2, got {text!r}")
    return tuple(sorted(values))


# The most GPUs of one kind a plan places trials on (more GPUs than any halving has trials, by far).
MAX_CLUSTER_GPUS = 100_000


def parse_inventory(text: str) -> list[InventoryItem]:
    """`16xL4,4xA100-80GB,1xH100` (a bare name counts once); MIG slices by name, e.g. 7xH100-1g.10gb."""
    items: dict[str, InventoryItem] = {}
    for part in split_items(text, "--cluster", "16xL4,4xA100-80GB,1xH100"):
        match = re.fullmatch(r"(?:([-+]?\d+)\s*[x×*]\s*)?(.+)", part)
        assert match is not None
        count, name = int(match.group(1) or 1), match.group(2)
        if count < 1:
            raise LayerprofError(f"--cluster: {part!r} has no GPUs; write COUNTxNAME, a count of 1 or more: e.g. 8xL4")
        gpu = find_gpu(name)
        if gpu is None:
            raise LayerprofError(f"--cluster: unknown GPU {name!r} in {part!r}; known: {', '.join(GPU_KINDS)}")
        previous = items.get(gpu.name)
        items[gpu.name] = InventoryItem(gpu, count + (previous.count if previous else 0))
        if items[gpu.name].count > MAX_CLUSTER_GPUS:
            raise LayerprofError(
                f"--cluster: {items[gpu.name].count:,} {gpu.name} GPUs is beyond the {MAX_CLUSTER_GPUS:,} per kind "
                "a plan places trials on"
            )
    if not items:
        raise LayerprofError(f"--cluster expects COUNTxGPU,..., e.g. 16xL4,4xA100-80GB,1xH100; got {text!r}")
    return list(items.values())


# ---------------------------------------------------------------- prices

# The most an hour of one GPU may cost: a typo (24900 for 2.49) is refused rather than priced.
MAX_USD_PER_HOUR = 1000.0
_PRICE = re.compile(r"\s*\$?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*h(?:our|r)?)?\s*", re.IGNORECASE)


def parse_usd_per_hour(text: str, where: str) -> float:
    """`2.49`, `$2.49` or `2.49/h` -> 2.49: US dollars per GPU-hour, 0 (a GPU you own) up to MAX_USD_PER_HOUR."""
    match = _PRICE.fullmatch(text)
    value = float(match.group(1)) if match else math.nan
    if not math.isfinite(value) or value > MAX_USD_PER_HOUR:
        raise LayerprofError(
            f"{where}: {text.strip()!r} is not a price; write US dollars per GPU-hour from 0 to "
            f"{MAX_USD_PER_HOUR:g}, e.g. H100=2.49"
        )
    return value


def parse_price(text: str, option: str = "--price") -> tuple[str, float]:
    """`H100=2.49` -> ("H100", 2.49): a GPU kind of the table (any case; MIG slices too) and its price per hour."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise LayerprofError(f"{option} {text!r}: write KIND=USD_PER_HOUR, e.g. {option} H100=2.49")
    gpu = find_gpu(name)
    if gpu is None:
        raise LayerprofError(f"{option} {text!r}: unknown GPU {name.strip()!r}; known: {', '.join(GPU_KINDS)}")
    return gpu.name, parse_usd_per_hour(value, f"{option} {text!r}")


def parse_prices_file(path: Path, origin: PriceOrigin = "--prices") -> dict[str, GpuPrice]:
    """A prices file: JSON (`{"H100": 2.49}` or `{"H100": {"usd_per_hour": 2.49, "source": "our contract",
    "date": "2026-01-01"}}`) or lines of KIND=USD (`#` starts a comment). Each price names the file as its source
    unless it names its own."""
    where = f"{origin} {path}"
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise LayerprofError(f"{where}: cannot read it ({error.strerror or error})") from None
    entries: list[tuple[str, object]] = []  # (GPU, its price: a number, text or an object of usd_per_hour, ...)
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise LayerprofError(f"{where}: not JSON ({error})") from None
        entries = list(data.items())
    else:
        for number, raw in enumerate(text.splitlines(), 1):
            content = raw.split("#", 1)[0].strip()
            if content:
                name, equals, value = content.partition("=")
                if not equals:
                    raise LayerprofError(
                        f"{where}, line {number}: {content!r}; write KIND=USD_PER_HOUR, e.g. H100=2.49"
                    )
                entries.append((name, value))
    prices: dict[str, GpuPrice] = {}
    for name, price in entries:
        kind = find_gpu(str(name))
        if kind is None:
            raise LayerprofError(f"{where}: unknown GPU {name!r}; known: {', '.join(GPU_KINDS)}")
        details = price if isinstance(price, dict) else {"usd_per_hour": price}
        amount = details.get("usd_per_hour")
        if isinstance(amount, bool) or not isinstance(amount, (int, float, str)):
            raise LayerprofError(f'{where}: {name}\'s price {amount!r} is not a number; write e.g. "{name}": 2.49')
        usd = parse_usd_per_hour(str(amount), f"{where}, {name}")
        source = str(details.get("source") or path)
        prices[kind.name] = GpuPrice(usd, source, str(details.get("date") or ""), origin)
    return prices


def price_book(
    prices: list[str] | None = None, prices_file: Path | None = None, environ: dict[str, str] | None = None
) -> PriceBook:
    """The prices of a run, later ones first: each --price, then the --prices file (else the one LAYERPROF_PRICES
    names), then the built-in table. The same kind given twice in --price is an error."""
    environ = dict(os.environ) if environ is None else environ
    given: dict[str, GpuPrice] = {}
    if prices_file is not None:
        given.update(parse_prices_file(prices_file, "--prices"))
    elif environ.get(PRICES_VARIABLE):
        given.update(parse_prices_file(Path(environ[PRICES_VARIABLE]), PRICES_VARIABLE))
    seen: set[str] = set()
    for text in prices or []:
        name, usd = parse_price(text)
        if name in seen:
            raise LayerprofError(f"--price {name} is given twice; give each GPU kind once")
        seen.add(name)
        given[name] = GpuPrice(usd, "--price", "", "--price")
    return PriceBook(given)


_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
# The longest deadline a plan takes: a year is already beyond any halving anyone waits for.
MAX_DURATION_SECONDS = 366 * 86400


def parse_duration(text: str, option: str = "--deadline") -> float:
    """`6h`, `90min`, `1.5d`, `2h30m`, `45s` -> seconds. A number without a unit is refused (`6` could be hours or
    seconds); so are zero and anything beyond a year."""
    parts = re.findall(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]+)", text.strip().lower())
    joined = "".join(f"{number}{unit}" for number, unit in parts)
    if not parts or joined != re.sub(r"\s+", "", text.strip().lower()):
        raise LayerprofError(f"{option} {text!r} not understood; write a duration with a unit, e.g. 6h, 90min or 2h30m")
    seconds = 0.0
    for number, unit in parts:
        if unit not in _DURATION_UNITS:
            raise LayerprofError(f"{option} {text!r}: unknown unit {unit!r}; use s, min (or m), h or d")
        seconds += float(number) * _DURATION_UNITS[unit]
    if not 0 < seconds <= MAX_DURATION_SECONDS:
        raise LayerprofError(f"{option} {text!r} must be more than 0 and at most 366 days")
    return seconds
