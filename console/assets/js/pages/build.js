// The workflow builder for people who don't write YAML: a trigger, the input a run asks
// for, and a sequence of steps chosen from the connectors (each connector's arguments as
// a form, secrets picked by name, retries and timeouts with defaults), decisions whose
// conditions are picked from the run's input (a choice step), where each step goes next,
// and who is told when a run ends. The document it makes is shown beside the form as it
// changes, and registered as the API takes it.

import { api } from "../api.js";
import { h, show, errorBox, toast } from "../dom.js";
import { describeCron } from "../cron.js";

const INPUT_TYPES = [["string", "text"], ["integer", "whole number"], ["number", "number"], ["boolean", "yes / no"]];
const OPERATORS = [["==", "is"], ["!=", "is not"], [">", "is more than"], [">=", "is at least"], ["<", "is less than"], ["<=", "is at most"]];
const CUSTOM = "(an expression)";
const NOTIFY_ON = [["failed", "fails"], ["timed_out", "times out"], ["cancelled", "is cancelled"], ["succeeded", "succeeds"]];

// Sets a select's options to `options` ([value, label] pairs), keeping its choice. The
// options are rebuilt only when they differ: a select whose option was just picked is
// left alone, so the pick is never lost to a redraw.
function fill(select, options) {
  const key = JSON.stringify(options);
  if (select.dataset.options === key) return;
  select.dataset.options = key;
  const was = select.value;
  select.replaceChildren(...options.map(([v, l]) => h("option", { value: v }, l)));
  if (options.some(([v]) => v === was)) select.value = was;
}

// A value typed in a condition, as a CEL literal: numbers and yes/no as they are (a
// whole number compared with a `number` field gets a decimal point, as CEL does not
// compare an int with a double), anything else a quoted string.
export function literal(text, fieldType) {
  const t = text.trim();
  if (/^-?\d+$/.test(t)) return fieldType === "number" ? `${t}.0` : t;
  if (/^-?\d+\.\d+$/.test(t)) return t;
  if (t === "true" || t === "false") return t;
  return JSON.stringify(text);
}

