//! The one error type a handler returns. Each variant becomes an HTTP status
//! on the host; the message goes back to the caller, so it should say what
//! was wrong with the input and what to send instead.

use crate::bindings::nimbus::function::types::Error as RawError;
use crate::bindings::wasi::nn::errors::{Error as NnError, ErrorCode};
use std::fmt;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller's input is malformed or out of range (HTTP 400).
    BadInput(String),
    /// The request's content type is not one the handler reads (HTTP 415).
    UnsupportedMediaType(String),
    /// None of the accepted types can be produced (HTTP 406).
    NotAcceptable(String),
    /// The handler failed (HTTP 500).
    Failed(String),
}

impl Error {
    /// A [`Error::BadInput`] with the given message.
    pub fn bad_input(message: impl fmt::Display) -> Self {
        Error::BadInput(message.to_string())
    }

    /// A [`Error::Failed`] with the given message.
    pub fn failed(message: impl fmt::Display) -> Self {
        Error::Failed(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadInput(m) => write!(f, "bad input: {m}"),
            Error::UnsupportedMediaType(m) => write!(f, "unsupported content type: {m}"),
            Error::NotAcceptable(m) => write!(f, "not acceptable: {m}"),
            Error::Failed(m) => write!(f, "handler failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for RawError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadInput(m) => RawError::BadInput(m),
            Error::UnsupportedMediaType(m) => RawError::UnsupportedMediaType(m),
            Error::NotAcceptable(m) => RawError::NotAcceptable(m),
            Error::Failed(m) => RawError::Failed(m),
        }
    }
}

/// wasi-nn errors: an invalid argument (wrong shape or type for the graph)
/// comes from the input, anything else is a failure.
impl From<NnError> for Error {
    fn from(e: NnError) -> Self {
        let message = e.data();
        match e.code() {
            ErrorCode::InvalidArgument => Error::BadInput(message),
            code => Error::Failed(format!("wasi-nn {code:?}: {message}")),
        }
    }
}
