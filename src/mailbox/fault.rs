//! Fault injection for crash tests: a point after each system call of a spool update, where a test can make the update crash or fail; nothing in normal builds.
//!
//! Its own module so that the update and its journal, which both call it,
//! do not import each other for it.

use std::io;

/// What a test makes the next fault point do.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop dead (a panic skips every cleanup, like SIGKILL).
    Crash,
    /// Fail as the system call before would have, with this errno.
    Fail(i32),
}

#[cfg(test)]
thread_local! {
    /// Test hook: how many fault points to pass, and what to do at the next.
    pub static FAULT_AFTER: std::cell::Cell<Option<(u32, Fault)>> = const { std::cell::Cell::new(None) };
}

/// A point right after a system call of an update. Tests make the update
/// crash or fail here; in normal builds it is nothing.
#[inline]
pub(crate) fn fault_point() -> io::Result<()> {
    #[cfg(test)]
    {
        let hit = FAULT_AFTER.with(|c| match c.get() {
            Some((0, fault)) => {
                c.set(None);
                Some(fault)
            }
            Some((n, fault)) => {
                c.set(Some((n - 1, fault)));
                None
            }
            None => None,
        });
        match hit {
            Some(Fault::Crash) => panic!("simulated crash"),
            Some(Fault::Fail(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Test hook for simulated power loss: each file's content (by inode)
    /// as of its last fsync, when a test asked for it (`Some`).
    pub static DURABLE: std::cell::RefCell<Option<std::collections::HashMap<u64, Vec<u8>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Called right after `file` was made durable (fsync, fdatasync). Tests
/// that simulate power loss record what the disk would hold; in normal
/// builds it is nothing.
#[inline]
pub(crate) fn made_durable(file: &std::fs::File) {
    #[cfg(test)]
    DURABLE.with(|d| {
        if let Some(map) = d.borrow_mut().as_mut() {
            use std::io::Read;
            use std::os::unix::fs::MetadataExt;
            let mut content = Vec::new();
            let mut f = file.try_clone().expect("clone");
            let ino = f.metadata().expect("stat").ino();
            let pos = std::io::Seek::stream_position(&mut f).expect("pos");
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).expect("seek");
            f.read_to_end(&mut content).expect("read");
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(pos)).expect("seek");
            map.insert(ino, content);
        }
    });
    #[cfg(not(test))]
    let _ = file;
}
