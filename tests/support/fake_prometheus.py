"""A Prometheus HTTP API on 127.0.0.1, for tests: `/api/v1/query` (GET and POST), answered in the API's
own shapes from series of samples the test gives it, and recording each query.

It evaluates the part of PromQL the provider sends, over real samples: vector selectors with label
matchers (`=`, `!=`, `=~`, `!~`, regexes anchored as Prometheus anchors them), range selectors,
`max_over_time`, `min_over_time`, `avg_over_time`, `label_replace`, `sum`/`max`/`min`/`avg` by labels,
`*` with `on (...) group_left (...)`, and `or`. An instant selector looks back five minutes; a range
selector takes the samples in (time - range, time]. Anything else is a `bad_data` error, as the real
server answers a query it cannot parse.

https://prometheus.io/docs/prometheus/latest/querying/api/
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from tests.support.http_recorder import serving
from tests.support.json_http import JsonHandler

LOOKBACK = 300.0
SCRAPE = 15.0


@dataclass
class Series:
    labels: dict[str, str]  # with __name__
    samples: list[tuple[float, float]]  # (unix seconds, value), in time order


@dataclass
class Query:
    method: str
    query: str
    time: float | None


class PromQLError(ValueError):
    pass


_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<duration>\[\d+[smh]\])|(?P<number>\d+(?:\.\d+)?)'
    r"|(?P<op>=~|!~|!=|=|\*|[(){},])|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*))"
)
_AGGREGATIONS = {"sum": sum, "max": max, "min": min, "avg": lambda v: sum(v) / len(v)}
_OVER_TIME = {
    "max_over_time": max,
    "min_over_time": min,
    "avg_over_time": lambda v: sum(v) / len(v),
}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise PromQLError(f'parse error: unexpected character at position {position}: "{text[position]}"')
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1])


class _Parser:
    """Expressions as nested tuples: ("selector", name, matchers, range), ("call", name, args),
    ("aggregate", op, by, expr), ("multiply", left, on, extra, right), ("or", left, right), ("string", s)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token = self.peek()
        if token is None or (value is not None and token[1] != value) or (kind and token[0] != kind):
            raise PromQLError(f"parse error: expected {value or kind}, found {token[1] if token else 'end'}")
        self.position += 1
        return token[1]

    def parse(self) -> tuple:
        expression = self.expression()
        if self.peek() is not None:
            raise PromQLError(f"parse error: unexpected {self.peek()[1]}")
        return expression

    def expression(self) -> tuple:
        left = self.product()
        while self.peek() == ("ident", "or"):
            self.take()
            left = ("or", left, self.product())
        return left

    def product(self) -> tuple:
        left = self.unary()
        while self.peek() == ("op", "*"):
            self.take()
            on, extra = None, None
            if self.peek() == ("ident", "on"):
                self.take()
                on = self.labels()
            if self.peek() == ("ident", "group_left"):
                self.take()
                extra = self.labels() if self.peek() == ("op", "(") else []
            left = ("multiply", left, on, extra, self.unary())
        return left

    def labels(self) -> list[str]:
        self.take("(")
        names = []
        while self.peek() != ("op", ")"):
            names.append(self.take(kind="ident"))
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        return names

    def unary(self) -> tuple:
        token = self.peek()
        if token == ("op", "("):
            self.take()
            inner = self.expression()
            self.take(")")
            return inner
        if token and token[0] == "string":
            self.take()
            return ("string", _unquote(token[1]))
        name = self.take(kind="ident")
        if name in _AGGREGATIONS and self.peek() == ("ident", "by"):
            self.take()
            by = self.labels()
            self.take("(")
            inner = self.expression()
            self.take(")")
            return ("aggregate", name, by, inner)
        if self.peek() == ("op", "(") and (name in _OVER_TIME or name == "label_replace"):
            self.take()
            args = [self.expression()]
            while self.peek() == ("op", ","):
                self.take()
                args.append(self.expression())
            self.take(")")
            return ("call", name, args)
        matchers = []
        if self.peek() == ("op", "{"):
            self.take()
            while self.peek() != ("op", "}"):
                label = self.take(kind="ident")
                op = self.take(kind="op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"parse error: unexpected {op} in label matching")
                matchers.append((label, op, _unquote(self.take(kind="string"))))
                if self.peek() == ("op", ","):
                    self.take()
            self.take("}")
        range_seconds = None
        if self.peek() and self.peek()[0] == "duration":
            text = self.take()[1:-1]
            range_seconds = float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]
        return ("selector", name, matchers, range_seconds)


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, op, value in matchers:
        actual = labels.get(label, "")
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "=~" and not re.fullmatch(value, actual):
            return False
        if op == "!~" and re.fullmatch(value, actual):
            return False
    return True


def _key(labels: dict[str, str]) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


