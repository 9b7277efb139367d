// Datasets: the registered datasets, and the counts of kept records per language and split
// (`GET /v1/datasets/stats`, what `agentctl datasets stats` prints), with the dataset builds.

import { h, table, section, facts, code, badge } from "./dom.js";
import { get } from "./api.js";
import { count, decimal } from "./format.js";

export async function datasetsPage() {
  const [datasets, stats, builds] = await Promise.all([
    get("/v1/datasets"),
    get("/v1/datasets/stats"),
    get("/v1/datasets/builds"),
  ]);
  return h("div", { class: "page", "data-page": "datasets" },
    h("h1", {}, "Datasets"),
    section("Registered", registeredTable(datasets.datasets)),
    section("Kept records, all datasets",
      facts([
        ["token counts", `${stats.encoding}; records over ${count(stats.token_cap)} tokens are excluded`],
      ]),
      countsView(stats.total)),
    stats.datasets.map((dataset) => section(`${dataset.source} ${dataset.version}`, countsView(dataset))),
    section("Dataset builds", buildTable(builds.builds)));
}

function registeredTable(datasets) {
  return table(["source", "version", "license", "records", "complete", "downloaded", "sha256", "url"],
    datasets.map((dataset) => {
      const meta = dataset.meta || {};
      return [
        dataset.source,
        dataset.version,
        meta.license || "",
        `${count(dataset.records_received)} of ${count(dataset.records_expected)}`,
        dataset.complete ? badge("complete", "good") : badge("incomplete", "warn"),
        meta.downloaded_at || "",
        meta.sha256 ? h("code", { title: meta.sha256 }, `${meta.sha256.slice(0, 12)}…`) : "",
        // Shown as text: a URL from a dataset's meta is not a link the console follows.
        meta.url ? code(meta.url) : "",
      ];
    }), { empty: "no datasets registered (agentctl ingest)" });
}

/** Totals, then kept records per language and split. */
function countsView(counts) {
  const languages = Object.keys(counts.language_splits || {}).sort();
  const rows = languages.map((language) => {
    const splits = counts.language_splits[language];
    return [language, count(splits.train), count(splits.dev), count(splits.test),
      count(counts.languages[language] || splits.train + splits.dev + splits.test)];
  });
  rows.push([h("strong", {}, "all languages"), count(counts.splits.train), count(counts.splits.dev),
    count(counts.splits.test), count(counts.kept)]);
  const unknown = Object.entries(counts.unknown_language_names || {});
  return [
    facts([
      ["records received", count(counts.records)],
      ["kept", count(counts.kept)],
      ["duplicates", count(counts.duplicates)],
      ["over the token cap", count(counts.over_token_cap)],
      ["unknown language", count(counts.unknown_language)],
      ["resent", count(counts.resent)],
      ["tokens", `${count(counts.total_tokens)} in all; mean ${decimal(counts.avg_tokens, 1)}, p95 ${count(counts.p95_tokens)}`],
    ]),
    table(["language", "train", "dev", "test", "kept"], rows, { class: "numeric" }),
    unknown.length
      ? h("p", { class: "muted" }, "Unknown language names: ",
        unknown.map(([name, times], index) => [index ? ", " : "", code(name), ` (${count(times)})`]))
      : null,
  ];
}

function buildTable(builds) {
  return table(["dataset", "build", "rows", "to LSN", "files", "directory"],
    builds.map((build) => [
      build.dataset_key,
      code(build.build_id),
      count(build.rows),
      String(build.to_lsn),
      count(build.files.length),
      code(build.dir),
    ]), { empty: "no dataset builds (agentctl datasets build)" });
}
