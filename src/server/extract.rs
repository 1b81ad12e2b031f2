//! Extractors whose refusals speak the API's error shape: a JSON body
//! checked against orch's limits before it is parsed and read with the
//! path of the field at fault, query strings, path segments and the
//! bearer token.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, Code};

/// A JSON body: `Content-Type: application/json`, within the route's size
/// limit, within [`crate::limits`] (depth, 64-bit integers, no duplicate
/// keys), and of type `T` (unknown fields refused where `T` says so). A
/// refusal names the field at fault.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || v.starts_with("application/json;")
            });
        if !json {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "the body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        Code::PayloadTooLarge,
                        format!("the body is larger than this route accepts: {e}"),
                    )
                } else {
                    ApiError::bad(format!("the body could not be read: {e}"))
                }
            })?;
        parse(&bytes).map(Body)
    }
}

/// Reads a JSON body the way [`Body`] does.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::bad(format!("the body is not UTF-8: {e}")))?;
    crate::limits::check_json(text).map_err(|e| ApiError::bad(format!("the body: {e}")))?;
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::new(Code::BadRequest, format!("the body: {inner}"))
        } else {
            ApiError::new(Code::BadRequest, format!("field `{path}`: {inner}"))
        }
    })
}

/// A query string of type `T`; a refusal names the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::bad(format!("query parameter `{path}`: {}", e.into_inner()))
            })
    }
}

/// Path segments of type `T`; a refusal names the segment.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::bad(format!("the path: {e}")))
    }
}