class _Evaluator:
    def __init__(self, series: list[Series], at: float) -> None:
        self.series, self.at = series, at

    def vector(self, node: tuple) -> list[tuple[dict[str, str], float]]:
        kind = node[0]
        if kind == "selector":
            _, name, matchers, range_seconds = node
            if range_seconds is not None:
                raise PromQLError("bad_data: a range vector where an instant vector is expected")
            found = []
            for series in self._selected(name, matchers):
                recent = [v for t, v in series.samples if self.at - LOOKBACK < t <= self.at]
                if recent:
                    found.append((dict(series.labels), recent[-1]))
            return found
        if kind == "call" and node[1] in _OVER_TIME:
            (argument,) = node[2]
            if argument[0] != "selector" or argument[3] is None:
                raise PromQLError(f"bad_data: {node[1]} expects a range vector")
            _, name, matchers, range_seconds = argument
            found = []
            for series in self._selected(name, matchers):
                values = [v for t, v in series.samples if self.at - range_seconds < t <= self.at]
                if values:
                    labels = {k: v for k, v in series.labels.items() if k != "__name__"}
                    found.append((labels, _OVER_TIME[node[1]](values)))
            return found
        if kind == "call" and node[1] == "label_replace":
            vector, *strings = node[2]
            if len(strings) != 4 or any(s[0] != "string" for s in strings):
                raise PromQLError("bad_data: label_replace takes a vector and four strings")
            destination, replacement, source, regex = (s[1] for s in strings)
            found = []
            for labels, value in self.vector(vector):
                match = re.fullmatch(regex, labels.get(source, ""))
                if match:
                    labels = {**labels, destination: match.expand(re.sub(r"\$(\d+)", r"\\\1", replacement))}
                found.append((labels, value))
            return found
        if kind == "aggregate":
            _, op, by, inner = node
            groups: dict[tuple, list[float]] = {}
            for labels, value in self.vector(inner):
                groups.setdefault(tuple((k, labels.get(k, "")) for k in by), []).append(value)
            return [
                ({k: v for k, v in key if v}, _AGGREGATIONS[op](values)) for key, values in groups.items()
            ]
        if kind == "multiply":
            _, left, on, extra, right = node
            right_side: dict[tuple, tuple[dict[str, str], float]] = {}
            for labels, value in self.vector(right):
                match_key = tuple(labels.get(k, "") for k in on) if on is not None else _key(labels)
                if match_key in right_side:
                    raise PromQLError("execution: many-to-many matching not allowed")
                right_side[match_key] = (labels, value)
            found = []
            for labels, value in self.vector(left):
                match_key = tuple(labels.get(k, "") for k in on) if on is not None else _key(labels)
                if match_key in right_side:
                    other, factor = right_side[match_key]
                    joined = {k: v for k, v in labels.items() if k != "__name__"}
                    joined.update({k: other[k] for k in extra or [] if k in other})
                    found.append((joined, value * factor))
            return found
        if kind == "or":
            left = self.vector(node[1])
            seen = {_key(labels) for labels, _ in left}
            return left + [
                (labels, value) for labels, value in self.vector(node[2]) if _key(labels) not in seen
            ]
        raise PromQLError(f"bad_data: unexpected {kind}")

    def _selected(self, name: str, matchers: list[tuple[str, str, str]]) -> Iterator[Series]:
        for series in self.series:
            if series.labels.get("__name__") == name and _matches(series.labels, matchers):
                yield series


def _number_text(value: float) -> str:
    return format(Decimal(repr(float(value))).normalize(), "f")


@dataclass
class FakePrometheus:
    port: int = 0
    series: list[Series] = field(default_factory=list)
    # called at each query for the series to answer from (e.g. built from a fake cluster's pods)
    source: Callable[[], Iterable[Series]] | None = None
    queries: list[Query] = field(default_factory=list)
    fail_with: int | None = None  # answer every query with this HTTP status
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def evaluate(self, text: str, at: float) -> dict[str, Any]:
        series = list(self.series) + list(self.source() if self.source else [])
        result = _Evaluator(series, at).vector(_Parser(text).parse())
        return {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": labels, "value": [at, _number_text(value)]} for labels, value in result
                ],
            },
        }


class _Handler(JsonHandler):
    server_version = "fake-prometheus/1"
    fake: FakePrometheus

    def _handle(self) -> None:
        method, params = self.command, self.query()
        if method == "POST":  # a long query comes as the same form, in the body
            params.update(parse_qs(self.read_body().decode()))
        if self.url_path != "/api/v1/query":
            return self.reply_json(404, {"status": "error", "errorType": "not_found", "error": self.url_path})
        fake = self.fake
        text = (params.get("query") or [""])[0]
        at = float((params.get("time") or [time.time()])[0])
        with fake.lock:
            fake.queries.append(Query(method, text, at))
        if fake.delay:
            time.sleep(fake.delay)
        if fake.fail_with:
            return self.reply_json(
                fake.fail_with,
                {"status": "error", "errorType": "unavailable", "error": "the TSDB is not ready"},
            )
        try:
            return self.reply_json(200, fake.evaluate(text, at))
        except PromQLError as error:
            return self.reply_json(400, {"status": "error", "errorType": "bad_data", "error": str(error)})

    do_GET = do_POST = _handle  # noqa: N815


