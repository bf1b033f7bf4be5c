//! One rate limit, one throttle gate for a whole fleet: parapet's layers
//! with their state in Redis.
//!
//! With the `test-support` feature, [`test_support::RedisServer`] starts a
//! throwaway `redis-server` on a free loopback port and stops it when
//! dropped.

#[cfg(feature = "test-support")]
pub mod test_support;
