// Rollouts and rewards: trajectory stats (teacher precision per model, policy version and
// language; the reward distribution), pass@k per task group (passk.js), a task's rollouts, the
// trajectory viewer (each step's state before it, think, action, diff, test output, reward and
// components) and groups, whose rollouts are shown side by side.

import { h, link, table, section, facts, route, pre, code, badge, bar } from "./dom.js";
import { get, api } from "./api.js";
import {
  count, decimal, percent, time, json, renderState, diff, outcomeBadge, rewardBadge, firstLine,
  duration, bytes,
} from "./format.js";
import { passSettings, newestGroups, passTable, passForm } from "./passk.js";

/** Steps per page of the trajectory viewer (each may carry a diff of up to 1 MiB). */
const STEPS_PAGE = 50;
/** Rollouts of a group shown side by side on the group page. */
const GROUP_COLUMNS_MAX = 6;

// ---------------------------------------------------------------------------------------------
// Stats

export async function rewardsPage(context) {
  const stats = await get("/v1/trajectories/stats");
  const settings = passSettings(context.query);
  const groups = await newestGroups(stats.rollouts, settings.groupsShown);
  const rewards = stats.rewards;
  const ignored = Object.entries(stats.ignored).filter(([, value]) => Number(value) > 0);
  return h("div", { class: "page", "data-page": "rollouts" },
    h("h1", {}, "Rollouts and rewards"),
    lookupForm(),
    h("div", { class: "cards" },
      card("tasks", count(stats.tasks)),
      card("rollouts", count(stats.rollouts)),
      card("groups", count(stats.groups)),
      card("steps", count(stats.steps)),
      card("sandbox results", count(stats.sandbox_results)),
      card("rewards", count(rewards.count))),
    section("pass@k per task group",
      h("p", { class: "muted" }, `The newest ${count(groups.length)} of ${count(stats.groups)} groups. `,
        `A rollout passes when it is scored and its reward (the sum of its steps' rewards) is at least ${decimal(settings.passReward)}; `,
        "pass@k is the unbiased estimate over the group's n scored rollouts, 1 − C(n−c, k) / C(n, k), ",
        settings.k === null ? "with k = n (did any pass) unless k is set." : `with k = ${settings.k}.`),
      passForm(settings),
      passTable(groups, settings)),
    section("Teacher precision by model", precisionTable(["model"], stats.models.map((row) => [[row.model], row]))),
    section("Teacher precision by model and policy version",
      precisionTable(["model", "policy version"], stats.policies.map((row) => [[row.model, row.policy_version], row]))),
    section("Teacher precision by action language",
      precisionTable(["language"], (stats.languages || []).map((row) => [[row.language], row]))),
    section("Reward distribution",
      facts([
        ["rewards", `${count(rewards.count)} (${count(rewards.verified)} verified, ${count(rewards.unverified)} unverified)`],
        ["mean", decimal(rewards.mean)],
        ["min / max", `${decimal(rewards.min)} / ${decimal(rewards.max)}`],
        ["by source", Object.entries(rewards.by_source).map(([source, n]) => `${source} ${count(n)}`).join(", ") || "—"],
      ]),
      histogram(rewards.buckets)),
    section("Sandbox outcomes", table(["outcome", "results"],
      Object.entries(stats.sandbox_outcomes).map(([outcome, n]) => [outcomeBadge(outcome), count(n)]),
      { class: "numeric", empty: "no sandbox results yet" })),
    ignored.length
      ? section("Writes that reached the log but did not apply (the first writer won)",
        facts(ignored.map(([name, value]) => [name.replaceAll("_", " "), count(value)])))
      : null);
}

function card(title, value) {
  return h("div", { class: "card" }, h("div", { class: "card-title" }, title), h("div", { class: "card-value" }, value));
}

