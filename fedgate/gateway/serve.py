"""`fedgate serve`: a federation on both transports until its run ends or a signal arrives."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgate.core.accounts import Accounts
from fedgate.core.config import RunConfig
from fedgate.core.data import Dataset, load_dataset
from fedgate.core.enrolment import JoinLimits
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.inference import Deployment, InputSpec, Predictor
from fedgate.core.messages import FINAL_RUN_STATES, FederationStatus, RunState
from fedgate.core.ports import RunMeta, StoredRun
from fedgate.errors import ConfigError
from fedgate.gateway.access_notes import print_access_notes
from fedgate.gateway.heap import settle_heap
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.run.results import results_document, write_json
from fedgate.store import SqlStore, open_store, printable
from fedgate.transport.servers import Extensions
from fedgate.web.app import web_extensions
from fedgate.web.context import WebContext

log = logging.getLogger("fedgate.serve")
LINGER_S = 5.0  # after the run ends, how long to wait for clients to take their STOP


@dataclass(frozen=True)
class ServeOptions:
    gateway: GatewaySettings
    run: RunConfig
    dataset: str = "digits"
    model: str = "cnn"
    ready_file: Path | None = None  # JSON with the bound ports, once both are listening
    results_file: Path | None = None  # the results document, when the run ends
    exit_when_done: bool = False
    enrolment: str = "key"  # "open": anyone may join (see `access_notes`)
    max_concurrent_uploads: int = 32
    join_limits: JoinLimits = field(default_factory=JoinLimits)
    db: str = "sqlite:///runs/fedgate.db"  # the run store (`fedgate.store.DEFAULT_DB_URL`)
    new_run: bool = False  # start afresh even if the store holds an unfinished run
    public_dashboard: bool = False  # read-only web views need no credential
    keep_serving_s: float = 0.0  # with exit_when_done: serve this long after the run ends
    data_dir: Path | None = None  # cifar10, cifar100, imagefolder; None: $FEDGATE_DATA_DIR
    public_predict: bool = False  # POST /api/v1/predict (and gRPC Predict) need no credential
    evaluate_in: str = "process"  # or "thread" (`fedgate.core.factory.evaluator_in`)


async def serve(options: ServeOptions) -> FederationStatus:
    # opening upgrades the schema to the current revision: a moment, once, before serving
    store = await asyncio.to_thread(open_store, options.db)
    try:
        return await _serve(options, store)
    finally:
        await asyncio.to_thread(store.close)


async def _serve(options: ServeOptions, store: SqlStore) -> FederationStatus:
    dataset = await asyncio.to_thread(
        load_dataset, options.dataset, options.run.seed, options.data_dir
    )
    federation = await asyncio.to_thread(open_run, options, store, dataset)
    settings = with_web(options, federation, store, InputSpec.of(dataset))
    started = time.perf_counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(federation, settings) as gateway:
        announce(gateway, options)
        settle_heap()  # start-up's objects out of the collector's full passes (`heap`)
        run = federation.start()
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
        if options.exit_when_done:
            waiters.add(run)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if federation.state in FINAL_RUN_STATES:
            await _let_clients_leave(federation)
        status = federation.status()
        if options.results_file is not None:
            config = {
                "dataset": options.dataset,
                "model": options.model,
                **dataclasses.asdict(federation.config),  # a resumed run's own
            }
            document = results_document(config, status, time.perf_counter() - started)
            write_json(options.results_file, document)
        await _keep_serving(options, federation, stop)
    return status


def with_web(
    options: ServeOptions,
    federation: Federation,
    store: SqlStore,
    inputs: InputSpec | None = None,
) -> GatewaySettings:
    """The gateway's settings with the web side (dashboard, inference, runs, metrics) added
    to whatever extensions they carry already (inference when ``inputs`` says what the
    model takes)."""
    context = WebContext(
        federation,
        runs=store.runs,
        admin_token=options.gateway.admin_token,
        public_dashboard=options.public_dashboard,
        dataset=options.dataset,
        model=options.model,
        deployment=None if inputs is None else inference_for(options, federation, store, inputs),
        public_predict=options.public_predict,
    )
    web, own = web_extensions(context), options.gateway.extensions
    extensions = Extensions(
        rest=own.rest + web.rest,
        grpc=own.grpc + web.grpc,
        grpc_interceptors=own.grpc_interceptors + web.grpc_interceptors,
    )
    return dataclasses.replace(options.gateway, extensions=extensions)


def inference_for(
    options: ServeOptions, federation: Federation, store: SqlStore, inputs: InputSpec
) -> Deployment:
    """Inference on the run's models, for the data set's inputs: the best version the
    store holds, or the one an operator deploys."""
    predictor = Predictor(options.model, inputs)
    return Deployment(
        store.runs, federation.run_id, predictor, published=lambda: federation.models.version
    )


async def _keep_serving(options: ServeOptions, federation: Federation, stop: asyncio.Event) -> None:
    """After a finished run (results written), serve a while longer for people to look at
    the dashboard (`fedgate demo --keep-serving`); a signal still ends it at once."""
    if options.keep_serving_s <= 0 or stop.is_set() or federation.state not in FINAL_RUN_STATES:
        return
    print(f"run over; serving {options.keep_serving_s:g} s more (Ctrl-C ends it)", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), options.keep_serving_s)


def open_run(options: ServeOptions, store: SqlStore, dataset: Dataset | None = None) -> Federation:
    """The store's unfinished run, resumed; or a new run (stopping the unfinished one when
    ``new_run`` asks). A resumed run keeps its own config: run options are not applied.
    ``dataset``: the options' data set, loaded already (else it is loaded here)."""
    if dataset is None:
        dataset = load_dataset(options.dataset, options.run.seed, options.data_dir)
    unfinished = None if options.new_run else store.runs.unfinished_run()
    if options.new_run and (old := store.runs.unfinished_run()) is not None:
        store.runs.set_run_state(old.meta.run_id, RunState.STOPPED)
        print(f"run {old.meta.run_id} in {printable(options.db)} marked stopped (--new-run)")
    if unfinished is not None:
        _check_same_setup(unfinished, options)
    federation = build_federation(
        dataset,
        options.model,
        options.run,
        resume=unfinished,
        evaluate_in=options.evaluate_in,
        max_update_bytes=options.gateway.max_update_bytes,
        max_concurrent_uploads=options.max_concurrent_uploads,
        join_limits=options.join_limits,
        enrolment=options.enrolment,
        store=store.runs,
        keys=store.keys,
        accounts=Accounts(store.users, store.sessions),
        meta=RunMeta("", options.dataset, options.model),
    )
    where = printable(options.db)
    if unfinished is None:
        print(f"store    {where}: new run {federation.run_id}", flush=True)
    else:
        print(
            f"store    {where}: resuming run {federation.run_id} at round "
            f"{federation.round_number} (model version {federation.models.version})",
            flush=True,
        )
    return federation


