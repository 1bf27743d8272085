"""Units of usage and price, and exact conversion between units of one dimension.

Usage keeps the unit the platform reports (bytes, slot-ms, DPU-seconds, ...); a price is quoted per
some unit of the same dimension (TiB, slot-hour, DPU-hour, ...). Conversion is exact Decimal arithmetic.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from airflow_cost_provider.pricing.money import EXACT


class UnknownUnitError(ValueError):
    """A unit name that the registry does not know."""


class IncompatibleUnitsError(ValueError):
    """Two units of different dimensions, e.g. a usage in bytes and a price per hour."""


class Unit(NamedTuple):
    dimension: str
    factor: Decimal  # how many base units of the dimension one of this unit is


def _time_family(dimension: str, prefix: str) -> dict[str, Unit]:
    """`{prefix}-ms`, `-second`, `-minute`, `-hour` of a resource-time dimension (vCPU-hour, DPU-second...)."""
    return {
        f"{prefix}-ms": Unit(dimension, Decimal("0.001")),
        f"{prefix}-second": Unit(dimension, Decimal(1)),
        f"{prefix}-minute": Unit(dimension, Decimal(60)),
        f"{prefix}-hour": Unit(dimension, Decimal(3600)),
    }


_UNITS: dict[str, Unit] = {
    # data volume, base: byte. Cloud "TB" prices are decimal, BigQuery's "TiB" binary: both exist.
    "byte": Unit("data", Decimal(1)),
    "KB": Unit("data", Decimal(10) ** 3),
    "MB": Unit("data", Decimal(10) ** 6),
    "GB": Unit("data", Decimal(10) ** 9),
    "TB": Unit("data", Decimal(10) ** 12),
    "KiB": Unit("data", Decimal(2) ** 10),
    "MiB": Unit("data", Decimal(2) ** 20),
    "GiB": Unit("data", Decimal(2) ** 30),
    "TiB": Unit("data", Decimal(2) ** 40),
    # elapsed time, base: second
    "ms": Unit("time", Decimal("0.001")),
    "second": Unit("time", Decimal(1)),
    "minute": Unit("time", Decimal(60)),
    "hour": Unit("time", Decimal(3600)),
    # memory held or data stored over time, base: GiB-second ("GB-month" in cloud price lists is
    # GiB x 730 hours)
    # YARN reports memory-seconds in MB-seconds, its MB being MiB (1/1024 GiB, an exact decimal)
    "MiB-second": Unit("gib_time", Decimal("0.0009765625")),
    "GiB-ms": Unit("gib_time", Decimal("0.001")),
    "GiB-second": Unit("gib_time", Decimal(1)),
    "GiB-minute": Unit("gib_time", Decimal(60)),
    "GiB-hour": Unit("gib_time", Decimal(3600)),
    "GiB-month": Unit("gib_time", Decimal(3600 * 730)),
    # things counted, each its own dimension so a query count is never priced per job run
    "query": Unit("queries", Decimal(1)),
    "request": Unit("requests", Decimal(1)),
    "activity_run": Unit("activity_runs", Decimal(1)),
    "model": Unit("models", Decimal(1)),  # dbt Cloud's successful models built
    # platform currencies of compute, base: one of them
    "credit": Unit("snowflake_credits", Decimal(1)),
    "DBU": Unit("dbus", Decimal(1)),
    # Dremio Consumption Units: engine uptime x the size's DCUs per hour (not the DCU-hour of time)
    "DCU": Unit("dremio_dcus", Decimal(1)),
}
for _dimension, _prefix in (
    ("cpu_time", "vCPU"),
    ("slot_time", "slot"),
    ("dpu_time", "DPU"),
    ("rpu_time", "RPU"),
    ("dcu_time", "DCU"),
    ("node_time", "node"),
    ("vcore_time", "vCore"),
    ("diu_time", "DIU"),
    ("instance_time", "instance"),
    ("gpu_time", "GPU"),
):
    _UNITS.update(_time_family(_dimension, _prefix))
_UNITS["milli-DCU-second"] = Unit("dcu_time", Decimal("0.001"))


def known_units() -> list[str]:
    return sorted(_UNITS)


def get_unit(name: str) -> Unit:
    try:
        return _UNITS[name]
    except KeyError:
        raise UnknownUnitError(f"unknown unit {name!r}; known units: {', '.join(known_units())}") from None


def conversion(from_unit: str, to_unit: str) -> tuple[Decimal, Decimal]:
    """(multiplier, divisor) taking a quantity of `from_unit` to `to_unit`; divide last, to stay exact."""
    source, target = get_unit(from_unit), get_unit(to_unit)
    if source.dimension != target.dimension:
        raise IncompatibleUnitsError(
            f"cannot convert {from_unit!r} ({source.dimension}) to {to_unit!r} ({target.dimension})"
        )
    return source.factor, target.factor


def convert(quantity: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """Express `quantity` of `from_unit` in `to_unit` (exact to 80 significant digits)."""
    if from_unit == to_unit:
        return quantity
    multiplier, divisor = conversion(from_unit, to_unit)
    return EXACT.divide(EXACT.multiply(quantity, multiplier), divisor)
