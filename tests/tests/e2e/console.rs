//! The web console (`/ui`) through the real binary: the page and every module it loads are
//! served with their content types and revalidate with their ETag, every page of the console has
//! its route in the script, no script hands text to the HTML parser, and with access control on
//! the console opens without a token while the API it reads still needs one.
//! `scripts/test-console` drives the same pages in headless Chromium against a daemon with data.

use agentd_tests::{agentctl, write_config, Daemon};
use std::collections::BTreeSet;

/// The hash routes of the console's pages (`#/jobs/job_7` matches `jobs/:job`), as `app.js`
/// declares them: every page the README's "Console" section lists must stay linkable.
const PAGE_ROUTES: &[&str] = &[
    "[\"\", \"\", overviewPage]",
    "[\"jobs\", \"jobs\", jobsPage]",
    "[\"jobs/:job\", \"jobs\", jobPage]",
    "[\"datasets\", \"datasets\", datasetsPage]",
    "[\"rollouts\", \"rollouts\", rewardsPage]",
    "[\"rollouts/:rollout\", \"rollouts\", rolloutPage]",
    "[\"tasks/:task\", \"rollouts\", taskPage]",
    "[\"tasks/:task/trajectory\", \"rollouts\", trajectoryPage]",
    "[\"groups/:group\", \"rollouts\", groupPage]",
    "[\"exports\", \"exports\", exportsPage]",
    "[\"exports/:export\", \"exports\", exportPage]",
];

/// What each page module must call: the API routes its numbers come from.
const PAGE_READS: &[(&str, &str)] = &[
    ("overview.js", "\"/v1/queues\""),
    ("overview.js", "\"/healthz\""),
    ("overview.js", "\"/v1/schedules\""),
    ("jobs.js", "\"/v1/jobs\""),
    ("jobs.js", "api(\"jobs\", jobId)"),
    ("datasets.js", "\"/v1/datasets/stats\""),
    ("rollouts.js", "\"/v1/trajectories/stats\""),
    ("rollouts.js", "api(\"groups\""),
    ("rollouts.js", "api(\"rollouts\""),
    ("rollouts.js", "api(\"tasks\", taskId, \"rollouts\")"),
    ("exports.js", "api(\"exports\", exportId)"),
    // The overview's workers panel: the leased jobs carry their lease's worker id.
    ("workers.js", "get(\"/v1/jobs\", { state: \"leased\""),
    // pass@k per task group: the newest rollouts, then each one's group.
    ("passk.js", "api(\"rollouts\", rolloutId)"),
    ("passk.js", "api(\"groups\", rollout.group)"),
    // Download links: the daemon's file route, fetched with the token when there is one.
    (
        "exports.js",
        "api(\"exports\", ownerId, \"files\", file.path)",
    ),
    ("exports.js", "getBlob(path)"),
];

/// A GET answer: status, content type, ETag and body.
struct Answer {
    status: u16,
    content_type: String,
    etag: Option<String>,
    body: String,
}

async fn fetch(http: &reqwest::Client, url: &str, if_none_match: Option<&str>) -> Answer {
    let mut request = http.get(url);
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_string())
    };
    let content_type = header("content-type").unwrap_or_default();
    let etag = header("etag");
    if let Some(cache) = header("cache-control") {
        assert_eq!(cache, "no-cache", "{url}");
    }
    Answer {
        status: response.status().as_u16(),
        content_type,
        etag,
        body: response.text().await.unwrap(),
    }
}

