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
            // Judged on the whole body, not on where the typed read stopped: `{} x` or a body cut
            // short after an unknown field is not JSON, and `{}` where a one-key object is
            // expected is JSON of the wrong shape, whatever serde_json's category for each.
            if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                return not_json(&syntax);
            }
            // Skipping strings does not check their UTF-8; JSON text is UTF-8.
            if std::str::from_utf8(bytes).is_err() {
                return not_json(error.inner());
            }
            let path = error.path().to_string();
            let error = error.into_inner();
            if path == "." {
                ApiError::invalid(format!("request body: {error}"))
            } else {
                ApiError::invalid(format!("request body: {path}: {error}"))
            }
        })?;
    deserializer.end().map_err(|error| not_json(&error))?;
    Ok(value)
}

fn not_json(error: &serde_json::Error) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidJson,
        format!("request body is not valid JSON: {error}"),
    )
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

#[cfg(test)]
mod tests {
    use super::parse_json;
    use agentd_schemas::api::SubmitJobRequest;
    use agentd_schemas::export_api::RecordRunRequest;

    fn code_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        parse_json::<T>(body.as_bytes())
            .expect_err(body)
            .code
            .as_str()
            .to_string()
    }

    /// The code depends on the whole body, not on where the typed read stopped.
    #[test]
    fn broken_syntax_is_invalid_json_and_a_wrong_shape_is_invalid_request() {
        assert_eq!(code_of::<SubmitJobRequest>("{} x"), "invalid_json");
        assert_eq!(
            code_of::<SubmitJobRequest>("{\"nope\": 1, "),
            "invalid_json"
        );
        assert_eq!(
            code_of::<SubmitJobRequest>("{\"nope\": 1}"),
            "invalid_request"
        );
        assert_eq!(code_of::<SubmitJobRequest>("{}"), "invalid_request");
        // An externally tagged enum read from an object with no key: valid JSON, wrong shape.
        assert_eq!(code_of::<RecordRunRequest>("{}"), "invalid_request");
        assert_eq!(code_of::<RecordRunRequest>("{\"export\": "), "invalid_json");
    }
}
