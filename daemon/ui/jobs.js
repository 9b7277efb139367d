// Jobs: a filtered, paged list (`#/jobs?queue=q&state=queued&limit=50&after=job_100`) and one
// job (`#/jobs/job_7`) with payload, result, error, log tail and its history as a timeline.

import { h, link, table, section, facts, replace, route, pre, code, badge } from "./dom.js";
import { get, api } from "./api.js";
import { time, since, json, stateBadge, firstLine, duration } from "./format.js";
import { JOB_STATES } from "./overview.js";

const PAGE_SIZES = [25, 50, 100, 200];
const PAGE_SIZE_DEFAULT = 50;
/** A job page refreshes on this period until the job is finished. */
const REFRESH_MS = 3000;
const TERMINAL_STATES = new Set(["completed", "dead", "cancelled"]);

export async function jobsPage(context) {
  const queue = context.query.get("queue") || "";
  const state = context.query.get("state") || "";
  const after = context.query.get("after") || "";
  const requested = Number(context.query.get("limit"));
  const limit = PAGE_SIZES.includes(requested) ? requested : PAGE_SIZE_DEFAULT;
  const [queues, page] = await Promise.all([
    get("/v1/queues"),
    get("/v1/jobs", { queue, state, after, limit }),
  ]);
  const now = Date.now();
  const rows = page.jobs.map((job) => [
    link(["jobs", job.job_id], job.job_id),
    link(["jobs"], job.queue, { queue: job.queue }),
    job.kind,
    stateBadge(job.state),
    `${job.attempt} / ${job.max_attempts}`,
    String(job.priority),
    job.task_id ? link(["tasks", job.task_id], job.task_id) : "",
    since(job.submitted_at_ms, now),
    h("span", { class: "error-text" }, firstLine(job.last_error, 60)),
  ]);
  const filters = { queue, state, limit: limit === PAGE_SIZE_DEFAULT ? "" : limit };
  return h("div", { class: "page", "data-page": "jobs" },
    h("h1", {}, "Jobs"),
    filterForm(queues.queues.map((item) => item.queue), queue, state, limit),
    table(["job", "queue", "kind", "state", "attempt", "priority", "task", "submitted", "last error"], rows,
      { empty: page.next_after ? "no match among the jobs scanned for this page; try the next page" : "no jobs match" }),
    h("p", { class: "pager" },
      after ? [link(["jobs"], "← First page", filters), " "] : null,
      page.next_after
        ? link(["jobs"], "Next page →", { ...filters, after: page.next_after })
        : h("span", { class: "muted" }, "last page")));
}

function filterForm(queueNames, queue, state, limit) {
  const names = queueNames.includes(queue) || !queue ? queueNames : [queue, ...queueNames];
  const queueSelect = h("select", { name: "queue", id: "filter-queue" },
    h("option", { value: "" }, "any queue"),
    names.map((name) => h("option", { value: name, selected: name === queue }, name)));
  const stateSelect = h("select", { name: "state", id: "filter-state" },
    h("option", { value: "" }, "any state"),
    JOB_STATES.map((name) => h("option", { value: name, selected: name === state }, name)));
  const limitSelect = h("select", { name: "limit", id: "filter-limit" },
    PAGE_SIZES.map((size) => h("option", { value: size, selected: size === limit }, `${size} per page`)));
  return h("form", {
    class: "filters",
    on: {
      submit: (event) => {
        event.preventDefault();
        const chosen = Number(limitSelect.value);
        location.hash = route(["jobs"], {
          queue: queueSelect.value,
          state: stateSelect.value,
          limit: chosen === PAGE_SIZE_DEFAULT ? "" : chosen,
        });
      },
    },
  },
  h("label", { for: "filter-queue" }, "Queue"), queueSelect,
  h("label", { for: "filter-state" }, "State"), stateSelect,
  limitSelect,
  h("button", { type: "submit" }, "Show"));
}

export async function jobPage(context) {
  const jobId = context.params.job;
  const container = h("div", { class: "page", "data-page": "job" });
  const load = async () => {
    const job = await get(api("jobs", jobId));
    if (context.current()) replace(container, jobView(job));
    return job;
  };
  const job = await load();
  if (!TERMINAL_STATES.has(job.state)) {
    const stop = context.every(REFRESH_MS, async () => {
      const next = await load();
      if (TERMINAL_STATES.has(next.state)) stop();
    });
  }
  return container;
}

function jobView(job) {
  const now = Date.now();
  const tags = Object.entries(job.tags || {});
  return [
    h("h1", {}, "Job ", code(job.job_id), " ", stateBadge(job.state)),
    section("Job", facts([
      ["queue", link(["jobs"], job.queue, { queue: job.queue })],
      ["kind", job.kind],
      ["state", stateBadge(job.state)],
      ["attempt", `${job.attempt} of at most ${job.max_attempts}`],
      ["priority", String(job.priority)],
      ["task", job.task_id ? link(["tasks", job.task_id], job.task_id) : null],
      ["tags", tags.length ? tags.map(([key, value]) => badge(`${key}=${value}`)) : null],
      ["idempotency key", job.idempotency_key ? code(job.idempotency_key) : null],
      ["lease TTL", duration(job.lease_ttl_ms)],
      ["runnable at", job.run_at_ms !== null && job.run_at_ms !== undefined ? since(job.run_at_ms, now) : null],
      ["submitted", since(job.submitted_at_ms, now)],
      ["updated", since(job.updated_at_ms, now)],
      ["lease", job.lease
        ? [code(job.lease.lease_id), ` held by ${job.lease.worker_id}, attempt ${job.lease.attempt}, expires ${since(job.lease.expires_at_ms, now)}`]
        : null],
    ])),
    section("Payload", pre(json(job.payload), "json")),
    section("Result", job.result === null || job.result === undefined
      ? h("p", { class: "muted" }, "no result")
      : pre(json(job.result), "json")),
    job.last_error ? section("Last error", pre(job.last_error, "error-text")) : null,
    section("Log tail", job.log_tail
      ? pre(job.log_tail, "log")
      : h("p", { class: "muted" }, "the last completion or failure carried no output")),
    section("History", timeline(job.history || [])),
  ];
}

/** The job's events in log order, each with its time, LSN and what it carried. */
function timeline(history) {
  if (history.length === 0) return h("p", { class: "muted" }, "no history");
  return h("ol", { class: "timeline" }, history.map((entry) => {
    const details = [
      entry.attempt !== undefined ? `attempt ${entry.attempt}` : null,
      entry.worker_id ? `worker ${entry.worker_id}` : null,
      entry.lease_id ? `lease ${entry.lease_id}` : null,
      entry.expires_at_ms !== undefined ? `expires ${time(entry.expires_at_ms)}` : null,
      entry.retryable !== undefined ? (entry.retryable ? "retryable" : "not retryable") : null,
      entry.run_at_ms !== undefined ? `runnable at ${time(entry.run_at_ms)}` : null,
      entry.actor ? `by ${entry.actor}` : null,
    ].filter(Boolean);
    return h("li", { class: `event event-${eventKind(entry.event)}` },
      h("div", { class: "event-head" },
        h("span", { class: "event-name" }, entry.event),
        h("span", { class: "muted" }, ` ${time(entry.ts_ms)} · LSN ${entry.lsn}`)),
      details.length ? h("div", { class: "event-details" }, details.join(" · ")) : null,
      entry.error ? pre(entry.error, "error-text") : null);
  }));
}

function eventKind(event) {
  if (/complet/.test(event)) return "good";
  if (/fail|dead|expired|cancel/.test(event)) return "bad";
  return "plain";
}
