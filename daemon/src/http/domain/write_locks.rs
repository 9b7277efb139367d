//! Serialises the check-then-append of domain writes that touch the same key.
//!
//! A step, its sandbox result and its reward are recorded once; a dataset's meta is registered
//! once. The handlers check the projection, append, and wait until the projector applied their
//! record. Without a lock, two requests for the same key could both pass the check and both be
//! answered 2xx while the projection (first in log order wins) kept only one. Holding the key's
//! lock from the check until the record is applied makes the check and the write one step for
//! that key; writes to other keys (other tasks, other datasets) still run side by side and share
//! group commits.
//!
//! Keys are hashed onto a fixed set of stripes, so memory does not grow with the number of tasks;
//! two keys on one stripe only wait for each other.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use tokio::sync::{Mutex, MutexGuard};

/// Stripes: far more than the writes one daemon has in flight on a 2-core box, so unrelated
/// tasks rarely share one.
const STRIPES: usize = 256;

/// The striped locks of the domain writes.
pub struct WriteLocks {
    stripes: Vec<Mutex<()>>,
}

/// What a lock is taken for; a task and a dataset with the same name do not share a key.
#[derive(Hash)]
pub enum WriteKey<'a> {
    /// Steps, sandbox results and rewards of one task.
    Task(&'a str),
    /// Meta and records of one dataset version.
    Dataset { source: &'a str, version: &'a str },
}

impl Default for WriteLocks {
    fn default() -> Self {
        WriteLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl WriteLocks {
    /// Waits for the key's stripe; the write is serialised until the guard is dropped.
    pub async fn lock(&self, key: WriteKey<'_>) -> MutexGuard<'_, ()> {
        self.stripes[stripe_of(&key)].lock().await
    }
}

fn stripe_of(key: &WriteKey<'_>) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % STRIPES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the key's stripe is held right now (no waiting, no timing).
    fn is_held(locks: &WriteLocks, key: WriteKey<'_>) -> bool {
        locks.stripes[stripe_of(&key)].try_lock().is_err()
    }

    #[tokio::test]
    async fn one_key_is_serialised_and_other_keys_are_not() {
        let locks = WriteLocks::default();
        let held = locks.lock(WriteKey::Task("task-a")).await;
        assert!(
            is_held(&locks, WriteKey::Task("task-a")),
            "a second writer of the same task must wait"
        );
        // Some other key lands on another stripe and does not wait for the held one.
        let other = (0..1000)
            .map(|i| format!("task-{i}"))
            .find(|name| stripe_of(&WriteKey::Task(name)) != stripe_of(&WriteKey::Task("task-a")))
            .expect("256 stripes");
        assert!(
            !is_held(&locks, WriteKey::Task(&other)),
            "another task's lock is free"
        );
        drop(held);
        assert!(
            !is_held(&locks, WriteKey::Task("task-a")),
            "the waiting writer runs once the lock is released"
        );
        drop(locks.lock(WriteKey::Task("task-a")).await);
    }

    #[test]
    fn a_task_and_a_dataset_of_the_same_name_are_different_keys() {
        let hits = (0..64)
            .filter(|i| {
                let name = format!("k{i}");
                stripe_of(&WriteKey::Task(&name))
                    == stripe_of(&WriteKey::Dataset {
                        source: &name,
                        version: "",
                    })
            })
            .count();
        assert!(
            hits < 8,
            "keys of different kinds should spread: {hits} of 64 collided"
        );
    }
}
