// The definition as a drawing: steps top to bottom in document order, parallel lanes
// side by side, a foreach's body inside its box, and every jump (a `next` elsewhere, a
// choice's cases and default, a catch rule) as a labelled line on the right. Drawn from
// the document alone, so it shows exactly what was registered.

import { h, svg } from "./dom.js";

const KINDS = ["task", "choice", "parallel", "foreach", "wait", "wait_for_event", "sub_workflow", "set", "succeed", "fail"];
const NODE_W = 190;
const NODE_H = 46;
const GAP = 30;
const PAD = 14;
const HEAD = 22;
const LANE_GAP = 18;

export function kindOf(step) {
  return KINDS.find((k) => step[k] !== undefined) || "step";
}

function detail(step) {
  const k = kindOf(step);
  const v = step[k] || {};
  switch (k) {
    case "task": return `task · ${v.connector || "?"}`;
    case "wait": return `wait ${v.duration || v.seconds || v.until || ""}`.trim();
    case "wait_for_event": return `waits for ${v.signal || v.name || "a signal"}`;
    case "sub_workflow": return `runs ${v.workflow || "?"}`;
    case "foreach": return `for each of ${v.items || "?"}`;
    default: return k.replace(/_/g, " ");
  }
}

function measure(steps) {
  const items = steps.map((s) => {
    const k = kindOf(s);
    if (k === "parallel") {
      const lanes = (s.parallel.branches || []).map((b) => measure(b.steps || []));
      const w = lanes.reduce((a, l) => a + l.w, 0) + LANE_GAP * Math.max(lanes.length - 1, 0) + 2 * PAD;
      const hgt = Math.max(0, ...lanes.map((l) => l.h)) + 2 * PAD + HEAD;
      return { step: s, kind: k, lanes, w: Math.max(w, NODE_W), h: hgt };
    }
    if (k === "foreach") {
      const body = measure(s.foreach.steps || []);
      return { step: s, kind: k, body, w: Math.max(body.w + 2 * PAD, NODE_W), h: body.h + 2 * PAD + HEAD };
    }
    return { step: s, kind: k, w: NODE_W, h: NODE_H };
  });
  return {
    items,
    w: Math.max(NODE_W, ...items.map((i) => i.w)),
    h: items.reduce((a, i) => a + i.h, 0) + GAP * Math.max(items.length - 1, 0),
  };
}

// Places a sequence with its top-left at (x, y): boxes into `out.shapes`, each step's box
// into `out.pos`, and the sequence's own edges into `out.edges`.
function place(seq, x, y, out) {
  let cy = y;
  seq.items.forEach((it, i) => {
    const ix = x + (seq.w - it.w) / 2;
    const id = it.step.id;
    out.pos[id] = { x: ix, y: cy, w: it.w, h: it.h };
    if (it.kind === "parallel" || it.kind === "foreach") {
      out.shapes.push(svg("rect", { x: ix, y: cy, width: it.w, height: it.h, rx: 8, fill: "#f4f6f8", stroke: "#6e7781", "stroke-dasharray": it.kind === "foreach" ? "5 3" : null }));
      out.shapes.push(svg("text", { x: ix + 8, y: cy + 16, "font-weight": 600 }, `${id} · ${it.kind === "parallel" ? `parallel (${(it.step.parallel.join || "all")})` : detail(it.step)}`));
      if (it.kind === "parallel") {
        let lx = ix + PAD;
        for (const lane of it.lanes) {
          place(lane, lx, cy + HEAD + PAD, out);
          lx += lane.w + LANE_GAP;
        }
      } else {
        place(it.body, ix + PAD, cy + HEAD + PAD, out);
      }
    } else {
      const color = it.kind === "fail" ? "#a40e26" : it.kind === "succeed" ? "#116329" : it.kind === "choice" ? "#7d4e00" : "#0b5cad";
      out.shapes.push(svg("rect", { x: ix, y: cy, width: it.w, height: it.h, rx: it.kind === "choice" ? 18 : 6, fill: "#fff", stroke: color, "stroke-width": 2 }));
      out.shapes.push(svg("text", { x: ix + it.w / 2, y: cy + 19, "text-anchor": "middle", "font-weight": 600 }, clip(id, 24)));
      out.shapes.push(svg("text", { x: ix + it.w / 2, y: cy + 36, "text-anchor": "middle", fill: "#4a5360" }, clip(detail(it.step), 28)));
    }
    const next = seq.items[i + 1];
    const s = it.step;
    const falls = !s.end && !["succeed", "fail", "choice"].includes(it.kind) && (!s.next || (next && s.next === next.step.id));
    if (falls && next) out.edges.push({ from: id, to: next.step.id, straight: true });
    if (s.next && !(next && s.next === next.step.id)) out.edges.push({ from: id, to: s.next, label: "next" });
    if (it.kind === "choice") {
      for (const c of s.choice.cases || []) out.edges.push({ from: id, to: c.next, label: `when ${c.when}` });
      if (s.choice.default) out.edges.push({ from: id, to: s.choice.default, label: "otherwise" });
    }
    for (const c of s.catch || []) {
      out.edges.push({ from: id, to: c.next, label: `on ${(c.errors || []).join(", ")}`, dashed: true });
    }
    cy += it.h + GAP;
  });
}

