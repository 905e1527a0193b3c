// Signing in: an API key (what the API's `x-api-key` takes), or a bearer token from
// the deployment's OpenID provider. The console keeps it for this tab only.

import { signIn, signOut } from "../api.js";
import { h, show, errorBox } from "../dom.js";

export function signinPage(page, done) {
  const err = h("div", { "aria-live": "assertive" });
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
  show(h("h1", {}, "Sign in"), form);
}
