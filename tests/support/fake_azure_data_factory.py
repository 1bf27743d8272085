"""Azure on 127.0.0.1, for tests: Microsoft Entra ID's token endpoints, the Data Factory management REST
API (createRun, pipelineruns get, queryActivityruns), and a place for other Azure hosts' routes (see
`tests.support.fake_synapse`).

The Azure SDK clients the provider builds talk to fixed https hosts (`management.azure.com`,
`login.microsoftonline.com`, a workspace's `*.dev.azuresynapse.net`) and offer no endpoint setting for
them. The server is therefore an HTTPS proxy, as a corporate proxy is: clients reach it through
`HTTPS_PROXY`, it answers CONNECT for those hosts only (403 for any other: nothing leaves the machine),
and serves the API itself over TLS with a certificate for those names, signed by a test CA the clients
trust through `REQUESTS_CA_BUNDLE` (`write_test_ca`).

https://learn.microsoft.com/en-us/rest/api/datafactory/pipeline-runs
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.support.json_http import JsonHandler, LocalServer, running

MANAGEMENT = "management.azure.com"
LOGIN = "login.microsoftonline.com"
SYNAPSE_SUFFIX = ".dev.azuresynapse.net"
# A fixed clock, so durations (and so costs) do not depend on the machine.
STARTED_AT = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
_FACTORY = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.DataFactory/factories/(?P<factory>[^/]+)"
_CREATE_RUN = re.compile(_FACTORY + r"/pipelines/(?P<pipeline>[^/]+)/createRun$")
_PIPELINE_RUN = re.compile(_FACTORY + r"/pipelineruns/(?P<run_id>[^/]+)$")
_QUERY_ACTIVITIES = re.compile(_FACTORY + r"/pipelineruns/(?P<run_id>[^/]+)/queryActivityruns$")


@dataclass(frozen=True)
class Activity:
    """One activity run of a pipeline run, and what its billingReference reports."""

    name: str
    activity_type: str
    duration_ms: int = 60_000
    # (billing activityType, meterType, duration, unit), e.g. ("DataMovement", "AzureIR", 0.0667, "DIUHours")
    billing: tuple[tuple[str, str, float, str], ...] = ()


@dataclass(frozen=True)
class PipelinePlan:
    activities: tuple[Activity, ...] = ()
    running_reads: int = 1  # pipeline run reads answered InProgress before Succeeded
    status: str = "Succeeded"
    fail_activity_queries: bool = False
    slow_activity_queries_seconds: float = 0.0


@dataclass
class Request:
    host: str
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None


@dataclass
class PipelineRunState:
    run_id: str
    pipeline: str
    parameters: dict[str, Any]
    plan: PipelinePlan
    reads: int = 0
    activity_queries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # the service's 7 fraction digits


def pipeline_run_json(state: PipelineRunState, terminal: bool) -> dict[str, Any]:
    total_ms = sum(a.duration_ms for a in state.plan.activities)
    run = {
        "runId": state.run_id,
        "runGroupId": state.run_id,
        "isLatest": True,
        "pipelineName": state.pipeline,
        "parameters": state.parameters,
        "invokedBy": {"name": "Manual", "id": uuid.uuid4().hex, "invokedByType": "Manual"},
        "runStart": _iso(STARTED_AT),
        "lastUpdated": _iso(STARTED_AT + dt.timedelta(milliseconds=total_ms)),
        "status": state.plan.status if terminal else "InProgress",
        "message": "",
        **state.extra,
    }
    if terminal:
        run.update(runEnd=_iso(STARTED_AT + dt.timedelta(milliseconds=total_ms)), durationInMs=total_ms)
    return run


def activity_runs_json(state: PipelineRunState) -> dict[str, Any]:
    runs, clock = [], STARTED_AT
    for activity in state.plan.activities:
        end = clock + dt.timedelta(milliseconds=activity.duration_ms)
        output: dict[str, Any] = {"effectiveIntegrationRuntime": "AutoResolveIntegrationRuntime (East US)"}
        if activity.billing:
            output["billingReference"] = {
                "activityType": activity.billing[0][0],
                "billableDuration": [
                    {"meterType": meter, "duration": duration, "unit": unit}
                    for _, meter, duration, unit in activity.billing
                ],
            }
        runs.append(
            {
                "activityRunId": str(uuid.uuid4()),
                "activityName": activity.name,
                "activityType": activity.activity_type,
                "pipelineName": state.pipeline,
                "pipelineRunId": state.run_id,
                "status": "Succeeded",
                "activityRunStart": _iso(clock),
                "activityRunEnd": _iso(end),
                "durationInMs": activity.duration_ms,
                "input": {},
                "output": output,
                "error": {"errorCode": "", "message": "", "failureType": "", "target": activity.name},
            }
        )
        clock = end
    return {"value": runs, "continuationToken": None}


Route = Callable[["FakeAzure", Request], tuple[int, dict[str, Any]]]


class FakeAzure(LocalServer):
    def __init__(self, tls: ssl.SSLContext) -> None:
        self.tls = tls
        self.requests: list[Request] = []
        self.refused_hosts: list[str] = []
        self.plans: dict[str, PipelinePlan] = {}
        self.runs: dict[str, PipelineRunState] = {}
        self.routes: list[tuple[Callable[[str], bool], Route]] = [
            (lambda host: host == LOGIN, _login),
            (lambda host: host == MANAGEMENT, _data_factory),
        ]
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        super().__init__(_ProxyHandler)

    @property
    def proxy_url(self) -> str:
        return self.url

    def serves(self, host: str) -> bool:
        return any(matches(host) for matches, _ in self.routes)

    def plan(self, pipeline: str, plan: PipelinePlan) -> None:
        self.plans[pipeline] = plan

    def new_run(self, pipeline: str, parameters: dict[str, Any]) -> PipelineRunState:
        with self.lock:
            run_id = str(uuid.UUID(int=next(self.ids)))
            state = PipelineRunState(run_id, pipeline, parameters, self.plans.get(pipeline, PipelinePlan()))
            self.runs[run_id] = state
        return state

    def read_run(self, run_id: str) -> tuple[int, dict[str, Any]]:
        state = self.runs.get(run_id)
        if state is None:
            return 404, {
                "error": {"code": "PipelineRunNotFound", "message": f"Pipeline run {run_id} not found"}
            }
        with self.lock:
            state.reads += 1
            terminal = state.reads > state.plan.running_reads
        return 200, pipeline_run_json(state, terminal)

    def query_activities(self, run_id: str) -> tuple[int, dict[str, Any]]:
        state = self.runs.get(run_id)
        if state is None:
            return 404, {
                "error": {"code": "PipelineRunNotFound", "message": f"Pipeline run {run_id} not found"}
            }
        state.activity_queries += 1
        if state.plan.slow_activity_queries_seconds:
            time.sleep(state.plan.slow_activity_queries_seconds)
        if state.plan.fail_activity_queries:
            return 500, {"error": {"code": "InternalServerError", "message": "planned failure"}}
        return 200, activity_runs_json(state)

    # ------------------------------------------------------------------ what the tests read

    def on_host(self, host_suffix: str) -> list[Request]:
        return [r for r in self.requests if r.host.endswith(host_suffix)]

    def run_of(self, pipeline: str) -> PipelineRunState:
        (state,) = [s for s in self.runs.values() if s.pipeline == pipeline]
        return state


def _login(server: FakeAzure, request: Request) -> tuple[int, dict[str, Any]]:
    """Entra ID as MSAL uses it: instance discovery, the tenant's OpenID configuration, the token."""
    if request.path == "/common/discovery/instance":
        tenant_endpoint = f"https://{LOGIN}/common/v2.0/.well-known/openid-configuration"
        return 200, {
            "tenant_discovery_endpoint": tenant_endpoint,
            "api-version": "1.1",
            "metadata": [{"preferred_network": LOGIN, "preferred_cache": LOGIN, "aliases": [LOGIN]}],
        }
    match = re.match(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$", request.path)
    if match:
        base = f"https://{LOGIN}/{match['tenant']}"
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "tenant_region_scope": "NA",
        }
    if re.match(r"^/[^/]+/oauth2/v2\.0/token$", request.path) and request.method == "POST":
        return 200, {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": "test-token",
        }
    return 404, {"error": "not_found"}


