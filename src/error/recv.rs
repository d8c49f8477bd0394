//! Why a subscription returned no change set: an error of the events layer, kept among the
//! errors so that [`Error`](crate::Error) can carry it without the error module depending on
//! the change capture above it.

/// Why a [`Subscription`](crate::events::Subscription) returned no [`ChangeSet`].
///
/// [`ChangeSet`]: crate::events::ChangeSet
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscription was full and this many of the oldest ChangeSets were dropped since the
    /// last receive. Reported once; the next receive returns the oldest set still held.
    #[error("the subscriber lagged behind: {0} change sets were dropped")]
    Lagged(u64),
    /// No ChangeSet is waiting ([`Subscription::try_recv`](crate::events::Subscription::try_recv) only).
    #[error("no change set is waiting")]
    Empty,
    /// None arrived in time ([`Subscription::recv_timeout`](crate::events::Subscription::recv_timeout) only).
    #[error("no change set arrived in time")]
    Timeout,
    /// The database was closed and every ChangeSet it sent has been received.
    #[error("the database was closed")]
    Closed,
}
