"""The checks every number from a user passes (options, environment variables, values
stored in files), so that a bad number is a usage error before any work (exit 2); the
command line's typed options (commands.args) run the same checks."""

from __future__ import annotations

import math
from typing import Any, Callable

from ..errors import UsageError

# Spacings outside this range are not microscopy: 72 or 300 dpi defaults written by
# ordinary image tools would otherwise turn pixels into bogus millimetres.
PLAUSIBLE_MPP = (0.01, 50.0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def check_probability(value: Any) -> float:
    value = _float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value:g} is not in [0, 1]")
    return value


def check_positive(value: Any) -> float:
    value = _float(value)
    if value <= 0:
        raise ValueError(f"{value:g} is not positive")
    return value


def check_positive_int(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"{number} is not a positive whole number")
    return number


def check_mpp(value: Any) -> float:
    value = check_positive(value)
    if not PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]:
        raise ValueError(f"{value:g} um/px is not a microscope resolution ({PLAUSIBLE_MPP[0]:g} to {PLAUSIBLE_MPP[1]:g})")
    return value


def checked(check: Callable[[Any], Any], value: Any, source: str) -> Any:
    """`check(value)`, or a UsageError naming where the value came from (env var, file)."""
    try:
        return check(value)
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None
