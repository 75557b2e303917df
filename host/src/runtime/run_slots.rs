//! Fair sharing of the CPU between tenants' guests: a few *run slots*,
//! handed out round-robin between tenants every time a guest yields.
//!
//! Admission (`admission.rs`) bounds how many instances a tenant holds; it
//! does not bound how much CPU they burn. Guests run on the tokio workers
//! that also serve HTTP, so a few guests spinning until their deadline took
//! both cores of a small node and every other tenant's reads, writes and
//! plugin calls queued behind them (the flood benchmark: 4x a victim's p99
//! with just 3 x 4 attacker calls in flight). [`RunSlots`] makes a guest run
//! only while its call holds one of a few slots (by default one less than
//! the cores, at least one: the rest stay free for requests and the
//! database). A call gives its slot back every time its guest yields (every
//! epoch tick, every fuel-yield interval, and whenever it awaits a host
//! service), and a freed slot goes to the next *tenant* in turn among those
//! waiting, then to that tenant's longest-waiting call. A tenant with 300
//! calls queued therefore gets the same share as a tenant with one, and a
//! guest of a tenant that was not running waits about one tick per other
//! waiting tenant, not behind the flood.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use crate::store::TenantId;

/// The run slots of one runtime.
pub(crate) struct RunSlots {
    state: Mutex<State>,
}

struct State {
    /// Slots nobody holds. Invariant: positive only while nobody waits.
    free: usize,
    next_ticket: u64,
    /// Tenants with waiting calls, in the order their turn comes.
    turn: VecDeque<TenantId>,
    /// The waiting calls of each tenant in `turn`, oldest first.
    waiting: HashMap<TenantId, VecDeque<Waiter>>,
    /// Tickets handed a slot that their call has not picked up yet.
    granted: HashSet<u64>,
}

struct Waiter {
    ticket: u64,
    waker: Waker,
}

impl RunSlots {
    pub fn new(slots: usize) -> RunSlots {
        RunSlots {
            state: Mutex::new(State {
                free: slots.max(1),
                next_ticket: 0,
                turn: VecDeque::new(),
                waiting: HashMap::new(),
                granted: HashSet::new(),
            }),
        }
    }

    /// Runs `inner` only while holding a slot for `tenant`, giving it back
    /// whenever `inner` yields.
    pub fn run<'a, F: Future>(&'a self, tenant: &'a TenantId, inner: F) -> Fair<'a, F> {
        Fair {
            slots: self,
            tenant,
            ticket: None,
            inner,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update below leaves the state consistent before anything
        // can panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot now, or queues `ticket`'s call (`Pending`). A queued
    /// call polled again takes the slot it was granted, or refreshes its
    /// waker.
    fn take(&self, tenant: &TenantId, ticket: &mut Option<u64>, waker: &Waker) -> Poll<()> {
        let mut state = self.lock();
        if let Some(id) = *ticket {
            if state.granted.remove(&id) {
                *ticket = None;
                return Poll::Ready(());
            }
            if let Some(w) = state
                .waiting
                .get_mut(tenant)
                .and_then(|q| q.iter_mut().find(|w| w.ticket == id))
            {
                w.waker.clone_from(waker);
            }
            return Poll::Pending;
        }
        if state.free > 0 && state.turn.is_empty() {
            state.free -= 1;
            return Poll::Ready(());
        }
        let id = state.next_ticket;
        state.next_ticket = state.next_ticket.wrapping_add(1);
        let queue = state.waiting.entry(tenant.clone()).or_default();
        queue.push_back(Waiter {
            ticket: id,
            waker: waker.clone(),
        });
        if queue.len() == 1 {
            state.turn.push_back(tenant.clone());
        }
        *ticket = Some(id);
        Poll::Pending
    }

    /// Gives a slot back: to the first waiting call of the tenant whose
    /// turn it is (who then goes to the back of the line), or to the pool.
    fn give_back(&self) {
        let waker = {
            let mut state = self.lock();
            let mut next = None;
            while let Some(tenant) = state.turn.pop_front() {
                let Some(queue) = state.waiting.get_mut(&tenant) else {
                    continue;
                };
                let Some(waiter) = queue.pop_front() else {
                    state.waiting.remove(&tenant);
                    continue;
                };
                if queue.is_empty() {
                    state.waiting.remove(&tenant);
                } else {
                    state.turn.push_back(tenant);
                }
                next = Some(waiter);
                break;
            }
            match next {
                Some(waiter) => {
                    state.granted.insert(waiter.ticket);
                    Some(waiter.waker)
                }
                None => {
                    state.free += 1;
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// A call dropped while queued (its deadline passed, its request went
    /// away): leaves the line, and passes on a slot it was already granted.
    fn leave(&self, tenant: &TenantId, ticket: u64) {
        let was_granted = {
            let mut state = self.lock();
            if state.granted.remove(&ticket) {
                true
            } else {
                if let Some(queue) = state.waiting.get_mut(tenant) {
                    queue.retain(|w| w.ticket != ticket);
                    if queue.is_empty() {
                        state.waiting.remove(tenant);
                        state.turn.retain(|t| t != tenant);
                    }
                }
                false
            }
        };
        if was_granted {
            self.give_back();
        }
    }

    /// Slots nobody holds now (tests).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.lock().free
    }
}

pin_project_lite::pin_project! {
    /// A future that runs only while it holds a run slot (see
    /// [`RunSlots::run`]).
    pub(crate) struct Fair<'a, F> {
        slots: &'a RunSlots,
        tenant: &'a TenantId,
        // Set while queued for a slot.
        ticket: Option<u64>,
        #[pin]
        inner: F,
    }

    impl<F> PinnedDrop for Fair<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(ticket) = *this.ticket {
                this.slots.leave(this.tenant, ticket);
            }
        }
    }
}

/// Gives the slot back when dropped, even if the guest's code panics
/// through the poll.
struct GiveBack<'s>(&'s RunSlots);

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

impl<F: Future> Future for Fair<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.slots.take(this.tenant, this.ticket, cx.waker()).is_pending() {
            return Poll::Pending;
        }
        let _slot = GiveBack(this.slots);
        this.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_tenant_with_many_calls_gets_one_turn_like_a_tenant_with_one() {
        let slots = RunSlots::new(1);
        let (a, b) = (TenantId::for_tests("a"), TenantId::for_tests("b"));
        let cx = Context::from_waker(Waker::noop());
        // One of a's calls runs; 30 more of a's queue, then b's one call.
        let mut running = None;
        assert!(slots.take(&a, &mut running, cx.waker()).is_ready());
        let mut a_calls: Vec<Option<u64>> = vec![None; 30];
        for t in &mut a_calls {
            assert!(slots.take(&a, t, cx.waker()).is_pending());
        }
        let mut b_call = None;
        assert!(slots.take(&b, &mut b_call, cx.waker()).is_pending());
        // a's running call yields: the slot goes to a's oldest waiting call
        // (a's turn came first), and a goes behind b.
        slots.give_back();
        assert!(slots.take(&a, &mut a_calls[0], cx.waker()).is_ready());
        assert!(slots.take(&b, &mut b_call, cx.waker()).is_pending());
        // That one yields in turn: b runs next, not a's 29 others.
        slots.give_back();
        assert!(slots.take(&b, &mut b_call, cx.waker()).is_ready());
        assert!(slots.take(&a, &mut a_calls[1], cx.waker()).is_pending());
        // b's call ends; a's calls take their turns, oldest first.
        slots.give_back();
        assert!(slots.take(&a, &mut a_calls[1], cx.waker()).is_ready());
        assert!(slots.take(&a, &mut a_calls[2], cx.waker()).is_pending());
        assert_eq!(slots.free(), 0);
    }

