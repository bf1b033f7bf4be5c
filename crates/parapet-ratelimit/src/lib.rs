//! parapet-ratelimit: under construction.
