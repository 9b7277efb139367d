// Workers: the workers holding leases now, derived from the leased jobs (`GET /v1/jobs?state=
// leased`, whose views carry the lease's worker id and expiry). The daemon keeps no list of
// workers and does not record the tags a worker offers when it asks for a lease, so a worker
// that holds no lease is not shown, and the tags shown are those of the jobs it holds.

import { h, link, table, code } from "./dom.js";
import { get } from "./api.js";
import { count, since } from "./format.js";

/** Leased jobs read per page, and pages read at most per refresh (the rest are counted as "more"). */
const LEASED_PAGE = 1000;
const LEASED_PAGES_MAX = 5;
/** Job ids listed per worker. */
const JOBS_SHOWN = 5;

/**
 * The workers holding leases: `{ workers: [{ workerId, jobs, queues, tags, nextExpiryMs }],
 * truncated }`, most leases first. `leasedTotal` (from the queue counts) saves the requests when
 * nothing is leased.
 */
export async function leaseHolders(leasedTotal) {
  if (!leasedTotal) return { workers: [], truncated: false };
  const jobs = [];
  let after = "";
  for (let page = 0; page < LEASED_PAGES_MAX; page += 1) {
    const answer = await get("/v1/jobs", { state: "leased", limit: LEASED_PAGE, after });
    jobs.push(...answer.jobs);
    after = answer.next_after;
    if (!after) return { workers: groupByWorker(jobs), truncated: false };
  }
  return { workers: groupByWorker(jobs), truncated: true };
}

/** The workers panel's table. */
export function workersTable(holders, now) {
  const rows = holders.workers.map((worker) => [
    h("span", { "data-worker": worker.workerId }, code(worker.workerId)),
    count(worker.jobs.length),
    jobLinks(worker.jobs),
    [...worker.queues].sort().map((queue, index) => [index ? ", " : "", link(["jobs"], queue, { queue, state: "leased" })]),
    worker.tags.length ? worker.tags.map((tag) => h("span", { class: "badge" }, tag)) : h("span", { class: "muted" }, "none"),
    since(worker.nextExpiryMs, now),
  ]);
  return [
    table(["worker", "leases", "jobs", "queues", "tags of its jobs", "next lease expiry"], rows,
      { empty: "no worker holds a lease now" }),
    holders.truncated
      ? h("p", { class: "muted" }, `Only the first ${count(LEASED_PAGE * LEASED_PAGES_MAX)} leased jobs were read.`)
      : null,
  ];
}

function jobLinks(jobs) {
  return [
    jobs.slice(0, JOBS_SHOWN).map((job, index) => [index ? ", " : "", link(["jobs", job.job_id], job.job_id)]),
    jobs.length > JOBS_SHOWN ? h("span", { class: "muted" }, ` and ${count(jobs.length - JOBS_SHOWN)} more`) : null,
  ];
}

function groupByWorker(jobs) {
  const workers = new Map();
  for (const job of jobs) {
    if (!job.lease) continue;
    const workerId = job.lease.worker_id;
    if (!workers.has(workerId)) {
      workers.set(workerId, { workerId, jobs: [], queues: new Set(), tags: new Set(), nextExpiryMs: null });
    }
    const worker = workers.get(workerId);
    worker.jobs.push(job);
    worker.queues.add(job.queue);
    for (const [key, value] of Object.entries(job.tags || {})) worker.tags.add(`${key}=${value}`);
    const expiry = Number(job.lease.expires_at_ms);
    if (worker.nextExpiryMs === null || expiry < worker.nextExpiryMs) worker.nextExpiryMs = expiry;
  }
  return [...workers.values()]
    .map((worker) => ({ ...worker, tags: [...worker.tags].sort() }))
    .sort((a, b) => b.jobs.length - a.jobs.length || a.workerId.localeCompare(b.workerId));
}
