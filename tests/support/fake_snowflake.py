"""fakesnow's server (the Python connector's REST protocol, answered by DuckDB) on 127.0.0.1 over TLS,
recording what the connector sent: login requests with their session parameters, and statements.

`SnowflakeHook` passes `host` and `port` from the connection's extras to the connector but not
`protocol`, so the connector always speaks https: the server gets a self-signed certificate, which
the client trusts through REQUESTS_CA_BUNDLE (the connector reads it for its CA file).
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.support.http_recorder import closed_port


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path


def self_signed_certificate(directory: Path, dns_names: list[str], ip_addresses: list[str]) -> Certificate:
    """A certificate for the given names, signing itself, so a client can trust exactly it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    alternative_names = [x509.DNSName(n) for n in dns_names] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(cert_file, key_file)


@dataclass(frozen=True)
class Exchange:
    """One request the connector sent, with the JSON it got back."""

    path: str
    query: dict[str, list[str]]
    body: Any
    response: Any


class RecordingApp:
    """ASGI middleware that keeps every request body (and the JSON answer) before fakesnow sees it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        answer = []

        async def keep(message):
            if message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, replay, keep)
        headers = dict(scope.get("headers") or [])
        if headers.get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        exchange = Exchange(
            path=scope["path"],
            query=parse_qs(scope.get("query_string", b"").decode()),
            body=_json(body),
            response=_json(b"".join(answer)),
        )
        with self._lock:
            self.exchanges.append(exchange)


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


class FakesnowServer:
    """fakesnow's Starlette app under uvicorn with TLS, in a thread of the test process."""

    def __init__(self, certificate: Certificate) -> None:
        import fakesnow.server

        self.certificate = certificate
        self.recorder = RecordingApp(fakesnow.server.app)
        self.port = closed_port()
        self._server = None
        self._thread = None

    def start(self) -> FakesnowServer:
        import uvicorn

        config = uvicorn.Config(
            self.recorder,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ssl_certfile=str(self.certificate.cert_file),
            ssl_keyfile=str(self.certificate.key_file),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fakesnow", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fakesnow server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def connection_extra(self, **extra: Any) -> dict[str, Any]:
        """Connection extras that point SnowflakeHook at this server."""
        return {"account": "fakesnow", "host": "127.0.0.1", "port": self.port, "insecure_mode": True, **extra}

    def logins(self) -> list[Exchange]:
        return [e for e in self.recorder.exchanges if e.path == "/session/v1/login-request"]

    def login_session_parameters(self) -> list[dict[str, Any]]:
        return [e.body["data"].get("SESSION_PARAMETERS") or {} for e in self.logins()]

    def queries(self) -> list[Exchange]:
        return [e for e in self.recorder.exchanges if e.path == "/queries/v1/query-request"]

    def statements(self) -> list[str]:
        return [e.body["sqlText"] for e in self.queries()]

    def query_ids(self, statement_contains: str) -> list[str]:
        """The query ids fakesnow gave the statements that contain the text."""
        return [
            e.response["data"]["queryId"]
            for e in self.queries()
            if statement_contains in e.body["sqlText"] and e.response and e.response.get("data")
        ]
