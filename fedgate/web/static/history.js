// The run's history as charts and a table: accuracy and loss per round, bytes per round by
// codec and by transport (each round record carries its own split), round duration.

import { bytes, el, fixed } from "./api.js";
import { lineChart, stackedBars } from "./charts.js";

const $ = (id) => document.getElementById(id);
const ROWS_SHOWN = 50;

// bytes in at most four characters and a unit, for axis ticks
function shortBytes(n) {
  const [scale, unit] = n >= 1e9 ? [1e9, "GB"] : n >= 1e6 ? [1e6, "MB"] : n >= 1e3 ? [1e3, "kB"] : [1, "B"];
  const value = n / scale;
  return `${value >= 100 || scale === 1 ? value.toFixed(0) : value.toFixed(1)} ${unit}`;
}

// {name: {up, down}} -> {name: bytes both ways}
function totals(byKey) {
  return Object.fromEntries(Object.entries(byKey || {}).map(([k, t]) => [k, t.up + t.down]));
}

export function renderHistory(status) {
  const done = status.history.filter((r) => r.outcome === "completed");
  const points = (key) => done.filter((r) => r[key] !== null).map((r) => [r.round, r[key]]);
  lineChart($("chart-accuracy"), [{ name: "accuracy", points: points("accuracy") }], {
    label: "held-out accuracy per round", min: 0, max: 1,
  });
  lineChart($("chart-loss"), [
    { name: "held-out loss", points: points("loss") },
    { name: "train loss", points: points("train_loss") },
  ], { label: "loss per round", min: 0 });
  const chartBytes = (key) => stackedBars($(`chart-${key}`),
    status.history.map((r) => ({ round: r.round, parts: totals(r[`bytes_by_${key}`]) })),
    { label: `bytes per round by ${key}`, format: shortBytes, legend: $(`legend-${key}`) });
  chartBytes("codec");
  chartBytes("transport");
  stackedBars($("chart-duration"),
    status.history.map((r) => ({ round: r.round, parts: { [r.outcome]: r.duration_s } })),
    { label: "round duration in seconds", format: (s) => `${s.toFixed(1)} s` });
  renderRounds(status.history);
}

function renderRounds(history) {
  const rows = history.slice(-ROWS_SHOWN).reverse().map((r) => el("tr", {
    "data-round": r.round, "data-outcome": r.outcome,
  },
  el("td", {}, r.attempt > 1 ? `${r.round}.${r.attempt}` : String(r.round)),
  el("td", { title: r.reason || "" }, r.outcome),
  el("td", {
    class: "participants", "data-count": r.participants.length,
    "data-selected": r.selected.length, title: r.participants.join(", "),
  },
    `${r.participants.length} of ${r.selected.length}`),
  el("td", {}, fixed(r.accuracy)),
  el("td", {}, fixed(r.loss)),
  el("td", {}, bytes(r.bytes_up)),
  el("td", {}, bytes(r.bytes_down)),
  el("td", {}, r.duration_s.toFixed(2))));
  $("rounds").tBodies[0].replaceChildren(...rows);
}
