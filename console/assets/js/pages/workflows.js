// The tenant's workflows: each with its newest version and whether triggers start it.

import { api } from "../api.js";
import { h, show, when, errorBox } from "../dom.js";

export async function workflowsPage(page) {
  let list;
  try {
    list = await api("GET", "/v1/workflows");
  } catch (e) {
    show(h("h1", {}, "Workflows"), errorBox(e));
    return;
  }
  list.sort((a, b) => a.workflow.localeCompare(b.workflow));
  const rows = list.map((w) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/workflows/${encodeURIComponent(w.workflow)}` }, w.workflow)),
      h("td", {}, w.name || ""),
      h("td", {}, String(w.version), w.default_version ? ` (default ${w.default_version})` : ""),
      h("td", {}, h("span", { class: `badge s-${w.disabled ? "disabled" : "enabled"}` }, w.disabled ? "disabled" : "enabled")),
      h("td", {}, when(w.created_at)),
    ),
  );
  show(
    h("h1", {}, "Workflows"),
    page.may("register_workflow")
      ? h("p", { class: "actions" },
        h("a", { href: "#/build", class: "button", id: "new-workflow" }, "New workflow"),
        h("a", { href: "#/editor", class: "button", id: "new-as-text" }, "Write one as text"))
      : null,
    list.length === 0
      ? h("p", {}, "No workflows yet.")
      : h(
          "table",
          {},
          h("caption", { class: "muted" }, `${list.length} workflow${list.length === 1 ? "" : "s"}`),
          h("thead", {}, h("tr", {}, ["Workflow", "Name", "Newest version", "State", "Registered"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, rows),
        ),
  );
}
