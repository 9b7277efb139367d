// Overview: the daemon's health and LSN, submit and complete rates, every queue's depth by state
// with its rates and oldest waiting job, the workers holding leases, the latest exports and the
// schedules; refreshed every few seconds.

import { h, link, table, section, replace, code, badge } from "./dom.js";
import { get } from "./api.js";
import { count, since, time, decimal, duration } from "./format.js";
import { recordQueueSample, currentRates, formatRate, RATE_WINDOW_MS } from "./rates.js";
import { leaseHolders, workersTable } from "./workers.js";

/** Job states in lifecycle order (the columns of the queue table). */
export const JOB_STATES = ["scheduled", "queued", "leased", "completed", "dead", "cancelled"];
const REFRESH_MS = 5000;
/** Queues whose oldest waiting job is looked up (one request each) per refresh. */
const OLDEST_LOOKUPS_MAX = 20;
const EXPORTS_SHOWN = 5;

export async function overviewPage(context) {
  const container = h("div", { class: "page", "data-page": "overview" });
  replace(container, await build());
  context.every(REFRESH_MS, async () => {
    const next = await build();
    if (context.current()) replace(container, next);
  });
  return container;
}

async function build() {
  const health = await get("/healthz");
  // While the domain projections load after a start, /v1/trajectories/stats waits and then
  // answers 503 `loading`; the job figures are current meanwhile, so the page shows them and
  // says the trajectory figures are loading (daemons before `domain_loaded` load first).
  const domainLoaded = health.domain_loaded !== false;
  const [queues, exports, schedules, stats] = await Promise.all([
    get("/v1/queues"),
    get("/v1/exports"),
    get("/v1/schedules"),
    domainLoaded ? get("/v1/trajectories/stats") : Promise.resolve(null),
  ]);
  const now = Date.now();
  recordQueueSample(queues.queues, now);
  const rates = currentRates();
  const totals = Object.fromEntries(JOB_STATES.map((state) => [state,
    queues.queues.reduce((sum, queue) => sum + Number(queue.depth[state] || 0), 0)]));
  const [oldest, holders] = await Promise.all([
    oldestWaiting(queues.queues),
    leaseHolders(totals.leased),
  ]);
  return [
    h("h1", {}, "Overview"),
    h("p", { class: "muted" }, `Updated ${time(now)}; refreshes every ${REFRESH_MS / 1000} s.`),
    h("div", { class: "cards" },
      card("durable LSN", count(health.durable_lsn), `agentd ${health.version}, ${health.status}`),
      card("waiting", count(totals.queued + totals.scheduled), `${count(totals.queued)} queued, ${count(totals.scheduled)} scheduled`),
      card("leased", count(totals.leased), "running now"),
      card("dead", count(totals.dead), `${count(totals.completed)} completed, ${count(totals.cancelled)} cancelled`),
      rateCard("submitted", "submit", rates && rates.total.submitted, rates),
      rateCard("completed", "complete", rates && rates.total.completed, rates),
      ...trajectoryCards(stats)),
    section("Queues", queueTable(queues.queues, oldest, rates, now)),
    section("Workers", h("p", { class: "muted" }, "Workers holding leases now, from the leased jobs; the daemon does not record the tags a worker offers, so the tags are those of the jobs it holds."),
      workersTable(holders, now)),
    section("Latest exports", exportTable(exports.exports.slice(0, EXPORTS_SHOWN)),
      h("p", {}, link(["exports"], `All ${count(exports.exports.length)} exports, watermarks and dataset builds`))),
    section("Schedules", scheduleTable(schedules.schedules, now)),
  ];
}

/** The steps and reward cards; `stats` is null while the domain projections load. */
function trajectoryCards(stats) {
  if (!stats) {
    const detail = "loading from the log after a start";
    return [card("steps", "loading", detail), card("mean reward", "loading", detail)];
  }
  return [
    card("steps", count(stats.steps), `${count(stats.tasks)} tasks, ${count(stats.rollouts)} rollouts`),
    card("mean reward", decimal(stats.rewards.mean), `${count(stats.rewards.count)} rewards, ${count(stats.rewards.verified)} verified`),
  ];
}

