// One run: its facts, its steps and attempts as a timeline (when each ran within the
// run, how long, how it ended, why it failed), and the actions its status allows:
// cancel, signal, redrive, rerun. It refreshes itself while the run is open or an
// action's effect is awaited.

import { api } from "../api.js";
import { h, show, badge, when, duration, json, errorBox, toast } from "../dom.js";

const OPEN = new Set(["running"]);

export async function runPage(page, id) {
  const root = h("div", {});
  show(h("h1", {}, `Run ${id.slice(0, 8)}`), root);
  let shown = "";
  let settled = 0;
  // A run started from this tab reaches the history within moments of its 202: wait
  // for it rather than call it missing.
  let patience = page.startedHere(id) ? 40 : 2;
  await page.every(1500, async () => {
    // An ended run is read a few more times (a redrive may reopen it), then left.
    if (settled > 3) return;
    let run;
    try {
      run = await api("GET", `/v1/runs/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404 && patience > 0) {
        patience -= 1;
        root.replaceChildren(h("p", { class: "muted", "aria-live": "polite" }, "Waiting for the run to reach the history…"));
        return;
      }
      root.replaceChildren(
        e.status === 404
          ? h("p", { role: "alert", id: "not-found" }, "No such run in your tenant.")
          : errorBox(e),
      );
      settled = 99;
      return;
    }
    settled = OPEN.has(run.status) ? 0 : settled + 1;
    const key = JSON.stringify(run);
    if (key === shown) return;
    shown = key;
    root.replaceChildren(...view(page, run, () => {
      settled = 0;
    }));
  });
}

function view(page, run, reopen) {
  const facts = h(
    "dl",
    { class: "facts" },
    h("dt", {}, "Status"), h("dd", { id: "run-status", "data-status": run.status || "" }, badge(run.status)),
    h("dt", {}, "Workflow"), h("dd", {}, h("a", { href: `#/workflows/${encodeURIComponent(run.workflow || "")}` }, run.workflow || ""), ` v${run.version ?? "?"}`),
    h("dt", {}, "Run id"), h("dd", {}, run.run_id),
    h("dt", {}, "Source"), h("dd", {}, run.trigger_source || "—"),
    h("dt", {}, "Started"), h("dd", {}, when(run.started_at)),
    h("dt", {}, "Finished"), h("dd", {}, when(run.finished_at)),
    h("dt", {}, "Duration"), h("dd", {}, duration(run.duration_ms)),
    run.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, `${run.error.class || ""}${run.error.step ? ` at ${run.error.step}` : ""}: ${run.error.message ?? "(erased)"}`)] : null,
    run.payloads_erased_at ? [h("dt", {}, "Payloads"), h("dd", {}, `erased ${when(run.payloads_erased_at)}`)] : null,
  );
  return [facts, actions(page, run, reopen), h("h2", {}, "Timeline"), timeline(run), h("h2", {}, "Input"), json(run.input), h("h2", {}, "Output"), json(run.output)];
}

function actions(page, run, reopen) {
  const id = run.run_id;
  const bar = h("div", { class: "actions" });
  const act = (label, path, body, after) =>
    h(
      "button",
      {
        type: "button",
        class: label === "Cancel" ? "danger" : "",
        onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            const r = await api("POST", path, body);
            toast(`${label}: accepted`);
            reopen();
            if (after) after(r);
          } catch (e) {
            toast(`${label}: ${e.message}`);
          } finally {
            ev.target.disabled = false;
          }
        },
      },
      label,
    );
  if (run.status === "running" && page.may("cancel_run")) {
    bar.append(act("Cancel", `/v1/runs/${id}/cancel`, { reason: "cancelled from the console" }));
  }
  const erased = Boolean(run.payloads_erased_at);
  if ((run.status === "failed" || run.status === "timed_out") && page.may("start_run") && !erased) {
    bar.append(act("Redrive", `/v1/runs/${id}/redrive`));
  }
  if (run.status && run.status !== "running" && page.may("start_run") && !erased) {
    bar.append(act("Rerun", `/v1/runs/${id}/rerun`, {}, (r) => r && r.run_id && page.openStarted(r.run_id)));
  }
  if (run.status === "running" && page.may("send_signal")) {
    const name = h("input", { id: "signal-name", name: "signal" });
    const payload = h("textarea", { id: "signal-payload", rows: 2 }, "{}");
    const err = h("div", {});
    const form = h(
      "form",
      {
        class: "panel",
        onsubmit: async (ev) => {
          ev.preventDefault();
          err.replaceChildren();
          let body;
          try {
            body = { payload: JSON.parse(payload.value || "null") };
          } catch (e) {
            err.replaceChildren(errorBox(`Payload: not JSON (${e.message})`));
            return;
          }
          if (!name.value.trim()) {
            err.replaceChildren(errorBox("Signal name: required"));
            return;
          }
          try {
            await api("POST", `/v1/runs/${id}/signals/${encodeURIComponent(name.value.trim())}`, body);
            toast("Signal: accepted");
            reopen();
          } catch (e) {
            err.replaceChildren(errorBox(e));
          }
        },
      },
      h("label", { for: "signal-name" }, "Signal name"), name,
      h("label", { for: "signal-payload" }, "Payload (JSON)"), payload,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Send signal")),
      err,
    );
    return h("div", {}, bar, form);
  }
  return bar;
}

function timeline(run) {
  const steps = [...(run.steps || [])].sort((a, b) =>
    String(a.started_at || "").localeCompare(String(b.started_at || "")) || a.attempt - b.attempt);
  if (steps.length === 0) return h("p", { class: "muted" }, "No steps yet.");
  const t0 = Date.parse(run.started_at || steps[0].started_at || 0);
  const end = Date.parse(run.finished_at || 0) || Date.now();
  const span = Math.max(end - t0, 1);
  const rows = steps.map((s) => {
    const a = Date.parse(s.started_at || 0) || t0;
    const b = Date.parse(s.finished_at || 0) || end;
    const left = Math.max(0, Math.min(100, ((a - t0) / span) * 100));
    const width = Math.max(0.5, Math.min(100 - left, ((b - a) / span) * 100));
    return h(
      "tr",
      { "data-step": s.step, "data-status": s.status || "" },
      h("th", { scope: "row" }, s.step, s.iteration !== null && s.iteration !== undefined ? ` [${s.iteration}]` : ""),
      h("td", {}, String(s.attempt)),
      h("td", {}, s.kind || "", s.connector ? ` · ${s.connector}` : ""),
      h("td", {}, badge(s.status)),
      h("td", {}, duration(s.duration_ms)),
      h(
        "td",
        { class: "bar" },
        h("div", { class: "bar-track", role: "img", "aria-label": `from ${Math.round(a - t0)} ms to ${Math.round(b - t0)} ms after the start` },
          h("div", { class: `bar-fill s-${s.status}`, style: null, "data-left": left.toFixed(1), "data-width": width.toFixed(1) })),
      ),
      h("td", { class: s.error ? "error" : "" }, s.error ? `${s.error.class || ""}: ${s.error.message ?? "(erased)"}` : ""),
    );
  });
  const table = h(
    "table",
    { class: "timeline", id: "timeline" },
    h("thead", {}, h("tr", {}, ["Step", "Attempt", "Kind", "Status", "Took", "When", "Error"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows),
  );
  // Positions set through the style object: the page's policy allows no inline styles.
  for (const fill of table.querySelectorAll(".bar-fill")) {
    fill.style.left = `${fill.dataset.left}%`;
    fill.style.width = `${fill.dataset.width}%`;
  }
  return table;
}
