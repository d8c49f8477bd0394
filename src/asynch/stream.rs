//! `ChangeStream`: a [`Subscription`] as a `Stream`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::RecvError;
use crate::events::{ChangeSet, Subscription};

/// How often the forwarding thread looks whether the stream was dropped while no ChangeSet
/// came.
const POLL: Duration = Duration::from_millis(100);

/// The [`ChangeSet`]s committed since [`AsyncDb::subscribe`](super::AsyncDb::subscribe), in
/// commit order, as a `futures_core::Stream`.
///
/// Items are what [`Subscription::recv`] returns: a set, or [`RecvError::Lagged`] when sets
/// were dropped because the subscriber did not keep up. The stream ends when the `Db` closes.
/// A strata thread forwards the subscription's sets; it ends within 100 ms of the stream's
/// drop, or with the `Db`.
#[derive(Debug)]
pub struct ChangeStream {
    receiver: mpsc::Receiver<Result<Arc<ChangeSet>, RecvError>>,
}

impl ChangeStream {
    pub(super) fn new(subscription: Subscription) -> ChangeStream {
        // Small: the subscription's own bounded queue is where sets wait (and lag is counted).
        let (sender, receiver) = mpsc::channel(16);
        std::thread::Builder::new()
            .name("strata-async-changes".into())
            .spawn(move || forward(&subscription, &sender))
            .expect("spawning a strata thread");
        ChangeStream { receiver }
    }

    /// The next item, or `None` once the `Db` closed.
    pub async fn next(&mut self) -> Option<Result<Arc<ChangeSet>, RecvError>> {
        self.receiver.recv().await
    }
}

fn forward(subscription: &Subscription, sender: &mpsc::Sender<Result<Arc<ChangeSet>, RecvError>>) {
    loop {
        let item = match subscription.recv_timeout(POLL) {
            Err(RecvError::Timeout) if sender.is_closed() => return,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Closed) => return,
            item => item,
        };
        if sender.blocking_send(item).is_err() {
            return;
        }
    }
}

impl futures_core::Stream for ChangeStream {
    type Item = Result<Arc<ChangeSet>, RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}
