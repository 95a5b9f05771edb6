// The dashboard: one status stream drives every panel; buttons and the form call the
// operator API. Nothing here reloads the page.

import { call, events, fixed, getJson, login, setToken, token, el, bytes } from "./api.js";
import { renderHistory } from "./history.js";
import { refreshModels, refreshRuns, wireModels } from "./store.js";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["finished", "stopped"]);
const GONE = new Set(["left", "failed"]);
const ACTIVITY_KEPT = 200;

let info = null; // GET /api/v1/dashboard: run id, public or not, the form's settings
let latest = null; // the last snapshot: {status, open_round}
let receivedAt = 0; // when it arrived (performance.now()), for the deadline countdown
let stream = null; // the AbortController of the status stream
const names = new Map(); // client id -> name, for the activity log

// ---- access ---------------------------------------------------------------------------

function askForAccess(reason) {
  $("auth").hidden = false;
  $("auth-error").textContent = reason || "";
  // without --public-dashboard nothing is shown until the credential is good
  if (!info || !info.public) $("main").hidden = true;
  $("token").focus();
}

function refused(error) {
  return error && (error.status === 401 || error.status === 403);
}

// Take a credential and check it before showing anything with it.
async function useCredential(obtain) {
  try {
    await obtain();
    await getJson("/api/v1/dashboard");
  } catch (error) {
    setToken("");
    $("auth-error").textContent = `refused: ${error.message}`;
    return;
  }
  start();
}

function wireAccess() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    useCredential(async () => setToken(value));
  });
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const password = $("login-password");
    useCredential(() => login($("login-name").value, password.value));
    password.value = "";
  });
  $("account").addEventListener("click", async () => {
    if (!token()) return askForAccess("");
    await call("/api/v1/logout", { method: "POST" }).catch(() => {});
    setToken("");
    stream?.abort();
    info = null;
    start();
  });
}

// ---- actions ----------------------------------------------------------------------------

// An operator call; its answer (the status right after it, with the round open then) is
// shown and returned. Not the last snapshot's open round: the stream may lag the answer,
// and a round that opened meanwhile would show as none (a pause would look settled).
async function act(path, options, messageId) {
  try {
    const status = await (await call(path, { method: "POST", ...options })).json();
    render({ status, open_round: status.open_round ?? null });
    return status;
  } catch (error) {
    $(messageId).textContent = error.message;
    $(messageId).classList.add("error");
    if (refused(error)) askForAccess(`${error.message}: actions need the operator token`);
    return null;
  }
}

function wireActions() {
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      if (action === "stop" && !confirm("Stop the run? The open round is abandoned.")) return;
      if (await act(`/api/v1/run/${action}`, {}, "run-message")) {
        say("run-message", `${action} sent`);
      }
    });
  }
  $("config-form").addEventListener("submit", submitConfig);
}

function say(id, text) {
  $(id).classList.remove("error");
  $(id).textContent = text;
}

async function kick(client) {
  if (!confirm(`Kick ${client.name}? It is dropped from an open round and must join again.`)) return;
  const path = `/api/v1/clients/${encodeURIComponent(client.client_id)}/kick`;
  await act(path, { json: { reason: "kicked from the dashboard" } }, "run-message");
}

// ---- the config form ----------------------------------------------------------------------

function buildForm(settings) {
  const form = $("config-form");
  form.replaceChildren();
  for (const s of settings) {
    let input;
    if (s.choices.length) {
      input = el("select", { name: s.name }, el("option", { value: "" }, "(keep)"),
        s.choices.map((c) => el("option", { value: c }, c)));
    } else {
      input = el("input", {
        name: s.name, type: "number", placeholder: "keep",
        step: s.kind === "int" ? "1" : "any",
        min: s.minimum ?? s.above ?? undefined, max: s.maximum ?? undefined,
      });
    }
    input.dataset.kind = s.kind;
    form.append(el("label", { title: s.help },
      el("span", {}, s.name.replaceAll("_", " ")), input,
      el("span", { class: "now muted", "data-now": s.name })));
  }
  form.append(el("button", { type: "submit" }, "Apply from the next round"));
}

