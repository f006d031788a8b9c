//! The daemon's side of the control socket: a few bounded, non-blocking conversations driven by the acceptor's poll loop.
//!
//! Each connection sends one request line and gets one reply, then is
//! closed. Everything is bounded: [`CONTROL_MAX_CLIENTS`] conversations at once
//! (more are told the daemon is busy), [`CONTROL_MAX_REQUEST`] octets of request,
//! [`CONTROL_CLIENT_TIME`] for the whole conversation. Nothing here blocks: a slow
//! reader only holds its own slot until its time is up.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::protocol::{err_reply, parse_request, Request};
use crate::limits::{
    CONTROL_CLIENT_TIME, CONTROL_DRAIN_AT_CLOSE, CONTROL_MAX_CLIENTS, CONTROL_MAX_REQUEST,
};

/// What a request is answered with: the whole reply, framed.
pub type Answer = Box<dyn FnMut(&Request) -> Vec<u8> + Send>;

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    /// `None` until the request is complete.
    reply: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

/// Where a conversation stands after one step.
enum Conversation {
    Waiting,
    Done,
}

/// The listening socket and its conversations.
pub struct ControlServer {
    listener: UnixListener,
    clients: Vec<Option<Client>>,
    answer: Answer,
    /// The token of the listener; conversation `i` has `first + 1 + i`.
    first: usize,
}

impl ControlServer {
    /// `listener` must be non-blocking (see `privsep::control_socket`).
    pub fn new(listener: std::os::unix::net::UnixListener, answer: Answer) -> ControlServer {
        ControlServer {
            listener: UnixListener::from_std(listener),
            clients: (0..CONTROL_MAX_CLIENTS).map(|_| None).collect(),
            answer,
            first: 0,
        }
    }

    /// Registers the listener as token `first`; conversations take the
    /// [`CONTROL_MAX_CLIENTS`] tokens after it.
    pub fn register(&mut self, registry: &Registry, first: usize) -> io::Result<()> {
        self.first = first;
        registry.register(&mut self.listener, Token(first), Interest::READABLE)
    }

    /// Whether `token` is this server's.
    pub fn owns(&self, token: Token) -> bool {
        (self.first..=self.first + CONTROL_MAX_CLIENTS).contains(&token.0)
    }

    /// The earliest moment a conversation runs out of time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().flatten().map(|c| c.deadline).min()
    }

    /// Handles readiness of one of this server's tokens.
    pub fn ready(&mut self, token: Token, registry: &Registry) {
        if token.0 == self.first {
            self.accept_all(registry);
            return;
        }
        let slot = token.0 - self.first - 1;
        let answer = &mut self.answer;
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        if let Conversation::Done = advance(client, answer) {
            self.close(slot, registry);
        }
    }

    /// Ends conversations whose time is up.
    pub fn expire(&mut self, now: Instant, registry: &Registry) {
        for slot in 0..self.clients.len() {
            let late = matches!(&self.clients[slot], Some(c) if c.deadline <= now);
            if late {
                log::info!(
                    "control socket: a client took longer than {CONTROL_CLIENT_TIME:?}; closed"
                );
                self.close(slot, registry);
            }
        }
    }

    fn accept_all(&mut self, registry: &Registry) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket: cannot accept: {e}");
                    return;
                }
            };
            let Some(slot) = self.clients.iter().position(Option::is_none) else {
                // Non-blocking: a reader that does not read loses the reply.
                let _ = stream.write(&err_reply(
                    &"the daemon is busy with other control requests",
                ));
                continue;
            };
            let token = Token(self.first + 1 + slot);
            if let Err(e) =
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("control socket: cannot watch a client: {e}");
                continue;
            }
            let mut client = Client {
                stream,
                input: Vec::new(),
                reply: None,
                written: 0,
                deadline: Instant::now() + CONTROL_CLIENT_TIME,
            };
            // The request may already be there (edge-triggered: no second event).
            match advance(&mut client, &mut self.answer) {
                Conversation::Done => {
                    let _ = registry.deregister(&mut client.stream);
                }
                Conversation::Waiting => self.clients[slot] = Some(client),
            }
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut client) = self.clients.get_mut(slot).and_then(Option::take) {
            let _ = registry.deregister(&mut client.stream);
        }
    }
}

/// Reads the request, answers it, writes the reply — as far as the socket
/// allows without blocking.
fn advance(client: &mut Client, answer: &mut Answer) -> Conversation {
    if client.reply.is_none() {
        match read_request(client) {
            Ok(Some(line)) => {
                let reply = match parse_request(&line) {
                    Ok(request) => answer(&request),
                    Err(e) => {
                        log::warn!("control socket: refused a request: {e}");
                        err_reply(&e)
                    }
                };
                client.reply = Some(reply);
            }
            Ok(None) => return Conversation::Waiting,
            Err(_) => return Conversation::Done,
        }
    }
    let Some(reply) = &client.reply else {
        return Conversation::Waiting;
    };
    while let Some(rest) = reply.get(client.written..).filter(|r| !r.is_empty()) {
        match client.stream.write(rest) {
            Ok(0) => return Conversation::Done,
            Ok(n) => client.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Conversation::Waiting,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Conversation::Done,
        }
    }
    // Unread input at close would reset the client before it reads the
    // reply: take what is there (bounded) first.
    let mut sink = [0u8; 1024];
    for _ in 0..CONTROL_DRAIN_AT_CLOSE / sink.len() {
        match client.stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    Conversation::Done
}

/// The request line once complete (up to LF, end of file, or one octet
/// more than a request may have); `Ok(None)`: more is to come.
fn read_request(client: &mut Client) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; CONTROL_MAX_REQUEST + 1];
    loop {
        if let Some(end) = client.input.iter().position(|&b| b == b'\n') {
            client.input.truncate(end + 1);
            return Ok(Some(std::mem::take(&mut client.input)));
        }
        if client.input.len() > CONTROL_MAX_REQUEST {
            return Ok(Some(std::mem::take(&mut client.input)));
        }
        let room = CONTROL_MAX_REQUEST + 1 - client.input.len();
        match client.stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok(Some(std::mem::take(&mut client.input))),
            Ok(n) => client.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
