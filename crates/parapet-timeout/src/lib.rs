//! parapet-timeout: under construction.
