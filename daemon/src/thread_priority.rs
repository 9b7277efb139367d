//! Background threads yield to the request path.
//!
//! The daemon's threads share few cores with each other (and, on an actor box, with the model
//! and the workers). Linux's fair scheduler lets a busy thread run for a few milliseconds before
//! a newly woken one of the same priority gets the core, so a long Parquet encode could delay a
//! durable answer by that much. A thread that nothing waits on at once runs at a lower priority
//! (a higher nice value): it still gets a share of a busy core, but a woken request thread
//! preempts it at once.
//!
//! The projector is not lowered: domain writes (rollouts, steps, rewards) are answered once it
//! applied them, and with it 4 nice values lower the rollouts bench answered 0.1-0.2 ms later at
//! the median while the submit-ack p99 did not measurably improve (docs/performance.md).
/// Nice values added to an export's Parquet writer thread: exports run for seconds to minutes
/// and no request waits on them.
pub const EXPORT_WRITER_NICE_ADDED: i32 = 10;
/// The lowest priority Linux has.
const NICE_MAX: i32 = 19;

/// Lowers the calling thread's priority by `added` nice values, relative to the daemon's own
/// (a daemon started with `Nice=5` keeps its threads' order). Linux: a thread id is a valid
/// `PRIO_PROCESS` target and changes only that thread. Best effort: a failure is logged and the
/// thread runs at its current priority, which only means slower answers under contention.
#[allow(unsafe_code)] // two libc calls nix does not wrap; see the SAFETY comment
pub(crate) fn lower_this_thread(added: i32, thread: &str) {
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: getpriority and setpriority only read their integer arguments. getpriority's -1
    // is also a valid nice value; a wrong reading only changes how low the thread goes.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    let nice = (current + added).min(NICE_MAX);
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(thread, nice, %error, "could not lower the thread's priority");
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // reads the priorities back with libc::getpriority
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let lowered = std::thread::spawn(|| {
            lower_this_thread(3, "test");
            let tid = nix::unistd::gettid().as_raw() as libc::id_t;
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 3).min(NICE_MAX));
        let tid = nix::unistd::gettid().as_raw() as libc::id_t;
        assert_eq!(
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) },
            before
        );
    }
}
