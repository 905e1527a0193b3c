// The tenant's runs, newest first, filtered by workflow and status; the list refreshes
// itself every two seconds, so new runs and status changes appear without a reload.

import { api, query } from "../api.js";
import { h, show, badge, when, duration, errorBox } from "../dom.js";

const STATUSES = ["", "running", "succeeded", "failed", "cancelled", "timed_out"];

export async function runsPage(page, params) {
  const workflow = params.get("workflow") || "";
  const status = params.get("status") || "";
  const wf = h("input", { id: "f-workflow", name: "workflow", value: workflow });
  const st = h(
    "select",
    { id: "f-status", name: "status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s || "any")),
  );
  const filters = h(
    "form",
    {
      class: "row",
      onsubmit: (ev) => {
        ev.preventDefault();
        page.go(`#/runs${query({ workflow: wf.value.trim(), status: st.value })}`);
      },
    },
    h("div", {}, h("label", { for: "f-workflow" }, "Workflow"), wf),
    h("div", {}, h("label", { for: "f-status" }, "Status"), st),
    h("div", {}, h("button", { type: "submit" }, "Filter")),
  );
  const body = h("tbody", {});
  const state = h("p", { class: "muted", "aria-live": "polite" });
  const table = h(
    "table",
    { id: "runs" },
    h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status", "Started", "Duration", "Source"].map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
  show(h("h1", {}, "Runs"), filters, state, table);
  let shown = "";
  await page.every(2000, async () => {
    try {
      const r = await api("GET", `/v1/runs${query({ workflow, status, limit: 50 })}`);
      // Rebuilt only when something changed, so focus and reading stay put.
      const key = JSON.stringify(r.runs);
      if (key === shown) return;
      shown = key;
      body.replaceChildren(
        ...r.runs.map((run) =>
          h(
            "tr",
            { "data-run": run.run_id, "data-status": run.status || "" },
            h("td", {}, h("a", { href: `#/runs/${run.run_id}` }, run.run_id.slice(0, 8))),
            h("td", {}, run.workflow || ""),
            h("td", {}, badge(run.status)),
            h("td", {}, when(run.started_at)),
            h("td", {}, duration(run.duration_ms)),
            h("td", {}, run.trigger_source || ""),
          ),
        ),
      );
      state.textContent = r.runs.length ? `${r.runs.length} runs in the last 24 hours` : "No runs in the last 24 hours.";
    } catch (e) {
      state.replaceChildren(errorBox(e));
    }
  });
}