function lookupForm() {
  const field = (id, label, placeholder) => [h("label", { for: id }, label),
    h("input", { id, name: id, placeholder, autocomplete: "off" })];
  const form = h("form", {
    class: "filters",
    on: {
      submit: (event) => {
        event.preventDefault();
        const value = (id) => form.querySelector(`#${id}`).value.trim();
        if (value("find-rollout")) location.hash = route(["rollouts", value("find-rollout")]);
        else if (value("find-group")) location.hash = route(["groups", value("find-group")]);
        else if (value("find-task")) location.hash = route(["tasks", value("find-task")]);
      },
    },
  },
  field("find-task", "Task", "task id"),
  field("find-rollout", "Rollout", "ro_1"),
  field("find-group", "Group", "grp-…"),
  h("button", { type: "submit" }, "Open"));
  return form;
}

function precisionTable(keyColumns, rows) {
  return table([...keyColumns, "steps", "rewarded", "verified", "teacher precision", ""],
    rows.map(([keys, row]) => [
      ...keys,
      count(row.steps),
      count(row.rewarded),
      count(row.verified),
      percent(row.teacher_precision),
      row.teacher_precision === null || row.teacher_precision === undefined ? "" : bar(row.teacher_precision, "good"),
    ]), { class: "numeric", empty: "no steps yet" });
}

function histogram(buckets) {
  const most = Math.max(1, ...buckets.map((bucket) => Number(bucket.count)));
  const bound = (value, open) => (value === null || value === undefined ? open : decimal(value, 2));
  return table(["reward in", "count", ""], buckets.map((bucket) => [
    code(`(${bound(bucket.lower, "-∞")}, ${bound(bucket.upper, "+∞")}]`),
    count(bucket.count),
    bar(Number(bucket.count) / most),
  ]), { class: "numeric histogram", empty: "no rewards yet" });
}

// ---------------------------------------------------------------------------------------------
// A task

export async function taskPage(context) {
  const taskId = context.params.task;
  const [rollouts, state] = await Promise.all([
    get(api("tasks", taskId, "rollouts")),
    get(api("tasks", taskId, "state")),
  ]);
  return h("div", { class: "page", "data-page": "task" },
    h("h1", {}, "Task ", code(taskId)),
    section("Rollouts", rolloutTable(rollouts.rollouts, null)),
    section("Base agent state",
      facts([
        ["tokens", `${count(state.tokens)} (${state.encoding})`],
        ["updates", count(state.updates)],
        ["LSN", String(state.lsn)],
      ]),
      pre(state.rendered || "(empty state)", "state")));
}

/** Rollouts with their rewards and advantages; `current` is marked, the others compared. */
function rolloutTable(rollouts, current) {
  return table(["rollout", "group", "model", "policy version", "job", "steps", "rewarded", "reward", "advantage", ""],
    rollouts.map((rollout) => {
      const id = rollout.rollout_id;
      const target = id ? ["rollouts", id] : ["tasks", rollout.task_id, "trajectory"];
      return [
        id === current && current ? h("strong", {}, `${id} (this one)`) : link(target, id || "(default)"),
        rollout.group ? link(["groups", rollout.group], rollout.group) : "",
        rollout.model,
        rollout.policy_version,
        rollout.job_id ? link(["jobs", rollout.job_id], rollout.job_id) : "",
        count(rollout.steps),
        count(rollout.rewarded),
        decimal(rollout.reward),
        decimal(rollout.advantage),
        current && id && id !== current ? link(["rollouts", current], "side by side", { vs: id }) : "",
      ];
    }), { class: "numeric", empty: "no rollouts or steps for this task" });
}

// ---------------------------------------------------------------------------------------------
// The trajectory viewer