export async function buildPage(page) {
  let connectors;
  // Asked for together; without the secrets, secret fields offer none.
  const names = page.may("manage_secrets")
    ? api("GET", "/v1/secrets").then((r) => r.secrets, () => [])
    : Promise.resolve([]);
  try {
    connectors = await api("GET", "/v1/connectors");
  } catch (e) {
    show(h("h1", {}, "New workflow"), errorBox(e));
    return;
  }
  const secrets = await names;
  const byName = new Map(connectors.map((c) => [c.connector, c]));
  const state = { inputs: [], steps: [], trigger: "manual" };
  const preview = h("pre", { id: "document", tabindex: 0, "aria-label": "The workflow document" });
  const problems = h("div", { id: "problems", "aria-live": "polite" });

  const id = h("input", { id: "wf-id", name: "id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]*" });
  const name = h("input", { id: "wf-name", name: "name" });
  const inputs = h("div", { id: "inputs" });
  const steps = h("div", { id: "steps" });

  // The trigger.
  const cron = h("input", { id: "cron", name: "cron", value: "0 9 * * 1-5" });
  const tz = h("input", { id: "timezone", name: "timezone", value: "UTC" });
  const cronText = h("p", { class: "help", id: "cron-preview", "aria-live": "polite" });
  const hook = h("input", { id: "webhook-name", name: "webhook", value: "incoming" });
  const triggerBox = h("div", {});
  const radios = [
    ["manual", "When someone starts it (Run now, or the API)"],
    ["schedule", "On a schedule"],
    ["webhook", "When a webhook is called"],
  ].map(([value, label]) =>
    h("div", {}, h("input", { type: "radio", name: "trigger", id: `trigger-${value}`, value, checked: value === "manual",
      onchange: () => { state.trigger = value; drawTrigger(); update(); } }),
    h("label", { for: `trigger-${value}`, class: "inline" }, label)));
  function drawTrigger() {
    if (state.trigger === "schedule") {
      triggerBox.replaceChildren(
        h("label", { for: "cron" }, "Schedule (cron: minute hour day month weekday)"), cron, cronText,
        h("label", { for: "timezone" }, "Time zone"), tz,
      );
    } else if (state.trigger === "webhook") {
      triggerBox.replaceChildren(
        h("label", { for: "webhook-name" }, "Webhook name"), hook,
        h("p", { class: "help" }, "Callers POST to /v1/hooks/<tenant>/<name>, signed with the hook's secret (set it under the API's /v1/hooks/<name>/secret)."),
      );
    } else {
      triggerBox.replaceChildren();
    }
  }

  function addInput() {
    const n = state.inputs.length + 1;
    const row = { name: h("input", { id: `in-name-${n}`, value: n === 1 ? "order" : `field${n}` }),
      type: h("select", { id: `in-type-${n}` }, INPUT_TYPES.map(([v, l]) => h("option", { value: v }, l))),
      required: h("input", { type: "checkbox", id: `in-req-${n}`, checked: true }) };
    const el = h("div", { class: "row panel" },
      h("div", {}, h("label", { for: row.name.id }, "Input field"), row.name),
      h("div", {}, h("label", { for: row.type.id }, "Type"), row.type),
      h("div", {}, h("label", { for: row.required.id }, "Required"), row.required),
      h("div", {}, h("button", { type: "button", class: "secondary", onclick: () => { state.inputs = state.inputs.filter((r) => r !== row); el.remove(); update(); } }, "Remove field")));
    state.inputs.push(row);
    inputs.append(el);
    update();
  }

  // The ids of the steps, for the "go to" lists.
  const stepIds = () => state.steps.map((s) => s.id.value.trim()).filter(Boolean);
  // A select of steps to go to, with `extra` options first; its choice is kept when the
  // steps change.
  function targetSelect(id, extra) {
    const el = h("select", { id });
    el.refill = (self) => fill(el, [...extra, ...stepIds().filter((x) => x !== self).map((x) => [`step:${x}`, `go to ${x}`])]);
    return el;
  }

  function removeButton(step, el, n) {
    return h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => { state.steps = state.steps.filter((s) => s !== step); el.remove(); update(); } }, `Remove step ${n}`));
  }

  function addStep() {
    const n = state.steps.length + 1;
    const step = { n, kind: "task", id: h("input", { id: `step-id-${n}`, value: `step-${n}` }), fields: [] };
    step.connector = h("select", { id: `step-connector-${n}` }, connectors.map((c) => h("option", { value: c.connector }, c.title)));
    step.attempts = h("input", { id: `step-attempts-${n}`, type: "number", min: 1, max: 100, value: 3 });
    step.timeout = h("input", { id: `step-timeout-${n}`, value: "30s" });
    step.then = targetSelect(`step-then-${n}`, [["", "go on to the step below"], ["end", "end the run here"]]);
    const box = h("div", {});
    const draw = () => {
      const form = byName.get(step.connector.value);
      step.fields = form.fields.map((f) => control(f, n, secrets));
      box.replaceChildren(h("p", { class: "help" }, form.description), ...step.fields.map((c) => c.element));
      update();
    };
    step.connector.addEventListener("change", draw);
    const el = h("fieldset", { class: "panel", id: `step-${n}` },
      h("legend", {}, `Step ${n}`),
      h("label", { for: step.id.id }, "Step id"), step.id,
      h("label", { for: step.connector.id }, "What it does"), step.connector,
      box,
      h("div", { class: "row" },
        h("div", {}, h("label", { for: step.attempts.id }, "Attempts (retries + 1)"), step.attempts),
        h("div", {}, h("label", { for: step.timeout.id }, "Timeout (e.g. 30s, 5m)"), step.timeout),
        h("div", {}, h("label", { for: step.then.id }, "Then"), step.then)));
    el.append(removeButton(step, el, n));
    state.steps.push(step);
    steps.append(el);
    draw();
  }

  // A decision: the first condition that holds names the next step, else "otherwise".
  function addChoice() {
    const n = state.steps.length + 1;
    const step = { n, kind: "choice", id: h("input", { id: `step-id-${n}`, value: `decide-${n}` }), cases: [] };
    step.otherwise = targetSelect(`step-otherwise-${n}`, [["", "go on to the step below"]]);
    const cases = h("div", {});
    const addCase = () => {
      const k = step.cases.length + 1;
      const c = {
        left: h("select", { id: `case-${n}-${k}-field` }),
        op: h("select", { id: `case-${n}-${k}-op` }, OPERATORS.map(([v, l]) => h("option", { value: v }, l))),
        value: h("input", { id: `case-${n}-${k}-value`, value: "" }),
        expr: h("input", { id: `case-${n}-${k}-expr`, value: "input.amount > 100" }),
        next: targetSelect(`case-${n}-${k}-next`, []),
        shown: h("p", { class: "help", id: `case-${n}-${k}-cel`, "aria-live": "polite" }),
      };
      c.left.refill = () => fill(c.left, [
        ...state.inputs.map((r) => r.name.value.trim()).filter(Boolean).map((f) => [`input.${f}`, `input: ${f}`]),
        ...stepIds().filter((x) => x !== step.id.value.trim()).map((x) => [`steps.${x}.output`, `output of ${x}`]),
        [CUSTOM, "an expression I write"],
      ]);
      c.simple = h("div", { class: "row" },
        h("div", {}, h("label", { for: c.op.id }, "Comparison"), c.op),
        h("div", {}, h("label", { for: c.value.id }, "Value"), c.value));
      c.custom = h("div", {}, h("label", { for: c.expr.id }, "Condition (CEL, e.g. input.amount > 100)"), c.expr);
      c.when = () => {
        if (c.left.value === CUSTOM || !c.left.value) return c.expr.value.trim();
        const field = state.inputs.find((r) => `input.${r.name.value.trim()}` === c.left.value);
        return `${c.left.value} ${c.op.value} ${literal(c.value.value, field && field.type.value)}`;
      };
      c.draw = () => {
        const custom = c.left.value === CUSTOM;
        c.simple.hidden = custom;
        c.custom.hidden = !custom;
        c.shown.textContent = `Condition: ${c.when()}`;
      };
      const row = h("div", { class: "panel" },
        h("div", { class: "row" },
          h("div", {}, h("label", { for: c.left.id }, `Condition ${k}: when`), c.left),
          h("div", {}, h("label", { for: c.next.id }, "then"), c.next)),
        c.simple, c.custom, c.shown,
        h("button", { type: "button", class: "secondary", onclick: () => { step.cases = step.cases.filter((x) => x !== c); row.remove(); update(); } }, `Remove condition ${k}`));
      step.cases.push(c);
      cases.append(row);
      update();
    };
    const el = h("fieldset", { class: "panel", id: `step-${n}` },
      h("legend", {}, `Step ${n}: a decision`),
      h("label", { for: step.id.id }, "Step id"), step.id,
      h("p", { class: "help" }, "The first condition that holds chooses the next step; when none does, the run goes where 'Otherwise' says."),
      cases,
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: addCase }, "Add a condition")),
      h("label", { for: step.otherwise.id }, "Otherwise"), step.otherwise);
    el.append(removeButton(step, el, n));
    state.steps.push(step);
    steps.append(el);
    addCase();
  }

  // Who is told when a run ends: a signed webhook (the workflow's `notify`).
  const notifyOn = NOTIFY_ON.map(([v, l]) => h("input", { type: "checkbox", id: `notify-${v}`, value: v, checked: v === "failed" || v === "timed_out" }));
  const notifyUrl = h("input", { id: "notify-url", type: "text", inputmode: "url", placeholder: "https://…" });
  const notifySecret = h("select", { id: "notify-secret" }, h("option", { value: "" }, "— (unsigned)"), secrets.map((x) => h("option", { value: x }, x)));

  function documentOf() {
    const doc = { id: id.value.trim() };
    if (name.value.trim()) doc.name = name.value.trim();
    if (state.inputs.length) {
      const properties = {};
      const required = [];
      for (const r of state.inputs) {
        const key = r.name.value.trim();
        if (!key) continue;
        properties[key] = { type: r.type.value };
        if (r.required.checked) required.push(key);
      }
      doc.input_schema = { type: "object", properties, ...(required.length ? { required } : {}) };
    }
    if (state.trigger === "schedule") doc.triggers = { cron: [{ schedule: cron.value.trim(), timezone: tz.value.trim() || "UTC" }] };
    if (state.trigger === "webhook") doc.triggers = { webhooks: [{ name: hook.value.trim() }] };
    if (notifyUrl.value.trim()) {
      const webhook = { url: notifyUrl.value.trim() };
      if (notifySecret.value) webhook.secret = notifySecret.value;
      doc.notify = { on: notifyOn.filter((c) => c.checked).map((c) => c.value), webhook };
    }
    const target = (v) => v.slice("step:".length);
    doc.steps = state.steps.map((s, i) => {
      if (s.kind === "choice") {
        const below = state.steps[i + 1] && state.steps[i + 1].id.value.trim();
        const choice = { cases: s.cases.map((c) => ({ when: c.when(), next: target(c.next.value) })) };
        const otherwise = s.otherwise.value ? target(s.otherwise.value) : below;
        if (otherwise) choice.default = otherwise;
        return { id: s.id.value.trim(), choice };
      }
      const args = {};
      for (const f of s.fields) f.write(args);
      const task = { connector: s.connector.value, args };
      const attempts = Number(s.attempts.value);
      if (attempts) task.retry = { max_attempts: attempts };
      if (s.timeout.value.trim()) task.timeout = s.timeout.value.trim();
      const step = { id: s.id.value.trim(), task };
      if (s.then.value === "end") step.end = true;
      else if (s.then.value) step.next = target(s.then.value);
      return step;
    });
    return doc;
  }

  function update() {
    for (const st of state.steps) {
      if (st.kind === "choice") {
        st.otherwise.refill(st.id.value.trim());
        for (const c of st.cases) {
          c.left.refill();
          c.next.refill(st.id.value.trim());
          c.draw();
        }
      } else {
        st.then.refill(st.id.value.trim());
      }
    }
    cronText.textContent = describeCron(cron.value);
    preview.textContent = JSON.stringify(documentOf(), null, 2);
  }

  const form = h("form", {
    id: "builder",
    oninput: update,
    onchange: update,
    onsubmit: async (ev) => {
      ev.preventDefault();
      problems.replaceChildren();
      const doc = documentOf();
      try {
        const v = await api("POST", "/v1/workflows", doc);
        toast(`Registered ${v.workflow} v${v.version}`);
        page.go(`#/workflows/${encodeURIComponent(v.workflow)}`);
      } catch (e) {
        const errs = (e.problem && e.problem.errors) || [];
        problems.replaceChildren(errorBox(e), ...errs.map((x) => h("p", { class: "field-error" }, `${x.pointer || "/"}: ${x.reason}`)));
      }
    },
  },
    h("label", { for: "wf-id" }, "Workflow id (required)"), id,
    h("p", { class: "help" }, "Letters, digits, '.', '_' and '-'; how the API and the runs name it."),
    h("label", { for: "wf-name" }, "Name"), name,
    h("h2", {}, "Starts"), h("div", { role: "radiogroup", "aria-label": "What starts it" }, radios), triggerBox,
    h("h2", {}, "What a run asks for"), inputs,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: addInput }, "Add an input field")),
    h("h2", {}, "Steps, in order"), steps,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", onclick: addStep }, "Add a step"),
      h("button", { type: "button", class: "secondary", onclick: addChoice }, "Add a decision")),
    h("h2", {}, "Tell someone when a run ends"),
    h("label", { for: "notify-url" }, "Webhook URL (POSTed the run's end as JSON; empty: nobody is told)"), notifyUrl,
    h("fieldset", {}, h("legend", {}, "When a run…"), ...NOTIFY_ON.map(([v, l], i) => h("div", {}, notifyOn[i], h("label", { for: `notify-${v}`, class: "inline" }, l)))),
    h("label", { for: "notify-secret" }, "Signed with the secret"), notifySecret,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Register the workflow")),
    problems,
  );
  show(h("h1", {}, "New workflow"), h("div", { class: "split" }, form, h("section", { "aria-label": "The document" }, h("h2", {}, "The document"), preview)));
  addStep();
  update();
}

