"""The lecture's picture: optimizers walking across a 2-D loss surface.

A landscape is given as the data set, with ``"model": {"name": "point"}``: the two
parameters are the point (x, y), the loss is f(x, y), and each epoch is one step on the
function itself. The engine implements each name in workers/engine/landscapes.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from services.spec.base import StrictModel

Coordinate = Annotated[float, Field(ge=-1e3, le=1e3)]


class _Landscape(StrictModel):
    start: tuple[Coordinate, Coordinate] = Field(description="starting point (x, y)")

    @property
    def kind(self) -> str:
        return "landscape"


class Rosenbrock(_Landscape):
    """(1 - x)² + 100 (y - x²)²; one minimum at (1, 1) at the end of a curved valley."""

    name: Literal["rosenbrock"]
    start: tuple[Coordinate, Coordinate] = (-1.5, 2.0)


class Beale(_Landscape):
    """Beale's function; one minimum at (3, 0.5), flat plateaus and steep edges."""

    name: Literal["beale"]
    start: tuple[Coordinate, Coordinate] = (1.0, 1.5)


class Himmelblau(_Landscape):
    """(x² + y - 11)² + (x + y² - 7)²; four minima, the nearest one counts."""

    name: Literal["himmelblau"]
    start: tuple[Coordinate, Coordinate] = (0.0, 0.0)


class Rastrigin(_Landscape):
    """20 + Σ (v² - 10 cos 2πv); a global minimum at (0, 0) among many local ones."""

    name: Literal["rastrigin"]
    start: tuple[Coordinate, Coordinate] = (2.2, 2.5)


class Saddle(_Landscape):
    """x² - y²: a saddle at (0, 0) and no minimum; runs escape along y or stall."""

    name: Literal["saddle"]
    start: tuple[Coordinate, Coordinate] = (1.0, 1e-3)


class Quadratic(_Landscape):
    """0.5 (x² + condition · y²): an ill-conditioned bowl with its minimum at (0, 0)."""

    name: Literal["quadratic"]
    start: tuple[Coordinate, Coordinate] = (-4.0, 1.0)
    condition: float = Field(25.0, ge=1.0, le=1e6, description="ratio of the curvatures")


LANDSCAPE_MODELS: dict[str, type[_Landscape]] = {
    "rosenbrock": Rosenbrock,
    "beale": Beale,
    "himmelblau": Himmelblau,
    "rastrigin": Rastrigin,
    "saddle": Saddle,
    "quadratic": Quadratic,
}
