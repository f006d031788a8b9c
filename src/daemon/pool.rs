//! The bounded worker pool: threads started on demand up to a limit, a bounded queue, refusal beyond.

use crate::limits::IDLE_WORKER_LINGER;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

/// Sizes of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most worker threads at once (config `max_sessions`).
    pub max_workers: usize,
    /// Most jobs waiting for a worker.
    pub queue_len: usize,
    /// Stack size of each worker thread.
    pub stack_size: usize,
}

/// What to do with a new job, decided from the pool's counters alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// An idle worker (or, when all are busy, the queue) takes it.
    Queue,
    /// Start one more worker for it.
    Spawn,
    /// Everything is busy and the queue is full.
    Refuse,
}

/// The admission rule. `idle` workers are waiting for work; `queued` jobs
/// are already waiting for them, so only `idle > queued` means a worker is
/// free for this one.
pub(crate) fn admit(workers: usize, idle: usize, queued: usize, limits: &PoolLimits) -> Admission {
    if idle > queued {
        Admission::Queue
    } else if workers < limits.max_workers {
        Admission::Spawn
    } else if queued < limits.queue_len {
        Admission::Queue
    } else {
        Admission::Refuse
    }
}

struct State<J> {
    queue: VecDeque<J>,
    workers: usize,
    idle: usize,
    shutdown: bool,
}

struct Shared<J> {
    state: Mutex<State<J>>,
    work: Condvar,
    handler: Box<dyn Fn(J) + Send + Sync>,
    limits: PoolLimits,
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        // Jobs run outside the lock, so a poisoned lock only means a panic
        // between two counter updates; the counters are still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded pool running `handler` on each submitted job.
pub struct Pool<J: Send + 'static> {
    shared: Arc<Shared<J>>,
}

impl<J: Send + 'static> Pool<J> {
    pub fn new(limits: PoolLimits, handler: impl Fn(J) + Send + Sync + 'static) -> Pool<J> {
        let limits = PoolLimits {
            max_workers: limits.max_workers.max(1),
            ..limits
        };
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    workers: 0,
                    idle: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                handler: Box::new(handler),
                limits,
            }),
        }
    }

    /// Hands `job` to a worker, or gives it back when the pool and its
    /// queue are full (or the pool is shutting down). Never blocks on work.
    pub fn submit(&self, job: J) -> Result<(), J> {
        let mut state = self.shared.lock();
        if state.shutdown {
            return Err(job);
        }
        let admission = admit(
            state.workers,
            state.idle,
            state.queue.len(),
            &self.shared.limits,
        );
        match admission {
            Admission::Refuse => return Err(job),
            Admission::Queue => {
                state.queue.push_back(job);
                drop(state);
                self.shared.work.notify_one();
                return Ok(());
            }
            Admission::Spawn => state.workers += 1,
        }
        drop(state);
        // The new worker starts with this job rather than taking it from
        // the queue, so the queue only ever holds jobs waiting for a busy
        // pool and its bound means what it says.
        let handoff = Arc::new(Mutex::new(Some(job)));
        let shared = Arc::clone(&self.shared);
        let first = Arc::clone(&handoff);
        let spawned = thread::Builder::new()
            .name("pop3-worker".into())
            .stack_size(self.shared.limits.stack_size)
            .spawn(move || {
                let job = first.lock().unwrap_or_else(PoisonError::into_inner).take();
                work(&shared, job)
            });
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                log::error!("cannot start a worker thread: {e}");
                self.shared.lock().workers -= 1;
                let job = handoff
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                job.map_or(Ok(()), Err)
            }
        }
    }

    /// Worker threads now running (busy or idle).
    pub fn workers(&self) -> usize {
        self.shared.lock().workers
    }

    /// Workers running a job.
    pub fn busy(&self) -> usize {
        let state = self.shared.lock();
        state.workers - state.idle
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Every worker is busy, none can be started, and jobs already queued
    /// claim any that comes free: a new job would wait.
    pub fn saturated(&self) -> bool {
        let state = self.shared.lock();
        state.workers >= self.shared.limits.max_workers && state.idle <= state.queue.len()
    }

    /// Takes the queued jobs `expired` says have waited too long out of
    /// the queue and hands them back, oldest first.
    pub fn take_expired(&self, expired: impl Fn(&J) -> bool) -> Vec<J> {
        let mut state = self.shared.lock();
        // The queue is in arrival order: expired jobs are at its front.
        let n = state.queue.iter().take_while(|j| expired(j)).count();
        state.queue.drain(..n).collect()
    }

    /// Refuses new jobs, drops the queued ones and lets idle workers exit;
    /// running jobs finish on their own.
    pub fn shutdown(&self) {
        let dropped: Vec<J> = {
            let mut state = self.shared.lock();
            state.shutdown = true;
            state.queue.drain(..).collect()
        };
        self.shared.work.notify_all();
        drop(dropped);
    }
}

/// Keeps the worker count right even when a job panics.
struct WorkerGuard<'a, J> {
    shared: &'a Shared<J>,
}

impl<J> Drop for WorkerGuard<'_, J> {
    fn drop(&mut self) {
        self.shared.lock().workers -= 1;
    }
}

fn work<J>(shared: &Shared<J>, first: Option<J>) {
    let _guard = WorkerGuard { shared };
    if let Some(job) = first {
        (shared.handler)(job);
    }
    while let Some(job) = next_job(shared) {
        (shared.handler)(job);
    }
}