function clip(text, n) {
  const t = String(text);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

export function drawGraph(definition) {
  const steps = definition.steps || [];
  const seq = measure(steps);
  const out = { shapes: [], edges: [], pos: {} };
  const left = 20;
  place(seq, left, 20, out);
  const jumps = out.edges.filter((e) => !e.straight);
  const right = left + seq.w;
  const width = right + 40 + jumps.length * 16 + 220;
  const height = seq.h + 40;
  const lines = [];
  for (const e of out.edges) {
    const a = out.pos[e.from];
    const b = out.pos[e.to];
    if (!a || !b) continue;
    if (e.straight) {
      const x = a.x + a.w / 2;
      lines.push(svg("line", { x1: x, y1: a.y + a.h, x2: x, y2: b.y - 2, stroke: "#4a5360", "stroke-width": 1.5, "marker-end": "url(#arrow)" }));
    }
  }
  jumps.forEach((e, i) => {
    const a = out.pos[e.from];
    const b = out.pos[e.to];
    if (!a || !b) return;
    const lane = right + 24 + i * 16;
    const y1 = a.y + a.h / 2;
    const y2 = b.y + Math.min(b.h / 2, 23);
    lines.push(svg("path", {
      d: `M ${a.x + a.w} ${y1} H ${lane} V ${y2} H ${b.x + b.w + 2}`,
      fill: "none", stroke: e.dashed ? "#a40e26" : "#7d4e00", "stroke-width": 1.5,
      "stroke-dasharray": e.dashed ? "5 3" : null, "marker-end": "url(#arrow)",
    }));
    const label = svg("text", { x: lane + 6, y: y1 - 4, fill: e.dashed ? "#a40e26" : "#7d4e00" }, clip(e.label, 34));
    label.append(svg("title", {}, e.label));
    lines.push(label);
  });
  const defs = svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#4a5360" })));
  const picture = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Graph of ${definition.id || "the workflow"}: ${countSteps(steps)} steps` },
    defs, ...out.shapes, ...lines);
  // Focusable: a wide graph scrolls, and keyboards must reach it.
  return h("div", { class: "graph", id: "graph", tabindex: 0 }, picture);
}

function countSteps(steps) {
  let n = 0;
  for (const s of steps) {
    n += 1;
    if (s.parallel) for (const b of s.parallel.branches || []) n += countSteps(b.steps || []);
    if (s.foreach) n += countSteps(s.foreach.steps || []);
  }
  return n;
}

// The same structure as nested lists: what a screen reader reads instead of the drawing.
export function outline(steps) {
  return h("ol", {}, steps.map((s) => {
    const k = kindOf(s);
    const extra = [];
    if (s.parallel) extra.push(h("ul", {}, (s.parallel.branches || []).map((b, i) => h("li", {}, `lane ${i + 1}`, outline(b.steps || [])))));
    if (s.foreach) extra.push(outline(s.foreach.steps || []));
    if (s.choice) extra.push(h("ul", {}, [...(s.choice.cases || []).map((c) => h("li", {}, `when ${c.when} → ${c.next}`)), s.choice.default ? h("li", {}, `otherwise → ${s.choice.default}`) : null]));
    for (const c of s.catch || []) extra.push(h("p", { class: "muted" }, `on ${(c.errors || []).join(", ")} → ${c.next}`));
    return h("li", {}, h("strong", {}, s.id), ` — ${detail(s)}`, s.next ? ` → ${s.next}` : "", s.end ? " (end)" : "", k === "step" ? "" : "", extra);
  }));
}
