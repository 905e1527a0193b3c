// Insights: the ready reports as charts (runs per hour, success rate and p95 per
// workflow, failing steps; cost per tenant for platform admins) and an SQL box over the
// tenant's history, whose answer is a table.

import { api } from "../api.js";
import { h, show, errorBox } from "../dom.js";
import { bars, table } from "../chart.js";

function records(answer) {
  const names = answer.columns.map((c) => c.name);
  return answer.rows.map((r) => Object.fromEntries(names.map((n, i) => [n, r[i]])));
}

async function report(name) {
  return records(await api("GET", `/v1/reports/${name}`));
}

function section(title, body) {
  return h("section", { "aria-label": title }, h("h2", {}, title), body);
}

// Two reports are asked for at a time: a tenant's queries beyond
// `analytics.max_queries_per_tenant` (2 by default) would be refused with a 429. They
// are shown in this order whatever order they come back in.
const AT_ONCE = 2;

async function charts(page) {
  const jobs = [];
  const safely = (title, make) => {
    jobs.push(() => make().then((body) => section(title, body), (e) => section(title, errorBox(e))));
  };
  safely("Runs started per hour", async () => {
    const rows = await report("runs_per_hour");
    const byHour = new Map();
    for (const r of rows) {
      const hour = String(r.hour).slice(0, 13).replace("T", " ");
      byHour.set(hour, (byHour.get(hour) || 0) + Number(r.runs_started || 0));
    }
    const data = [...byHour.entries()].sort().slice(-24).map(([label, value]) => ({ label: `${label}:00`, value }));
    return bars("Runs started per hour (UTC, last 24 with runs)", data, { sort: false });
  });
  safely("Success rate and p95 by workflow", async () => {
    const rows = await report("workflow_success");
    const label = (r) => (page.may("query_sql_all_tenants") ? `${r.tenant}/${r.workflow}` : String(r.workflow));
    return h(
      "div",
      {},
      bars("Success rate", rows.map((r) => ({ label: label(r), value: Math.round(Number(r.success_rate) * 1000) / 10 })), { unit: " %" }),
      bars("p95 duration", rows.map((r) => ({ label: label(r), value: Math.round(Number(r.p95_ms)) })), { unit: " ms" }),
    );
  });
  safely("Failing steps", async () => {
    const rows = await report("failing_steps");
    return bars("Failed attempts by connector and error class", rows.map((r) => ({ label: `${r.connector || "(not a task)"} · ${r.error_class}`, value: Number(r.failures) })));
  });
  if (page.may("query_sql_all_tenants")) {
    safely("Cost per tenant", async () => {
      const rows = await report("cost_per_tenant");
      return bars("Worker seconds by tenant", rows.map((r) => ({ label: String(r.tenant), value: Math.round(Number(r.step_seconds) * 10) / 10 })), { unit: " s" });
    });
  }
  const out = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(AT_ONCE, jobs.length) }, worker));
  return out;
}

function sqlBox() {
  const text = h("textarea", { id: "sql", name: "sql", rows: 4 }, "SELECT workflow, status, count(*) AS runs\nFROM runs\nWHERE status <> 'running'\nGROUP BY workflow, status\nORDER BY runs DESC");
  const result = h("div", { id: "sql-result", "aria-live": "polite" });
  return h(
    "form",
    {
      class: "panel",
      onsubmit: async (ev) => {
        ev.preventDefault();
        result.replaceChildren(h("p", { class: "muted" }, "Running…"));
        try {
          const a = await api("POST", "/v1/sql", { query: text.value });
          result.replaceChildren(
            h("p", { class: "muted" }, `${a.rows.length} row${a.rows.length === 1 ? "" : "s"}${a.truncated ? " (cut at the plan's limit)" : ""} in ${a.elapsed_ms} ms`),
            table(a.columns.map((c) => c.name), a.rows),
          );
        } catch (e) {
          const errs = (e.problem && e.problem.errors) || [];
          result.replaceChildren(errorBox(e), ...errs.map((x) => h("p", { class: "field-error" }, x.reason)));
        }
      },
    },
    h("label", { for: "sql" }, "SQL over your runs and steps (tables runs, steps, audit)"),
    text,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Run the query")),
    result,
  );
}

export async function insightsPage(page) {
  show(h("h1", {}, "Insights"), h("p", { class: "muted" }, "Loading the reports…"));
  const parts = await charts(page);
  show(h("h1", {}, "Insights"), ...parts, page.may("query_sql") ? section("Ask in SQL", sqlBox()) : null);
}
