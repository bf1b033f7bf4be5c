//! parapet-retry: under construction.