/** The task's default rollout (steps recorded through the task-level routes). */
export async function trajectoryPage(context) {
  const taskId = context.params.task;
  const after = context.query.get("after") || "";
  const trajectory = await get(api("tasks", taskId, "trajectory"), { after, limit: STEPS_PAGE });
  return h("div", { class: "page", "data-page": "trajectory" },
    h("h1", {}, "Default rollout of task ", link(["tasks", taskId], taskId)),
    h("p", { class: "muted" }, "Steps recorded through the task-level routes (no rollout id)."),
    trajectory.steps.map((step) => stepView(step)),
    trajectory.steps.length === 0 ? h("p", { class: "muted" }, "no steps") : null,
    pager(["tasks", taskId, "trajectory"], {}, after, trajectory.next_after));
}

/** One rollout's steps; with `?vs=ro_N`, next to another rollout's, step by step. */
export async function rolloutPage(context) {
  const rolloutId = context.params.rollout;
  const versus = context.query.get("vs") || "";
  const after = context.query.get("after") || "";
  const rollout = await get(api("rollouts", rolloutId), { after, limit: STEPS_PAGE });
  const [group, other] = await Promise.all([
    get(api("groups", rollout.group)),
    versus ? get(api("rollouts", versus), { after, limit: STEPS_PAGE }) : null,
  ]);
  const body = other
    ? sideBySide(rollout, other)
    : [rollout.steps.map((step) => stepView(step)),
      rollout.steps.length === 0 ? h("p", { class: "muted" }, "no steps yet") : null];
  const nextAfter = other ? laterOf(rollout.next_after, other.next_after) : rollout.next_after;
  return h("div", { class: "page", "data-page": "rollout" },
    h("h1", {}, "Rollout ", code(rollout.rollout_id), " ", badge(`reward ${decimal(rollout.reward)}`, rollout.reward > 0 ? "good" : "bad"),
      other ? [" vs ", code(other.rollout_id), " ", badge(`reward ${decimal(other.reward)}`, other.reward > 0 ? "good" : "bad")] : null),
    other ? h("p", {}, link(["rollouts", rollout.rollout_id], "← this rollout alone")) : null,
    h("div", { class: other ? "versus" : "" }, rolloutFacts(rollout), other ? rolloutFacts(other) : null),
    section(`Group ${group.group}: mean ${decimal(group.mean)}, std ${decimal(group.std)}, ${count(group.scored)} scored`,
      rolloutTable(group.rollouts, rollout.rollout_id),
      h("p", {}, link(["groups", group.group], "The group's rollouts side by side"))),
    body,
    pager(["rollouts", rolloutId], { vs: versus }, after, nextAfter));
}

function laterOf(left, right) {
  if (left === null || left === undefined) return right;
  if (right === null || right === undefined) return left;
  return Math.min(Number(left), Number(right));
}

function rolloutFacts(rollout) {
  const sampling = Object.entries(rollout.sampling || {})
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([key, value]) => `${key} ${value}`).join(", ");
  return section(`Rollout ${rollout.rollout_id}`, facts([
    ["task", link(["tasks", rollout.task_id], rollout.task_id)],
    ["group", link(["groups", rollout.group], rollout.group)],
    ["model", rollout.model],
    ["policy version", rollout.policy_version],
    ["sampling", sampling || null],
    ["job", rollout.job_id ? link(["jobs", rollout.job_id], rollout.job_id) : null],
    ["worker", rollout.worker_id ? `${rollout.worker_id} (attempt ${rollout.attempt})` : null],
    ["started from", rollout.state_from === "empty" ? "the empty state" : "the task's base state"],
    ["created", `${time(rollout.ts_ms)} (LSN ${rollout.lsn})`],
    ["reward", decimal(rollout.reward)],
  ]));
}

function sideBySide(left, right) {
  const byStep = (rollout) => new Map(rollout.steps.map((step) => [step.step, step]));
  const leftSteps = byStep(left);
  const rightSteps = byStep(right);
  const indexes = [...new Set([...leftSteps.keys(), ...rightSteps.keys()])].sort((a, b) => a - b);
  const missing = (rollout, index) => h("div", { class: "panel muted" }, `${rollout.rollout_id} has no step ${index}`);
  return h("div", { class: "versus" }, indexes.map((index) => [
    leftSteps.has(index) ? stepView(leftSteps.get(index)) : missing(left, index),
    rightSteps.has(index) ? stepView(rightSteps.get(index)) : missing(right, index),
  ]));
}

