// How values are shown: times, counts, sizes, rewards, JSON, agent states and diffs. Everything
// here returns strings or nodes built with `h`, never HTML.

import { h, badge } from "./dom.js";

/** `2026-12-06 12:20:34` in the browser's time zone; "—" for none. */
export function time(ms) {
  if (ms === null || ms === undefined) return "—";
  const date = new Date(Number(ms));
  if (Number.isNaN(date.getTime())) return "—";
  const pad = (value) => String(value).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** `3m 20s`, `2h 5m`, `4d 1h` for a duration in ms. */
export function duration(ms) {
  let seconds = Math.max(0, Math.round(Number(ms) / 1000));
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const parts = [];
  for (const [unit, size] of units) {
    if (seconds >= size || (unit === "s" && parts.length === 0)) {
      parts.push(`${Math.floor(seconds / size)}${unit}`);
      seconds %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

/** A time with how long ago it was: `12:20:34 (3m 20s ago)`. */
export function since(ms, now) {
  if (ms === null || ms === undefined) return "—";
  const delta = (now || Date.now()) - Number(ms);
  return delta >= 0 ? `${time(ms)} (${duration(delta)} ago)` : `${time(ms)} (in ${duration(-delta)})`;
}

/** An integer with thousands separators. */
export function count(value) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US");
}

/** A reward or other real number with 3 decimals ("—" for none). */
export function decimal(value, digits) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "—";
  const text = Number(value).toFixed(digits === undefined ? 3 : digits);
  return text === "-0.000" ? "0.000" : text;
}

/** A fraction as a percentage (`87.5%`). */
export function percent(fraction) {
  if (fraction === null || fraction === undefined) return "—";
  return `${(Number(fraction) * 100).toFixed(1)}%`;
}

/** `1.2 MiB (1,234,567 bytes)`. */
export function bytes(value) {
  if (value === null || value === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = Number(value);
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  const short = unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
  return unit === 0 ? short : `${short} (${count(value)} bytes)`;
}

/** JSON, indented. */
export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A job state as a coloured badge. */
export function stateBadge(state) {
  return badge(state, `state-${state}`);
}

/** A sandbox outcome as a coloured badge. */
export function outcomeBadge(outcome) {
  return badge(outcome, outcome === "ok" ? "good" : "bad");
}

/** A reward as a badge: green above 0, red at or below. */
export function rewardBadge(value, verified) {
  const text = `reward ${decimal(value)}${verified === false ? " (unverified)" : ""}`;
  return badge(text, Number(value) > 0 ? "good" : "bad");
}

/** The sections of an agent state, in the order the daemon renders them for prompts. */
const STATE_SECTIONS = [
  ["goals", "Goals"],
  ["constraints", "Constraints"],
  ["decisions", "Decisions"],
  ["hypotheses", "Hypotheses"],
  ["history", "History"],
  ["open_issues", "Open issues"],
];

/**
 * An agent state as the daemon's `render` writes it for prompts (daemon/src/domain/agent_state.rs):
 * a `## Title` section per non-empty field, items as `- item` with continuation lines indented
 * by two spaces, sections separated by a blank line; "" for the empty state.
 */
export function renderState(state) {
  const sections = [];
  for (const [field, title] of STATE_SECTIONS) {
    const items = (state && state[field]) || [];
    if (items.length === 0) continue;
    sections.push(`## ${title}\n${items.map((item) => `- ${String(item).split("\n").join("\n  ")}`).join("\n")}\n`);
  }
  if (state && state.next_focus !== null && state.next_focus !== undefined) {
    sections.push(`## Next focus\n${state.next_focus}\n`);
  }
  return sections.join("\n");
}

/** A unified diff with added, removed and hunk lines marked for colour. */
export function diff(text) {
  const lines = String(text).split("\n");
  if (lines.length > 1 && lines[lines.length - 1] === "") lines.pop();
  return h("pre", { class: "diff" }, lines.map((line) => {
    let kind = null;
    if (line.startsWith("+++") || line.startsWith("---")) kind = "diff-file";
    else if (line.startsWith("+")) kind = "diff-add";
    else if (line.startsWith("-")) kind = "diff-del";
    else if (line.startsWith("@@")) kind = "diff-hunk";
    return h("span", { class: kind ? `diff-line ${kind}` : "diff-line" }, `${line}\n`);
  }));
}

/** The first line of a text, shortened to `max` characters. */
export function firstLine(text, max) {
  if (text === null || text === undefined) return "";
  const line = String(text).split("\n")[0];
  const limit = max || 80;
  return line.length > limit ? `${line.slice(0, limit - 1)}…` : line;
}
