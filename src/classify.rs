//! Folds the errors of every layer into [`Error`](crate::Error).

use std::error::Error as StdError;

use parapet_core::BoxError;

use crate::error::{Error, Kind};

/// What the chain of an error says happened.
fn kind_of(err: &(dyn StdError + 'static)) -> (Kind, Option<std::time::Duration>) {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(k) = crate::stack::layer_kind(e) {
            return k;
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return (Kind::Connect, None);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return (Kind::Timeout, None);
            }
        }
        cur = e.source();
    }
    (Kind::Transport, None)
}

/// The facade error for an error out of the stack.
pub(crate) fn classify(err: BoxError) -> Error {
    let err = match err.downcast::<Error>() {
        Ok(e) => return *e,
        Err(e) => e,
    };
    let (kind, retry_after) = kind_of(&*err);
    Error::new(kind, Some(err)).with_retry_after(retry_after)
}

/// The facade error for a failure while reading a response body.
pub(crate) fn body_error(err: BoxError) -> Error {
    let (kind, _) = kind_of(&*err);
    let kind = if kind == Kind::Timeout {
        Kind::Timeout
    } else {
        Kind::Body
    };
    Error::new(kind, Some(err))
}
