//! "The request never left" is decided in parapet-core, so that every layer
//! (retry, auth's token fetch) answers it the same way.

pub(crate) use parapet_core::request_never_sent;
