//! The web console: a read-only single-page app served at `GET /ui`, its scripts and its style
//! sheet at `GET /ui/assets/{file}`, all compiled into the binary from `daemon/ui/`.
//!
//! The page is public (it holds no data); the script reads everything from the same `/v1` API
//! the CLI uses, sending the bearer token a login form keeps in the browser's `sessionStorage`.
//! No template engine, no bundler, no CDN: plain ES modules, so building the daemon downloads
//! nothing and the console is the same bytes on every machine (ARCHITECTURE.md, "Console").
//!
//! Every answer carries an ETag derived from the embedded bytes at compile time, `Cache-Control:
//! no-cache` (the browser revalidates and gets a 304 when nothing changed; asset URLs carry no
//! version, so a daemon upgrade must never leave an old module cached next to a new one), and a
//! Content-Security-Policy that allows scripts, styles and requests from the daemon only: model
//! outputs are shown on these pages, and the policy is the second line of defence behind the
//! script building the page from text nodes only.

use super::error::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file of the console.
struct Asset {
    /// The name under `/ui/assets/` (and the file's name under `daemon/ui/`).
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// FNV-1a of `body`, computed at compile time: the build's ETag.
    hash: u64,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            name,
            content_type,
            body,
            hash: fnv1a_64(body.as_bytes()),
        }
    }
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The page itself (served at `/ui` and `/ui/`, never under `/ui/assets/`).
const PAGE: Asset = Asset::new(
    "index.html",
    "text/html; charset=utf-8",
    include_str!("../../ui/index.html"),
);

/// Everything under `/ui/assets/`: the style sheet and the ES modules `app.js` imports.
const ASSETS: &[Asset] = &[
    Asset::new(
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/console.css"),
    ),
    Asset::new("app.js", JAVASCRIPT, include_str!("../../ui/app.js")),
    Asset::new("dom.js", JAVASCRIPT, include_str!("../../ui/dom.js")),
    Asset::new("api.js", JAVASCRIPT, include_str!("../../ui/api.js")),
    Asset::new("format.js", JAVASCRIPT, include_str!("../../ui/format.js")),
    Asset::new(
        "overview.js",
        JAVASCRIPT,
        include_str!("../../ui/overview.js"),
    ),
    Asset::new("jobs.js", JAVASCRIPT, include_str!("../../ui/jobs.js")),
    Asset::new(
        "datasets.js",
        JAVASCRIPT,
        include_str!("../../ui/datasets.js"),
    ),
    Asset::new(
        "rollouts.js",
        JAVASCRIPT,
        include_str!("../../ui/rollouts.js"),
    ),
    Asset::new(
        "exports.js",
        JAVASCRIPT,
        include_str!("../../ui/exports.js"),
    ),
    Asset::new("rates.js", JAVASCRIPT, include_str!("../../ui/rates.js")),
    Asset::new(
        "workers.js",
        JAVASCRIPT,
        include_str!("../../ui/workers.js"),
    ),
    Asset::new("passk.js", JAVASCRIPT, include_str!("../../ui/passk.js")),
];

