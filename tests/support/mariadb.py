"""A throwaway MariaDB server for the test session, started from the Debian package's binaries, with
the general query log on so tests can read every statement the server received."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.http_recorder import closed_port


class MariaDBServer:
    """mariadb-install-db + mariadbd in a temporary directory, on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        self.server = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
        if not self.install_db or not Path(self.server).exists():
            raise RuntimeError("MariaDB server binaries not found: run scripts/setup.sh --test-servers")
        self.port = closed_port()
        self.root = Path(tempfile.mkdtemp(prefix="cost-mariadb-"))
        self.data = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.general_log = self.root / "general.log"
        self.process: subprocess.Popen | None = None
        self._user = "mysql" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(self.root, self._user, self._user)

    def start(self, timeout: float = 60) -> MariaDBServer:
        user = [f"--user={self._user}"] if self._user else []
        subprocess.run(
            [self.install_db, f"--datadir={self.data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *user],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        self.process = subprocess.Popen(
            [self.server, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.socket}", "--general-log=1",
             f"--general-log-file={self.general_log}", "--skip-name-resolve", *user],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "error.log", "wb"),
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.root / 'error.log').read_text()[-2000:]}")
            if self._ping():
                self._bootstrap()
                return self
            time.sleep(0.2)
        raise RuntimeError("mariadbd did not start in time")

    def _client(self, sql: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["mariadb", f"--socket={self.socket}", "-uroot", "-e", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def _ping(self) -> bool:
        return self.socket.exists() and self._client("SELECT 1").returncode == 0

    def _bootstrap(self) -> None:
        # a TCP user for the tests, and a database for them to work in
        result = self._client(
            "CREATE USER IF NOT EXISTS 'tester'@'127.0.0.1' IDENTIFIED BY 'tester';"
            "GRANT ALL ON *.* TO 'tester'@'127.0.0.1'; CREATE DATABASE IF NOT EXISTS shop;"
        )
        if result.returncode != 0:
            raise RuntimeError(f"MariaDB bootstrap failed: {result.stderr}")

    def conn_uri(self, database: str = "shop") -> str:
        """An Airflow connection URI for the MySQL provider."""
        return f"mysql://tester:tester@127.0.0.1:{self.port}/{database}"

    def statements(self) -> list[str]:
        """The query texts in the general log (a statement may span several lines)."""
        queries: list[str] = []
        for line in self.general_log.read_text(errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[-2].strip().endswith("Query"):
                queries.append(parts[-1])
            elif len(parts) >= 2 and " Query\t" in line:
                queries.append(line.split(" Query\t", 1)[1])
            elif queries and not line.startswith(("\t", "/usr", "Tcp port", "Time")):
                queries[-1] += "\n" + line
        return queries

    def stop(self) -> None:
        try:
            if self.process and self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