def _check_same_setup(stored: StoredRun, options: ServeOptions) -> None:
    meta = stored.meta
    if (meta.dataset, meta.model) != (options.dataset, options.model):
        raise ConfigError(
            f"{printable(options.db)} holds unfinished run {meta.run_id} on dataset "
            f"{meta.dataset!r} with model {meta.model!r}, not {options.dataset!r}/"
            f"{options.model!r}: serve it with those, pass --new-run, or use another --db"
        )


def announce(gateway: Gateway, options: ServeOptions) -> None:
    settings = gateway.settings
    tls = settings.tls
    security = "plain text" if tls is None else "mutual TLS" if tls.mutual else "TLS"
    print(f"fedgate serving run {gateway.federation.run_id} ({security})", flush=True)
    services = "fedgate.v1.Federation, fedgate.v1.Operator, fedgate.v1.Inference"
    print(f"  gRPC     {gateway.grpc_target}  ({services})")
    print(f"  REST     {gateway.http_url}/api/v1   docs {gateway.http_url}/docs")
    print(f"  dashboard {gateway.http_url}/   inference {gateway.http_url}/predict")
    curl_tls = "" if tls is None else " --cacert CA.pem"  # the CA that signed --tls-cert
    if tls is not None and tls.mutual:
        curl_tls += " --cert CLIENT.pem --key CLIENT.key"
    print(
        f"  status   curl{curl_tls} -H 'Authorization: Bearer {settings.admin_token}' "
        f"{gateway.http_url}/api/v1/status",
        flush=True,
    )
    warning = plain_text_warning(settings)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print_access_notes(gateway)
    if options.ready_file is not None:
        # it holds the admin token: owner-only from the moment it exists
        write_json(
            options.ready_file,
            {
                "grpc_port": gateway.grpc_port,
                "http_port": gateway.http_port,
                "addresses": gateway.addresses,
                "admin_token": settings.admin_token,
                "run_id": gateway.federation.run_id,
                "tls": tls is not None,
            },
            private=True,
        )


def plain_text_warning(settings: GatewaySettings) -> str:
    """A warning when the gateway listens beyond loopback without TLS ("" when it does not)."""
    if not settings.exposed_in_plain_text:
        return ""
    return (
        f"WARNING: serving on {settings.host} without TLS: client tokens, the admin token and "
        "every model travel in plain text and can be read or changed on the network. "
        "Pass --tls-cert and --tls-key (and --tls-client-ca for mutual TLS)."
    )


async def _let_clients_leave(federation: Federation) -> None:
    deadline = time.monotonic() + LINGER_S
    while federation.clients.active() and time.monotonic() < deadline:
        await federation.wait_for_change(deadline - time.monotonic())
