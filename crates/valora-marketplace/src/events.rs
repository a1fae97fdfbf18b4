//! In-process fan-out of committed listing events to watchers.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::ListingEvent;

/// Events buffered per watcher before it is considered too slow.
const WATCH_BUFFER: usize = 1024;

/// Publishes committed events to every subscribed watcher.
#[derive(Clone, Debug)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<ListingEvent>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self { sender: broadcast::channel(WATCH_BUFFER).0 }
    }
}

impl EventHub {
    /// Sends an event to current watchers; without watchers it is dropped.
    pub fn publish(&self, event: ListingEvent) {
        let _ = self.sender.send(Arc::new(event));
    }

    /// Subscribes to events committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ListingEvent>> {
        self.sender.subscribe()
    }
}
