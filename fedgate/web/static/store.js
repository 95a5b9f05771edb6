// What the run store keeps, shown: the run's model versions (download in a codec, deploy
// for inference) and past runs (with CSV / JSON export). Refreshed when the status says
// something changed (a new model version, a run that ended), not on a timer.

import { call, download, el, fixed, getJson } from "./api.js";

const $ = (id) => document.getElementById(id);

function items(body, key) {
  return Array.isArray(body) ? body : body?.[key] ?? [];
}

function note(id, error) {
  $(id).textContent = error
    ? error.status === 404 ? "not served by this server" : error.message : "";
}

let loading = null; // one refresh at a time; a request while one runs asks for another
let again = false;

export async function refreshModels() {
  if (loading) {
    again = true;
    return;
  }
  loading = loadModels().finally(() => {
    loading = null;
    if (again) {
      again = false;
      refreshModels();
    }
  });
}

async function loadModels() {
  let models;
  try {
    models = items(await getJson("/api/v1/models"), "models");
    note("models-message");
  } catch (error) {
    return note("models-message", error);
  }
  let deployed = null;
  try {
    deployed = await getJson("/api/v1/models/deployed");
  } catch {
    // none deployed yet, or no inference on this server
  }
  const version = deployed?.version ?? deployed?.model_version;
  $("deployed").textContent = deployed
    ? `deployed for inference: version ${version}${deployed.accuracy != null ? ` (accuracy ${fixed(deployed.accuracy)})` : ""}`
    : "no version deployed for inference yet";
  const rows = [...models].reverse().map((m) => modelRow(m, m.version === version));
  $("model-table").tBodies[0].replaceChildren(...rows);
}

function modelRow(model, deployed) {
  const fetchIt = () => download(
    `/api/v1/models/${model.version}?codec=${encodeURIComponent($("codec").value)}`,
    `model-v${model.version}.${$("codec").value}`,
  ).catch((error) => note("models-message", error));
  const deploy = async () => {
    try {
      await call(`/api/v1/models/${model.version}/deploy`, { method: "POST" });
      $("models-message").textContent = `version ${model.version} deployed`;
      refreshModels();
    } catch (error) {
      note("models-message", error);
    }
  };
  return el("tr", { "data-version": model.version, class: deployed ? "deployed" : undefined },
    el("td", {}, String(model.version)),
    el("td", {}, model.round ?? "–"),
    el("td", {}, fixed(model.accuracy)),
    el("td", {}, el("button", { type: "button", onclick: fetchIt }, "download")),
    el("td", {}, el("button", { type: "button", onclick: deploy, disabled: deployed }, deployed ? "deployed" : "deploy")));
}

export async function refreshRuns() {
  let runs;
  try {
    runs = items(await getJson("/api/v1/runs"), "runs");
    note("runs-message");
  } catch (error) {
    return note("runs-message", error);
  }
  $("run-table").tBodies[0].replaceChildren(...runs.map(runRow));
}

function runRow(run) {
  const id = run.run_id;
  const exporter = (format) => el("button", {
    type: "button",
    onclick: () => download(`/api/v1/runs/${encodeURIComponent(id)}/export?format=${format}`,
      `run-${id}.${format}`).catch((error) => note("runs-message", error)),
  }, format.toUpperCase());
  const started = run.created_at ? new Date(run.created_at * 1000).toLocaleString() : "–";
  const config = run.config ? Object.entries(run.config).map(([k, v]) => `${k}=${v}`).join(" ") : "";
  return el("tr", { "data-run-id": id },
    el("td", {}, id),
    el("td", {}, run.state ?? "–"),
    el("td", {}, started),
    el("td", {}, `${run.dataset ?? "?"} / ${run.model ?? "?"}`),
    el("td", {}, `${run.rounds_completed ?? "?"} of ${run.rounds ?? "?"}`),
    el("td", {}, fixed(run.final_accuracy ?? run.accuracy)),
    el("td", { class: "config small" }, config),
    el("td", {}, exporter("csv"), " ", exporter("json")));
}
