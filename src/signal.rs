//! Single-threaded wake-ups inside one shard: `Signal` wakes one waiting
//! task (the flusher, a mesh sender, the shard's main task at shutdown).
//!
//! Owns: nothing but a flag and a waker. Must never: be sent across shards
//! (these are `!Send` by construction through `Cell`/`Rc`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A level-triggered notification for one waiting task.
#[derive(Default)]
pub struct Signal {
    raised: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Raises the signal and wakes the waiter, if any.
    pub fn raise(&self) {
        if self.raised.replace(true) {
            return;
        }
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits until the signal is raised, then lowers it.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

pub struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.raised.replace(false) {
            return Poll::Ready(());
        }
        *self.signal.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_signal_completes_the_next_wait_once() {
        let signal = Signal::default();
        signal.raise();
        signal.raise();
        futures_lite::future::block_on(signal.wait());
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut cx = Context::from_waker(&waker);
        let mut wait = signal.wait();
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
    }
}
