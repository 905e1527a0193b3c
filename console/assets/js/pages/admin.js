// Administration: the tenant's API keys (made, shown once, revoked), its secrets (names
// only; set and delete), its webhooks with their URLs and how to sign a call, who is told
// when runs end (each workflow's `notify`, changed by registering a new version); for
// platform admins, the tenants and their plans (made, edited, suspended, resumed).

import { api } from "../api.js";
import { h, show, when, errorBox, toast } from "../dom.js";
import { table } from "../chart.js";

function section(title, ...body) {
  return h("section", { "aria-label": title }, h("h2", {}, title), ...body);
}

async function keys(page) {
  const list = h("div", {});
  const shown = h("div", { "aria-live": "polite" });
  const load = async () => {
    try {
      const rows = await api("GET", "/v1/api-keys");
      list.replaceChildren(
        rows.length === 0
          ? h("p", { class: "muted" }, "No API keys.")
          : h("table", { id: "api-keys" },
            h("thead", {}, h("tr", {}, ["Key id", "Role", "Label", "Made", "State", ""].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, rows.map((k) => h("tr", {},
              h("td", {}, k.key_id), h("td", {}, k.role), h("td", {}, k.label || ""), h("td", {}, when(k.created_at)),
              h("td", {}, k.revoked ? "revoked" : "active"),
              h("td", {}, k.revoked ? "" : h("button", { type: "button", class: "danger", onclick: async () => {
                try { await api("DELETE", `/v1/api-keys/${encodeURIComponent(k.key_id)}`); toast(`Key ${k.key_id} revoked`); } catch (e) { toast(e.message); }
                load();
              } }, `Revoke ${k.key_id}`)))))));
    } catch (e) {
      list.replaceChildren(errorBox(e));
    }
  };
  const role = h("select", { id: "key-role" }, h("option", { value: "user" }, "user"), h("option", { value: "tenant_admin" }, "tenant admin"));
  const label = h("input", { id: "key-label" });
  const form = h("form", { class: "row", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const k = await api("POST", "/v1/api-keys", { role: role.value, label: label.value });
      shown.replaceChildren(h("div", { class: "panel", role: "alert" },
        h("p", {}, `The new key (${k.key_id}) is shown this once; copy it now:`),
        h("pre", { tabindex: 0, id: "new-key" }, k.key)));
      load();
    } catch (e) {
      shown.replaceChildren(errorBox(e));
    }
  } },
  h("div", {}, h("label", { for: "key-role" }, "Role"), role),
  h("div", {}, h("label", { for: "key-label" }, "What it is for"), label),
  h("div", {}, h("button", { type: "submit" }, "Make a key")));
  await load();
  return section("API keys", form, shown, list);
}

async function secrets() {
  const list = h("div", {});
  const load = async () => {
    try {
      const r = await api("GET", "/v1/secrets");
      list.replaceChildren(r.secrets.length === 0 ? h("p", { class: "muted" }, "No secrets.")
        : h("ul", { id: "secret-names" }, r.secrets.map((s) => h("li", {}, s, " ", h("button", { type: "button", class: "secondary", onclick: async () => {
          try { await api("DELETE", `/v1/secrets/${encodeURIComponent(s)}`); toast(`Secret ${s} deleted`); } catch (e) { toast(e.message); }
          setTimeout(load, 500);
        } }, `Delete ${s}`)))));
    } catch (e) {
      list.replaceChildren(errorBox(e));
    }
  };
  const name = h("input", { id: "secret-name", pattern: "[A-Za-z0-9_.-]{1,64}" });
  const value = h("input", { id: "secret-value", type: "password", autocomplete: "off" });
  const err = h("div", {});
  const form = h("form", { class: "row", onsubmit: async (ev) => {
    ev.preventDefault();
    err.replaceChildren();
    try {
      await api("PUT", `/v1/secrets/${encodeURIComponent(name.value.trim())}`, { value: value.value });
      toast(`Secret ${name.value.trim()} set`);
      value.value = "";
      setTimeout(load, 500);
    } catch (e) {
      err.replaceChildren(errorBox(e));
    }
  } },
  h("div", {}, h("label", { for: "secret-name" }, "Name"), name),
  h("div", {}, h("label", { for: "secret-value" }, "Value (never shown again)"), value),
  h("div", {}, h("button", { type: "submit" }, "Set the secret")), err);
  await load();
  return section("Secrets", h("p", { class: "help" }, "Connector arguments name a secret; only the worker running a step opens it."), form, list);
}

