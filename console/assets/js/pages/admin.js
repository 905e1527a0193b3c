// Administration: the tenant's API keys (made, shown once, revoked), its secrets (names
// only; set and delete), its webhooks with their URLs and how to sign a call; for
// platform admins, the tenants and their plans.

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

async function webhooks(me) {
  const list = await api("GET", "/v1/workflows");
  const hooks = [];
  for (const w of list) {
    const v = await api("GET", `/v1/workflows/${encodeURIComponent(w.workflow)}/versions/${w.version}`);
    for (const hook of ((v.definition.triggers || {}).webhooks || [])) hooks.push([hook.name, w.workflow, `${location.origin}/v1/hooks/${me.tenant}/${hook.name}`]);
  }
  return section("Webhooks",
    hooks.length ? table(["Hook", "Starts", "URL"], hooks) : h("p", { class: "muted" }, "No workflow starts from a webhook."),
    h("p", { class: "help" }, "Each call is signed with the hook's secret (set it with PUT /v1/hooks/<name>/secret): send X-AIQ-Timestamp: <unix seconds> and X-AIQ-Signature: v2=<hex HMAC-SHA256 of \"v2\\n<timestamp>\\n<Idempotency-Key>\\n<body>\">."));
}

async function tenants() {
  try {
    const list = await api("GET", "/v1/tenants");
    const rows = (list.tenants || list).map((t) => [t.id, t.display_name || "", t.state || "", JSON.stringify(t.plan || {})]);
    return section("Tenants", table(["Tenant", "Name", "State", "Plan"], rows));
  } catch (e) {
    return section("Tenants", errorBox(e));
  }
}

export async function adminPage(page) {
  show(h("h1", {}, "Administration"), h("p", { class: "muted" }, "Loading…"));
  const me = page.me();
  const parts = [];
  if (page.may("manage_api_keys")) parts.push(await keys(page));
  if (page.may("manage_secrets")) parts.push(await secrets());
  try {
    parts.push(await webhooks(me));
  } catch (e) {
    parts.push(section("Webhooks", errorBox(e)));
  }
  if (page.may("manage_tenants")) parts.push(await tenants());
  if (parts.length === 0) parts.push(h("p", {}, "Your role administers nothing here."));
  show(h("h1", {}, "Administration"), ...parts);
}