function pager(segments, query, after, nextAfter) {
  return h("p", { class: "pager" },
    after ? [link(segments, "← First steps", query), " "] : null,
    nextAfter !== null && nextAfter !== undefined
      ? link(segments, "Next steps →", { ...query, after: nextAfter })
      : null);
}

/** One step: state before, think, action, diff, test output, reward and components. */
function stepView(step) {
  const sandbox = step.sandbox;
  const reward = step.reward;
  return h("section", { class: "panel step", "data-step": step.step },
    h("h2", {}, `Step ${step.step} `,
      reward ? rewardBadge(reward.value, reward.verified) : badge("no reward yet"), " ",
      sandbox ? outcomeBadge(sandbox.outcome) : null),
    h("p", { class: "muted" }, [
      `${step.model} · ${step.policy_version}`,
      step.prompt_tokens !== null && step.prompt_tokens !== undefined ? ` · ${count(step.prompt_tokens)} prompt tokens` : "",
      step.completion_tokens !== null && step.completion_tokens !== undefined ? ` · ${count(step.completion_tokens)} completion tokens` : "",
      step.generation_ms !== undefined && step.generation_ms !== null ? ` · generated in ${duration(step.generation_ms)}` : "",
      ` · ${time(step.ts_ms)} · LSN ${step.lsn}`,
    ].join(""), step.job_id ? [" · ", link(["jobs", step.job_id], step.job_id)] : null),
    block("State before", pre(renderState(step.state_before) || "(empty state)", "state"),
      h("div", { class: "muted" }, `as of LSN ${step.state_before_lsn}`)),
    step.think ? block("Think", pre(step.think, "think")) : null,
    block("Action", actionView(step)),
    sandbox && sandbox.diff ? block("Diff", diff(sandbox.diff)) : null,
    sandbox ? block("Test output", testOutput(sandbox)) : null,
    reward ? block("Reward", rewardView(reward)) : null,
    step.raw_output ? details("Raw model output", pre(step.raw_output, "raw")) : null,
    step.prompt ? details("Prompt", pre(step.prompt, "prompt")) : null,
    step.state_update ? details("State update", pre(renderState(step.state_update) || "(nothing added)", "state")) : null);
}

function block(title, ...children) {
  return h("div", { class: "block" }, h("h3", {}, title), children);
}

function details(title, ...children) {
  return h("details", { class: "block" }, h("summary", {}, title), children);
}

function actionView(step) {
  const action = step.action;
  if (!action) {
    const error = step.format_error;
    return h("div", { class: "error-text" }, "No action: the output did not parse",
      error ? [": ", code(error.code), " ", error.message] : "");
  }
  if (action.kind === "pattern") {
    return [facts([["language", action.language]]),
      h("div", { class: "pair" },
        h("div", {}, h("div", { class: "label" }, "pattern"), pre(action.pattern, "code")),
        h("div", {}, h("div", { class: "label" }, "rewrite"), pre(action.rewrite, "code")))];
  }
  if (action.kind === "rule") {
    return [h("div", { class: "label" }, "rule (YAML)"), pre(action.yaml, "code")];
  }
  return pre(json(action), "json");
}

