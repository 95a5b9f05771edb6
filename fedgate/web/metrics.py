"""Prometheus metrics of one gateway, served at ``GET /metrics`` on its HTTP port.

What is exported (every name starts ``fedgate_``; `METRICS` lists them):

- read from `FederationService.status()` when scraped (never pushed): clients by state,
  the run's state, round, model version and last held-out accuracy and loss;
- reported by the core through its `fedgate.core.observer.Observer` port: rounds by
  outcome and their duration, bytes by transport x codec x direction (the very counts of
  the federation's traffic ledger, so they equal status's and the results document's
  byte totals), decode, encode and aggregation time;
- measured at the edges (`fedgate.web.metrics_wire`): REST request latency by route
  template, method and status; gRPC calls by method and status code.

Each gateway's metrics live in a `CollectorRegistry` of their own (never the process-wide
default), so several gateways in one process (tests, benchmarks) keep apart.

Access: ``/metrics`` is a read-only view like the dashboard's: it needs a viewer's
credential (the admin token or a session token, as ``Authorization: Bearer``), or none
when the server runs with ``--public-dashboard``. Prometheus sends the token with
``authorization.credentials_file`` (deploy/prometheus/prometheus.yml).

Every label value is bounded: route templates (never raw paths), known HTTP methods,
registered gRPC methods, codecs and strategies under a budget; a client choosing what it
sends cannot grow the server's memory through label values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedgate.core.messages import ClientState, FederationStatus, RoundOutcome, RoundRecord, RunState
from fedgate.core.observer import Observable
from fedgate.core.service import FederationService
from fedgate.web.context import Reader, WebContext
from fedgate.web.metrics_wire import GrpcCallMetrics, RequestMetrics

log = logging.getLogger("fedgate.web.metrics")

PATH = "/metrics"
OTHER = "other"  # the label value past a label's budget
MAX_LABEL_VALUES = 64  # distinct codecs (or strategies, transports) kept apart
DIRECTIONS = ("up", "down")  # up: client to server (updates); down: models to clients
ROUND_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
WORK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# name -> (type, help): everything a scrape can show (Grafana's board queries only these)
METRICS: dict[str, tuple[str, str]] = {
    "fedgate_clients": ("gauge", "Clients of the run by state."),
    "fedgate_run_state": ("gauge", "1 for the run's current state, 0 for the others."),
    "fedgate_round": ("gauge", "The round open or about to open (1-based)."),
    "fedgate_model_version": ("gauge", "The global model's version."),
    "fedgate_accuracy": ("gauge", "The global model's last held-out accuracy."),
    "fedgate_loss": ("gauge", "The global model's last held-out loss."),
    "fedgate_rounds": ("counter", "Round attempts closed, by outcome."),
    "fedgate_round_duration_seconds": ("histogram", "Round attempts' duration, by outcome."),
    "fedgate_bytes": ("counter", "Payload bytes by transport, codec and direction."),
    "fedgate_decode_seconds": ("histogram", "Time to decode and check an update, by codec."),
    "fedgate_encode_seconds": ("histogram", "Time to encode a model version, by codec."),
    "fedgate_aggregation_seconds": ("histogram", "Time to finish a round's aggregate."),
    "fedgate_evaluation_seconds": ("histogram", "Time to evaluate a published model."),
    "fedgate_evaluation_wait_seconds": (
        "histogram",
        "Time a round's close waited for the last round's evaluation (0: none).",
    ),
    "fedgate_http_request_duration_seconds": (
        "histogram",
        "REST requests: seconds until the response's headers, by route template, "
        "method and status.",
    ),
    "fedgate_grpc_calls": ("counter", "gRPC calls by method and status code."),
    "fedgate_grpc_call_duration_seconds": (
        "histogram",
        "gRPC calls' duration by method (a streaming call: the whole stream).",
    ),
}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


class LabelBudget:
    """The first ``limit`` distinct values of a label as they are; the rest as ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


class FederationCollector(Collector):
    """What the run looks like now, read from its status at each scrape (on the event
    loop's thread: the ``/metrics`` route is a coroutine)."""

    def __init__(self, status: Callable[[], FederationStatus]) -> None:
        self.status = status

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.status()))

    def _families(self, status: FederationStatus | None = None) -> Iterable[Metric]:
        clients = gauge("fedgate_clients", ["state"])
        run_state = gauge("fedgate_run_state", ["state"])
        if status is not None:
            counts = dict.fromkeys(ClientState, 0)
            for client in status.clients:
                counts[client.state] += 1
            for state, count in counts.items():
                clients.add_metric([state.value], count)
            for phase in RunState:
                run_state.add_metric([phase.value], 1.0 if phase is status.state else 0.0)
        yield clients
        yield run_state
        values = (
            (status.round, status.model_version, status.accuracy, status.loss)
            if status is not None
            else (None, None, None, None)
        )
        names = ("fedgate_round", "fedgate_model_version", "fedgate_accuracy", "fedgate_loss")
        for name, value in zip(names, values, strict=True):
            family = gauge(name)
            if value is not None:
                family.add_metric([], float(value))  # NaN until the first evaluation
            yield family


