// What the run store keeps, shown: the run's model versions (download in a codec, deploy
// for inference) and past runs (config, final accuracy, CSV / JSON export). Refreshed when
// the status says something changed (a new model version, a run that ended), not on a timer.

import { call, download, el, fixed, getJson } from "./api.js";

const $ = (id) => document.getElementById(id);
// a run's settings worth a glance in the runs table (the JSON export has them all)
const RUN_SETTINGS = ["rounds", "clients_per_round", "min_clients", "strategy", "learning_rate", "local_epochs"];

function note(id, error) {
  $(id).classList.toggle("error", Boolean(error));
  $(id).textContent = error ? (error.status === 404 ? "not served by this server" : error.message) : "";
}

// One load at a time; a refresh asked for meanwhile runs once the current one is done.
function serialised(load) {
  let running = null;
  let again = false;
  const refresh = () => {
    if (running) {
      again = true;
      return;
    }
    running = load().finally(() => {
      running = null;
      if (again) {
        again = false;
        refresh();
      }
    });
  };
  return refresh;
}

export const refreshModels = serialised(async () => {
  let list;
  try {
    list = await getJson("/api/v1/models");
    note("models-message");
  } catch (error) {
    return note("models-message", error);
  }
  const deployed = list.models.find((m) => m.deployed);
  $("deployed").textContent = deployed
    ? `inference uses version ${deployed.version} (accuracy ${fixed(deployed.accuracy)}), ` +
      (list.pinned ? "deployed by an operator" : "the best so far")
    : "no version to deploy yet";
  $("follow-best").hidden = !list.pinned;
  const rows = [...list.models].reverse().map(modelRow);
  $("model-table").tBodies[0].replaceChildren(...rows);
});

async function deploy(version) {
  try {
    const done = await (await call(`/api/v1/models/${version}/deploy`, { method: "POST" })).json();
    $("models-message").textContent = `version ${done.version} deployed for inference`;
  } catch (error) {
    note("models-message", error);
  }
  refreshModels();
}

function modelRow(model) {
  const save = () => {
    const codec = $("codec").value;
    download(`/api/v1/models/${model.version}?codec=${encodeURIComponent(codec)}`, `model-v${model.version}`)
      .catch((error) => note("models-message", error));
  };
  return el("tr", { "data-version": model.version, class: model.deployed ? "deployed" : undefined },
    el("td", {}, String(model.version)),
    el("td", {}, String(model.round)),
    el("td", {}, fixed(model.accuracy)),
    el("td", {}, el("button", { type: "button", class: "download", onclick: save }, "download")),
    el("td", {}, el("button", {
      type: "button", class: "deploy", disabled: model.deployed, onclick: () => deploy(model.version),
    }, model.deployed ? "deployed" : "deploy")));
}

export function wireModels() {
  $("follow-best").addEventListener("click", () => deploy("best"));
}

export const refreshRuns = serialised(async () => {
  let list;
  try {
    list = await getJson("/api/v1/runs");
    note("runs-message");
  } catch (error) {
    return note("runs-message", error);
  }
  $("run-table").tBodies[0].replaceChildren(...list.runs.map(runRow));
});

async function showConfig(id, cell) {
  try {
    const run = await getJson(`/api/v1/runs/${encodeURIComponent(id)}`);
    cell.textContent = RUN_SETTINGS.map((k) => `${k} ${run.config[k]}`).join(", ");
  } catch (error) {
    cell.textContent = error.message;
  }
}

function runRow(run) {
  const id = run.run_id;
  const exporter = (format) => el("button", {
    type: "button",
    class: `export-${format}`,
    onclick: () => download(`/api/v1/runs/${encodeURIComponent(id)}/export?format=${format}`, `run-${id}.${format}`)
      .catch((error) => note("runs-message", error)),
  }, format.toUpperCase());
  const config = el("td", { class: "config small" });
  config.append(el("button", { type: "button", onclick: () => showConfig(id, config) }, "show"));
  return el("tr", { "data-run-id": id, class: run.serving ? "serving" : undefined },
    el("td", {}, run.serving ? `${id} (this run)` : id),
    el("td", {}, run.state),
    el("td", {}, new Date(run.created_at * 1000).toLocaleString()),
    el("td", {}, `${run.dataset} / ${run.model}`),
    el("td", {}, `${run.rounds_completed} of ${run.rounds}`),
    el("td", {}, fixed(run.accuracy)),
    config,
    el("td", {}, exporter("csv"), " ", exporter("json")));
}
