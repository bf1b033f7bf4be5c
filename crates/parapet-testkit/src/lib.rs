//! parapet-testkit: under construction.