/// Scripts, styles and API requests from this origin only; no inline script, no plugin, no
/// frame, no `<base>`. `img-src data:` is for the empty favicon the page declares (without it
/// the browser asks for `/favicon.ico`, which needs a token when access control is on).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The web console (read-only). Public: the page holds no data, and every request its script
/// makes to `/v1` sends the token typed into its login form.
#[utoipa::path(
    get, path = "/ui", tag = "ui", operation_id = "console_page", security(()),
    responses(
        (status = 200, description = "The console's HTML page; it loads `/ui/assets/app.js` and `/ui/assets/console.css`. Revalidate with `If-None-Match`", body = String, content_type = "text/html",
            headers(("ETag" = String, description = "Changes with every build whose console differs"))),
        (status = 304, description = "`If-None-Match` named this build's ETag"),
    )
)]
pub async fn page(headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

/// The web console, as at `/ui` (a link with a trailing slash works too).
#[utoipa::path(
    get, path = "/ui/", tag = "ui", operation_id = "console_page_with_slash", security(()),
    responses(
        (status = 200, description = "The console's HTML page, as `GET /ui`", body = String, content_type = "text/html",
            headers(("ETag" = String, description = "Changes with every build whose console differs"))),
        (status = 304, description = "`If-None-Match` named this build's ETag"),
    )
)]
pub async fn page_with_slash(headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

/// A script (ES module) or the style sheet of the console, embedded in the binary.
#[utoipa::path(
    get, path = "/ui/assets/{file}", tag = "ui", operation_id = "console_file", security(()),
    params(("file" = String, Path, description = "`app.js`, `console.css`, or a module `app.js` imports (`dom.js`, `api.js`, `format.js`, `overview.js`, `rates.js`, `workers.js`, `jobs.js`, `datasets.js`, `rollouts.js`, `passk.js`, `exports.js`)", example = "app.js", pattern = "^[a-z]+\\.(js|css)$")),
    responses(
        (status = 200, description = "The file: a script or the style sheet", content((String = "text/javascript"), (String = "text/css")),
            headers(("ETag" = String, description = "Changes with every build whose file differs"))),
        (status = 304, description = "`If-None-Match` named this build's ETag"),
        (status = 404, description = "`not_found`: no such file", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found("no such console file").into_response(),
    }
}

/// The asset's bytes, or 304 when the client's cached copy is this build's.
fn serve(asset: &Asset, request_headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| etag_matches(value, &etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    // The tag is 16 hex digits in quotes: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Whether an `If-None-Match` value (`*`, or a list of tags, weak or strong) names `etag`.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// 64-bit FNV-1a: a compile-time fingerprint of an asset (not a security measure; it only has to
/// change when the bytes do).
const fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut index = 0;
    while index < bytes.len() {
        hash ^= bytes[index] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        index += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts() -> impl Iterator<Item = &'static Asset> {
        ASSETS.iter().filter(|asset| asset.name.ends_with(".js"))
    }

    /// The page references the entry module and the style sheet, and every module any script
    /// imports is served: a missing file would only show up as a blank page in a browser.
    #[test]
    fn every_referenced_file_is_served() {
        assert!(PAGE.body.contains("src=\"/ui/assets/app.js\""));
        assert!(PAGE.body.contains("href=\"/ui/assets/console.css\""));
        let mut imported = vec!["app.js".to_string(), "console.css".to_string()];
        for script in scripts() {
            // Static imports only (`import { a } from "./x.js";`, possibly over several lines):
            // the modules are served flat, so every target is `./name.js`.
            for rest in script.body.split(" from \"").skip(1) {
                let target = rest.split('"').next().unwrap_or_default();
                let Some(name) = target.strip_prefix("./") else {
                    panic!(
                        "{}: an import that is not \"./file.js\": {target}",
                        script.name
                    );
                };
                imported.push(name.to_string());
            }
            assert!(
                !script.body.contains("import("),
                "{}: dynamic imports are not checked here",
                script.name
            );
        }
        for name in &imported {
            assert!(
                ASSETS.iter().any(|asset| asset.name == name),
                "{name} is imported but not served"
            );
        }
        for asset in ASSETS {
            assert!(
                imported.iter().any(|name| name == asset.name),
                "{} is served but nothing loads it",
                asset.name
            );
        }
    }

    /// Model outputs, payloads and errors are shown on these pages, so no script may hand text
    /// to the HTML parser: the page is built from elements and text nodes by `dom.js`'s `h`, the
    /// only place that sets attributes (and refuses event handlers and non-local links).
    #[test]
    fn scripts_never_parse_data_as_html() {
        let forbidden = [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "createContextualFragment",
            "DOMParser",
            "srcdoc",
            "eval(",
            "new Function",
            "javascript:",
        ];
        for script in scripts() {
            for needle in forbidden {
                assert!(
                    !script.body.contains(needle),
                    "{} contains {needle}",
                    script.name
                );
            }
            if script.name != "dom.js" {
                for needle in ["setAttribute", ".href =", ".src ="] {
                    assert!(
                        !script.body.contains(needle),
                        "{} sets an attribute directly ({needle}); use h() from dom.js",
                        script.name
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn assets_have_their_types_and_revalidate_with_the_etag() {
        let response = asset(Path("console.css".into()), HeaderMap::new()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = response.headers()[header::ETAG].clone();
        assert_eq!(etag.len(), 18, "{etag:?}");

        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", W/{}", etag.to_str().unwrap())).unwrap(),
        );
        let cached = asset(Path("console.css".into()), headers.clone()).await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers()[header::ETAG], etag);
        // Another file's tag differs, so the same header does not make it 304.
        let other = asset(Path("app.js".into()), headers).await;
        assert_eq!(other.status(), StatusCode::OK);
        assert_eq!(other.headers()[header::CONTENT_TYPE], JAVASCRIPT);

        let page = page(HeaderMap::new()).await;
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));

        let missing = asset(Path("index.html".into()), HeaderMap::new()).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn etag_matching_follows_if_none_match() {
        let etag = "\"00000000000000ab\"";
        assert!(etag_matches("*", etag));
        assert!(etag_matches(etag, etag));
        assert!(etag_matches("W/\"00000000000000ab\"", etag));
        assert!(etag_matches("\"x\" , \"00000000000000ab\"", etag));
        assert!(!etag_matches("\"00000000000000ac\"", etag));
        assert!(!etag_matches("", etag));
    }
}
