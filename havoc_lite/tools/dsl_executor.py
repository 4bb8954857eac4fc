"""dsl_executor: design-of-experiments run tables with pyDOE (`pip install pydoe`, module `pydoe`).

Designs (pyDOE function): full_factorial (`fullfact`, `levels` per factor, default 2),
fractional_factorial (`fracfact`, a generator string such as "a b c abc": one term per factor),
plackett_burman (`pbdesign`), box_behnken (`bbdesign`, >= 3 factors, `center` points),
central_composite (`ccdesign`, `center` = [factorial block, star block], `alpha` orthogonal |
rotatable, `face` circumscribed | inscribed | faced), latin_hypercube (`lhs`, `samples`, `seed`,
`criterion`).

Coded units run from -1 (low) to +1 (high); a k-level factorial factor takes k evenly spaced coded
values, a Latin hypercube sample u in [0, 1] is coded 2u - 1, and the star points of a
circumscribed central composite design lie beyond +-1 (outside the given range, as the design
intends). Real value = (low + high) / 2 + coded * (high - low) / 2.
Returned numbers: coded rounded to 4 significant digits, real to 6; integral values as ints.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from .registry import ToolError

WORKER_PRELOAD = ["numpy", "pydoe"]   # imported when the worker starts, not per call

MAX_FACTORS = 15
MAX_RUNS = 1024
DESIGNS = ["full_factorial", "fractional_factorial", "plackett_burman", "box_behnken",
           "central_composite", "latin_hypercube"]

_FACTOR = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "low": {"type": "number"},
                   "high": {"type": "number"}, "unit": {"type": "string", "maxLength": 20},
                   "levels": {"type": "integer", "minimum": 2, "maximum": 10}},
    "required": ["name", "low", "high"],
}
SCHEMA = {
    "properties": {
        "design": {"type": "string", "enum": DESIGNS},
        "factors": {"type": "array", "items": _FACTOR, "minItems": 1, "maxItems": MAX_FACTORS},
        "generator": {"type": "string", "maxLength": 200},
        "samples": {"type": "integer", "minimum": 2, "maximum": MAX_RUNS},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "criterion": {"type": "string", "enum": ["center", "maximin", "centermaximin", "correlation"]},
        "center": {"type": ["integer", "array"], "items": {"type": "integer", "minimum": 0,
                                                           "maximum": 20},
                   "minimum": 0, "maximum": 20, "maxItems": 2},
        "alpha": {"type": "string", "enum": ["orthogonal", "rotatable"]},
        "face": {"type": "string", "enum": ["circumscribed", "inscribed", "faced"]},
    },
    "required": ["design", "factors"],
}
DESCRIPTION = ("Design of experiments with pyDOE: design full_factorial | fractional_factorial "
               "(generator like 'a b c abc') | plackett_burman | box_behnken | central_composite | "
               "latin_hypercube (samples, seed); factors [{name, low, high, unit, levels}]. Returns "
               "the run table in coded (-1..1) and real units.")

# fields each design reads besides design and factors
FIELDS = {"full_factorial": set(), "fractional_factorial": {"generator"}, "plackett_burman": set(),
          "box_behnken": {"center"}, "central_composite": {"center", "alpha", "face"},
          "latin_hypercube": {"samples", "seed", "criterion"}}


def _num(x: float, digits: int) -> Any:
    x = float(f"{float(x):.{digits}g}") + 0.0      # + 0.0 turns -0.0 into 0.0
    return int(x) if x.is_integer() and abs(x) < 1e15 else x


def _check_generator(gen: Optional[str], k: int) -> str:
    if gen is None:
        raise ToolError("generator: required for fractional_factorial, e.g. 'a b c abc'")
    terms = gen.split()
    if len(terms) != k:
        raise ToolError(f"generator: has {len(terms)} terms, but there are {k} factors")
    mains = []
    for t in terms:
        if not re.fullmatch(r"[+-]?[a-zA-Z]+", t):
            raise ToolError(f"generator: term {t[:20]!r} must be letters with an optional sign")
        letters = t.lstrip("+-").lower()
        if len(letters) == 1:
            if letters in mains:
                raise ToolError(f"generator: main factor {letters!r} appears twice")
            mains.append(letters)
    expected = [chr(ord("a") + i) for i in range(len(mains))]
    if mains != expected:
        raise ToolError(f"generator: main factors must be {' '.join(expected)} in order")
    for t in terms:
        letters = t.lstrip("+-").lower()
        if len(letters) > 1 and (len(set(letters)) != len(letters) or set(letters) - set(mains)):
            raise ToolError(f"generator: term {t!r} must multiply distinct main factors "
                            f"({' '.join(mains)})")
    if 2 ** len(mains) > MAX_RUNS:
        raise ToolError(f"generator: {len(mains)} main factors give {2 ** len(mains)} runs, limit "
                        f"{MAX_RUNS}")
    return gen


def design_experiment(design: str, factors: list, generator: Optional[str] = None,
                      samples: Optional[int] = None, seed: Optional[int] = None,
                      criterion: Optional[str] = None, center: Any = None,
                      alpha: Optional[str] = None, face: Optional[str] = None) -> dict:
    """Build a run table: {"design", "factors", "runs", "coded": [[...]], "real": [[...]]}.

    Rows are runs, columns follow `factors`. Raises ToolError on a bad factor (low >= high,
    duplicate name), a field the design does not use, or a design beyond MAX_RUNS runs.
    """
    import numpy as np
    import pydoe

    given = {"generator": generator, "samples": samples, "seed": seed, "criterion": criterion,
             "center": center, "alpha": alpha, "face": face}
    for key, value in given.items():
        if value is not None and key not in FIELDS[design]:
            raise ToolError(f"{key}: not a field of {design}")
    names = set()
    for i, f in enumerate(factors):
        if f["name"] in names:
            raise ToolError(f"factors[{i}].name: duplicate {f['name']!r}")
        names.add(f["name"])
        if not f["low"] < f["high"]:
            raise ToolError(f"factors[{i}]: low ({f['low']}) must be below high ({f['high']})")
        if "levels" in f and design != "full_factorial":
            raise ToolError(f"factors[{i}].levels: only full_factorial takes levels")
    k = len(factors)

    if design == "full_factorial":
        levels = [f.get("levels", 2) for f in factors]
        if int(np.prod(levels, dtype=float)) > MAX_RUNS:
            raise ToolError(f"factors: {' x '.join(map(str, levels))} = "
                            f"{int(np.prod(levels, dtype=float))} runs, limit {MAX_RUNS}")
        idx = pydoe.fullfact(levels)
        coded = -1 + 2 * idx / (np.asarray(levels, float) - 1)
    elif design == "fractional_factorial":
        coded = pydoe.fracfact(_check_generator(generator, k))
    elif design == "plackett_burman":
        coded = pydoe.pbdesign(k)
    elif design == "box_behnken":
        if k < 3:
            raise ToolError(f"factors: box_behnken needs at least 3 factors, got {k}")
        if isinstance(center, list):
            raise ToolError("center: box_behnken takes one integer")
        coded = pydoe.bbdesign(k, center=center)
    elif design == "central_composite":
        if k < 2:
            raise ToolError(f"factors: central_composite needs at least 2 factors, got {k}")
        if 2 ** k > MAX_RUNS:
            raise ToolError(f"factors: {k} factors give {2 ** k} factorial runs, limit {MAX_RUNS}")
        if center is None:
            center = [4, 4]
        elif isinstance(center, int):
            center = [center - center // 2, center // 2]
        if len(center) != 2:
            raise ToolError("center: give [factorial-block centers, star-block centers]")
        coded = pydoe.ccdesign(k, center=tuple(center), alpha=alpha or "orthogonal",
                               face=face or "circumscribed")
    else:  # latin_hypercube
        crit = {"center": "center", "maximin": "maximin", "centermaximin": "centermaximin",
                "correlation": "correlation"}.get(criterion)
        u = pydoe.lhs(k, samples=samples or max(k, 10), criterion=crit,
                      seed=0 if seed is None else seed)
        coded = 2 * u - 1

    coded = np.asarray(coded, float)
    if coded.shape[0] > MAX_RUNS:
        raise ToolError(f"design has {coded.shape[0]} runs, limit {MAX_RUNS}")
    low = np.array([f["low"] for f in factors], float)
    high = np.array([f["high"] for f in factors], float)
    real = (low + high) / 2 + coded * (high - low) / 2
    return {
        "design": design,
        "factors": [{"name": f["name"], "low": f["low"], "high": f["high"],
                     **({"unit": f["unit"]} if "unit" in f else {})} for f in factors],
        "runs": int(coded.shape[0]),
        "coded": [[_num(v, 4) for v in row] for row in coded],
        "real": [[_num(v, 6) for v in row] for row in real],
    }


def register(registry) -> None:
    """Add dsl_executor to a ToolRegistry (worker process: keeps numpy/pyDOE out of the caller)."""
    registry.register("dsl_executor", design_experiment, SCHEMA, DESCRIPTION, isolate=True)
