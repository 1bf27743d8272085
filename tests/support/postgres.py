"""A throwaway PostgreSQL server for the test session, started from the Debian packages' binaries."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.http_recorder import closed_port


def _bindir() -> Path | None:
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresServer:
    """initdb + pg_ctl in a temporary directory, on a free port of 127.0.0.1, trust authentication."""

    def __init__(self, log_statements: bool = True) -> None:
        self.log_statements = log_statements
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found: run scripts/setup.sh (installs postgresql)"
            )
        self.bindir = bindir
        self.port = closed_port()
        self.root = Path(tempfile.mkdtemp(prefix="cost-pg-"))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o755)

    def _run(self, *args: str) -> None:
        subprocess.run(self._command(*args), check=True, capture_output=True, text=True, cwd=self.root)

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        subprocess.run(self.start_command(), check=True, capture_output=True, text=True, cwd=self.root)
        return self

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else command

    def start_command(self) -> list[str]:
        """The command that starts the server (again, after stop_command), as a list."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        if self.log_statements:
            options += " -c log_statement=all"
        return self._command(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start"
        )

    def stop_command(self) -> list[str]:
        """The command that stops the server and keeps its data, as a list."""
        return self._command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def conn_uri(self, database: str = "postgres") -> str:
        """An Airflow connection URI for the Postgres provider."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def statements(self) -> list[str]:
        """The statements the server logged (log_statement=all), continuation lines joined."""
        statements: list[str] = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            if "LOG:  statement: " in line:
                statements.append(line.split("LOG:  statement: ", 1)[1])
            elif "LOG:  execute " in line:  # a statement with bound parameters
                statements.append(line.split("LOG:  execute ", 1)[1].split(": ", 1)[1])
            elif line.startswith("\t") and statements:
                statements[-1] += "\n" + line[1:]
        return statements

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