// The tenant's workflows, each at its default version's definition.
async function definitions() {
  const list = await api("GET", "/v1/workflows");
  return Promise.all(list.map(async (w) => [w, (await api("GET", `/v1/workflows/${encodeURIComponent(w.workflow)}/versions/${w.version}`)).definition]));
}

function webhooks(me, defs) {
  const hooks = [];
  for (const [w, def] of defs) {
    for (const hook of ((def.triggers || {}).webhooks || [])) hooks.push([hook.name, w.workflow, `${location.origin}/v1/hooks/${me.tenant}/${hook.name}`]);
  }
  return section("Webhooks",
    hooks.length ? table(["Hook", "Starts", "URL"], hooks) : h("p", { class: "muted" }, "No workflow starts from a webhook."),
    h("p", { class: "help" }, "Each call is signed with the hook's secret (set it with PUT /v1/hooks/<name>/secret): send X-AIQ-Timestamp: <unix seconds> and X-AIQ-Signature: v2=<hex HMAC-SHA256 of \"v2\\n<timestamp>\\n<Idempotency-Key>\\n<body>\">."));
}

const STATUSES = ["failed", "timed_out", "cancelled", "succeeded"];

// Who is told when a workflow's runs end. A change registers a new version of the
// workflow with the new `notify` (and makes it the default, as registering does).
function notifications(page, defs, reload) {
  const rows = defs.map(([w, def]) => {
    const n = def.notify || null;
    const slug = w.workflow.replace(/[^A-Za-z0-9_-]/g, "_");
    const url = h("input", { id: `notify-url-${slug}`, value: (n && n.webhook && n.webhook.url) || "", inputmode: "url" });
    const on = STATUSES.map((st) => h("input", { type: "checkbox", id: `notify-${slug}-${st}`, checked: n ? n.on.includes(st) : st === "failed" }));
    const err = h("div", {});
    const save = async () => {
      err.replaceChildren();
      const next = { ...def };
      if (url.value.trim()) {
        next.notify = { ...(n || {}), on: STATUSES.filter((_, i) => on[i].checked), webhook: { ...((n && n.webhook) || {}), url: url.value.trim() } };
      } else if (n && n.email) {
        next.notify = { ...n, on: STATUSES.filter((_, i) => on[i].checked) };
        delete next.notify.webhook;
      } else {
        delete next.notify;
      }
      try {
        const v = await api("POST", "/v1/workflows", next);
        toast(`${w.workflow}: notifications saved as v${v.version}`);
        reload();
      } catch (e) {
        const errs = (e.problem && e.problem.errors) || [];
        err.replaceChildren(errorBox(e), ...errs.map((x) => h("p", { class: "field-error" }, `${x.pointer || "/"}: ${x.reason}`)));
      }
    };
    return h("fieldset", { class: "panel", id: `notify-${slug}` },
      h("legend", {}, `${w.workflow} (v${w.version})`),
      h("label", { for: url.id }, "Webhook told when a run ends (empty: nobody)"), url,
      h("div", { class: "row" }, ...STATUSES.map((st, i) => h("div", {}, on[i], h("label", { for: on[i].id, class: "inline" }, st.replace("_", " "))))),
      n && n.email ? h("p", { class: "help" }, `Also emailed to ${[].concat(n.email.to || []).join(", ")} (change it in the editor).`) : null,
      page.may("register_workflow") ? h("button", { type: "button", onclick: save }, `Save for ${w.workflow}`) : null,
      err);
  });
  return section("Notifications",
    h("p", { class: "help" }, "When a run ends in a ticked status, its workflow's webhook receives a signed POST of the run's end."),
    ...(rows.length ? rows : [h("p", { class: "muted" }, "No workflows yet.")]));
}

const PLAN = [
  ["trigger_per_second", "Triggers per second", "number"],
  ["trigger_burst", "Trigger burst", "number"],
  ["max_concurrent_runs", "Runs at once", "number"],
  ["max_inflight_tasks", "Tasks in flight", "number"],
  ["max_queued_runs", "Queued runs", "number"],
  ["sql_max_rows", "SQL rows per query", "number"],
  ["sql_timeout_ms", "SQL timeout (ms)", "number"],
  ["retention_class", "Retention class", "text"],
  ["allowed_connectors", "Connectors allowed (comma-separated; empty: all)", "list"],
];

