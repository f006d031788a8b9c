//! One channel to a privileged helper: a request frame out, its reply frame (with the spool's descriptor) in, and how such an exchange can fail.
//!
//! A channel carries one request at a time, and the helper answers every
//! request it reads with exactly one frame (or ends). So after a reply
//! timed out, the next frame on the channel is that late reply: reading
//! and discarding it ([`discard_late_reply`]) puts the channel back in
//! step, with no sequence number on the wire.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessageOwned, MsgFlags};

use crate::exhaustion::is_exhaustion_errno;
use crate::limits::MAX_HELPER_FRAME;
use crate::privsep::helper_wire::{Accepted, Response, SpoolAnswer};

/// What a helper said about a login, with the spool it opened.
#[derive(Debug)]
pub struct Verdict {
    pub response: Response,
    pub spool: Option<File>,
}

/// The network side's end of one helper's channel.
pub(super) struct Channel {
    pub(super) fd: OwnedFd,
    pub(super) pid: i32,
}

/// How an exchange with a helper failed.
pub(super) enum Failure {
    /// This request failed; the channel is in step and can be reused.
    Request(io::Error),
    /// The helper was gone before the request reached it: the channel is
    /// closed, and another helper may take the request.
    Gone(io::Error),
    /// The reply did not come within the reply timeout: the helper is
    /// still working on the request, and the channel owes its reply.
    Late(io::Error),
    /// The channel cannot be used any more (the helper ended while
    /// working on the request, or the socket failed): it is closed.
    Channel(io::Error),
}

/// One frame as received, its descriptors already owned.
struct Received {
    len: usize,
    files: Vec<File>,
    truncated: bool,
}

/// Sends `frame` and reads the helper's reply.
pub(super) fn exchange(channel: &Channel, frame: &[u8]) -> Result<Verdict, Failure> {
    let fd = channel.fd.as_raw_fd();
    loop {
        match sendmsg::<()>(
            fd,
            &[IoSlice::new(frame)],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            // A send timeout (EAGAIN) means the helper stopped reading.
            Err(e) if e != Errno::EAGAIN && is_exhaustion_errno(e as i32) => {
                return Err(Failure::Request(e.into()))
            }
            Err(e @ (Errno::EPIPE | Errno::ECONNRESET)) => return Err(Failure::Gone(e.into())),
            Err(e) => return Err(Failure::Channel(e.into())),
            Ok(_) => break,
        }
    }
    let mut buf = vec![0u8; MAX_HELPER_FRAME + 1];
    let received = match receive(fd, &mut buf) {
        // The receive timeout: the reply is still to come.
        Err(e @ Errno::EAGAIN) => {
            return Err(Failure::Late(io::Error::other(format!(
                "no reply in time ({e})"
            ))))
        }
        Err(e) => return Err(Failure::Channel(e.into())),
        Ok(r) => r,
    };
    let Received {
        len: n,
        mut files,
        truncated,
    } = received;
    if n == 0 {
        return Err(Failure::Channel(io::Error::other(
            "the helper closed the channel",
        )));
    }
    if truncated {
        // The kernel drops descriptors this process has no room for.
        return Err(Failure::Request(io::Error::other(
            "the spool's descriptor did not arrive (out of file descriptors?)",
        )));
    }
    let response = buf
        .get(..n)
        .filter(|_| n <= MAX_HELPER_FRAME)
        .and_then(Response::decode)
        .ok_or_else(|| {
            Failure::Request(io::Error::other(format!("malformed reply ({n} bytes)")))
        })?;
    let wants_fd = matches!(
        response,
        Response::Accepted(Accepted {
            spool: SpoolAnswer::Open,
            ..
        })
    );
    match (wants_fd, files.len()) {
        (true, 1) => Ok(Verdict {
            response,
            spool: files.pop(),
        }),
        (false, 0) => Ok(Verdict {
            response,
            spool: None,
        }),
        (_, k) => Err(Failure::Request(io::Error::other(format!(
            "reply carries {k} descriptors, which does not fit its content"
        )))),
    }
}

/// Waits until `deadline` for the reply a timed-out exchange still owes,
/// and discards it: the login it answered has already failed, and the
/// spool it may carry is closed here. `Ok` means the channel is in step
/// again; an error (end of file, the deadline passed) that it is not.
pub(super) fn discard_late_reply(channel: &Channel, deadline: Instant) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_HELPER_FRAME + 1];
    loop {
        // Each receive waits at most the channel's reply timeout.
        match receive(channel.fd.as_raw_fd(), &mut buf) {
            Err(Errno::EAGAIN) if Instant::now() < deadline => continue,
            Err(Errno::EAGAIN) => {
                return Err(io::Error::other("its late reply never came"));
            }
            Err(e) => return Err(e.into()),
            Ok(Received { len: 0, .. }) => {
                return Err(io::Error::other("the helper closed the channel"));
            }
            // Dropping the frame closes its descriptors.
            Ok(_) => return Ok(()),
        }
    }
}

/// Reads one frame into `buf`. Every received descriptor is owned at
/// once, before any check can return, so none stays open on an error.
fn receive(fd: RawFd, buf: &mut [u8]) -> Result<Received, Errno> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(msg) => {
                let mut files: Vec<File> = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(received) = cmsg {
                            files.extend(received.into_iter().map(owned_file));
                        }
                    }
                }
                return Ok(Received {
                    len: msg.bytes,
                    files,
                    truncated: msg.flags.contains(MsgFlags::MSG_CTRUNC),
                });
            }
        }
    }
}

fn owned_file(fd: RawFd) -> File {
    // SAFETY: `fd` was just installed in this process by the kernel from
    // an SCM_RIGHTS message; nothing else refers to it, so this is its
    // only owner.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}
