//! Whether the importer can do its work right now, as `/healthz` reports it.
//!
//! Three things can stop it, and they are kept apart because each calls for
//! a different fix: RabbitMQ is not connected, MongoDB is not connected, or
//! MongoDB answers but refuses the batch a writer holds (permissions, a full
//! disk, a collection that cannot be written). A refusal is not an outage:
//! the server still answers pings, so it gets its own record, with the
//! server's own words, per writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    pub broker: AtomicBool,
    pub store: AtomicBool,
    /// Writers whose batch the store refuses, and why.
    refusals: Mutex<BTreeMap<String, String>>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.broker.load(Ordering::Relaxed) && self.store.load(Ordering::Relaxed) && self.refusal().is_none()
    }

    /// The store refuses the batch `writer` holds, for `reason`.
    pub fn store_refuses(&self, writer: &str, reason: String) {
        self.refusals
            .lock()
            .expect("not poisoned")
            .insert(writer.to_string(), reason);
    }

    /// `writer`'s batch went in.
    pub fn store_writes(&self, writer: &str) {
        let mut refusals = self.refusals.lock().expect("not poisoned");
        if !refusals.is_empty() {
            refusals.remove(writer);
        }
    }

    /// One of the refusals in force, if any.
    pub fn refusal(&self) -> Option<String> {
        let refusals = self.refusals.lock().expect("not poisoned");
        refusals
            .iter()
            .next()
            .map(|(writer, reason)| format!("{writer}: {reason}"))
    }

    /// The `/healthz` body: one line per server.
    pub fn report(&self) -> String {
        let broker = if self.broker.load(Ordering::Relaxed) {
            "connected"
        } else {
            "not connected"
        };
        let store = match (self.store.load(Ordering::Relaxed), self.refusal()) {
            (false, _) => "not connected".to_string(),
            (true, Some(reason)) => format!("refusing writes ({reason})"),
            (true, None) => "connected".to_string(),
        };
        format!("rabbitmq: {broker}\nmongodb: {store}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_unhealthy_until_that_writer_writes_again() {
        let health = Health::default();
        assert!(!health.healthy(), "nothing connected yet");
        health.broker.store(true, Ordering::Relaxed);
        health.store.store(true, Ordering::Relaxed);
        assert!(health.healthy());
        assert_eq!(health.report(), "rabbitmq: connected\nmongodb: connected\n");
        health.store_refuses("customers#0", "not authorized".into());
        health.store_writes("customers#1");
        assert!(!health.healthy(), "another writer's success clears nothing");
        assert_eq!(
            health.report(),
            "rabbitmq: connected\nmongodb: refusing writes (customers#0: not authorized)\n"
        );
        health.store_writes("customers#0");
        assert!(health.healthy());
        health.store.store(false, Ordering::Relaxed);
        assert_eq!(health.report(), "rabbitmq: connected\nmongodb: not connected\n");
    }
}
