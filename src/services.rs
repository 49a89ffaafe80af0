//! What the server builds once and hands down to every stage that keeps or
//! counts: the metrics, the queue, the archive with its reports, and the state
//! shared with other instances. The judging parts are the pipeline's own; a trial
//! (`test-rules`) has none of these, and keeps and counts nothing.

use std::sync::Arc;

use crate::archive::Archive;
use crate::archive::report::Reporter;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::shared_state::SharedState;

pub struct Services {
    /// Every counter the server exposes; the queue and the archive count into
    /// them too.
    pub metrics: Arc<Metrics>,
    /// Where accepted mail goes.
    pub queue: Arc<Queue>,
    /// Where refused mail is kept; None when the archive is off.
    pub archive: Option<Arc<Archive>>,
    /// Sends reports of archived mail to the backup mailbox.
    pub reporter: Option<Arc<Reporter>>,
    /// Counters, greylist and caches shared with other instances (or local).
    pub shared: Arc<SharedState>,
}