/// Waits for a job; `None` when the pool shuts down or the worker has been
/// idle long enough to exit.
fn next_job<J>(shared: &Shared<J>) -> Option<J> {
    let mut state = shared.lock();
    let give_up = Instant::now() + IDLE_WORKER_LINGER;
    loop {
        if let Some(job) = state.queue.pop_front() {
            return Some(job);
        }
        let now = Instant::now();
        if state.shutdown || now >= give_up {
            return None;
        }
        state.idle += 1;
        let (guard, _) = shared
            .work
            .wait_timeout(state, give_up - now)
            .unwrap_or_else(PoisonError::into_inner);
        state = guard;
        state.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn limits(max_workers: usize, queue_len: usize) -> PoolLimits {
        PoolLimits {
            max_workers,
            queue_len,
            stack_size: 64 * 1024,
        }
    }

    #[test]
    fn admission_rule() {
        let l = limits(2, 1);
        assert_eq!(admit(0, 0, 0, &l), Admission::Spawn);
        assert_eq!(admit(1, 1, 0, &l), Admission::Queue, "idle worker takes it");
        assert_eq!(
            admit(1, 1, 1, &l),
            Admission::Spawn,
            "idle one is already claimed"
        );
        assert_eq!(admit(2, 0, 0, &l), Admission::Queue);
        assert_eq!(admit(2, 0, 1, &l), Admission::Refuse);
        assert_eq!(admit(2, 1, 1, &l), Admission::Refuse);
    }

    fn wait_until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "condition not reached");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A pool whose jobs block until released; jobs report their number.
    fn blocking_pool(
        max_workers: usize,
        queue_len: usize,
    ) -> (Pool<(u32, mpsc::Receiver<()>)>, mpsc::Receiver<u32>) {
        let (done_tx, done_rx) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let pool = Pool::new(
            limits(max_workers, queue_len),
            move |(n, release): (u32, mpsc::Receiver<()>)| {
                let _ = release.recv();
                let _ = done_tx.lock().unwrap().send(n);
            },
        );
        (pool, done_rx)
    }

    #[test]
    fn full_pool_and_queue_refuse_then_recover() {
        let (pool, done) = blocking_pool(2, 1);
        let mut releases = Vec::new();
        for n in 0..3 {
            let (tx, rx) = mpsc::channel();
            assert!(pool.submit((n, rx)).is_ok(), "job {n} admitted");
            releases.push(tx);
        }
        wait_until(|| pool.busy() == 2);
        assert_eq!(pool.workers(), 2, "never more than max_workers threads");
        assert_eq!(pool.queued(), 1);
        let (_tx, rx) = mpsc::channel();
        let refused = pool.submit((99, rx));
        assert!(matches!(refused, Err((99, _))), "fourth job refused");

        releases[0].send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(10)).unwrap(), 0);
        // The queued job now runs on the freed worker; the queue has room.
        wait_until(|| pool.queued() == 0);
        let (tx, rx) = mpsc::channel();
        assert!(pool.submit((3, rx)).is_ok());
        releases.push(tx);
        for tx in &releases {
            let _ = tx.send(());
        }
        let mut finished: Vec<u32> = (0..3)
            .map(|_| done.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        finished.sort_unstable();
        assert_eq!(finished, vec![1, 2, 3]);
    }

    #[test]
    fn saturation_and_expiry() {
        let (pool, _done) = blocking_pool(1, 4);
        assert!(!pool.saturated(), "a worker can be started");
        let mut releases = Vec::new();
        for n in 0..3 {
            let (tx, rx) = mpsc::channel();
            pool.submit((n, rx)).unwrap();
            releases.push(tx);
        }
        wait_until(|| pool.busy() == 1 && pool.queued() == 2);
        assert!(pool.saturated());
        let expired = pool.take_expired(|(n, _)| *n < 2);
        assert_eq!(expired.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1]);
        assert_eq!(pool.queued(), 1);
        for tx in &releases {
            let _ = tx.send(());
        }
    }

    #[test]
    fn workers_start_lazily_and_are_reused() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let pool = Pool::new(limits(8, 8), move |n: u32| {
            let _ = tx.lock().unwrap().send(n);
        });
        assert_eq!(pool.workers(), 0, "no thread before the first job");
        for n in 0..5 {
            pool.submit(n).unwrap();
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), n);
            wait_until(|| pool.busy() == 0);
        }
        assert_eq!(pool.workers(), 1, "sequential jobs share one worker");
    }

    #[test]
    fn shutdown_drops_queue_and_refuses() {
        let (pool, done) = blocking_pool(1, 4);
        let (release, rx) = mpsc::channel();
        pool.submit((0, rx)).unwrap();
        let (queued_tx, queued_rx) = mpsc::channel::<()>();
        pool.submit((1, queued_rx)).unwrap();
        // Job 0 was taken by the worker once only job 1 is left waiting.
        wait_until(|| pool.queued() == 1);
        pool.shutdown();
        assert_eq!(pool.queued(), 0);
        assert!(
            queued_tx.send(()).is_err(),
            "queued job was dropped, its receiver with it"
        );
        let (_tx, rx) = mpsc::channel();
        assert!(pool.submit((2, rx)).is_err());
        release.send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(10)).unwrap(), 0);
        wait_until(|| pool.workers() == 0);
    }

    #[test]
    fn panicking_job_does_not_leak_a_worker_slot() {
        let pool = Pool::new(limits(1, 1), |n: u32| {
            if n == 0 {
                panic!("test panic");
            }
        });
        pool.submit(0).unwrap();
        wait_until(|| pool.workers() == 0);
        pool.submit(1).unwrap();
        wait_until(|| pool.busy() == 0);
    }
}
