// One workflow: its versions (and the difference between two), the definition drawn as
// a graph, and "Run now" with a form made from its `input_schema`.

import { api, query } from "../api.js";
import { h, show, when, json, errorBox, toast } from "../dom.js";
import { drawGraph, outline } from "../graph.js";
import { inputForm } from "../form.js";

export async function workflowPage(page, id, params) {
  const title = h("h1", {}, `Workflow ${id}`);
  let list;
  try {
    list = await api("GET", "/v1/workflows");
  } catch (e) {
    show(title, errorBox(e));
    return;
  }
  const summary = list.find((w) => w.workflow === id);
  if (!summary) {
    show(title, h("p", { role: "alert", id: "not-found" }, "No such workflow in your tenant."));
    return;
  }
  const newest = summary.version;
  const v = Number(params.get("v")) || newest;
  const other = Number(params.get("diff")) || 0;
  let doc;
  try {
    doc = await api("GET", `/v1/workflows/${encodeURIComponent(id)}/versions/${v}`);
  } catch (e) {
    show(title, errorBox(e));
    return;
  }
  const def = doc.definition;
  const versions = h(
    "nav",
    { "aria-label": "Versions", class: "actions" },
    Array.from({ length: newest }, (_, i) => i + 1).reverse().map((n) =>
      h("a", { href: `#/workflows/${encodeURIComponent(id)}${query({ v: n })}`, "aria-current": n === v ? "page" : null, class: n === v ? "badge" : null }, `v${n}`)),
  );
  const compare = h(
    "select",
    { id: "diff-with", name: "diff" },
    h("option", { value: "" }, "—"),
    Array.from({ length: newest }, (_, i) => i + 1).filter((n) => n !== v).map((n) => h("option", { value: String(n), selected: n === other }, `v${n}`)),
  );
  compare.addEventListener("change", () => page.go(`#/workflows/${encodeURIComponent(id)}${query({ v, diff: compare.value })}`));
  const parts = [
    title,
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Name"), h("dd", {}, summary.name || "—"),
      h("dt", {}, "State"), h("dd", {}, h("span", { class: `badge s-${summary.disabled ? "disabled" : "enabled"}` }, summary.disabled ? "disabled" : "enabled")),
      h("dt", {}, "Newest version"), h("dd", {}, `v${newest}${summary.default_version ? ` (triggers start v${summary.default_version})` : ""}`),
      h("dt", {}, "This version"), h("dd", {}, `v${v}, registered ${when(doc.created_at)}`),
    ),
    versions,
    h("div", { class: "row" }, h("div", {}, h("label", { for: "diff-with" }, `Compare v${v} with`), compare)),
  ];
  if (page.may("register_workflow")) {
    parts.push(h("div", { class: "actions" }, h("button", {
      type: "button",
      class: "secondary",
      onclick: () => {
        sessionStorage.setItem("aiq.editor", JSON.stringify(def, null, 2));
        page.go(`#/editor?from=${encodeURIComponent(`${id} v${v}`)}`);
      },
    }, "Edit as text")));
  }
  if (other) parts.push(await diffView(id, other, v, def));
  if (page.may("start_run") && !summary.disabled) parts.push(runNow(page, id, v, def));
  parts.push(
    h("h2", {}, "Steps"),
    drawGraph(def),
    h("details", {}, h("summary", {}, "The steps as a list"), outline(def.steps || [])),
    h("h2", {}, "Definition"),
    json(def),
  );
  show(parts);
}

function runNow(page, id, v, def) {
  const form = inputForm(def.input_schema, "run-input");
  const err = h("div", { "aria-live": "assertive" });
  return h(
    "form",
    {
      class: "panel",
      id: "run-now",
      onsubmit: async (ev) => {
        ev.preventDefault();
        err.replaceChildren();
        const { value, errors } = form.read();
        if (errors.length) {
          err.replaceChildren(...errors.map((e) => errorBox(e)));
          return;
        }
        try {
          const r = await api("POST", `/v1/workflows/${encodeURIComponent(id)}/runs`, { input: value, version: v, manual: true });
          toast(`Run ${r.run_id.slice(0, 8)} started`);
          page.openStarted(r.run_id);
        } catch (e) {
          err.replaceChildren(errorBox(e));
        }
      },
    },
    h("h2", {}, "Run now"),
    form.element,
    h("div", { class: "actions" }, h("button", { type: "submit" }, `Run v${v}`)),
    err,
  );
}

async function diffView(id, other, v, def) {
  let theirs;
  try {
    theirs = (await api("GET", `/v1/workflows/${encodeURIComponent(id)}/versions/${other}`)).definition;
  } catch (e) {
    return errorBox(e);
  }
  const a = JSON.stringify(theirs, null, 2).split("\n");
  const b = JSON.stringify(def, null, 2).split("\n");
  const lines = diff(a, b);
  if (!lines) return h("p", {}, "These versions are too large to compare here.");
  return h(
    "section",
    { "aria-label": `Changes from v${other} to v${v}` },
    h("h2", {}, `Changes from v${other} to v${v}`),
    h("div", { class: "diff panel", id: "diff" }, lines.map(([op, text]) =>
      h("div", { class: op === "+" ? "add" : op === "-" ? "del" : null }, `${op === " " ? " " : op} ${text}`))),
  );
}

// A line diff by longest common subsequence; `null` past 2,000 lines a side (the table
// would be millions of cells).
function diff(a, b) {
  if (a.length > 2000 || b.length > 2000) return null;
  const m = a.length;
  const n = b.length;
  const lcs = Array.from({ length: m + 1 }, () => new Uint16Array(n + 1));
  for (let i = m - 1; i >= 0; i--) {
    for (let j = n - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < m && j < n) {
    if (a[i] === b[j]) {
      out.push([" ", a[i]]);
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push(["-", a[i++]]);
    } else {
      out.push(["+", b[j++]]);
    }
  }
  while (i < m) out.push(["-", a[i++]]);
  while (j < n) out.push(["+", b[j++]]);
  return out;
}
