//! parapet-trace: under construction.
