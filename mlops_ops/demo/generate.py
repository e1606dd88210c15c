"""Deterministic generator of the demo customer-churn table: base, drifted and corrupt variants.

The label ``churned`` follows a logistic model of the features (contract, tenure, charges, support
calls, payment method, age), so a gradient-boosted classifier reaches a ROC AUC of about 0.85.
The drifted variant shifts the distributions (dearer plans, more month-to-month contracts, more
support calls) but stays inside the suite; the corrupt variant breaks it in counted places.

Run ``python -m mlops_ops.demo.generate OUT_DIR [--rows N]`` to write the three CSV files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

Kind = Literal["base", "drift", "corrupt"]

CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENT_METHODS = ("electronic-check", "mailed-check", "bank-transfer", "credit-card")
REGIONS = ("north", "south", "east", "west")
COLUMNS = (
    "age",
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "contract",
    "payment_method",
    "region",
    "churned",
)
#: Plan prices are bounded by the tariff, in every variant.
MIN_CHARGE, MAX_CHARGE = 18.0, 120.0
MAX_TENURE = 72
FILES: dict[str, tuple[Kind, int]] = {
    "churn.csv": ("base", 0),
    "churn_drift.csv": ("drift", 1),
    "churn_corrupt.csv": ("corrupt", 2),
}

# Mix of each variant: contract, payment method and the shifts applied to charges, calls and age.
_MIX: dict[str, dict[str, tuple[float, ...]]] = {
    "base": {"contract": (0.55, 0.25, 0.20), "payment": (0.34, 0.22, 0.22, 0.22), "shift": (0.0, 0.0, 0.0)},
    "drift": {"contract": (0.72, 0.18, 0.10), "payment": (0.50, 0.15, 0.17, 0.18), "shift": (14.0, 0.9, -6.0)},
}
_CONTRACT_EFFECT = np.array([0.9, -0.5, -1.6])
_PAYMENT_EFFECT = np.array([0.55, 0.1, -0.15, -0.2])
_REGION_EFFECT = np.array([0.0, 0.15, -0.1, 0.05])


def generate(rows: int, seed: int = 0, kind: Kind = "base") -> pd.DataFrame:
    """A churn table of ``rows`` rows; the same arguments always give the same table.

    Args:
        rows: Number of customers.
        seed: Seed of the numpy random generator.
        kind: ``base`` (reference data), ``drift`` (shifted distributions, still valid) or
            ``corrupt`` (negative ages, missing charges, an unknown contract, impossible call counts).
    """
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    if kind not in ("base", "drift", "corrupt"):
        raise ValueError(f"kind must be 'base', 'drift' or 'corrupt', got {kind!r}")
    rng = np.random.default_rng(seed)
    df = _customers(rng, rows, _MIX["drift" if kind == "drift" else "base"])
    if kind == "corrupt":
        _corrupt(df, rng)
    return df


def _customers(rng: np.random.Generator, rows: int, mix: dict[str, tuple[float, ...]]) -> pd.DataFrame:
    charge_shift, calls_shift, age_shift = mix["shift"]
    contract = rng.choice(len(CONTRACTS), size=rows, p=mix["contract"])
    payment = rng.choice(len(PAYMENT_METHODS), size=rows, p=mix["payment"])
    region = rng.choice(len(REGIONS), size=rows, p=(0.3, 0.25, 0.25, 0.2))
    age = np.clip(np.rint(rng.normal(46 + age_shift, 14, rows)), 18, 90).astype(np.int64)
    # Longer contracts go with longer tenure.
    tenure_scale = np.array([14.0, 30.0, 48.0])[contract]
    tenure = np.clip(np.rint(rng.exponential(tenure_scale)), 0, MAX_TENURE).astype(np.int64)
    base_charge = 55 + 12 * (region == 1) + charge_shift
    monthly = np.round(np.clip(rng.normal(base_charge, 22, rows), MIN_CHARGE, MAX_CHARGE), 2)
    # What a customer paid so far: this month's price times tenure, give or take past price changes.
    total = np.round(monthly * tenure * rng.uniform(0.9, 1.05, rows), 2)
    calls = np.minimum(rng.poisson(1.2 + calls_shift + 0.8 * (monthly > 90), rows), 15).astype(np.int64)
    logit = (
        -1.9
        + _CONTRACT_EFFECT[contract]
        - 0.04 * tenure
        + 0.9 * (tenure < 6)
        + 0.025 * (monthly - 65)
        + 0.4 * calls
        + _PAYMENT_EFFECT[payment]
        + _REGION_EFFECT[region]
        - 0.012 * (age - 45)
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            "age": age,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": calls,
            "contract": np.asarray(CONTRACTS, dtype=object)[contract],
            "payment_method": np.asarray(PAYMENT_METHODS, dtype=object)[payment],
            "region": np.asarray(REGIONS, dtype=object)[region],
            "churned": churned,
        },
        columns=list(COLUMNS),
    )


def _corrupt(df: pd.DataFrame, rng: np.random.Generator) -> None:
    """Break the table in a counted number of rows per defect (about 1 row in 300 each)."""
    rows = len(df)
    count = max(1, rows // 300)
    picks = rng.permutation(rows)
    negative_age, missing_charge, bad_contract, impossible_calls = (
        picks[i * count : (i + 1) * count] for i in range(4)
    )
    df.loc[negative_age, "age"] = -rng.integers(1, 60, count)
    df.loc[missing_charge, "monthly_charges"] = np.nan
    df.loc[bad_contract, "contract"] = "three-year"
    df.loc[impossible_calls, "support_calls"] = rng.integers(200, 1000, count)


def write_demo(out_dir: str | Path, rows: int = 5000, seed: int = 0) -> dict[str, Path]:
    """Write ``churn.csv``, ``churn_drift.csv`` and ``churn_corrupt.csv`` to ``out_dir``; return their paths.

    Args:
        out_dir: Folder to write to (created if missing).
        rows: Rows per file.
        seed: Seed of the base file; the drifted and corrupt files use the next two seeds.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, (kind, offset) in FILES.items():
        path = out / name
        generate(rows, seed=seed + offset, kind=kind).to_csv(path, index=False, lineterminator="\n")
        log.info("wrote %s (%d rows, %s)", path, rows, kind)
        written[name] = path
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m mlops_ops.demo.generate OUT_DIR [--rows N] [--seed S]``."""
    parser = argparse.ArgumentParser(prog="python -m mlops_ops.demo.generate", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the CSV files to")
    parser.add_argument("--rows", type=int, default=5000, help="rows per file (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the base file (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_demo(args.out_dir, rows=args.rows, seed=args.seed)


if __name__ == "__main__":
    main()
