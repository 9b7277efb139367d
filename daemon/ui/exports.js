// Exports: the recorded runs with their watermarks and the schedules, dataset builds with their
// files, and one export with its manifest and files (sizes and sha256 checksums), each file with
// a download link (`GET /v1/exports/{id}/files/{path}`, which serves builds' files too).

import { h, link, table, section, facts, pre, code, saveBlob } from "./dom.js";
import { get, getBlob, api, token, AuthRequired, ApiFailure } from "./api.js";
import { count, time, bytes, json } from "./format.js";
import { exportTable, scheduleTable } from "./overview.js";

export async function exportsPage() {
  const [exports, schedules, builds] = await Promise.all([
    get("/v1/exports"),
    get("/v1/schedules"),
    get("/v1/datasets/builds"),
  ]);
  return h("div", { class: "page", "data-page": "exports" },
    h("h1", {}, "Exports"),
    facts([["exports root", code(exports.root)]]),
    section("Runs (newest first)", exportTable(exports.exports)),
    section("Watermarks", table(["kind", "format", "exported up to LSN"],
      exports.watermarks.map((mark) => [mark.kind, mark.format, String(mark.lsn)]),
      { empty: "nothing exported incrementally yet" })),
    section("Schedules", scheduleTable(schedules.schedules, Date.now())),
    section("Dataset builds", builds.builds.length === 0
      ? h("p", { class: "muted" }, "no dataset builds (agentctl datasets build)")
      : builds.builds.map((build) => h("details", { class: "block" },
        h("summary", {}, code(build.build_id), ` ${build.dataset_key}: ${count(build.rows)} rows, ${count(build.files.length)} files, up to LSN ${build.to_lsn}`),
        facts([
          ["directory", code(build.dir)],
          ["manifest sha256", code(build.manifest_sha256)],
          ["request", pre(json(build.spec), "json")],
        ]),
        fileTable(build.build_id, build.files)))));
}

export async function exportPage(context) {
  const exportId = context.params.export;
  const shown = await get(api("exports", exportId));
  const item = shown.export;
  const manifest = shown.manifest;
  return h("div", { class: "page", "data-page": "export" },
    h("h1", {}, "Export ", code(item.export_id)),
    section("Run", facts([
      ["kind", item.kind],
      ["format", item.format],
      ["LSN range", `after ${item.after_lsn}, up to ${item.to_lsn}`],
      ["rows", count(item.rows)],
      ["schema version", String(item.schema_version)],
      ["schedule", item.schedule ? `${item.schedule.schedule} (slot ${time(item.schedule.slot_ms)})` : null],
      ["directory", code(item.dir)],
      ["manifest sha256", code(item.manifest_sha256)],
      ["recorded", `${time(item.recorded_at_ms)} (LSN ${item.recorded_lsn})`],
    ])),
    section("Files", fileTable(item.export_id, item.files)),
    section("Manifest", manifest
      ? [facts([
        ["manifest version", String(manifest.manifest_version)],
        ["tokenizer", manifest.tokenizer],
        ["agentd version", manifest.agentd_version],
        ["rows", count(manifest.rows)],
      ]), h("details", { class: "block" }, h("summary", {}, "manifest.json"), pre(json(manifest), "json"))]
      : h("p", { class: "muted" }, "manifest.json is not on disk any more (the export's files were removed)")),
    h("p", {}, link(["exports"], "← All exports")));
}

/** The files of an export or build (`ownerId`: `exp_...` or `bld_...`) with download links. */
function fileTable(ownerId, files) {
  const total = files.reduce((sum, file) => sum + Number(file.bytes), 0);
  const rows = files.map((file) => [code(file.path), count(file.rows), bytes(file.bytes), code(file.sha256),
    downloadLink(ownerId, file)]);
  if (files.length > 1) rows.push([h("strong", {}, "all files"), count(files.reduce((sum, file) => sum + Number(file.rows), 0)), bytes(total), "", ""]);
  return table(["file", "rows", "size", "sha256", "download"], rows, { class: "numeric files", empty: "no files" });
}

/**
 * A link to one file. Without a token (access control off) it is a plain link the browser
 * follows. With one, a link cannot send the `Authorization` header, so a click fetches the file
 * with the token and saves it from memory (a `blob:` URL); very large files are better fetched
 * with `agentctl exports download`, which streams them to disk.
 */
function downloadLink(ownerId, file) {
  const path = api("exports", ownerId, "files", file.path);
  const filename = file.path.split("/").pop();
  const status = h("span", { class: "muted download-status" });
  const anchor = h("a", {
    href: path,
    download: filename,
    "data-file": file.path,
    title: `${file.path}: ${bytes(file.bytes)}, sha256 ${file.sha256}`,
    on: { click: (event) => downloadWithToken(event, path, filename, status) },
  }, "download");
  return [anchor, " ", status];
}

async function downloadWithToken(event, path, filename, status) {
  if (!token()) return;
  event.preventDefault();
  status.textContent = "downloading…";
  try {
    saveBlob(await getBlob(path), filename);
    status.textContent = "saved";
  } catch (error) {
    status.textContent = error instanceof AuthRequired || error instanceof ApiFailure
      ? `failed: ${error.code || "unauthorized"}: ${error.message}`
      : `failed: ${error.message}`;
  }
}
