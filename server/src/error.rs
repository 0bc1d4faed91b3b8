//! Errors as the server answers them: a status and a JSON body
//! ([`nexus_sync::protocol::ErrorBody`]) naming what went wrong. One
//! mapping from the store's and the sync's errors to statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nexus_sync::protocol::{ErrorBody, PROTOCOL_VERSION};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The kind (`ErrorBody::error`).
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
    /// For `gap`: the source's watermark.
    pub applied: Option<i64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            applied: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 409 `incomplete`: the parts staged for a push are not all there
    /// (push again, from the first part).
    pub fn incomplete(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "incomplete", message)
    }

    /// 409 `gap`: the push does not start at the source's watermark,
    /// `applied` (ask it again and push from there).
    pub fn gap(message: impl Into<String>, applied: i64) -> ApiError {
        ApiError {
            applied: Some(applied),
            ..ApiError::new(StatusCode::CONFLICT, "gap", message)
        }
    }

    /// 409 `hub_changed`: the request named another database than the one
    /// this server is in front of (ask its state again).
    pub fn hub_changed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "hub_changed", message)
    }

    /// 408 `timeout`: the request ran past its time limit; nothing was
    /// applied (retry).
    pub fn timed_out(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
}

/// The SQLSTATE of a statement cancelled by its `statement_timeout`, which
/// the server's connections have equal to the request timeout: the request
/// ran out of time in the database rather than in the server (which of the
/// two comes first is a race), and is answered as the timeout would be.
const STATEMENT_TIMED_OUT: &str = "57014";

impl From<nexus_sync::Error> for ApiError {
    fn from(e: nexus_sync::Error) -> ApiError {
        use nexus_sync::Error as S;
        match e {
            S::Store(e) => e.into(),
            S::WrongTenant { .. } | S::SourceOfOtherTenant { .. } => {
                ApiError::forbidden(e.to_string())
            }
            S::Conversion { .. } => ApiError::bad_request(e.to_string()),
            S::PushBehind { applied, .. } => ApiError::gap(e.to_string(), applied),
            S::Pg(ref p) if p.sqlstate() == Some(STATEMENT_TIMED_OUT) => {
                ApiError::timed_out(e.to_string())
            }
            e if e.is_retryable() => ApiError::unavailable(format!("{e} (retry)")),
            e => {
                tracing::error!(error = %e, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<nexus_core::Error> for ApiError {
    fn from(e: nexus_core::Error) -> ApiError {
        use nexus_core::Error as C;
        match e {
            C::ChangeFileGap { applied, .. } => ApiError::gap(e.to_string(), applied),
            C::InvalidChangeFile { .. } | C::InvalidArgument { .. } | C::InvalidCursor { .. } => {
                ApiError::bad_request(e.to_string())
            }
            // Rows the conflict rule cannot settle (a version number taken
            // here, the file's row missing): nothing was applied.
            C::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            e if nexus_postgres::sqlstate_of(&e).as_deref() == Some(STATEMENT_TIMED_OUT) => {
                ApiError::timed_out(e.to_string())
            }
            e if e.is_retryable() => ApiError::unavailable(format!("{e} (retry)")),
            e => {
                tracing::error!(error = %e, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<nexus_postgres::Error> for ApiError {
    fn from(e: nexus_postgres::Error) -> ApiError {
        nexus_sync::Error::Pg(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            protocol: PROTOCOL_VERSION,
            error: self.kind.to_string(),
            message: self.message,
            applied: self.applied,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
