"""Metrics hold NaN and infinity; what the service stores and serves is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from app.db.session import build_engine
from app.db.types import JSONType
from app.strict_json import dumps, finite

UNDEFINED = {"related_retention": math.nan, "losses": [1.5, math.inf, -math.inf],
             "nested": {"ratio": (math.nan, 0.25)}, "count": 3, "name": "NaN"}
AS_NULL = {"related_retention": None, "losses": [1.5, None, None],
           "nested": {"ratio": [None, 0.25]}, "count": 3, "name": "NaN"}


def test_undefined_numbers_become_null_and_nothing_else_changes() -> None:
    assert finite(UNDEFINED) == AS_NULL
    text = dumps(UNDEFINED)
    assert json.loads(text, parse_constant=pytest.fail) == AS_NULL
    with pytest.raises(ValueError):
        json.dumps(UNDEFINED, allow_nan=False)  # what the plain encoder refuses


def test_the_embedded_database_stores_undefined_numbers_as_null(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'lethe.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  Column("metrics", JSONType))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1, metrics=UNDEFINED))
    with engine.connect() as conn:
        assert conn.execute(select(table.c.metrics)).scalar_one() == AS_NULL
        raw = conn.exec_driver_sql("SELECT metrics FROM t").scalar_one()
    assert "NaN" not in raw.replace('"NaN"', "") and "Infinity" not in raw
    engine.dispose()


@pytest.mark.parametrize("undefined", [None, math.nan])
def test_the_gate_passes_a_retention_with_nothing_to_retain_and_fails_a_missing_one(
        undefined: float | None) -> None:
    from app.services.gate import evaluate_gate
    from app.settings import Settings

    settings = Settings()
    measured = {"forget_acc": {"red": 0.0}, "related_retention": undefined,
                "general_retention": 0.99}
    assert evaluate_gate(measured, ["red"], settings).passed
    low = measured | {"general_retention": settings.gate_min_general_retention - 0.01}
    assert evaluate_gate(low, ["red"], settings).reasons == [
        f"general_retention is {low['general_retention']:.3f} < "
        f"{settings.gate_min_general_retention:.3f}"]
    missing = {k: v for k, v in measured.items() if k != "related_retention"}
    assert evaluate_gate(missing, ["red"], settings).reasons == ["no related_retention reported"]