// One field of a connector's form, and how its value goes into `args`.
function control(f, n, secrets) {
  const id = `step-${n}-${f.path.replace(/\./g, "-")}`;
  const label = h("label", { for: id }, f.label, f.required ? " (required)" : "");
  const help = f.help ? h("p", { class: "help", id: `${id}-help` }, f.help) : null;
  const common = { id, "aria-describedby": help ? `${id}-help` : null, required: f.required || null };
  let input;
  let read;
  switch (f.kind) {
    case "choice":
      input = h("select", common, f.required ? null : h("option", { value: "" }, "—"), f.options.map((o) => h("option", { value: o, selected: o === f.default }, o)));
      read = () => input.value || undefined;
      break;
    case "secret":
      input = h("select", common, h("option", { value: "" }, "—"), secrets.map((s) => h("option", { value: s }, s)));
      read = () => input.value || undefined;
      break;
    case "number":
      input = h("input", { ...common, type: "number", value: f.default ?? null });
      read = () => (input.value === "" ? undefined : Number(input.value));
      break;
    case "boolean":
      input = h("input", { ...common, type: "checkbox", required: null });
      read = () => input.checked;
      break;
    case "list":
      input = h("input", { ...common, value: f.default ?? null });
      read = () => {
        const items = input.value.split(",").map((s) => s.trim()).filter(Boolean);
        return items.length ? items : undefined;
      };
      break;
    case "json":
      input = h("textarea", { ...common, rows: 3 });
      read = () => {
        if (!input.value.trim()) return undefined;
        try {
          return JSON.parse(input.value);
        } catch {
          return input.value;
        }
      };
      break;
    case "long_text":
      input = h("textarea", { ...common, rows: 4 });
      read = () => input.value || undefined;
      break;
    default:
      // Text, not type=url: a URL may hold ${ ... } expressions a browser would refuse.
      input = h("input", { ...common, type: "text", inputmode: f.kind === "url" ? "url" : null, value: f.default ?? null });
      read = () => input.value || undefined;
  }
  return {
    element: h("div", {}, label, help, input),
    write(args) {
      const v = read();
      if (v === undefined) return;
      const parts = f.path.split(".");
      let o = args;
      for (const p of parts.slice(0, -1)) o = o[p] = o[p] || {};
      o[parts[parts.length - 1]] = v;
    },
  };
}