@contextmanager
def fake_prometheus(
    series: Iterable[Series] = (), source: Callable[[], Iterable[Series]] | None = None
) -> Iterator[FakePrometheus]:
    fake = FakePrometheus(series=list(series), source=source)
    with serving(_Handler, fake):
        yield fake


# ------------------------------------------------------------------- what a cluster's scrapes hold


@dataclass(frozen=True)
class ContainerUse:
    """What one container used, as its scrapes will show: CPU seconds in all (the counter's value at
    the container's end) and its working set at each scrape, evenly over its life."""

    cpu_seconds: float
    memory_bytes: tuple[float, ...]


def container_series(
    namespace: str,
    pod: str,
    container: str,
    start: float,
    end: float,
    use: ContainerUse,
    uid: str = "0",
    scrape: float = SCRAPE,
) -> list[Series]:
    """cAdvisor's series of one container as the kubelet exposes them: the CPU counter from 0 at its
    start to `cpu_seconds` at its end (a last sample at the end, then one frozen sample after, as
    cAdvisor keeps a dead container's series a while), its working set, its start time; and the
    pod-level cgroup (container="") and the sandbox ("POD"), which are not containers of the spec."""
    base = {"namespace": namespace, "pod": pod, "job": "kubelet", "metrics_path": "/metrics/cadvisor"}
    cgroup = f"/kubepods/burstable/pod{uid}"
    ticks = [start + scrape / 3 + i * scrape for i in range(int((end - start) // scrape) + 1)]
    ticks = [t for t in ticks if t < end] + [end]
    cpu = [(t, use.cpu_seconds * (t - start) / (end - start)) for t in ticks] + [
        (end + scrape, use.cpu_seconds)
    ]
    memory_ticks = [
        start + (end - start) * (i + 1) / (len(use.memory_bytes) + 1) for i in range(len(use.memory_bytes))
    ]
    labels = {**base, "container": container, "id": f"{cgroup}/{container}"}
    return [
        Series({"__name__": "container_cpu_usage_seconds_total", **labels}, cpu),
        Series(
            {"__name__": "container_memory_working_set_bytes", **labels},
            list(zip(memory_ticks, use.memory_bytes, strict=True)),
        ),
        Series({"__name__": "container_start_time_seconds", **labels}, [(t, start) for t in ticks]),
        # the pod's own cgroup holds every container's usage, the sandbox its own: never counted
        Series(
            {"__name__": "container_cpu_usage_seconds_total", **base, "container": "", "id": cgroup},
            [(t, 1000 + v) for t, v in cpu],
        ),
        Series(
            {
                "__name__": "container_memory_working_set_bytes",
                **base,
                "container": "POD",
                "id": f"{cgroup}/pause",
            },
            [(t, 10 * 2**30) for t in memory_ticks],
        ),
    ]


def _ticks(start: float, end: float) -> list[float]:
    """kube-state-metrics' scrapes of an object that lived from start to end."""
    return [start + i * 30.0 for i in range(int((end - start) // 30) + 1)]


def executor_series(
    namespace: str,
    pod: str,
    owner: str,
    node: str,
    requests: dict[str, float],
    start: float,
    end: float,
    use: ContainerUse,
    container: str = "spark-kubernetes-executor",
    owner_kind: str = "Pod",
) -> list[Series]:
    """A Spark executor pod's cAdvisor series and kube-state-metrics' (its owner, its requests, its
    node), as they stay in Prometheus after the pod was deleted. Its owner is the driver pod under
    Spark's default pods allocator, a StatefulSet or a ReplicaSet under the others."""
    ksm = {"job": "kube-state-metrics", "namespace": namespace, "pod": pod, "uid": f"uid-{pod}"}
    ticks = _ticks(start, end)
    found = container_series(namespace, pod, container, start, end, use, uid=f"uid-{pod}")
    found.append(
        Series(
            {
                "__name__": "kube_pod_owner",
                **ksm,
                "owner_kind": owner_kind,
                "owner_name": owner,
                "owner_is_controller": "true",
            },
            [(t, 1.0) for t in ticks],
        )
    )
    found.append(
        Series(
            {"__name__": "kube_pod_info", **ksm, "node": node, "host_ip": "10.0.0.11"},
            [(t, 1.0) for t in ticks],
        )
    )
    for resource, value in requests.items():
        unit = "core" if resource == "cpu" else "byte"
        found.append(
            Series(
                {
                    "__name__": "kube_pod_container_resource_requests",
                    **ksm,
                    "container": container,
                    "node": node,
                    "resource": resource,
                    "unit": unit,
                },
                [(t, value) for t in ticks],
            )
        )
    return found


def replicaset_series(namespace: str, replicaset: str, deployment: str, start: float, end: float) -> Series:
    """kube-state-metrics' `kube_replicaset_owner` of a Deployment's ReplicaSet."""
    return Series(
        {
            "__name__": "kube_replicaset_owner",
            "job": "kube-state-metrics",
            "namespace": namespace,
            "replicaset": replicaset,
            "owner_kind": "Deployment",
            "owner_name": deployment,
            "owner_is_controller": "true",
        },
        [(t, 1.0) for t in _ticks(start, end)],
    )