function card(title, value, detail) {
  return h("div", { class: "card" }, h("div", { class: "card-title" }, title),
    h("div", { class: "card-value" }, value), h("div", { class: "card-detail" }, detail));
}

/** A rate card; `kind` (`submit` or `complete`) marks it for tests. */
function rateCard(title, kind, jobsPerSecond, rates) {
  const explanation = rates
    ? `Jobs ${title} per second over the last ${duration(rates.overMs)}: the change in the counts GET /v1/queues returns between this page's polls (window up to ${duration(RATE_WINDOW_MS)})`
    : `Needs a second poll of GET /v1/queues (every ${REFRESH_MS / 1000} s) to measure`;
  return h("div", { class: "card", title: explanation },
    h("div", { class: "card-title" }, `${title} / s`),
    h("div", { class: "card-value", "data-rate": kind }, formatRate(rates ? jobsPerSecond : null)),
    h("div", { class: "card-detail" }, rates ? `over the last ${duration(rates.overMs)}` : "measuring: next poll"));
}

/** The first queued job of each queue (jobs are listed in id order: the oldest submitted). */
async function oldestWaiting(queues) {
  const waiting = queues.filter((queue) => Number(queue.depth.queued || 0) > 0).slice(0, OLDEST_LOOKUPS_MAX);
  const pages = await Promise.all(waiting.map((queue) =>
    get("/v1/jobs", { queue: queue.queue, state: "queued", limit: 1 })));
  return new Map(waiting.map((queue, index) => [queue.queue, pages[index].jobs[0] || null]));
}

function queueTable(queues, oldest, rates, now) {
  const rateOf = (queue, field) => (rates ? formatRate(rates.queues.get(queue.queue)[field]) : h("span", { class: "muted" }, "—"));
  const rows = queues.map((queue) => [
    [link(["jobs"], queue.queue, { queue: queue.queue }), queue.paused ? [" ", badge("paused", "bad")] : null],
    ...JOB_STATES.map((state) => {
      const depth = Number(queue.depth[state] || 0);
      return depth > 0 ? link(["jobs"], count(depth), { queue: queue.queue, state }) : h("span", { class: "muted" }, "0");
    }),
    rateOf(queue, "submitted"),
    rateOf(queue, "completed"),
    oldestCell(queue, oldest, now),
  ]);
  const over = rates ? ` (over ${duration(rates.overMs)})` : "";
  return table(["queue", ...JOB_STATES, `submitted/s${over}`, `completed/s${over}`, "oldest waiting"], rows,
    { class: "numeric", empty: "no queues yet: submit a job" });
}

function oldestCell(queue, oldest, now) {
  if (Number(queue.depth.queued || 0) === 0) return h("span", { class: "muted" }, "—");
  const job = oldest.get(queue.queue);
  if (!job) return h("span", { class: "muted" }, "(not looked up)");
  return [link(["jobs", job.job_id], job.job_id), " ", h("span", { class: "muted" }, `submitted ${since(job.submitted_at_ms, now)}`)];
}

export function exportTable(exports) {
  return table(["export", "kind", "format", "rows", "LSN range", "files", "schedule", "recorded"],
    exports.map((item) => [
      link(["exports", item.export_id], item.export_id),
      item.kind,
      item.format,
      count(item.rows),
      `${item.after_lsn} → ${item.to_lsn}`,
      count(item.files.length),
      item.schedule ? item.schedule.schedule : "",
      time(item.recorded_at_ms),
    ]), { empty: "no exports yet" });
}

export function scheduleTable(schedules, now) {
  return table(["schedule", "cron", "time zone", "kind", "format", "next run", "last run", "last export"],
    schedules.map((schedule) => [
      schedule.name,
      code(schedule.cron),
      schedule.timezone,
      `${schedule.kind}${schedule.full ? " (full)" : ""}`,
      schedule.format,
      since(schedule.next_run_ms, now),
      schedule.last_run_ms === null || schedule.last_run_ms === undefined
        ? "never"
        : [time(schedule.last_run_ms), " ", schedule.last_completed ? badge("done", "good") : badge("running", "warn")],
      schedule.last_export_id ? link(["exports", schedule.last_export_id], schedule.last_export_id) : "",
    ]), { empty: "no schedules configured ([[schedules]] in agentd.toml)" });
}
