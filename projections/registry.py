"""The read models' projections, by name."""

from __future__ import annotations

from projections.base import Projection
from projections.jobs import JobsProjection
from projections.points import PointsProjection


def all_projections() -> list[Projection]:
    return [PointsProjection(), JobsProjection()]


def projection(name: str) -> Projection:
    for p in all_projections():
        if p.name == name:
            return p
    raise KeyError(f"unknown projection {name!r}; known: {[p.name for p in all_projections()]}")
