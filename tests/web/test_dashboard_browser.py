"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real `fedgate serve` with four real client processes on loopback.

One server and one browser serve every test here, in order: the checks follow a run as an
operator would (sign in, watch clients and accuracy, change the next rounds, pause, kick,
ask the model, stop). Screenshots go to runs/screenshots/. Without /usr/bin/chromium the
tests skip (``make chromium`` installs it); with FEDGATE_REQUIRE_BROWSER=1 (CI) they fail.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from fedgate.core.data import load_dataset
from fedgate.run.launch import ServerProcess, start_client, start_server, stop_process

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ENV = "FEDGATE_REQUIRE_BROWSER"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"
CLIENTS = (("grpc", "raw"), ("rest", "msgpack"), ("grpc", "bf16-zstd"), ("rest", "int8-zstd"))
SERVE_ARGS = [
    *("--rounds", "1000", "--clients-per-round", "4", "--min-clients", "2"),
    *("--deadline", "20", "--local-epochs", "2"),
]
WAIT_MS = 20_000  # for what the run does on its own: rounds closing, states changing
JOIN_WAIT_MS = 60_000  # four client processes loading torch at once, on a busy machine
GONE = ("left", "failed")

# Records every state each client's cell shows, as the page changes it (before any script
# of the page runs, so nothing is missed): {client id: [state, state, ...]}; and helpers
# for the waits (the page's Content-Security-Policy allows no eval: waits call functions).
STATE_RECORDER = r"""
window.seenStates = {};
new MutationObserver(() => {
  for (const cell of document.querySelectorAll("#clients td.state")) {
    const id = cell.parentElement.dataset.clientId;
    const seen = (window.seenStates[id] ||= []);
    if (cell.textContent && seen.at(-1) !== cell.textContent) seen.push(cell.textContent);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
window.points = (chart) => Number(document.querySelector(chart).dataset.points);
window.completed = () =>
  Number(/\((\d+) completed\)/.exec(document.querySelector("#round").textContent)[1]);
"""


def require_browser() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium package"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_browser()
    workdir = tmp_path_factory.mktemp("dashboard")
    served = start_server(SERVE_ARGS, workdir)
    clients = [
        start_client(
            served,
            transport,
            [
                "--codec",
                codec,
                "--name",
                f"client-{i}",
                "--index",
                str(i),
                "--of",
                "4",
                "--threads",
                "1",
            ],
            workdir / f"client-{i}.log",
        )
        for i, (transport, codec) in enumerate(CLIENTS)
    ]
    try:
        yield served
    finally:
        for process in clients:
            process.terminate()  # all at once: each takes a moment to leave
        for process in clients:
            stop_process(process)
        served.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_browser()
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data dir
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=BROWSER_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def dashboard(browser: Any, server: ServerProcess) -> Any:
    """The dashboard, signed in with the operator token through its form."""
    page = browser.new_page()
    page.add_init_script(STATE_RECORDER)
    page.errors = []  # what the page's own code got wrong: script errors, CSP refusals
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            page.errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.goto(f"{server.http_url}/")
    page.fill("#token", server.admin_token)
    page.click("#token-form button")
    page.wait_for_selector("#main", state="visible")
    return page


