//! Event intake (spec B.5): which watch notifications put a key on a queue.
//!
//! Adds and deletes always enqueue the object's name; updates enqueue when
//! the kind's predicate says so (for contents, `ShouldEnqueueContentChange`;
//! for group contents, always). Enqueuing is an immediate add: it neither
//! waits for nor resets the key's backoff.

use kube::Resource;

use crate::controller::queue::{Key, WorkQueue};
use crate::k8s::watch::Notification;

/// A handler that enqueues every add, delete, and every update for which
/// `should_enqueue_update(old, new)` holds.
pub fn enqueue_when<K, P>(
    queue: WorkQueue<Key>,
    should_enqueue_update: P,
) -> impl Fn(Notification<K>) + Send + Sync
where
    K: Resource,
    P: Fn(&K, &K) -> bool + Send + Sync,
{
    move |n: Notification<K>| {
        let wanted = match &n {
            Notification::Add(_) | Notification::Delete(_) => true,
            Notification::Update { old, new } => should_enqueue_update(old, new),
        };
        if wanted && let Some(name) = n.name() {
            queue.add(Key::from(name));
        }
    }
}

/// A handler that enqueues every notification.
pub fn enqueue_always<K: Resource>(
    queue: WorkQueue<Key>,
) -> impl Fn(Notification<K>) + Send + Sync {
    enqueue_when(queue, |_: &K, _: &K| true)
}
