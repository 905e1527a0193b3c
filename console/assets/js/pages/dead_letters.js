// The tenant's dead letters: why each record could not be processed, with replay (write
// it back where it came from, once) and resolve (mark it handled).

import { api } from "../api.js";
import { h, show, when, errorBox, toast } from "../dom.js";

export async function deadLettersPage(page) {
  const body = h("tbody", {});
  const state = h("p", { class: "muted", "aria-live": "polite" });
  show(
    h("h1", {}, "Dead letters"),
    state,
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["When", "Kind", "Stage", "Reason", "State", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
      body,
    ),
  );
  const act = async (label, method, path) => {
    try {
      await api(method, path);
      toast(`${label}: done`);
    } catch (e) {
      toast(`${label}: ${e.message}`);
    }
    load();
  };
  const load = async () => {
    try {
      const r = await api("GET", "/v1/dead-letters?limit=100");
      body.replaceChildren(
        ...r.dead_letters.map((l) =>
          h(
            "tr",
            {},
            h("td", {}, when(l.at)),
            h("td", {}, l.kind),
            h("td", {}, l.stage),
            h("td", {}, l.reason),
            h("td", {}, l.state),
            h(
              "td",
              {},
              l.state === "open" && page.may("manage_dead_letters")
                ? h(
                    "div",
                    { class: "actions" },
                    h("button", { type: "button", onclick: () => act("Replay", "POST", `/v1/dead-letters/${l.id}/replay`) }, "Replay"),
                    h("button", { type: "button", class: "secondary", onclick: () => act("Resolve", "DELETE", `/v1/dead-letters/${l.id}`) }, "Resolve"),
                  )
                : "",
            ),
          ),
        ),
      );
      state.textContent = r.dead_letters.length ? `${r.dead_letters.length} dead letters` : "No dead letters.";
    } catch (e) {
      state.replaceChildren(errorBox(e));
    }
  };
  await page.every(5000, load);
}
