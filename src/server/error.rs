//! The one error shape of the API: an HTTP status, a stable code and a
//! message naming the thing at fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// A stable error code, the `code` of every error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Code {
    /// The request is malformed (syntax, limits, a field of the wrong
    /// type).
    BadRequest,
    /// No valid token (or password) was given.
    Unauthorized,
    /// The token is valid but may not do this.
    Forbidden,
    /// No such run, node, workflow, user, token or route.
    NotFound,
    /// The method is not one the route takes.
    MethodNotAllowed,
    /// The request conflicts with the state (a name taken, a run ended).
    Conflict,
    /// The body is larger than the route accepts.
    PayloadTooLarge,
    /// The body is not JSON (`Content-Type: application/json`).
    UnsupportedMediaType,
    /// The request is well formed but refused (validation).
    Unprocessable,
    /// The server cannot do it now (it is shutting down, or the run a
    /// runner reports on has no live owner yet): retry later.
    Unavailable,
    /// The server failed; the message says where.
    Internal,
}

impl Code {
    fn status(self) -> StatusCode {
        match self {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The inside of an [`ApiError`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code.
    pub code: Code,
    /// What went wrong, naming the thing at fault.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }

    /// 400.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::BadRequest, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::NotFound, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Forbidden, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Conflict, message)
    }

    /// 500, logged.
    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!(%message, "request failed");
        ApiError::new(Code::Internal, message)
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.error.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.error.code.status();
        let mut r = axum::Json(self).into_response();
        *r.status_mut() = status;
        r
    }
}

/// The library's errors as the API answers them: what a client named
/// wrongly is a 4xx; the store failing is a 500.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        match e {
            Error::UnknownRun(_) | Error::UnknownNode { .. } | Error::UnknownRunner(_) => {
                ApiError::not_found(message)
            }
            Error::AttemptFenced { .. } => ApiError::conflict(message),
            Error::AmbiguousRun { .. } => ApiError::bad(message),
            Error::RunEnded { .. } | Error::Owned { .. } | Error::Fenced { .. } => {
                ApiError::conflict(message)
            }
            Error::Registration { .. }
            | Error::Refused { .. }
            | Error::NotInput { .. }
            | Error::Resume { .. }
            | Error::File(_)
            | Error::Python { .. } => ApiError::new(Code::Unprocessable, message),
            Error::Engine { .. } if message.contains("shutting down") => {
                ApiError::new(Code::Unavailable, message)
            }
            Error::Engine { .. } => ApiError::conflict(message),
            _ => ApiError::internal(message),
        }
    }
}

/// What handlers return.
pub type ApiResult<T> = std::result::Result<T, ApiError>;
