//! `Output`: the reply buffer between a session and its connection, so each batch of replies leaves in one write.

use crate::limits::IDLE_WRITE_CAPACITY;
use std::io::{self, Write};

/// Like `std::io::BufWriter`, with two differences that matter for a
/// server holding thousands of idle sessions: the buffer grows to its
/// limit only while a large reply is being produced and [`Output::release`]
/// shrinks it again, and nothing is written on drop (a session that ends
/// on an error must not block in a destructor writing to a dead client).
#[derive(Debug)]
pub struct Output<W: Write> {
    inner: W,
    buf: Vec<u8>,
    limit: usize,
    /// Octets written to `inner` since [`Output::take_sent`] last asked.
    sent: u64,
}

impl<W: Write> Output<W> {
    /// Buffers up to `limit` bytes before writing through to `inner`.
    pub fn new(inner: W, limit: usize) -> Self {
        Output {
            inner,
            buf: Vec::with_capacity(IDLE_WRITE_CAPACITY.min(limit)),
            limit: limit.max(1),
            sent: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The connection, for reading; buffered output is not written by this.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The connection back, once buffered replies are written (STLS hands
    /// the plain connection to the TLS handshake this way).
    pub fn into_inner(mut self) -> io::Result<W> {
        self.write_buffered()?;
        Ok(self.inner)
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Octets written to the connection since the last call.
    pub fn take_sent(&mut self) -> u64 {
        std::mem::take(&mut self.sent)
    }

    /// Drops the replies not written yet: they must never reach the client.
    pub fn discard(&mut self) {
        self.buf.clear();
    }

    /// Gives back memory grown for a large reply; call when idle.
    pub fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_WRITE_CAPACITY {
            self.buf = Vec::with_capacity(IDLE_WRITE_CAPACITY.min(self.limit));
        }
    }

    fn write_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.inner.write_all(&self.buf);
        if result.is_ok() {
            self.sent += self.buf.len() as u64;
        }
        // After a failed write the connection is unusable; dropping the
        // bytes keeps later calls from resending half a reply.
        self.buf.clear();
        result
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.write_buffered()?;
        }
        if data.len() >= self.limit {
            let n = self.inner.write(data)?;
            self.sent += n as u64;
            return Ok(n);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_buffered()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every write call separately.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        fail: bool,
    }

    impl Write for Recorder {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.fail {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"));
            }
            self.writes.push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn small_replies_leave_in_one_write() {
        let mut out = Output::new(Recorder::default(), 1024);
        out.write_all(b"+OK 2 320\r\n").unwrap();
        out.write_all(b"+OK\r\n").unwrap();
        assert!(
            out.get_ref().writes.is_empty(),
            "nothing written before flush"
        );
        assert_eq!(out.buffered(), 16);
        out.flush().unwrap();
        assert_eq!(out.get_ref().writes, vec![b"+OK 2 320\r\n+OK\r\n".to_vec()]);
        assert_eq!(out.buffered(), 0);
    }

    #[test]
    fn overflow_writes_buffer_then_continues() {
        let mut out = Output::new(Recorder::default(), 8);
        out.write_all(b"12345").unwrap();
        out.write_all(b"6789").unwrap();
        assert_eq!(out.get_ref().writes, vec![b"12345".to_vec()]);
        out.write_all(b"0123456789ab").unwrap();
        out.flush().unwrap();
        let all: Vec<u8> = out.get_ref().writes.concat();
        assert_eq!(all, b"1234567890123456789ab".to_vec());
        assert_eq!(out.get_ref().writes[1], b"6789".to_vec());
        assert_eq!(out.get_ref().writes[2], b"0123456789ab".to_vec());
    }

    #[test]
    fn release_shrinks_grown_buffer() {
        let mut out = Output::new(Recorder::default(), 16 * 1024);
        out.write_all(&[b'x'; 8000]).unwrap();
        assert!(out.buf.capacity() >= 8000);
        out.release();
        assert!(
            out.buf.capacity() >= 8000,
            "not released while data is pending"
        );
        out.flush().unwrap();
        out.release();
        assert!(out.buf.capacity() <= IDLE_WRITE_CAPACITY * 2);
        assert_eq!(out.get_ref().writes.concat().len(), 8000);
    }

    #[test]
    fn into_inner_writes_what_is_buffered() {
        let mut out = Output::new(Recorder::default(), 64);
        out.write_all(b"+OK Begin TLS negotiation\r\n").unwrap();
        let inner = out.into_inner().unwrap();
        assert_eq!(
            inner.writes,
            vec![b"+OK Begin TLS negotiation\r\n".to_vec()]
        );
    }

    #[test]
    fn failed_write_drops_pending_bytes() {
        let mut out = Output::new(Recorder::default(), 64);
        out.write_all(b"+OK\r\n").unwrap();
        out.get_mut().fail = true;
        assert!(out.flush().is_err());
        assert_eq!(out.buffered(), 0);
        out.get_mut().fail = false;
        out.flush().unwrap();
        assert!(
            out.get_ref().writes.is_empty(),
            "half a reply is never resent"
        );
    }
}
