// The console's router: the view is named by the URL's fragment (`#/runs/<id>`), so a
// link can be shared and the back button works; the server serves one page.

import { api, credential, signIn, signOut } from "./api.js";
import { finish, returning, signInConfig } from "./oidc.js";
import { h, show, errorBox } from "./dom.js";
import { signinPage } from "./pages/signin.js";
import { workflowsPage } from "./pages/workflows.js";
import { workflowPage } from "./pages/workflow.js";
import { runsPage } from "./pages/runs.js";
import { runPage } from "./pages/run.js";
import { deadLettersPage } from "./pages/dead_letters.js";
import { buildPage } from "./pages/build.js";
import { insightsPage } from "./pages/insights.js";
import { adminPage } from "./pages/admin.js";
import { editorPage } from "./pages/editor.js";

const NAV = [
  ["#/workflows", "Workflows"],
  ["#/runs", "Runs"],
  ["#/dead-letters", "Dead letters"],
  ["#/insights", "Insights"],
  ["#/admin", "Administration", ["manage_api_keys", "manage_secrets", "manage_tenants"]],
];

// What the page in view polls; stopped when the view changes.
let timers = [];
let me = null;

export const page = {
  // Calls `fn` now and every `ms` while this view is shown; the first call's promise is
  // returned, so a page is shown (and marked rendered) once its first data is in.
  every(ms, fn) {
    const first = fn();
    timers.push(setInterval(fn, ms));
    return first;
  },
  me: () => me,
  may: (action) => Boolean(me && me.may.includes(action)),
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  // Opens the page of a run this tab just started (it may not be in the history yet).
  openStarted(run) {
    started.add(run);
    page.go(`#/runs/${run}`);
  },
  startedHere: (run) => started.has(run),
};
const started = new Set();

function parse() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(2) : "";
  const [path, q] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(q || "") };
}

function header() {
  const { parts } = parse();
  const nav = document.getElementById("nav");
  nav.replaceChildren(
    ...(me
      ? NAV.filter(([, , needs]) => !needs || needs.some((a) => me.may.includes(a))).map(([href, label]) =>
          h("a", { href, "aria-current": href === `#/${parts[0] || ""}` ? "page" : null }, label))
      : []),
  );
  const who = document.getElementById("who");
  who.replaceChildren(
    ...(me
      ? [
          `${me.tenant} · ${me.role}`,
          h("button", {
            class: "secondary",
            type: "button",
            onclick: () => {
              signOut();
              me = null;
              page.go("#/signin");
            },
          }, "Sign out"),
        ]
      : []),
  );
}

// Marks the view as rendered, with its data: `data-view` names the fragment and
// `data-rendered` counts views shown, so a browser test or the page benchmark
// (`aiq-load console`) knows when a navigation has finished without guessing.
let renders = 0;
function rendered(hash) {
  renders += 1;
  document.body.dataset.view = hash;
  document.body.dataset.rendered = String(renders);
}

async function route() {
  const hash = location.hash;
  await view();
  if (location.hash === hash) rendered(hash);
}

async function view() {
  for (const t of timers) clearInterval(t);
  timers = [];
  const { parts, params } = parse();
  if (!credential()) {
    me = null;
    header();
    if (parts[0] !== "signin") location.hash = "#/signin";
    else return signinPage(page, async () => {
      me = await api("GET", "/v1/me");
      page.go("#/runs");
    });
    return;
  }
  if (!me) {
    try {
      me = await api("GET", "/v1/me");
    } catch (e) {
      // A 401 has already sent the page to signing in (the "aiq:signed-out" event).
      if (e.status === 401) return;
      signOut();
      show(h("h1", {}, "Signed out"), errorBox(e));
      setTimeout(() => page.go("#/signin"), 1500);
      return;
    }
  }
  header();
  try {
    switch (parts[0]) {
      case "workflows":
        return await (parts[1] ? workflowPage(page, parts[1], params) : workflowsPage(page));
      case "runs":
        return await (parts[1] ? runPage(page, parts[1]) : runsPage(page, params));
      case "dead-letters":
        return await deadLettersPage(page);
      case "build":
        return await buildPage(page);
      case "insights":
        return await insightsPage(page);
      case "admin":
        return await adminPage(page);
      case "editor":
        return await editorPage(page, params);
      case "signin":
        return signinPage(page, async () => {
          me = await api("GET", "/v1/me");
          page.go("#/runs");
        });
      default:
        page.go("#/runs");
    }
  } catch (e) {
    show(h("h1", {}, "Something went wrong"), errorBox(e));
  }
}

window.addEventListener("hashchange", () => {
  // The skip link's `#main` is not a view.
  if (location.hash === "#main") return;
  route();
});

// A call refused with 401 forgot the credential: back to signing in, saying why.
window.addEventListener("aiq:signed-out", (ev) => {
  me = null;
  // The sign-in page says itself that a credential was not accepted.
  if (location.hash.startsWith("#/signin")) return;
  page.notice = `Your sign-in ended (${ev.detail}); sign in again.`;
  page.go("#/signin");
});

// Back from the OpenID provider: the code becomes a token before the first view.
async function start() {
  if (returning()) {
    try {
      const done = await finish(await signInConfig());
      signIn("token", done.token);
    } catch (e) {
      page.notice = e.message;
    }
  }
  route();
}
start();