def shot(page: Any, name: str, *, full: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def completed(page: Any) -> int:
    """Rounds completed, as the run panel says."""
    found = re.search(r"\((\d+) completed\)", page.inner_text("#round"))
    assert found, page.inner_text("#round")
    return int(found.group(1))


@pytest.fixture
def idle_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server no client process joins: the test joins by hand (its client sends no
    heartbeats, so the timeout outlasts the test)."""
    require_browser()
    served = start_server(["--min-clients", "2", "--heartbeat-timeout", "120"], tmp_path)
    try:
        yield served
    finally:
        served.stop()


def test_the_phase_counts_ready_clients_apart_from_starting_ones(
    browser: Any, idle_server: ServerProcess
) -> None:
    """A round opens on clients that have asked for work: while the run waits, the run
    panel counts those, and the joined ones that have not asked yet (starting) apart."""
    page = browser.new_page()
    page.goto(f"{idle_server.http_url}/")
    page.fill("#token", idle_server.admin_token)
    page.click("#token-form button")
    page.wait_for_selector("#phase:text-is('waiting: 0 ready, 2 needed')")
    api = f"{idle_server.http_url}/api/v1"
    key = {"Authorization": f"Bearer {idle_server.enrolment_key}"}
    body = {"name": "by-hand", "codec": "raw", "num_examples": 10}
    joined = httpx.post(f"{api}/clients", json=body, headers=key, timeout=10.0)
    assert joined.status_code == 201, joined.text
    page.wait_for_selector("#phase:text-is('waiting: 0 ready, 2 needed, 1 starting')")
    client_id, token = joined.json()["client_id"], joined.json()["token"]
    asked = httpx.get(
        f"{api}/clients/{client_id}/task",
        params={"wait_s": 0},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )
    assert asked.status_code == 200 and asked.json()["kind"] == "wait", asked.text
    page.wait_for_selector("#phase:text-is('waiting: 1 ready, 2 needed')")
    shot(page, "dashboard-waiting")
    page.close()


def test_without_the_token_the_page_shows_nothing_and_the_api_refuses(
    browser: Any, server: ServerProcess
) -> None:
    page = browser.new_page()  # a tab of its own: no token in its session storage
    page.goto(f"{server.http_url}/")
    page.wait_for_selector("#auth", state="visible")
    assert page.is_hidden("#main")
    assert page.locator("#clients tbody tr").count() == 0
    statuses = page.evaluate(
        """async () => Promise.all([
            fetch("/api/v1/dashboard/status").then((r) => r.status),
            fetch("/api/v1/status").then((r) => r.status),
            fetch("/api/v1/run/pause", {method: "POST"}).then((r) => r.status),
            fetch("/api/v1/run/pause", {method: "POST", headers: {Authorization: "Bearer x"}})
                .then((r) => r.status),
            fetch("/api/v1/models").then((r) => r.status),
            fetch("/api/v1/predict", {method: "POST", body: "[]"}).then((r) => r.status),
        ])"""
    )
    assert statuses == [401, 401, 401, 401, 401, 401]
    shot(page, "dashboard-sign-in")
    page.fill("#token", "not-the-token")
    page.click("#token-form button")
    page.wait_for_selector("#auth-error:has-text('refused')")
    assert page.is_hidden("#main")
    page.close()


def test_clients_appear_and_change_state_live(dashboard: Any) -> None:
    rows = dashboard.locator("#clients tbody tr")
    dashboard.wait_for_function(
        "() => document.querySelectorAll('#clients tbody tr').length === 4", timeout=JOIN_WAIT_MS
    )
    names = sorted(rows.nth(i).locator("td.name").inner_text() for i in range(4))
    assert names == [f"client-{i}" for i in range(4)]
    transports = sorted(rows.nth(i).locator("td.transport").inner_text() for i in range(4))
    assert transports == ["grpc", "grpc", "rest", "rest"]
    # each client's state cell changes while the page watches (training, ready, ...)
    dashboard.wait_for_function(
        """() => {
            const seen = Object.values(window.seenStates);
            return seen.length === 4 && seen.every((states) =>
                states.length >= 3 && states.includes("training"));
        }"""
    )
    # and the activity log has every transition, also those between two snapshots
    for state in ("ready", "training", "uploading", "finished"):
        dashboard.wait_for_selector(f"#activity li[data-state='{state}']")
    assert dashboard.inner_text("#live") == "live"


def test_accuracy_is_charted_as_rounds_complete(dashboard: Any) -> None:
    chart = "#chart-accuracy"
    dashboard.wait_for_function(f"() => points('{chart}') >= 5")  # a few, for the picture
    before = int(dashboard.get_attribute(chart, "data-points"))
    dashboard.wait_for_function(f"() => points('{chart}') > {before}")
    points = int(dashboard.get_attribute(chart, "data-points"))
    assert dashboard.locator(f"{chart} circle").count() == points
    assert points <= completed(dashboard)  # one point per completed round it has seen
    accuracy = float(dashboard.inner_text("#accuracy"))
    assert 0.0 < accuracy <= 1.0
    path = shot(dashboard, "dashboard-mid-run")
    assert path.stat().st_size > 10_000


def test_fewer_clients_per_round_show_in_the_next_rounds_participants(dashboard: Any) -> None:
    dashboard.wait_for_selector("#rounds tbody tr[data-outcome='completed']")
    assert dashboard.get_attribute("#rounds tbody tr td.participants", "data-selected") == "4"
    dashboard.fill("#config-form [name=clients_per_round]", "2")
    dashboard.click("#config-form button[type=submit]")
    dashboard.wait_for_selector("#config-message:has-text('applies from round')")
    message = dashboard.inner_text("#config-message")
    first = int(re.search(r"applies from round (\d+)", message).group(1))  # type: ignore[union-attr]
    assert "clients_per_round 2" in message
    row = f"#rounds tbody tr[data-round='{first}'][data-outcome='completed']"
    dashboard.wait_for_selector(row)
    assert dashboard.get_attribute(f"{row} td.participants", "data-selected") == "2"
    assert dashboard.get_attribute(f"{row} td.participants", "data-count") == "2"
    assert "now 2" in dashboard.inner_text("#config-form")
    shot(dashboard, "dashboard-two-per-round")


def test_pause_stops_new_rounds(dashboard: Any) -> None:
    dashboard.click("#pause")
    dashboard.wait_for_selector("#run-state:text-is('paused')")
    # the open round runs to its end; then none opens
    dashboard.wait_for_selector("#phase:text-is('paused')")
    paused_at = completed(dashboard)
    dashboard.wait_for_timeout(2_500)  # many rounds' time: rounds take well under a second
    assert completed(dashboard) == paused_at
    assert dashboard.inner_text("#phase") == "paused"
    assert dashboard.is_enabled("#resume") and dashboard.is_disabled("#pause")
    shot(dashboard, "dashboard-paused")
    dashboard.click("#resume")
    dashboard.wait_for_function(f"() => completed() > {paused_at}")


def test_kick_removes_a_client(dashboard: Any, server: ServerProcess) -> None:
    row = dashboard.locator("#clients tbody tr:not([data-state='left']):not([data-state='failed'])")
    victim = row.first.get_attribute("data-client-id")
    dashboard.once("dialog", lambda dialog: dialog.accept())
    dashboard.click(f"#clients tr[data-client-id='{victim}'] button.kick")
    kicked = f"#clients tr[data-client-id='{victim}']"
    dashboard.wait_for_selector(f"{kicked}[data-state='left']")
    # the row's state and its button come from one push, rendered in one pass
    dashboard.wait_for_selector(f"{kicked} button.kick:disabled", timeout=5_000)
    assert "kicked from the dashboard" in dashboard.get_attribute(f"{kicked} td.state", "title")
    status = server.status()
    (view,) = [c for c in status["clients"] if c["client_id"] == victim]
    assert (view["state"], view["reason"]) == ("left", "kicked from the dashboard")
    shot(dashboard, "dashboard-kicked")


def digit_png() -> tuple[bytes, int]:
    """A held-out digit as a person would upload it: a 64x64 grey PNG, and its label."""
    data = load_dataset("digits")
    pixels = (data.x_test[0, 0].numpy() * 255).round().astype("uint8")
    image = Image.fromarray(pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), int(data.y_test[0])


def test_an_uploaded_digit_gets_a_prediction(
    dashboard: Any, server: ServerProcess, tmp_path: Path
) -> None:
    # an operator deploys an older version from the models panel: the oldest not deployed
    # (the best version is deployed by itself and may change while the run goes on)...
    oldest = dashboard.locator("#model-table tbody tr:not(.deployed)").last
    version = oldest.get_attribute("data-version")
    # by its version: the table gains a row with every round
    dashboard.click(f"#model-table tr[data-version='{version}'] button.deploy")
    dashboard.wait_for_selector(f"#model-table tr.deployed[data-version='{version}']")
    assert "deployed by an operator" in dashboard.inner_text("#deployed")
    # ...and a person asks it about a digit, on the inference page
    png, _ = digit_png()
    image = tmp_path / "digit.png"
    image.write_bytes(png)
    dashboard.goto(f"{server.http_url}/predict")  # same tab: the token stays in the session
    dashboard.wait_for_selector(f"#model[data-version='{version}']")
    dashboard.set_input_files("#file", str(image))
    dashboard.wait_for_selector("#answer[data-label]")
    assert f"model version {version}" in dashboard.inner_text("#answer")
    assert dashboard.locator("#probabilities rect").count() == 10
    # the page shows what the API answers for the same bytes
    answer = httpx.post(
        f"{server.http_url}/api/v1/predict",
        content=png,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {server.admin_token}"},
        timeout=10.0,
    )
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["model_version"] == int(version)
    assert dashboard.get_attribute("#answer", "data-label") == str(reply["predictions"][0]["class"])
    shot(dashboard, "predict")


def test_stop_ends_the_run_and_it_is_listed(dashboard: Any, server: ServerProcess) -> None:
    dashboard.goto(f"{server.http_url}/")
    dashboard.wait_for_selector("#main", state="visible")
    dashboard.once("dialog", lambda dialog: dialog.accept())
    dashboard.click("#stop")
    dashboard.wait_for_selector("#run-state:text-is('stopped')")
    assert dashboard.is_disabled("#pause") and dashboard.is_disabled("#stop")
    shot(dashboard, "dashboard-stopped", full=True)
    assert server.status()["state"] == "stopped"
    # the run is listed with the store's past runs, with its exports
    listed = f"#run-table tr[data-run-id='{server.run_id}']"
    dashboard.wait_for_selector(f"{listed} td:text-is('stopped')")
    with dashboard.expect_download() as csv_download:
        dashboard.click(f"{listed} button.export-csv")
    assert csv_download.value.suggested_filename == f"fedgate-run-{server.run_id}.csv"
    assert dashboard.errors == []