    #[tokio::test]
    async fn guests_all_finish_under_contention_and_return_every_slot() {
        let slots = Arc::new(RunSlots::new(2));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let slots = slots.clone();
            tasks.push(tokio::spawn(async move {
                let tenant = TenantId::for_tests(if i % 4 == 0 { "b" } else { "a" });
                slots
                    .run(&tenant, async {
                        for _ in 0..20 {
                            tokio::task::yield_now().await;
                        }
                    })
                    .await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(slots.free(), 2);
        assert!(slots.lock().turn.is_empty() && slots.lock().granted.is_empty());
    }

    #[test]
    fn a_guest_gives_its_slot_back_whenever_it_yields_and_a_dropped_waiter_leaves_the_line() {
        let slots = RunSlots::new(1);
        let (a, b) = (TenantId::for_tests("a"), TenantId::for_tests("b"));
        let mut cx = Context::from_waker(Waker::noop());
        // A pending guest (awaiting a host service, or yielding) holds no slot.
        let mut pending = Box::pin(slots.run(&a, std::future::pending::<()>()));
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        assert_eq!(slots.free(), 1);
        // Hold the slot by hand: b queues; dropped, it leaves the line, so
        // the slot returns to the pool rather than to nobody.
        let mut ticket = None;
        assert!(slots.take(&a, &mut ticket, cx.waker()).is_ready());
        let mut queued = Box::pin(slots.run(&b, async {}));
        assert!(queued.as_mut().poll(&mut cx).is_pending());
        drop(queued);
        slots.give_back();
        assert_eq!(slots.free(), 1);
        assert!(slots.lock().turn.is_empty() && slots.lock().waiting.is_empty());
    }

    #[test]
    fn a_queued_call_dropped_after_its_grant_returns_the_slot() {
        let slots = RunSlots::new(1);
        let (a, b) = (TenantId::for_tests("a"), TenantId::for_tests("b"));
        let mut cx = Context::from_waker(Waker::noop());
        // Hold the slot by hand, queue b, then free the slot: b is granted
        // it but dropped before it runs.
        let mut ticket = None;
        assert!(slots.take(&a, &mut ticket, cx.waker()).is_ready());
        let mut b_call = Box::pin(slots.run(&b, async {}));
        assert!(b_call.as_mut().poll(&mut cx).is_pending());
        slots.give_back();
        assert_eq!(slots.free(), 0);
        drop(b_call);
        assert_eq!(slots.free(), 1);
    }
}
