// Bar charts as SVG, each with its numbers as a table beside it for screen readers and
// for anyone who wants the figures.

import { h, svg } from "./dom.js";

function fmt(v) {
  if (typeof v !== "number") return String(v ?? "");
  if (Number.isInteger(v)) return v.toLocaleString();
  return v.toLocaleString(undefined, { maximumFractionDigits: 3 });
}

// Horizontal bars: one per label, at most `max` of them (the largest first if `sort`).
export function bars(title, rows, { unit = "", max = 24, sort = true } = {}) {
  let data = rows.filter((r) => typeof r.value === "number" && Number.isFinite(r.value));
  if (sort) data = [...data].sort((a, b) => b.value - a.value);
  data = data.slice(0, max);
  if (data.length === 0) return h("p", { class: "muted" }, `${title}: no data yet.`);
  const top = Math.max(...data.map((d) => d.value), 0) || 1;
  const labelW = 220;
  const barW = 420;
  const rowH = 24;
  const height = data.length * rowH + 10;
  const width = labelW + barW + 110;
  const picture = svg(
    "svg",
    { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}: a bar chart of ${data.length} values; the table below holds the figures` },
    ...data.flatMap((d, i) => {
      const y = 5 + i * rowH;
      const w = Math.max(1, (d.value / top) * barW);
      return [
        svg("text", { x: labelW - 8, y: y + 16, "text-anchor": "end" }, d.label.length > 30 ? `${d.label.slice(0, 29)}…` : d.label),
        svg("rect", { x: labelW, y: y + 3, width: w, height: rowH - 8, fill: "#2f6db5", rx: 2 }),
        svg("text", { x: labelW + w + 6, y: y + 16, fill: "#1b1f24" }, `${fmt(d.value)}${unit}`),
      ];
    }),
  );
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, title),
    h("div", { class: "graph", tabindex: 0 }, picture),
    h("details", {}, h("summary", {}, "The figures"), table(["", title], data.map((d) => [d.label, `${fmt(d.value)}${unit}`]))),
  );
}

export function table(columns, rows) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((v) => h("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : fmt(v)))))),
  );
}
