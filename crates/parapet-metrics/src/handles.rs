//! Metric handles registered once per label set and kept by the layer.
//!
//! Registering a metric builds its key (a vector of labels, the host
//! copied into a string) and asks the recorder to find or make the
//! series: most of what a call would cost. The labels a call can have are
//! few (hosts × methods × ports, then × outcomes), so each layer registers
//! every set once, at its first call, and afterwards only looks its
//! handles up by a hash of the request's method, host and port.
//!
//! A handle is bound to the recorder that was installed when it was
//! registered: install the recorder before the first call (as the
//! `metrics` crate advises for every handle).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock};

use http::Request;
use metrics::Label;

use crate::common::{Outcome, labels_of, push_outcome, request_target};

/// Label sets kept per layer; past this, a new host's calls register
/// their metrics call by call (correct, slower) instead of growing the
/// map without bound.
const MAX_TARGETS: usize = 1024;

/// Outcomes (statuses, error classes) kept per label set.
const MAX_OUTCOMES: usize = 64;

/// The handles of each method, host and port a layer has seen.
pub(crate) struct Registry<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    hasher: RandomState,
    map: RwLock<HashMap<u64, Vec<Arc<Target<T>>>>>,
}

/// One method, host and port: its labels and its handles.
#[derive(Debug)]
pub(crate) struct Target<T> {
    method: &'static str,
    host: Option<Box<str>>,
    port: Option<u16>,
    pub(crate) labels: Vec<Label>,
    pub(crate) value: T,
}

impl<T> Target<T> {
    fn is(&self, method: &'static str, host: Option<&str>, port: Option<u16>) -> bool {
        self.method == method && self.host.as_deref() == host && self.port == port
    }
}

impl<T> Registry<T> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                hasher: RandomState::new(),
                map: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The handles for `req`'s method, host and port, made by `make` from
    /// their labels the first time.
    pub(crate) fn get<B>(
        &self,
        req: &Request<B>,
        make: impl FnOnce(&[Label]) -> T,
    ) -> Arc<Target<T>> {
        let (method, host, port) = request_target(req);
        let key = self.inner.hasher.hash_one((method, host, port));
        if let Ok(map) = self.inner.map.read() {
            if let Some(found) = map
                .get(&key)
                .and_then(|v| v.iter().find(|t| t.is(method, host, port)))
            {
                return Arc::clone(found);
            }
        }
        let labels = labels_of(method, host, port);
        let target = Arc::new(Target {
            method,
            host: host.map(Into::into),
            port,
            value: make(&labels),
            labels,
        });
        if let Ok(mut map) = self.inner.map.write() {
            if map.len() < MAX_TARGETS {
                let slot = map.entry(key).or_default();
                if let Some(found) = slot.iter().find(|t| t.is(method, host, port)) {
                    return Arc::clone(found);
                }
                slot.push(Arc::clone(&target));
            }
        }
        target
    }
}

impl<T> Clone for Registry<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for Registry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets = self
            .inner
            .map
            .read()
            .map_or(0, |m| m.values().map(Vec::len).sum());
        f.debug_struct("Registry")
            .field("targets", &targets)
            .finish()
    }
}

/// Handles per outcome of one label set.
pub(crate) struct ByOutcome<T> {
    list: Mutex<Vec<(Outcome, Arc<T>)>>,
}

impl<T> ByOutcome<T> {
    pub(crate) fn new() -> Self {
        Self {
            list: Mutex::new(Vec::new()),
        }
    }

    /// The handles for `outcome`, made by `make` from `base` plus the
    /// outcome's labels the first time.
    pub(crate) fn get(
        &self,
        outcome: Outcome,
        base: &[Label],
        make: impl FnOnce(Vec<Label>) -> T,
    ) -> Arc<T> {
        if let Ok(list) = self.list.lock() {
            if let Some((_, found)) = list.iter().find(|(o, _)| *o == outcome) {
                return Arc::clone(found);
            }
        }
        let mut labels = base.to_vec();
        push_outcome(&mut labels, outcome);
        let made = Arc::new(make(labels));
        if let Ok(mut list) = self.list.lock() {
            if list.len() < MAX_OUTCOMES {
                list.push((outcome, Arc::clone(&made)));
            }
        }
        made
    }
}

impl<T> fmt::Debug for ByOutcome<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.list.lock().map_or(0, |l| l.len());
        f.debug_struct("ByOutcome").field("outcomes", &n).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn get(r: &Registry<u32>, uri: &str, made: &mut u32) -> Arc<Target<u32>> {
        r.get(&Request::get(uri).body(()).unwrap(), |_| {
            *made += 1;
            *made
        })
    }

    #[test]
    fn a_label_set_is_made_once_and_told_apart_by_method_host_and_port() {
        let r = Registry::new();
        let mut made = 0;
        let a = get(&r, "https://api.test/v1/a?x=1", &mut made);
        let b = get(&r, "https://api.test/v2/b", &mut made);
        assert!(Arc::ptr_eq(&a, &b), "the path is not part of the key");
        assert_eq!(made, 1);
        let other_port = get(&r, "https://api.test:8443/", &mut made);
        let other_host = get(&r, "https://api2.test/", &mut made);
        let post = r.get(
            &Request::post("https://api.test/").body(()).unwrap(),
            |_| 99,
        );
        assert_eq!(made, 3);
        assert_eq!(post.value, 99);
        assert!(!Arc::ptr_eq(&a, &other_port) && !Arc::ptr_eq(&a, &other_host));
        let hosts: Vec<_> = a.labels.iter().map(|l| (l.key(), l.value())).collect();
        assert_eq!(
            hosts,
            [
                ("http.request.method", "GET"),
                ("server.address", "api.test"),
                ("server.port", "443")
            ]
        );
    }

    #[test]
    fn past_the_bound_new_hosts_are_made_each_call_and_not_kept() {
        let r = Registry::new();
        let mut made = 0;
        for i in 0..MAX_TARGETS {
            get(&r, &format!("http://h{i}.test/"), &mut made);
        }
        assert_eq!(made, u32::try_from(MAX_TARGETS).unwrap());
        get(&r, "http://late.test/", &mut made);
        get(&r, "http://late.test/", &mut made);
        assert_eq!(made, u32::try_from(MAX_TARGETS).unwrap() + 2);
        get(&r, "http://h0.test/", &mut made);
        assert_eq!(
            made,
            u32::try_from(MAX_TARGETS).unwrap() + 2,
            "kept ones still found"
        );
    }

    #[test]
    fn outcomes_are_made_once_each() {
        let by = ByOutcome::new();
        let base = [Label::new("server.address", "api.test")];
        let ok = Outcome::Status(http::StatusCode::OK);
        let a = by.get(ok, &base, |l| l.len());
        let b = by.get(ok, &base, |_| 0);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, 2, "base plus the status");
        let unavailable = by.get(
            Outcome::Status(http::StatusCode::SERVICE_UNAVAILABLE),
            &base,
            |l| l.len(),
        );
        assert_eq!(*unavailable, 3, "base, error.type and the status");
    }
}
