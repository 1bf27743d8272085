"""Errors of billing imports: each names what is wrong and where, and never carries credentials."""

from __future__ import annotations


class BillingDataError(ValueError):
    """A billing file or row that cannot be imported. Nothing of its import is written."""

    def __init__(self, file: str, problem: str, row: int | None = None, column: str | None = None) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.problem = problem
        where = [file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {problem}")


class BillingSourceError(RuntimeError):
    """A billing API or store that failed or refused the request (after bounded retries)."""
