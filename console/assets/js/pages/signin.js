// Signing in: through the deployment's OpenID provider where one is configured, with an
// API key (what the API's `x-api-key` takes), or with a bearer token pasted in. The
// console keeps the credential for this tab only.

import { signIn, signOut } from "../api.js";
import { h, show, errorBox } from "../dom.js";
import { begin, signInConfig } from "../oidc.js";

export async function signinPage(page, done) {
  const err = h("div", { "aria-live": "assertive" });
  if (page.notice) {
    err.replaceChildren(errorBox(page.notice));
    page.notice = null;
  }
  const cfg = await signInConfig();
  const provider = cfg
    ? h("section", { "aria-label": "Your organisation's sign-in", class: "panel" },
      h("button", { type: "button", id: "sign-in-provider", onclick: async () => {
        err.replaceChildren();
        try {
          await begin(cfg, "#/runs");
        } catch (e) {
          err.replaceChildren(errorBox(e));
        }
      } }, "Sign in with your organisation"),
      h("p", { class: "help" }, `You sign in at ${new URL(cfg.issuer).host} and come back here.`))
    : null;
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", name: "api-key" });
  const token = h("textarea", { id: "token", name: "token", rows: 3 });
  const form = h(
    "form",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        err.replaceChildren();
        const k = key.value.trim();
        const t = token.value.trim();
        if (!k && !t) {
          err.replaceChildren(errorBox("Enter an API key or a token."));
          return;
        }
        signIn(k ? "key" : "token", k || t);
        try {
          await done();
        } catch (e) {
          signOut();
          err.replaceChildren(errorBox(e.status === 401 ? "That credential was not accepted." : e));
        }
      },
    },
    h("label", { for: "api-key" }, "API key"),
    key,
    h("p", { class: "help" }, "A key your tenant admin created (POST /v1/api-keys), shown once when it was made."),
    h("label", { for: "token" }, "…or a bearer token"),
    token,
    h("p", { class: "help" }, "A token from your organisation's sign-in provider."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")),
    err,
  );
  show(h("h1", {}, "Sign in"), provider, provider ? h("p", {}, "Or:") : null, form);
}
