// The definition as text: YAML or JSON, checked as you type by the same validator that
// registration uses (`POST /v1/workflows/validate`), each error shown at its line.

import { apiText } from "../api.js";
import { h, show, errorBox, toast } from "../dom.js";

const STARTER = `id: my-workflow
name: My workflow
steps:
  - id: first
    task:
      connector: noop
      args:
        output: { hello: "\${ input.name }" }
`;

function kind(text) {
  return text.trim().startsWith("{") ? "application/json" : "application/yaml";
}

export async function editorPage(page, params) {
  const text = h("textarea", { id: "source", rows: 24, spellcheck: "false", "aria-describedby": "editor-state", wrap: "off" });
  text.value = sessionStorage.getItem("aiq.editor") || STARTER;
  sessionStorage.removeItem("aiq.editor");
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  const state = h("p", { id: "editor-state", "aria-live": "polite" });
  const errors = h("ol", { id: "editor-errors", class: "errors" });
  let timer = null;
  let asked = 0;

  function numbers(bad) {
    const n = text.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h("span", { class: bad.has(i + 1) ? "bad" : null }, `${i + 1}\n`)));
  }

  function goTo(line) {
    const lines = text.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }

  async function check() {
    const mine = ++asked;
    try {
      let v;
      try {
        v = await apiText("POST", "/v1/workflows/validate", text.value, kind(text.value));
        v.errors = [];
      } catch (e) {
        // 422: a problem document with the errors, each with its pointer and line.
        if (e.status !== 422 || !e.problem || !Array.isArray(e.problem.errors)) throw e;
        v = { valid: false, errors: e.problem.errors.map((x) => ({ pointer: x.pointer, line: x.line, message: x.reason })) };
      }
      if (mine !== asked) return;
      const bad = new Set(v.errors.map((e) => e.line).filter(Boolean));
      numbers(bad);
      state.textContent = v.valid ? `Valid: workflow ${v.workflow}.` : `${v.errors.length} error${v.errors.length === 1 ? "" : "s"}.`;
      state.className = v.valid ? "ok" : "error";
      errors.replaceChildren(...v.errors.map((e) =>
        h("li", { "data-line": e.line || "" },
          e.line ? h("button", { type: "button", class: "link", onclick: () => goTo(e.line) }, `Line ${e.line}`) : "Document",
          ` ${e.pointer || "/"}: ${e.message}`)));
    } catch (e) {
      if (mine === asked) state.replaceChildren(errorBox(e));
    }
  }

  text.addEventListener("input", () => {
    numbers(new Set());
    clearTimeout(timer);
    timer = setTimeout(check, 400);
  });
  text.addEventListener("scroll", () => {
    gutter.scrollTop = text.scrollTop;
  });
  const register = async () => {
    try {
      const v = await apiText("POST", "/v1/workflows", text.value, kind(text.value));
      toast(`Registered ${v.workflow} v${v.version}`);
      page.go(`#/workflows/${encodeURIComponent(v.workflow)}`);
    } catch (e) {
      state.replaceChildren(errorBox(e));
    }
  };
  show(
    h("h1", {}, "Edit a definition"),
    h("p", { class: "help" }, params.get("from") ? `Starting from ${params.get("from")}. ` : "", "YAML or JSON (a document that starts with { is read as JSON). Checked as you type; registering makes a new version."),
    h("label", { for: "source" }, "The definition"),
    h("div", { class: "editor" }, gutter, text),
    state,
    errors,
    h("div", { class: "actions" }, h("button", { type: "button", onclick: register }, "Register")),
  );
  numbers(new Set());
  check();
}
