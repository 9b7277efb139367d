// pass@k per task group (a group samples one task several times), from the same API the CLI
// reads: the daemon has no list of groups, but it numbers rollouts densely from `ro_1` (the
// sequencer gives each new one the next number) and `GET /v1/trajectories/stats` counts them,
// so the newest groups are found by reading rollouts from the newest down
// (`GET /v1/rollouts/{id}`, no steps) and each one's group (`GET /v1/groups/{group}`), skipping
// rollouts of a group already read. Two requests per group, at most `LOOKUPS_MAX` in all.
//
// A rollout passes when it is scored (a step has a reward) and its reward (the sum of its steps'
// rewards, as the group API gives it) is at least the pass reward. pass@k is the unbiased
// estimate of Chen et al. (2021, "Evaluating Large Language Models Trained on Code"): with n
// scored rollouts of which c pass, 1 - C(n - c, k) / C(n, k), the chance that k of them drawn
// without replacement hold at least one pass.

import { h, link, table, route } from "./dom.js";
import { get, api, ApiFailure } from "./api.js";
import { count, decimal, percent } from "./format.js";

/** Groups shown by default, and at most (`?groups=`). */
const GROUPS_SHOWN_DEFAULT = 20;
const GROUPS_SHOWN_MAX = 100;
/** Requests made at most to find the groups (rollouts and groups read). */
const LOOKUPS_MAX = 250;
/** The reward at which a rollout passes by default (`?pass_reward=`): a full reward. */
const PASS_REWARD_DEFAULT = 1;
/** The largest step index: `after` it there are no steps, so a rollout reads without them. */
const STEP_INDEX_MAX = 4294967295;

/** The settings the page's query names: `k` (blank: every scored rollout), `pass_reward`, `groups`. */
export function passSettings(query) {
  const k = Number.parseInt(query.get("k") || "", 10);
  const passReward = Number.parseFloat(query.get("pass_reward") || "");
  const groups = Number.parseInt(query.get("groups") || "", 10);
  return {
    k: Number.isFinite(k) && k >= 1 ? k : null,
    passReward: Number.isFinite(passReward) ? passReward : PASS_REWARD_DEFAULT,
    groupsShown: Number.isFinite(groups) && groups >= 1 ? Math.min(groups, GROUPS_SHOWN_MAX) : GROUPS_SHOWN_DEFAULT,
  };
}

/** The newest groups (up to `groupsShown`, fewer when `LOOKUPS_MAX` runs out), newest first. */
export async function newestGroups(rolloutCount, groupsShown) {
  const seen = new Set();
  const groups = [];
  let lookups = 0;
  for (let number = Number(rolloutCount); number >= 1 && groups.length < groupsShown && lookups < LOOKUPS_MAX; number -= 1) {
    const rolloutId = `ro_${number}`;
    if (seen.has(rolloutId)) continue;
    lookups += 2;
    const rollout = await rolloutOrNull(rolloutId);
    if (!rollout) continue;
    const group = await get(api("groups", rollout.group));
    for (const member of group.rollouts) if (member.rollout_id) seen.add(member.rollout_id);
    groups.push(group);
  }
  return groups;
}

/** The unbiased pass@k for `n` samples of which `passed` pass; null when k > n. */
export function passAtK(n, passed, k) {
  if (k > n || n === 0) return null;
  if (n - passed < k) return 1;
  // 1 - C(n-c, k) / C(n, k) as a product, which stays within floating point for any n.
  let allFail = 1;
  for (let i = n - passed + 1; i <= n; i += 1) allFail *= 1 - k / i;
  return 1 - allFail;
}

/** The pass@k table of `groups` with the settings' k and pass reward. */
export function passTable(groups, settings) {
  const rows = groups.map((group) => groupRow(group, settings));
  const mean = (values) => {
    const known = values.filter((value) => value !== null);
    return known.length ? known.reduce((sum, value) => sum + value, 0) / known.length : null;
  };
  const kTitle = settings.k === null ? "pass@k (k = n)" : `pass@${settings.k}`;
  const body = rows.map((row) => row.cells);
  if (rows.length > 1) {
    body.push([h("strong", {}, `mean of ${count(rows.length)} groups`), "", "", "", "",
      percent(mean(rows.map((row) => row.passAt1))), percent(mean(rows.map((row) => row.passAtK))), ""]);
  }
  return table(["group", "task", "rollouts", "scored (n)", "passed (c)", "pass@1", kTitle, "mean reward"], body,
    { class: "numeric", empty: "no groups yet (POST /v1/tasks/{task_id}/rollouts with a group)" });
}

/** The form that changes k, the pass reward and the groups shown (a link like any page). */
export function passForm(settings) {
  const form = h("form", {
    class: "filters",
    on: {
      submit: (event) => {
        event.preventDefault();
        const value = (id) => form.querySelector(`#${id}`).value.trim();
        location.hash = route(["rollouts"], { k: value("pass-k"), pass_reward: value("pass-reward"), groups: value("pass-groups") });
      },
    },
  },
  h("label", { for: "pass-k" }, "k"),
  h("input", { id: "pass-k", name: "k", type: "number", min: 1, step: 1, value: settings.k, placeholder: "n" }),
  h("label", { for: "pass-reward" }, "a rollout passes at reward ≥"),
  h("input", { id: "pass-reward", name: "pass_reward", type: "number", step: "any", value: settings.passReward }),
  h("label", { for: "pass-groups" }, "groups"),
  h("input", { id: "pass-groups", name: "groups", type: "number", min: 1, max: GROUPS_SHOWN_MAX, step: 1, value: settings.groupsShown }),
  h("button", { type: "submit" }, "Show"));
  return form;
}

function groupRow(group, settings) {
  const scored = group.rollouts.filter((rollout) => rollout.rollout_id && Number(rollout.rewarded) > 0);
  const n = scored.length;
  const passed = scored.filter((rollout) => Number(rollout.reward) >= settings.passReward).length;
  const k = settings.k === null ? n : settings.k;
  const passAt1 = passAtK(n, passed, 1);
  const passAtKValue = passAtK(n, passed, k);
  const task = group.rollouts.length ? group.rollouts[0].task_id : null;
  const kCell = passAtKValue === null
    ? h("span", { class: "muted" }, n === 0 ? "no scored rollouts" : `needs ${k} scored`)
    : `${percent(passAtKValue)} (k = ${k})`;
  return {
    passAt1,
    passAtK: passAtKValue,
    cells: [
      h("span", { "data-group": group.group }, link(["groups", group.group], group.group)),
      task ? link(["tasks", task], task) : "",
      count(group.rollouts.length),
      count(n),
      count(passed),
      passAt1 === null ? h("span", { class: "muted" }, "—") : percent(passAt1),
      kCell,
      n ? decimal(group.mean) : h("span", { class: "muted" }, "—"),
    ],
  };
}

async function rolloutOrNull(rolloutId) {
  try {
    return await get(api("rollouts", rolloutId), { after: STEP_INDEX_MAX, limit: 1 });
  } catch (error) {
    // A number the daemon never gave out (no rollout there): look at the next one.
    if (error instanceof ApiFailure && error.status === 404) return null;
    throw error;
  }
}
