//! parapet-auth: under construction.
