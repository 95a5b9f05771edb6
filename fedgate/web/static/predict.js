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
    const accuracy = model.accuracy != null ? `, held-out accuracy ${model.accuracy.toFixed(4)}` : "";
    const how = model.pinned ? "deployed by an operator" : "the best so far";
    $("model").textContent = `model version ${model.version}${accuracy} (${how})`;
    $("model").dataset.version = String(model.version);
  } catch (error) {
    refused(error);
    $("model").textContent = error.message;
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

// The reply: {model_version, predictions: [{class, probabilities}]}, one input sent.
function show(answer) {
  const { class: label, probabilities } = answer.predictions[0];
  $("answer").textContent = `class ${label} (p = ${probabilities[label].toFixed(3)}, ` +
    `model version ${answer.model_version})`;
  $("answer").dataset.label = String(label);
  stackedBars($("probabilities"), probabilities.map((p, i) => ({ round: i, parts: { p } })), {
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