def _data_factory(server: FakeAzure, request: Request) -> tuple[int, dict[str, Any]]:
    if request.authorization != "Bearer test-token":
        return 401, {"error": {"code": "AuthenticationFailed", "message": "no valid token"}}
    if (match := _CREATE_RUN.match(request.path)) and request.method == "POST":
        state = server.new_run(match["pipeline"], request.body or {})
        return 200, {"runId": state.run_id}
    if (match := _PIPELINE_RUN.match(request.path)) and request.method == "GET":
        return server.read_run(match["run_id"])
    if (match := _QUERY_ACTIVITIES.match(request.path)) and request.method == "POST":
        return server.query_activities(match["run_id"])
    return 404, {"error": {"code": "NotFound", "message": f"{request.path} not found"}}


class _ApiHandler(JsonHandler):
    """The requests sent inside a CONNECT tunnel, after the TLS handshake."""

    protocol_version = "HTTP/1.1"
    json_content_type = "application/json; charset=utf-8"
    server: FakeAzure

    def __init__(self, request, client_address, server, host: str) -> None:
        self.host = host
        super().__init__(request, client_address, server)

    def _handle(self) -> None:
        raw = self.read_body()
        if raw and "json" in (self.headers.get("Content-Type") or ""):
            body: Any = json.loads(raw)
        else:
            body = parse_qs(raw.decode()) if raw else None
        request = Request(
            self.host, self.command, self.url_path, self.query(), body, self.headers.get("Authorization")
        )
        self.server.requests.append(request)
        route = next((handler for matches, handler in self.server.routes if matches(self.host)), None)
        status, payload = route(self.server, request) if route else (404, {"error": "unknown host"})
        self.reply_json(status, payload, {"x-ms-request-id": str(uuid.uuid4())})

    do_GET = do_POST = _handle  # noqa: N815


