//! Folds the errors of every layer into [`Error`](crate::Error).

use std::error::Error as StdError;

use parapet_core::BoxError;

use crate::error::{Error, Kind};
use crate::stack::Classified;

/// What the chain of an error says happened: the kind, a wait and who
/// said to wait (see [`layer_kind`](crate::stack::layer_kind)).
fn kind_of(err: &(dyn StdError + 'static)) -> Classified {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(k) = crate::stack::layer_kind(e) {
            return k;
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return (Kind::Connect, None, None);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return (Kind::Timeout, None, None);
            }
        }
        cur = e.source();
    }
    (Kind::Transport, None, None)
}

/// The facade error for an error out of the stack.
pub(crate) fn classify(err: BoxError) -> Error {
    let err = match err.downcast::<Error>() {
        Ok(e) => return *e,
        Err(e) => e,
    };
    let (kind, retry_after, wait_source) = kind_of(&*err);
    Error::new(kind, Some(err))
        .with_retry_after(retry_after)
        .with_wait_source(wait_source)
}

/// The facade error for a failure while reading a response body.
pub(crate) fn body_error(err: BoxError) -> Error {
    let (kind, ..) = kind_of(&*err);
    let kind = if kind == Kind::Timeout {
        Kind::Timeout
    } else {
        Kind::Body
    };
    Error::new(kind, Some(err))
}
