// A form from a workflow's `input_schema` (JSON Schema): a field per property, typed
// (text, number, yes/no, a choice for an `enum`), required ones marked; anything the
// form cannot express (nested objects, arrays) is a JSON field. Without a schema, the
// whole input is one JSON field.

import { h } from "./dom.js";

export function inputForm(schema, idPrefix) {
  const props = schema && schema.type === "object" && schema.properties ? schema.properties : null;
  if (!props) {
    const area = h("textarea", { id: `${idPrefix}-json`, name: "input", rows: 5 }, "{}");
    return {
      element: h("div", {}, h("label", { for: area.id }, "Input (JSON)"), area),
      read() {
        try {
          return { value: JSON.parse(area.value || "null"), errors: [] };
        } catch (e) {
          return { errors: [`Input: not JSON (${e.message})`] };
        }
      },
    };
  }
  const required = new Set(schema.required || []);
  // Required fields first, each group in the schema's order.
  const entries = Object.entries(props);
  const ordered = [...entries.filter(([n]) => required.has(n)), ...entries.filter(([n]) => !required.has(n))];
  const fields = ordered.map(([name, p]) => field(name, p || {}, required.has(name), idPrefix));
  return {
    element: h("div", {}, fields.map((f) => f.element)),
    read() {
      const value = {};
      const errors = [];
      for (const f of fields) {
        const r = f.read();
        if (r.error) errors.push(`${f.title}: ${r.error}`);
        else if (r.value !== undefined) value[f.name] = r.value;
      }
      return { value, errors };
    },
  };
}

function field(name, p, required, prefix) {
  const id = `${prefix}-${name}`;
  const title = p.title || name;
  const type = Array.isArray(p.type) ? p.type.find((t) => t !== "null") : p.type;
  const label = h("label", { for: id }, title, required ? " (required)" : "");
  const help = p.description ? h("p", { class: "help", id: `${id}-help` }, p.description) : null;
  const common = { id, name, "aria-describedby": help ? `${id}-help` : null, required: required || null };
  let input;
  let read;
  if (Array.isArray(p.enum)) {
    input = h("select", common, required ? null : h("option", { value: "" }, "—"), p.enum.map((v, i) => h("option", { value: String(i), selected: p.default === v }, String(v))));
    read = () => (input.value === "" ? undefined : p.enum[Number(input.value)]);
  } else if (type === "boolean") {
    input = h("input", { ...common, type: "checkbox", checked: p.default === true, required: null });
    read = () => input.checked;
  } else if (type === "integer" || type === "number") {
    input = h("input", { ...common, type: "number", step: type === "integer" ? "1" : "any", value: p.default ?? null, min: p.minimum ?? null, max: p.maximum ?? null });
    read = () => {
      if (input.value === "") return undefined;
      const n = Number(input.value);
      if (Number.isNaN(n) || (type === "integer" && !Number.isInteger(n))) throw new Error(type === "integer" ? "a whole number" : "a number");
      return n;
    };
  } else if (type === "string") {
    const kind = p.format === "email" ? "email" : p.format === "date" ? "date" : p.format === "date-time" ? "datetime-local" : "text";
    input = h("input", { ...common, type: kind, value: p.default ?? null, maxlength: p.maxLength ?? null });
    read = () => {
      if (input.value === "") return undefined;
      return kind === "datetime-local" ? new Date(input.value).toISOString() : input.value;
    };
  } else {
    input = h("textarea", { ...common, rows: 3 }, p.default !== undefined ? JSON.stringify(p.default) : "");
    read = () => {
      if (input.value.trim() === "") return undefined;
      try {
        return JSON.parse(input.value);
      } catch {
        throw new Error("not JSON");
      }
    };
  }
  return {
    name,
    title,
    element: h("div", {}, label, help, input),
    read() {
      try {
        const value = read();
        if (value === undefined && required) return { error: "required" };
        return { value };
      } catch (e) {
        return { error: e.message };
      }
    },
  };
}