async function submitConfig(event) {
  event.preventDefault();
  const changes = {};
  for (const input of event.target.querySelectorAll("[name]")) {
    if (input.value === "") continue;
    const kind = input.dataset.kind;
    changes[input.name] = kind === "int" ? parseInt(input.value, 10)
      : kind === "float" ? parseFloat(input.value) : input.value;
  }
  if (!Object.keys(changes).length) return say("config-message", "nothing to change");
  const status = await act("/api/v1/run/config", { method: "PATCH", json: changes }, "config-message");
  if (status) {
    // the status as the change landed: a round open then keeps its settings
    const open = status.state === "running" || latest?.open_round?.round === status.round;
    const from = open ? status.round + 1 : status.round;
    event.target.reset();
    say("config-message", `saved: applies from round ${from} (${describe(changes)})`);
  }
}

function describe(changes) {
  return Object.entries(changes).map(([k, v]) => `${k} ${v}`).join(", ");
}

// ---- rendering --------------------------------------------------------------------------

function render(snapshot) {
  const previous = latest?.status;
  latest = snapshot;
  receivedAt = performance.now();
  const status = snapshot.status;
  if (FINAL.has(status.state)) snapshot.open_round = null; // an open round was abandoned
  $("run-id").textContent = `run ${status.run_id}`;
  const badge = $("run-state");
  badge.textContent = status.state;
  badge.className = `badge state-${status.state}`;
  renderClients(status.clients); // first: the other panels name clients by it
  renderRun(status, snapshot.open_round);
  renderActivity(status.events || []);
  renderHistory(status);
  if (!previous || previous.model_version !== status.model_version) refreshModels();
  if (!previous || (previous.state !== status.state && FINAL.has(status.state))) refreshRuns();
}

// A round opens on clients that have asked for work: one that joined and has not asked yet
// (a client process still loading) is starting, and no round waits for it.
function phase(status, open) {
  if (open) return `${status.state}: round ${open.round} open`;
  if (status.state !== "waiting") return status.state;
  const active = status.clients.filter((c) => !GONE.has(c.state));
  const ready = active.filter((c) => c.state !== "joined").length;
  const starting = active.length - ready;
  return `waiting: ${ready} ready, ${status.config.min_clients} needed`
    + (starting ? `, ${starting} starting` : "");
}

function renderRun(status, open) {
  const config = status.config;
  $("round").textContent = `${status.round} of ${config.rounds} (${status.rounds_completed} completed)`;
  $("phase").textContent = phase(status, open);
  $("accuracy").textContent = fixed(status.accuracy);
  const active = status.clients.filter((c) => !GONE.has(c.state)).length;
  $("client-count").textContent = `${active} connected, ${status.clients.length} seen`;
  renderParticipants(status, open);
  const final = FINAL.has(status.state);
  $("pause").disabled = final || status.state === "paused";
  $("resume").disabled = status.state !== "paused";
  $("stop").disabled = final;
  for (const now of document.querySelectorAll("[data-now]")) {
    now.textContent = `now ${config[now.dataset.now]}`;
  }
  const pending = status.pending_config;
  const changed = pending ? Object.keys(pending).filter((k) => pending[k] !== config[k]) : [];
  $("pending").textContent = changed.length
    ? `pending for the next round: ${changed.map((k) => `${k} ${pending[k]}`).join(", ")}` : "";
}

function renderParticipants(status, open) {
  const list = $("participants");
  if (open) {
    $("participants-round").textContent = `round ${open.round} (open)`;
    const reported = new Set(open.reported);
    const dropped = new Set(open.dropped);
    list.replaceChildren(...open.selected.map((id) => el("li", {
      class: reported.has(id) ? "reported" : dropped.has(id) ? "dropped" : "pending",
      "data-client-id": id,
    }, names.get(id) || id)));
    return;
  }
  const last = status.history.at(-1);
  $("participants-round").textContent = last ? `round ${last.round} (closed)` : "";
  list.replaceChildren(...(last ? last.participants : []).map((id) =>
    el("li", { class: "reported", "data-client-id": id }, names.get(id) || id)));
}

