// Submit and complete rates (jobs per second), per queue and in all, from successive polls of
// `GET /v1/queues`. The API has no rate of its own, but its counts are cumulative: the daemon
// keeps every job it was given (there is no retention), so the jobs of a queue in all states are
// the jobs ever submitted to it, and its `completed` count only grows. A rate is the change in
// those counts between the oldest and the newest poll of a sliding window, divided by the time
// between them.

/** How far back the rate looks: the oldest sample kept is at most this old. */
export const RATE_WINDOW_MS = 60000;
/** Samples kept (one per overview refresh, every 5 s, so a full window holds 13). */
const SAMPLES_MAX = 32;

/**
 * `{ atMs, queues: Map(queue -> { submitted, completed }) }`, oldest first. Kept in the module,
 * not the page, so returning to the overview shows rates at once.
 */
let samples = [];

/** Adds a poll of `GET /v1/queues` taken at `atMs` (the browser's clock). */
export function recordQueueSample(queues, atMs) {
  const sample = { atMs, queues: new Map(queues.map((queue) => [queue.queue, queueCounts(queue)])) };
  const newest = samples[samples.length - 1];
  // Counts that went down mean another daemon or a restored log: the old samples say nothing.
  if (newest && (countsWentDown(newest, sample) || atMs <= newest.atMs)) samples = [];
  samples.push(sample);
  samples = samples.filter((kept) => atMs - kept.atMs <= RATE_WINDOW_MS).slice(-SAMPLES_MAX);
}

/**
 * The rates over the window: `{ overMs, total: { submitted, completed }, queues: Map(queue ->
 * { submitted, completed }) }` in jobs per second, or null before a second poll.
 */
export function currentRates() {
  if (samples.length < 2) return null;
  const oldest = samples[0];
  const newest = samples[samples.length - 1];
  const seconds = (newest.atMs - oldest.atMs) / 1000;
  const queues = new Map();
  const total = { submitted: 0, completed: 0 };
  for (const [name, counts] of newest.queues) {
    // A queue missing from the oldest sample was created since: everything in it is new.
    const before = oldest.queues.get(name) || { submitted: 0, completed: 0 };
    const rate = {
      submitted: (counts.submitted - before.submitted) / seconds,
      completed: (counts.completed - before.completed) / seconds,
    };
    queues.set(name, rate);
    total.submitted += rate.submitted;
    total.completed += rate.completed;
  }
  return { overMs: newest.atMs - oldest.atMs, total, queues };
}

/** A rate as `1.25 jobs/s`; "—" for none. */
export function formatRate(jobsPerSecond) {
  if (jobsPerSecond === null || jobsPerSecond === undefined) return "—";
  return `${Number(jobsPerSecond).toFixed(2)} jobs/s`;
}

function queueCounts(queue) {
  const depth = queue.depth || {};
  const submitted = Object.values(depth).reduce((sum, value) => sum + Number(value || 0), 0);
  return { submitted, completed: Number(depth.completed || 0) };
}

function countsWentDown(before, after) {
  for (const [name, counts] of before.queues) {
    const now = after.queues.get(name);
    if (!now || now.submitted < counts.submitted || now.completed < counts.completed) return true;
  }
  return false;
}
