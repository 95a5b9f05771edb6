// Codeless inference: drop an image, see the deployed model's class probabilities as bars.

import { call, getJson, setToken } from "./api.js";
import { stackedBars } from "./charts.js";

const $ = (id) => document.getElementById(id);
const BATCH = /\.(csv|npy)$/i;

function say(text, error = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", error);
}

function refused(error) {
  if (error.status === 401 || error.status === 403) {
    $("auth").hidden = false;
    return true;
  }
  return false;
}

async function showModel() {
  try {
    const model = await getJson("/api/v1/models/deployed");
    const version = model.version ?? model.model_version;
    const accuracy = model.accuracy != null ? `, held-out accuracy ${model.accuracy.toFixed(4)}` : "";
    $("model").textContent = `model version ${version}${accuracy}`;
  } catch (error) {
    refused(error);
    $("model").textContent = error.status === 404 ? "no model deployed yet" : error.message;
  }
}

function mediaType(file) {
  if (file.type) return file.type;
  return file.name.toLowerCase().endsWith(".npy") ? "application/x-npy" : "text/csv";
}

async function predict(file) {
  say(`predicting ${file.name}…`);
  $("answer").textContent = "";
  const headers = { "Content-Type": mediaType(file) };
  try {
    const response = await call("/api/v1/predict", { method: "POST", body: file, headers });
    if (BATCH.test(file.name)) return offer(await response.blob(), file.name);
    show(await response.json());
    say("");
  } catch (error) {
    refused(error);
    say(error.message, true);
  }
}

function show(answer) {
  const probabilities = answer.probabilities ?? [];
  const label = answer.label ?? answer["class"] ?? answer.prediction;
  $("answer").textContent = `class ${label}` +
    (probabilities.length ? ` (p = ${Math.max(...probabilities).toFixed(3)})` : "");
  $("answer").dataset.label = String(label);
  const names = answer.classes ?? probabilities.map((_, i) => String(i));
  stackedBars($("probabilities"), probabilities.map((p, i) => ({ round: names[i], parts: { p } })), {
    label: "class probabilities", format: (p) => p.toFixed(2),
  });
}

function offer(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: `${name}.predictions.csv` });
  link.textContent = "download the predictions (CSV)";
  $("message").replaceChildren(link);
}

function take(file) {
  if (!file) return;
  const preview = $("preview");
  if (file.type.startsWith("image/")) {
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  } else {
    preview.hidden = true;
  }
  predict(file);
}

$("file").addEventListener("change", (event) => take(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  take(event.dataTransfer.files[0]);
});
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("token").value.trim());
  $("token").value = "";
  $("auth").hidden = true;
  showModel();
});
showModel();
