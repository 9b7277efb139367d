//! Request extraction with the API's error shape: bounded bodies, and JSON errors that say
//! whether the text was malformed (400 `invalid_json`) or had the wrong shape (422
//! `invalid_request`, naming the field).

mod objects_only;

use super::error::ApiError;
use super::SharedState;
use agentd_schemas::ErrorCode;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body parsed with the API's limits and error codes.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let ApiBody(bytes) = ApiBody::from_request(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The raw body, at most `[server] body_bytes_max` bytes (413 `body_too_large` above it, as
/// JSON like every other error; axum's own `Bytes` extractor would answer its 2 MiB default
/// limit in plain text).
pub struct ApiBody(pub axum::body::Bytes);

impl FromRequest<SharedState> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let limit = state.limits.body_bytes_max;
        let too_large = || {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "request body is over the limit of {limit} bytes ([server] body_bytes_max)"
                ),
            )
        };
        // A declared length over the limit is refused before reading anything, rather than
        // after waiting (until the request timeout) for bytes that would be refused anyway.
        if declared_length(&request).is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        axum::body::to_bytes(request.into_body(), limit)
            .await
            .map(ApiBody)
            .map_err(|_| too_large())
    }
}

/// The request's `Content-Length`, when it declares one that parses.
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Parses JSON text into `T` with the API's error codes. Structs are read from JSON objects
/// only (see [`objects_only`]), as the OpenAPI document describes them.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "request body is empty; expected a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(objects_only::ObjectsOnly(&mut deserializer))
        .map_err(|error| {
            let path = error.path().to_string();
            body_error(&path, error.into_inner())
        })?;
    deserializer.end().map_err(|error| body_error(".", error))?;
    Ok(value)
}

/// Maps a JSON error to the API's shape; `path` names the field at fault (`jobs[0].kind`), "."
/// the body itself.
fn body_error(path: &str, error: serde_json::Error) -> ApiError {
    match error.classify() {
        serde_json::error::Category::Data if path == "." => {
            ApiError::invalid(format!("request body: {error}"))
        }
        serde_json::error::Category::Data => {
            ApiError::invalid(format!("request body: {path}: {error}"))
        }
        _ => ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid JSON: {error}"),
        ),
    }
}

/// Query parameters parsed with the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_query(query).map(ApiQuery)
    }
}

fn serde_urlencoded_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::invalid("malformed query string"))?,
    )
    .map(|axum::extract::Query(value)| value)
    .map_err(|error| ApiError::invalid(format!("query: {}", error.body_text())))
}

/// Path parameters parsed with the API's error shape: a segment that is not valid UTF-8 after
/// percent-decoding is 422 `invalid_request` (axum's own rejection is plain text).
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::invalid(format!("path: {}", rejection.body_text())))
    }
}

/// Parses a typed id from a path segment: malformed is 422, so 404 always means "no such id".
pub fn parse_id<T: std::str::FromStr>(text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error: T::Err| ApiError::invalid(error.to_string()))
}
