"""Training precisions, with Lightning's names and meaning.

* `*-true`: everything (parameters, gradients, optimizer state, floating inputs) in that dtype.
* `*-mixed`: float32 parameters, gradients and optimizer state; the forward and the loss under autocast in
  the lower dtype. `16-mixed` adds a gradient scaler, as Lightning does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from layerprof.errors import LayerprofError

# The training precisions by Lightning's names: the one type every layer (CLI choice, settings, tables) uses
PrecisionName = Literal["32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true"]


@dataclass(frozen=True)
class Precision:
    """What a precision name means: the dtype of compute and of what is held, and whether a scaler runs."""

    name: PrecisionName
    dtype: str  # the compute dtype: of everything for *-true, of autocast regions for *-mixed
    mixed: bool
    scaled: bool = False  # a gradient scaler (float16 mixed precision)

    @property
    def parameter_dtype(self) -> str:
        """The dtype parameters, gradients and optimizer state are held in: float32 under mixed precision."""
        return "float32" if self.mixed else self.dtype

    @property
    def description(self) -> str:
        """The precision in words, as a profile's settings spell it out (`precision_mode`)."""
        if self.mixed:
            scaler = ", gradients scaled (torch.amp.GradScaler)" if self.scaled else ""
            return (
                f"float32 parameters, gradients and optimizer state; forward and loss under "
                f"torch.autocast({self.dtype}){scaler}"
            )
        if self.dtype == "float32":
            return "float32 throughout"
        return f"parameters, gradients, optimizer state and floating inputs in {self.dtype} (model.to({self.dtype}))"


PRECISIONS: dict[PrecisionName, Precision] = {
    precision.name: precision
    for precision in (
        Precision("32-true", "float32", mixed=False),
        Precision("bf16-mixed", "bfloat16", mixed=True),
        Precision("bf16-true", "bfloat16", mixed=False),
        Precision("16-mixed", "float16", mixed=True, scaled=True),
        Precision("16-true", "float16", mixed=False),
    )
}


assert tuple(PRECISIONS) == get_args(PrecisionName)


def get_precision(name: str) -> Precision:
    """The precision a name means; an unknown name is an input error."""
    if name not in PRECISIONS:
        raise LayerprofError(f"--precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]