function renderClients(clients) {
  const body = $("clients").tBodies[0];
  const rows = new Map([...body.rows].map((row) => [row.dataset.clientId, row]));
  const sorted = [...clients].sort((a, b) =>
    GONE.has(a.state) - GONE.has(b.state) || a.name.localeCompare(b.name));
  const fresh = sorted.map((client) => {
    names.set(client.client_id, client.name);
    const row = rows.get(client.client_id) || clientRow(client);
    updateRow(row, client);
    return row;
  });
  body.replaceChildren(...fresh);
}

function clientRow(client) {
  const cells = ["name", "state", "transport", "codec", "rounds", "up", "down", "seen"]
    .map((name) => el("td", { class: name }));
  const button = el("button", { type: "button", class: "kick", onclick: () => kick(client) }, "kick");
  return el("tr", { "data-client-id": client.client_id }, cells, el("td", {}, button));
}

function updateRow(row, client) {
  const cell = (name) => row.querySelector(`td.${name}`);
  const state = cell("state");
  if (state.textContent !== client.state) {
    state.textContent = client.state;
    state.className = `state state-${client.state}`;
    state.title = client.reason || "";
    row.dataset.state = client.state;
  }
  cell("name").textContent = client.name;
  cell("transport").textContent = client.transport;
  cell("codec").textContent = client.codec;
  cell("rounds").textContent = client.rounds_completed;
  cell("up").textContent = bytes(client.bytes_up);
  cell("down").textContent = bytes(client.bytes_down);
  cell("seen").textContent = `${client.last_seen_s.toFixed(1)} s ago`;
  row.querySelector("button.kick").disabled = GONE.has(client.state);
}

function renderActivity(fresh) {
  const log = $("activity");
  for (const event of fresh) {
    const at = new Date(event.at * 1000).toLocaleTimeString();
    const who = names.get(event.client_id) || event.client_id;
    log.prepend(el("li", { "data-state": event.state },
      `${at} ${who} → ${event.state}${event.reason ? ` (${event.reason})` : ""}`));
  }
  while (log.children.length > ACTIVITY_KEPT) log.lastElementChild.remove();
}

function tick() {
  const open = latest?.open_round;
  if (!open || FINAL.has(latest.status.state)) {
    $("deadline").textContent = "–";
    return;
  }
  const left = open.deadline_in_s - (performance.now() - receivedAt) / 1000;
  $("deadline").textContent = left > 0 ? `${left.toFixed(0)} s left` : "past due";
}

// ---- the stream ---------------------------------------------------------------------------

function setLive(live) {
  $("live").textContent = live ? "live" : "offline";
  $("live").className = live ? "live" : "muted";
}

async function follow() {
  stream?.abort();
  const controller = (stream = new AbortController());
  let delay = 500;
  while (!controller.signal.aborted) {
    try {
      for await (const message of events("/api/v1/dashboard/watch", controller.signal)) {
        setLive(true);
        delay = 500;
        render(JSON.parse(message.data));
      }
      setLive(false);
      if (latest && FINAL.has(latest.status.state)) {
        setTimeout(lastLook, 1500); // clients leave, the store records the end: a moment later
        return; // the run is over: no more changes are pushed
      }
    } catch (error) {
      setLive(false);
      if (controller.signal.aborted) return;
      if (refused(error)) return askForAccess(error.message);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

// After the run: the clients' last states and the run as the store keeps it.
async function lastLook() {
  try {
    render(await getJson("/api/v1/dashboard/status"));
  } catch {
    // the server may be gone already: what is shown stays
  }
  refreshRuns();
}

async function start() {
  try {
    info = await getJson("/api/v1/dashboard");
  } catch (error) {
    return askForAccess(refused(error) ? "" : error.message);
  }
  $("auth").hidden = true;
  $("main").hidden = false;
  $("account").textContent = token() ? "sign out" : "sign in";
  $("account").hidden = !token() && !info.public;
  buildForm(info.settings);
  const codec = $("codec");
  codec.replaceChildren(...info.codecs.map((c) => el("option", { value: c }, c)));
  refreshRuns();
  follow();
}

wireAccess();
wireActions();
wireModels();
setInterval(tick, 250);
start();