/// The `./module.js` files a script imports (`import { a } from "./x.js";`, over one line or
/// several).
fn imports(script: &str) -> Vec<String> {
    script
        .split(" from \"./")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn console_page_and_modules_are_served_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    // Building the agentd client installs reqwest's TLS provider for the plain client below.
    let _client = daemon.client();
    let http = reqwest::Client::new();

    let page = fetch(&http, &format!("{}/ui", daemon.url), None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page
        .body
        .contains("<script type=\"module\" src=\"/ui/assets/app.js\">"));
    assert!(page
        .body
        .contains("<link rel=\"stylesheet\" href=\"/ui/assets/console.css\">"));
    let with_slash = fetch(&http, &format!("{}/ui/", daemon.url), None).await;
    assert_eq!(
        (with_slash.status, with_slash.body.as_str()),
        (200, page.body.as_str())
    );

    // A second visit revalidates: the same build answers 304 with no body.
    let etag = page.etag.clone().expect("the page has an ETag");
    let again = fetch(&http, &format!("{}/ui", daemon.url), Some(&etag)).await;
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    assert_eq!(again.etag.as_deref(), Some(etag.as_str()));

    let css = fetch(
        &http,
        &format!("{}/ui/assets/console.css", daemon.url),
        None,
    )
    .await;
    assert_eq!(css.status, 200);
    assert_eq!(css.content_type, "text/css; charset=utf-8");
    assert!(css.body.contains(".diff-add"));

    // Every module reachable from app.js, fetched as the browser would.
    let mut scripts = std::collections::BTreeMap::new();
    let mut pending = vec!["app.js".to_string()];
    while let Some(name) = pending.pop() {
        if scripts.contains_key(&name) {
            continue;
        }
        let url = format!("{}/ui/assets/{name}", daemon.url);
        let script = fetch(&http, &url, None).await;
        assert_eq!(script.status, 200, "{name}: {}", script.body);
        assert_eq!(
            script.content_type, "text/javascript; charset=utf-8",
            "{name}"
        );
        assert_ne!(script.etag, page.etag, "{name} has its own ETag");
        pending.extend(imports(&script.body));
        scripts.insert(name, script.body);
    }
    let names: BTreeSet<&str> = scripts.keys().map(String::as_str).collect();
    for module in [
        "app.js",
        "dom.js",
        "api.js",
        "format.js",
        "overview.js",
        "jobs.js",
        "datasets.js",
        "rollouts.js",
        "exports.js",
        "rates.js",
        "workers.js",
        "passk.js",
    ] {
        assert!(names.contains(module), "{module} is not loaded: {names:?}");
    }

    for route in PAGE_ROUTES {
        assert!(
            scripts["app.js"].contains(route),
            "app.js lacks the route {route}"
        );
    }
    for (module, read) in PAGE_READS {
        assert!(
            scripts[*module].contains(read),
            "{module} does not read {read}"
        );
    }

    // Payloads, errors and model outputs are untrusted: no script parses text as HTML, and
    // only dom.js (whose `h` checks links and refuses handler attributes) sets attributes.
    for (name, body) in &scripts {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!body.contains(forbidden), "{name} uses {forbidden}");
        }
        if name != "dom.js" {
            assert!(!body.contains("setAttribute"), "{name} sets attributes");
        }
    }

    let missing = fetch(&http, &format!("{}/ui/assets/nope.js", daemon.url), None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("\"not_found\""), "{}", missing.body);
}

#[tokio::test]
async fn console_needs_no_token_but_the_api_it_reads_does() {
    let output = agentctl(
        "http://127.0.0.1:1",
        &[
            "--json", "tokens", "create", "--role", "read", "--name", "console",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let token = created["token"].as_str().unwrap();
    let line = created["config_line"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("[auth]\ntokens = [\n{line}\n]\n"));
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let _client = daemon.client();
    let http = reqwest::Client::new();

    for path in ["/ui", "/ui/", "/ui/assets/app.js", "/ui/assets/console.css"] {
        let answer = fetch(&http, &format!("{}{path}", daemon.url), None).await;
        assert_eq!(answer.status, 200, "{path} must open without a token");
    }
    // The page's script asks for the token when the API answers 401; the API is unchanged.
    for path in [
        "/v1/queues",
        "/v1/jobs",
        "/v1/trajectories/stats",
        "/metrics",
    ] {
        let anonymous = http
            .get(format!("{}{path}", daemon.url))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{path}");
        let body: serde_json::Value = anonymous.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{path}");
        let reader = http
            .get(format!("{}{path}", daemon.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(reader.status().as_u16(), 200, "{path} with a read token");
    }
    // A file that is not part of the console is still no way around the token.
    let unknown = http
        .get(format!("{}/ui/other", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 401);
}