function testOutput(sandbox) {
  const tests = sandbox.tests_passed !== null && sandbox.tests_passed !== undefined
    ? `${count(sandbox.tests_passed)} passed, ${count(sandbox.tests_failed || 0)} failed`
    : null;
  return [
    facts([
      ["outcome", outcomeBadge(sandbox.outcome)],
      ["exit code", sandbox.exit_code === null || sandbox.exit_code === undefined ? "none (killed or timed out)" : String(sandbox.exit_code)],
      ["tests", tests],
      ["duration", sandbox.duration_ms !== null && sandbox.duration_ms !== undefined ? `${count(sandbox.duration_ms)} ms` : null],
      ["peak memory", sandbox.peak_rss_bytes !== null && sandbox.peak_rss_bytes !== undefined ? bytes(sandbox.peak_rss_bytes) : null],
      ["recorded", `${time(sandbox.ts_ms)} (LSN ${sandbox.lsn})`],
    ]),
    sandbox.stdout ? [h("div", { class: "label" }, "stdout"), pre(sandbox.stdout, "log")] : null,
    sandbox.stderr ? [h("div", { class: "label" }, "stderr"), pre(sandbox.stderr, "log")] : null,
    !sandbox.stdout && !sandbox.stderr ? h("p", { class: "muted" }, "no output") : null,
  ];
}

function rewardView(reward) {
  const components = Object.entries(reward.components || {});
  return [
    facts([
      ["value", h("strong", { class: "reward-value" }, decimal(reward.value))],
      ["verified", reward.verified ? "yes" : "no"],
      ["source", reward.source],
      ["recorded", `${time(reward.ts_ms)} (LSN ${reward.lsn})`],
    ]),
    components.length
      ? table(["component", "value"], components.map(([name, value]) => [name, decimal(value)]), { class: "numeric" })
      : null,
  ];
}

// ---------------------------------------------------------------------------------------------
// A group

export async function groupPage(context) {
  const name = context.params.group;
  const group = await get(api("groups", name));
  const shown = group.rollouts.filter((rollout) => rollout.rollout_id).slice(0, GROUP_COLUMNS_MAX);
  const rollouts = await Promise.all(shown.map((rollout) =>
    get(api("rollouts", rollout.rollout_id), { limit: STEPS_PAGE })));
  const advantages = new Map(group.rollouts.map((rollout) => [rollout.rollout_id, rollout.advantage]));
  return h("div", { class: "page", "data-page": "group" },
    h("h1", {}, "Group ", code(group.group)),
    facts([
      ["mean reward", decimal(group.mean)],
      ["standard deviation", decimal(group.std)],
      ["scored rollouts", `${count(group.scored)} of ${count(group.rollouts.length)}`],
      ["task", group.rollouts.length ? link(["tasks", group.rollouts[0].task_id], group.rollouts[0].task_id) : null],
    ]),
    section("Rollouts", rolloutTable(group.rollouts, null)),
    group.rollouts.length > shown.length
      ? h("p", { class: "muted" }, `Side by side: the first ${shown.length} rollouts.`)
      : null,
    h("div", { class: "columns" }, rollouts.map((rollout) => h("div", { class: "column" },
      h("h2", {}, link(["rollouts", rollout.rollout_id], rollout.rollout_id)),
      h("p", {}, `${rollout.model} · ${rollout.policy_version}`),
      h("p", {}, badge(`reward ${decimal(rollout.reward)}`, rollout.reward > 0 ? "good" : "bad"), " ",
        badge(`advantage ${decimal(advantages.get(rollout.rollout_id))}`)),
      rollout.steps.map((step) => compactStep(step)),
      rollout.next_after !== null && rollout.next_after !== undefined
        ? link(["rollouts", rollout.rollout_id], "more steps…", { after: rollout.next_after })
        : null))));
}

function compactStep(step) {
  const action = step.action;
  const summary = !action ? "no action (did not parse)"
    : action.kind === "pattern" ? `${action.language}: ${firstLine(action.pattern, 60)}`
      : firstLine(action.yaml, 60);
  return h("div", { class: "compact-step", "data-step": step.step },
    h("div", {}, h("strong", {}, `Step ${step.step}`), " ",
      step.reward ? rewardBadge(step.reward.value, step.reward.verified) : badge("no reward yet"), " ",
      step.sandbox ? outcomeBadge(step.sandbox.outcome) : null),
    h("code", { class: "summary" }, summary));
}
