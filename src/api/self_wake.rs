//! Re-polling a future that wakes itself while it is being polled, instead of
//! sending it through the scheduler.
//!
//! Why: hyper's HTTP/1 server hands a request body from the connection task
//! to the handler through a one-slot channel, and the handler runs inside
//! that same task. Taking the body wakes the (already running) connection
//! task. Tokio treats a task woken during its own poll as a yield: it goes to
//! the back of the run queue and an idle sibling worker is woken to steal it.
//! On an otherwise idle node that wake is a futex call plus two context
//! switches on another core for nothing: 7-10 us of CPU per POST at
//! 2,000 requests/s (measured with `pushgate bench unicast`, see deploy/performance.md).
//! Polling again right here does what the scheduler would have done, minus
//! the cross-thread round trip. hyper's own dispatcher loops the same way.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

const POLLING: u8 = 1;
const WOKEN: u8 = 2;

/// Re-polls per outer poll before deferring to a real wake, so a future that
/// keeps waking itself still lets its worker run other tasks.
const MAX_REPOLLS: usize = 8;

#[derive(Default)]
struct State {
    flags: AtomicU8,
    task: AtomicWaker,
}

impl Wake for State {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // While the future is being polled the poller sees WOKEN when the
        // poll returns; otherwise this is an ordinary wake of the task. One
        // atomic read-modify-write decides, so no wake can fall in between.
        if self.flags.fetch_or(WOKEN, Ordering::AcqRel) & POLLING == 0 {
            self.task.wake();
        }
    }
}

/// The waker handed to one long-lived future (a connection), for its life.
pub struct SelfWake {
    state: Arc<State>,
    waker: Waker,
}

impl Default for SelfWake {
    fn default() -> Self {
        let state = Arc::new(State::default());
        SelfWake { waker: Waker::from(state.clone()), state }
    }
}

impl SelfWake {
    /// Polls `fut` once for the caller, re-polling at once (at most
    /// [`MAX_REPOLLS`] times) while it keeps waking itself during its poll.
    pub fn poll<F: Future>(&self, mut fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.state.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..MAX_REPOLLS {
            self.state.flags.store(POLLING, Ordering::Release);
            let result = fut.as_mut().poll(&mut inner);
            let flags = self.state.flags.swap(0, Ordering::AcqRel);
            if result.is_ready() || flags & WOKEN == 0 {
                return result;
            }
        }
        // Still waking itself: go through the scheduler like any task.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts real wakes of the outer task.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_self_wake_is_a_repoll_not_a_task_wake() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let outer = Waker::from(count.clone());
        let mut cx = Context::from_waker(&outer);
        let self_wake = SelfWake::default();
        let mut polls = 0;
        let mut fut = std::pin::pin!(std::future::poll_fn(|cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        }));
        assert_eq!(self_wake.poll(fut.as_mut(), &mut cx), Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "no wake went to the scheduler");
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task_and_a_busy_loop_yields() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let outer = Waker::from(count.clone());
        let mut cx = Context::from_waker(&outer);
        let self_wake = SelfWake::default();
        let mut saved: Option<Waker> = None;
        let mut fut = std::pin::pin!(std::future::poll_fn(|cx| {
            saved = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        assert!(self_wake.poll(fut.as_mut(), &mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        if let Some(w) = saved.take() {
            w.wake();
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a wake from outside the poll wakes the task");

        let mut forever = std::pin::pin!(std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        assert!(self_wake.poll(forever.as_mut(), &mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "after MAX_REPOLLS the task is rescheduled");
    }
}
