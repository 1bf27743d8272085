"""Errors of billing imports: each names what is wrong and where, and never carries credentials."""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator

# a URL or connection string, up to the first space or quote (a password may hold a raw @ or /)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def redact(text: str) -> str:
    """`text` with the password of every URL in it masked, one holding an unencoded @ included."""
    return _URL.sub(lambda match: _masked(match.group(0)), text)


def _masked(url: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")  # the last @: a raw @ in the password comes before it
    if not at or ":" not in userinfo:
        return url  # no password: abfss://container@account... names a container, not a user
    password = userinfo.split(":", 1)[1]
    try:
        from airflow_cost_provider.ledger.store import safe_url

        masked = safe_url(url)
    except Exception:  # not a URL SQLAlchemy parses: mask it ourselves
        masked = ""
    pieces = [password, *(piece for piece in password.split("@") if len(piece) > 1)]
    if not masked or any(piece in masked for piece in pieces):
        masked = f"{scheme}://***@{host}"
    return masked


class BillingDataError(ValueError):
    """A billing file or row that cannot be imported. Nothing of its import is written."""

    def __init__(self, file: str, problem: str, row: int | None = None, column: str | None = None) -> None:
        self.file = redact(file)
        self.row = row
        self.column = column
        self.problem = redact(problem)
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {self.problem}")


class BillingSourceError(RuntimeError):
    """A billing API or store that failed or refused the request (after bounded retries)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(str(message)))


# extra of airflow-cost-provider -> the Airflow provider it installs: its module and its package
PROVIDER_EXTRAS = {
    "amazon": ("airflow.providers.amazon", "apache-airflow-providers-amazon"),
    "google": ("airflow.providers.google", "apache-airflow-providers-google"),
    "microsoft-azure": ("airflow.providers.microsoft.azure", "apache-airflow-providers-microsoft-azure"),
    "snowflake": ("airflow.providers.snowflake", "apache-airflow-providers-snowflake"),
    "databricks": ("airflow.providers.databricks", "apache-airflow-providers-databricks"),
}


@contextlib.contextmanager
def provider_required(extra: str, what: str) -> Iterator[None]:
    """Around the imports of an optional Airflow provider: if it, or a library it needs, is not
    installed, a BillingSourceError saying which extra to install instead of a ModuleNotFoundError."""
    module, package = PROVIDER_EXTRAS[extra]
    try:
        importlib.import_module(module)  # the provider itself first, even if its submodules are loaded
        yield
    except ImportError as error:
        missing = "" if error.name in (None, module) else f" (no module {error.name})"
        raise BillingSourceError(
            f"{what} needs the Airflow provider {package}, which is not installed{missing}: "
            f"pip install 'airflow-cost-provider[{extra}]'"
        ) from None