// A plan's fields as a form; only the fields given are sent (a PATCH keeps the rest).
function planForm(prefix, plan) {
  const inputs = PLAN.map(([key, label, kind]) => {
    const v = plan[key];
    const input = h("input", { id: `${prefix}-${key}`, type: kind === "number" ? "number" : "text", min: kind === "number" ? 1 : null,
      value: v === undefined || v === null ? "" : Array.isArray(v) ? v.join(", ") : String(v) });
    return { key, kind, input, el: h("div", {}, h("label", { for: input.id }, label), input) };
  });
  return {
    element: h("div", { class: "row" }, ...inputs.map((i) => i.el)),
    read() {
      const out = {};
      for (const { key, kind, input } of inputs) {
        const t = input.value.trim();
        if (!t) continue;
        out[key] = kind === "number" ? Number(t) : kind === "list" ? t.split(",").map((x) => x.trim()).filter(Boolean) : t;
      }
      return out;
    },
  };
}

async function tenants() {
  const box = h("div", {});
  const load = async () => {
    try {
      const list = await api("GET", "/v1/tenants");
      box.replaceChildren(...(list.tenants || list).map((t) => tenantPanel(t, load)));
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
  };
  const id = h("input", { id: "new-tenant-id", pattern: "[a-z0-9][a-z0-9-]*" });
  const name = h("input", { id: "new-tenant-name" });
  const plan = planForm("new-tenant", {});
  const err = h("div", {});
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    err.replaceChildren();
    try {
      const made = await api("POST", "/v1/tenants", { id: id.value.trim(), display_name: name.value.trim() || id.value.trim(), plan: plan.read() });
      err.replaceChildren(h("div", { class: "panel", role: "alert" },
        h("p", {}, `Tenant ${made.tenant.id} made. Its first admin key (${made.api_key.key_id}) is shown this once; hand it over now:`),
        h("pre", { tabindex: 0, id: "new-tenant-key" }, made.api_key.key)));
      id.value = "";
      name.value = "";
      load();
    } catch (e) {
      err.replaceChildren(errorBox(e));
    }
  } },
  h("div", { class: "row" },
    h("div", {}, h("label", { for: "new-tenant-id" }, "New tenant's id"), id),
    h("div", {}, h("label", { for: "new-tenant-name" }, "Its name"), name)),
  h("details", {}, h("summary", {}, "Its plan (empty fields: the deployment's defaults)"), plan.element),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Make the tenant")), err);
  await load();
  return section("Tenants and plans", form, box);
}

function tenantPanel(t, reload) {
  const slug = t.id.replace(/[^A-Za-z0-9_-]/g, "_");
  const plan = planForm(`plan-${slug}`, t.plan || {});
  const err = h("div", {});
  const act = async (what, method, path, body) => {
    err.replaceChildren();
    try {
      await api(method, path, body);
      toast(`${t.id}: ${what}`);
      reload();
    } catch (e) {
      err.replaceChildren(errorBox(e));
    }
  };
  const path = `/v1/tenants/${encodeURIComponent(t.id)}`;
  return h("fieldset", { class: "panel", id: `tenant-${slug}`, "data-state": t.state },
    h("legend", {}, `${t.id} · ${t.display_name || ""} · ${t.state}`),
    plan.element,
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => act("plan saved", "PATCH", path, { plan: plan.read() }) }, `Save the plan of ${t.id}`),
      t.state === "active" ? h("button", { type: "button", class: "secondary", onclick: () => act("suspended", "POST", `${path}/suspend`, {}) }, `Suspend ${t.id}`) : null,
      t.state === "suspended" ? h("button", { type: "button", class: "secondary", onclick: () => act("resumed", "POST", `${path}/resume`, {}) }, `Resume ${t.id}`) : null),
    err);
}

export async function adminPage(page) {
  show(h("h1", {}, "Administration"), h("p", { class: "muted" }, "Loading…"));
  const me = page.me();
  // The sections load at once and are shown in this order.
  const loading = [];
  if (page.may("manage_api_keys")) loading.push(keys(page));
  if (page.may("manage_secrets")) loading.push(secrets());
  loading.push(definitions().then(
    (defs) => [webhooks(me, defs), notifications(page, defs, () => page.go("#/admin"))],
    (e) => section("Webhooks", errorBox(e)),
  ));
  if (page.may("manage_tenants")) loading.push(tenants());
  const parts = (await Promise.all(loading)).flat();
  if (parts.length === 0) parts.push(h("p", {}, "Your role administers nothing here."));
  show(h("h1", {}, "Administration"), ...parts);
}
