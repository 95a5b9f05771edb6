// Small SVG charts drawn by hand: a line chart (one or more series over rounds) and a
// stacked bar chart (a bar per round, split by key). Colours come from style.css (.s0...).

const NS = "http://www.w3.org/2000/svg";
const W = 480;
const H = 200;
const PAD = { left: 60, right: 12, top: 12, bottom: 28 };

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(svg, label) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
}

// Axis lines, y ticks with grid lines, x ticks: [[position, label]].
function axes(svg, y, yTicks, xTicks, format) {
  for (const t of yTicks) {
    svg.append(svgEl("line", { x1: PAD.left, x2: W - PAD.right, y1: y(t), y2: y(t), class: "grid" }));
    svg.append(svgEl("text", { x: PAD.left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, format(t)));
  }
  for (const [at, label] of xTicks) {
    svg.append(svgEl("text", { x: at, y: H - PAD.bottom + 16, class: "tick", "text-anchor": "middle" }, String(label)));
  }
  svg.append(svgEl("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, class: "axis" }));
  svg.append(svgEl("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
}

function ticks(lo, hi, count = 4) {
  if (hi <= lo) return [lo];
  return Array.from({ length: count + 1 }, (_, i) => lo + ((hi - lo) * i) / count);
}

// At most about ten of the labels, evenly spaced.
function sparse(labels) {
  const step = Math.max(1, Math.ceil(labels.length / 10));
  return labels.filter((_, i) => i % step === 0);
}

function empty(svg, message) {
  svg.append(svgEl("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, message));
  svg.dataset.points = "0";
}

// series: [{name, points: [[round, value], ...]}]; bounds: {min, max} (optional).
export function lineChart(svg, series, { label, format = (v) => v.toFixed(2), min, max } = {}) {
  frame(svg, label);
  const all = series.flatMap((s) => s.points);
  if (!all.length) return empty(svg, "no completed round yet");
  const values = all.map(([, v]) => v);
  const r0 = Math.min(...all.map(([r]) => r));
  const r1 = Math.max(...all.map(([r]) => r));
  const lo = min ?? Math.min(...values);
  const hi = max ?? Math.max(...values, lo + 1e-9);
  const x = (r) => PAD.left + (r1 === r0 ? 0.5 : (r - r0) / (r1 - r0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - lo) / (hi - lo || 1)) * (H - PAD.top - PAD.bottom);
  const rounds = [...new Set(all.map(([r]) => r))].sort((a, b) => a - b);
  axes(svg, y, ticks(lo, hi), sparse(rounds).map((r) => [x(r), r]), format);
  series.forEach((s, i) => {
    const path = s.points.map(([r, v]) => `${x(r).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(svgEl("polyline", { points: path, class: `line s${i % 8}` }));
    for (const [r, v] of s.points) {
      const dot = svgEl("circle", { cx: x(r), cy: y(v), r: 3, class: `dot s${i % 8}`, "data-round": r });
      dot.append(svgEl("title", {}, `round ${r}: ${format(v)}`));
      svg.append(dot);
    }
  });
  svg.dataset.points = String(all.length);
}

// bars: [{round, parts: {key: value}}] (round: the bar's label); keys get a colour each.
export function stackedBars(svg, bars, { label, format = String, legend } = {}) {
  frame(svg, label);
  if (!bars.length) return empty(svg, "no round measured yet");
  const keys = [...new Set(bars.flatMap((b) => Object.keys(b.parts)))];
  const totals = bars.map((b) => Object.values(b.parts).reduce((a, v) => a + v, 0));
  const hi = Math.max(...totals, 1);
  const slot = (W - PAD.left - PAD.right) / bars.length;
  const y = (v) => H - PAD.bottom - (v / hi) * (H - PAD.top - PAD.bottom);
  const x = (i) => PAD.left + slot * (i + 0.5);
  const labels = sparse(bars.map((b, i) => [x(i), b.round]));
  axes(svg, y, ticks(0, hi), labels, format);
  bars.forEach((bar, i) => {
    let base = 0;
    keys.forEach((key, k) => {
      const value = bar.parts[key] || 0;
      if (!value) return;
      const rect = svgEl("rect", {
        x: x(i) - slot * 0.35, width: slot * 0.7, y: y(base + value), height: y(base) - y(base + value),
        class: `bar s${k % 8}`, "data-round": bar.round, "data-key": key,
      });
      rect.append(svgEl("title", {}, `round ${bar.round} ${key}: ${format(value)}`));
      svg.append(rect);
      base += value;
    });
  });
  if (legend) legend.replaceChildren(...keys.map((key, k) => {
    const item = document.createElement("span");
    item.className = `key s${k % 8}`;
    item.textContent = key;
    return item;
  }));
  svg.dataset.points = String(bars.length);
}
