//! Which system errors mean a resource ran out for now (descriptors, memory, socket buffers): temporary, answered `[SYS/TEMP]`.
//!
//! Such an error fails the one login or session that met it and nothing
//! else: it is never reported as a permanent problem with the mailbox, and
//! never ends a process that serves other sessions.

use std::io;

use nix::libc;

/// `errno` says a resource is exhausted for now: out of descriptors
/// (EMFILE, ENFILE), memory (ENOMEM), socket buffers (ENOBUFS), or "try
/// again" (EAGAIN).
pub fn is_exhaustion_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EAGAIN
    )
}

/// [`is_exhaustion_errno`] for an `io::Error`.
pub fn is_exhaustion(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(is_exhaustion_errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortages_are_exhaustion_and_refusals_are_not() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOBUFS,
            libc::EAGAIN,
        ] {
            assert!(
                is_exhaustion(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [libc::EACCES, libc::ENOENT, libc::EIO, libc::ELOOP] {
            assert!(
                !is_exhaustion(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(!is_exhaustion(&io::Error::other("no errno")));
    }
}
