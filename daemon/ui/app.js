// The console's entry: hash routing (every page is a link such as `#/jobs?queue=q&state=queued`
// or `#/jobs/job_7`), the navigation bar, the login form, and the timers of pages that refresh.

import { h, replace, route } from "./dom.js";
import { AuthRequired, ApiFailure, setToken, token } from "./api.js";
import { overviewPage } from "./overview.js";
import { jobsPage, jobPage } from "./jobs.js";
import { datasetsPage } from "./datasets.js";
import {
  rewardsPage, taskPage, trajectoryPage, rolloutPage, groupPage,
} from "./rollouts.js";
import { exportsPage, exportPage } from "./exports.js";

/** The navigation bar: title and the route whose pages it covers. */
const NAV = [
  ["Overview", ""],
  ["Jobs", "jobs"],
  ["Datasets", "datasets"],
  ["Rollouts and rewards", "rollouts"],
  ["Exports", "exports"],
];

/**
 * Routes: path segments (`:name` captures one, decoded) and the page that renders them. A page
 * is `async (context) => Node`; `context.params` holds the captures, `context.query` the
 * URLSearchParams after `?`, `context.every(ms, refresh)` re-runs `refresh` while the page is
 * shown (it returns a function that stops it).
 */
const ROUTES = [
  ["", "", overviewPage],
  ["jobs", "jobs", jobsPage],
  ["jobs/:job", "jobs", jobPage],
  ["datasets", "datasets", datasetsPage],
  ["rollouts", "rollouts", rewardsPage],
  ["rollouts/:rollout", "rollouts", rolloutPage],
  ["tasks/:task", "rollouts", taskPage],
  ["tasks/:task/trajectory", "rollouts", trajectoryPage],
  ["groups/:group", "rollouts", groupPage],
  ["exports", "exports", exportsPage],
  ["exports/:export", "exports", exportPage],
];

/** Bumped on every navigation, so an answer that arrives for a page left behind is dropped. */
let generation = 0;
/** The refresh timers of the page shown now. */
let timers = [];

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search] = hash.split("?", 2);
  const segments = path.split("/").filter((segment) => segment !== "");
  let decoded;
  try {
    decoded = segments.map((segment) => decodeURIComponent(segment));
  } catch {
    decoded = segments;
  }
  return { segments: decoded, query: new URLSearchParams(search || "") };
}

function match(segments) {
  for (const [pattern, section, page] of ROUTES) {
    const parts = pattern === "" ? [] : pattern.split("/");
    if (parts.length !== segments.length) continue;
    const params = {};
    const matched = parts.every((part, index) => {
      if (part.startsWith(":")) {
        params[part.slice(1)] = segments[index];
        return true;
      }
      return part === segments[index];
    });
    if (matched) return { section, page, params };
  }
  return null;
}

function renderNav(active) {
  replace(document.getElementById("nav"), NAV.map(([title, path]) => h("a", {
    href: `#/${path}`,
    class: active === path ? "active" : null,
    "aria-current": active === path ? "page" : null,
  }, title)));
}

function renderSession() {
  const session = document.getElementById("session");
  if (!token()) {
    replace(session);
    return;
  }
  replace(session, h("button", {
    type: "button",
    class: "link-button",
    title: "Forget the token kept in this tab",
    on: { click: () => { setToken(""); show(); } },
  }, "Forget token"));
}

function stopTimers() {
  for (const timer of timers) clearInterval(timer);
  timers = [];
}

/** Renders the page the hash names. */
async function show() {
  stopTimers();
  generation += 1;
  const mine = generation;
  const main = document.getElementById("main");
  const { segments, query } = parseHash();
  const found = match(segments);
  renderNav(found ? found.section : null);
  renderSession();
  if (!found) {
    replace(main, h("section", { class: "panel" }, h("h2", {}, "No such page"),
      h("p", {}, "The console has no page at this address. ", h("a", { href: route([]) }, "Back to the overview"))));
    return;
  }
  const context = {
    params: found.params,
    query,
    every(ms, refresh) {
      if (mine !== generation) return () => {};
      const timer = setInterval(async () => {
        if (mine !== generation || document.hidden) return;
        try {
          await refresh();
          const stale = document.getElementById("error");
          if (stale && mine === generation) stale.remove();
        } catch (error) {
          if (mine === generation) showError(error);
        }
      }, ms);
      timers.push(timer);
      return () => clearInterval(timer);
    },
    current: () => mine === generation,
  };
  try {
    const node = await found.page(context);
    if (mine !== generation) return;
    replace(main, node);
  } catch (error) {
    if (mine !== generation) return;
    stopTimers();
    showError(error);
  }
}

function showError(error) {
  const main = document.getElementById("main");
  if (error instanceof AuthRequired) {
    stopTimers();
    replace(main, loginForm(error.message));
    return;
  }
  if (error instanceof ApiFailure && error.status === 403) {
    // The token works but its role may not read this (a `submit` or `worker` token): offer
    // another one.
    stopTimers();
    replace(main, h("div", { class: "error", id: "error", role: "alert" }, `403 ${error.code}: ${error.message}`),
      loginForm("this token's role may not read this page"));
    return;
  }
  const text = error instanceof ApiFailure
    ? `${error.status ? `${error.status} ` : ""}${error.code}: ${error.message}`
    : `the page failed: ${error && error.message ? error.message : String(error)}`;
  const existing = document.getElementById("error");
  const box = h("div", { class: "error", id: "error", role: "alert" }, text);
  if (existing) existing.replaceWith(box);
  else main.prepend(box);
}

function loginForm(reason) {
  const input = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "off", required: true,
    placeholder: "agtk_...",
  });
  const form = h("form", {
    class: "panel login",
    on: {
      submit: async (event) => {
        event.preventDefault();
        setToken(input.value.trim());
        show();
      },
    },
  },
  h("h2", {}, "Token needed"),
  h("p", {}, "The daemon answered: ", h("em", {}, reason), ". Paste a token with the ",
    h("code", {}, "read"), " role (", h("code", {}, "agentctl tokens create --role read --name console"),
    "). It is kept in this tab's session storage only and sent to this daemon's API."),
  h("label", { for: "token" }, "Bearer token"), " ", input, " ",
  h("button", { type: "submit" }, "Open the console"));
  setTimeout(() => input.focus(), 0);
  return form;
}

window.addEventListener("hashchange", show);
show();