def gauge(name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, METRICS[name][1], labels=labels)


class GatewayMetrics:
    """One gateway's metrics on a registry of their own; an `Observer` of its federation."""

    def __init__(self, status: Callable[[], FederationStatus] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._codec, self._transport, self._strategy = LabelBudget(), LabelBudget(), LabelBudget()
        self.rounds = self._counter("fedgate_rounds", ["outcome"])
        self.round_duration = self._histogram(
            "fedgate_round_duration_seconds", ["outcome"], ROUND_BUCKETS
        )
        self.bytes = self._counter("fedgate_bytes", ["transport", "codec", "direction"])
        self.decode = self._histogram("fedgate_decode_seconds", ["codec"], WORK_BUCKETS)
        self.encode = self._histogram("fedgate_encode_seconds", ["codec"], WORK_BUCKETS)
        self.aggregation = self._histogram(
            "fedgate_aggregation_seconds", ["strategy"], WORK_BUCKETS
        )
        self.evaluation = self._histogram("fedgate_evaluation_seconds", [], WORK_BUCKETS)
        self.evaluation_wait = self._histogram("fedgate_evaluation_wait_seconds", [], WORK_BUCKETS)
        self.requests = self._histogram(
            "fedgate_http_request_duration_seconds",
            ["route", "method", "status"],
            LATENCY_BUCKETS,
        )
        self.grpc_calls = self._counter("fedgate_grpc_calls", ["method", "code"])
        self.grpc_duration = self._histogram(
            "fedgate_grpc_call_duration_seconds", ["method"], LATENCY_BUCKETS
        )
        for outcome in RoundOutcome:  # every outcome shows, at 0 until it happens
            self.rounds.labels(outcome.value)
        if status is not None:
            self.registry.register(FederationCollector(status))

    def _counter(self, name: str, labels: list[str]) -> Counter:
        return Counter(name, METRICS[name][1], labels, registry=self.registry)

    def _histogram(self, name: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, METRICS[name][1], labels, registry=self.registry, buckets=buckets)

    # ---- the core's Observer port ---------------------------------------------------------

    def round_closed(self, record: RoundRecord) -> None:
        self.rounds.labels(record.outcome.value).inc()
        self.round_duration.labels(record.outcome.value).observe(max(record.duration_s, 0.0))

    def traffic(self, transport: str, codec: str, up: int, down: int) -> None:
        transport, codec = self._transport(transport), self._codec(codec)
        for direction, count in zip(DIRECTIONS, (up, down), strict=True):
            if count > 0:
                self.bytes.labels(transport, codec, direction).inc(count)

    def decoded(self, codec: str, seconds: float) -> None:
        self.decode.labels(self._codec(codec)).observe(seconds)

    def encoded(self, codec: str, seconds: float) -> None:
        self.encode.labels(self._codec(codec)).observe(seconds)

    def aggregated(self, strategy: str, seconds: float) -> None:
        self.aggregation.labels(self._strategy(strategy)).observe(seconds)

    def evaluated(self, seconds: float) -> None:
        self.evaluation.observe(seconds)

    def evaluation_waited(self, seconds: float) -> None:
        self.evaluation_wait.observe(seconds)

    # ---- the edges (fedgate.web.metrics_wire), with bounded labels already ----------------

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).observe(seconds)

    def grpc_call(self, method: str, code: str, seconds: float | None) -> None:
        self.grpc_calls.labels(method, code).inc()
        if seconds is not None:
            self.grpc_duration.labels(method).observe(seconds)

    def exposition(self) -> bytes:
        """The text exposition format, as Prometheus scrapes it."""
        return generate_latest(self.registry)


def exported_names() -> frozenset[str]:
    """Every sample name a scrape may show (``fedgate_bytes_total``,
    ``fedgate_round_duration_seconds_bucket``...): what a dashboard may query."""
    return frozenset(
        name + suffix for name, (kind, _) in METRICS.items() for suffix in SUFFIXES[kind]
    )


def metrics_for(context: WebContext) -> GatewayMetrics:
    """The metrics of the federation ``context`` serves: one set per federation, kept
    among its observers, made by whichever installer (REST or gRPC) asks first."""
    federation: FederationService = context.federation
    if not isinstance(federation, Observable):
        log.warning("metrics: this federation reports no rounds or bytes; clients only")
        return GatewayMetrics(federation.status)
    for observer in federation.observers:
        if isinstance(observer, GatewayMetrics):
            return observer
    metrics = GatewayMetrics(federation.status)
    federation.observers.add(metrics)
    return metrics


def install(app: FastAPI, context: WebContext) -> None:
    """``GET /metrics`` and request latency on the REST app."""
    metrics = metrics_for(context)

    async def scrape(caller: Reader) -> Response:
        # on the loop's thread: the federation's status is read where it is kept
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        PATH,
        scrape,
        methods=["GET"],
        tags=["metrics"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
    )
    app.add_middleware(RequestMetrics, observe=metrics.request)


def grpc_interceptors(context: WebContext) -> tuple[GrpcCallMetrics, ...]:
    """The interceptor that counts gRPC calls by method and code."""
    return (GrpcCallMetrics(metrics_for(context).grpc_call),)
