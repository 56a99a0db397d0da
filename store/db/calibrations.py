"""Stored calibrations (``whyclip calibrate``), kept with the library version they calibrate
and the run they were fitted on. The newest of a version and aggregate is the one in use;
older ones stay, so a calibration is never lost by fitting another."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from whyclip.store.db.schema import CalibrationRow, EvalRunRow, LibraryRow
from whyclip.store.db.writes import write_session
from whyclip.store.errors import InputError, StoreError


@dataclass(frozen=True)
class CalibrationInfo:
    id: int
    library_id: int
    library_name: str
    library_version: int
    run_id: int
    run_name: str
    aggregate: str
    seed: int
    fit_fraction: float
    temperature: float
    biases: np.ndarray | None  # (C,) by class position
    report: dict[str, Any]
    created_at: dt.datetime

    def block(self) -> dict[str, Any]:
        """What an explanation says about the calibration it used."""
        return {
            "temperature": self.temperature,
            "per_class_bias": self.biases is not None,
            "aggregate": self.aggregate,
            "run": self.run_name,
            "run_id": self.run_id,
            "calibration_id": self.id,
            "seed": self.seed,
            "fit_fraction": self.fit_fraction,
            "created_at": self.created_at.isoformat(),
            "ece_before": self.report.get("ece_before"),
            "ece_after": self.report.get("ece_after"),
        }

    def summary(self) -> str:
        bias = " and per-class biases" if self.biases is not None else ""
        return (
            f"temperature {self.temperature:.3g}{bias} ({self.aggregate}) fitted on run {self.run_name!r}, "
            f"held-out ECE {self.report.get('ece_before', 0):.3f} -> {self.report.get('ece_after', 0):.3f}"
        )


def _info(row: CalibrationRow, library: LibraryRow, run_name: str) -> CalibrationInfo:
    biases = None if row.biases is None else np.asarray(json.loads(row.biases), dtype=np.float64)
    return CalibrationInfo(
        row.id,
        row.library_id,
        library.name,
        library.version,
        row.run_id,
        run_name,
        row.aggregate,
        row.seed,
        row.fit_fraction,
        row.temperature,
        biases,
        json.loads(row.report),
        row.created_at,
    )


def save_calibration(
    engine: Engine, *, library_id: int, run_id: int, aggregate: str, report: dict[str, Any]
) -> CalibrationInfo:
    """Store a fitted calibration (``report`` from :func:`whyclip.store.analysis.calibration.calibrate`) in one
    write transaction; the run must still exist and belong to the library version."""
    with write_session(engine, "store the calibration") as s:
        run = s.get(EvalRunRow, run_id)
        if run is None or run.library_id != library_id:
            raise StoreError(f"run {run_id} of this library version was deleted meanwhile: nothing was stored")
        row = CalibrationRow(
            library_id=library_id,
            run_id=run_id,
            aggregate=aggregate,
            seed=int(report["seed"]),
            fit_fraction=float(report["fit_fraction"]),
            temperature=float(report["temperature"]),
            biases=None if report["biases"] is None else json.dumps(report["biases"]),
            ece_before=report["ece_before"],
            ece_after=report["ece_after"],
            nll_before=report["nll_before"],
            nll_after=report["nll_after"],
            report=json.dumps(report),
            created_at=dt.datetime.now(dt.timezone.utc),
        )
        s.add(row)
        s.flush()
        library = s.get(LibraryRow, library_id)
        assert library is not None  # the run, which belongs to it, was there
        out = _info(row, library, run.name)
    return out


def list_calibrations(engine: Engine, library_id: int | None = None) -> list[CalibrationInfo]:
    """Every calibration (of one library version, or all), oldest first."""
    with Session(engine) as s:
        q = (
            select(CalibrationRow, LibraryRow, EvalRunRow.name)
            .join(LibraryRow, LibraryRow.id == CalibrationRow.library_id)
            .join(EvalRunRow, EvalRunRow.id == CalibrationRow.run_id)
        )
        if library_id is not None:
            q = q.where(CalibrationRow.library_id == library_id)
        return [_info(r, lib, name) for r, lib, name in s.execute(q.order_by(CalibrationRow.id)).all()]


def latest_calibration(engine: Engine, library_id: int, aggregate: str | None = None) -> CalibrationInfo | None:
    """The newest calibration of a library version (for ``aggregate``, when given)."""
    found = [c for c in list_calibrations(engine, library_id) if aggregate is None or c.aggregate == aggregate]
    return found[-1] if found else None


def calibration_for(engine: Engine, library_id: int, name: str, version: int, aggregate: str) -> CalibrationInfo:
    """The calibration ``explain --calibrated`` uses, or a one-line error saying how to make one."""
    cal = latest_calibration(engine, library_id, aggregate)
    if cal is not None:
        return cal
    other = sorted({c.aggregate for c in list_calibrations(engine, library_id)})
    if other:
        raise InputError(
            f"library {name!r} v{version} is calibrated for the {', '.join(other)} aggregate, not {aggregate}: "
            f"run 'whyclip calibrate --library {name} --aggregate {aggregate}', or explain with that aggregate"
        )
    raise InputError(
        f"library {name!r} v{version} has no calibration: run 'whyclip calibrate --library {name}' "
        "(it needs a run made by 'whyclip eval') before 'explain --calibrated'"
    )