class _ProxyHandler(JsonHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAzure

    def do_CONNECT(self) -> None:  # noqa: N802
        host = self.path.rsplit(":", 1)[0]
        if not self.server.serves(host):
            self.server.refused_hosts.append(host)
            self.reply(403)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tunnel = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        tunnel.settimeout(30)
        try:
            _ApiHandler(tunnel, self.client_address, self.server, host)
        except (ssl.SSLError, OSError):
            pass
        finally:
            self.close_connection = True


def _alt_name(host: str):
    """A host name (wildcards allowed) or an IP address (127.0.0.1), as the certificate names it."""
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_test_ca(directory: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `hosts` (wildcards and IP addresses allowed), as PEM files:
    (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airflow-cost-provider test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@contextmanager
def serving_tls(
    directory: Path, hostnames: list[str], make_server: Callable[[ssl.SSLContext], Any]
) -> Iterator[Any]:
    """The server `make_server` builds on a TLS context whose certificate, signed by a test CA written
    to `directory`, names `hostnames`; served on a thread, with the CA's path as `ca_path`."""
    ca, cert, key = write_test_ca(directory, hostnames)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = make_server(tls)
    server.ca_path = ca
    with running(server):
        yield server


@contextmanager
def fake_azure(directory: Path) -> Iterator[FakeAzure]:
    """The fake, and the environment a client process needs to reach it through the proxy."""
    with serving_tls(directory, [MANAGEMENT, LOGIN, f"*{SYNAPSE_SUFFIX}"], FakeAzure) as server:
        yield server


def client_env(server: FakeAzure) -> dict[str, str]:
    """What a client process needs to reach the fake: the proxy and the test CA."""
    return {
        "HTTPS_PROXY": server.proxy_url,
        "https_proxy": server.proxy_url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "REQUESTS_CA_BUNDLE": str(server.ca_path),  # type: ignore[attr-defined]
        "SSL_CERT_FILE": str(server.ca_path),  # type: ignore[attr-defined]
    }
