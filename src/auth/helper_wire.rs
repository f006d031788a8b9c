//! The privileged helper's wire format: bounded request/response frames, encoded and decoded without I/O.
//!
//! One frame is one `SOCK_SEQPACKET` message, so framing is the kernel's;
//! this module only lays out the fields. Every field is a tag byte or a
//! length-prefixed (u16, big-endian) byte string with its own bound, and a
//! decoder that meets anything unexpected (unknown tag, short field,
//! trailing bytes, a field over its bound) returns `None`: the helper then
//! ends the conversation rather than guess.

use std::path::PathBuf;

use crate::auth::crypt::MAX_PASSWORD;

/// The largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 8 * 1024;

/// Longest user name on the wire (Linux allows 32; passwd files more).
pub const MAX_USER: usize = 256;

/// Longest spool path (PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// Longest explanatory text (a refusal reason, a backend error).
pub const MAX_TEXT: usize = 1024;

const REQ_VERIFY: u8 = 1;
const REQ_LOOKUP: u8 = 2;
const REQ_SCRAM_SECRET: u8 = 3;
const REQ_OFFERS_SCRAM: u8 = 4;
const RESP_ACCEPTED: u8 = 1;
const RESP_REJECTED: u8 = 2;
const RESP_UNAVAILABLE: u8 = 3;
const RESP_SECRET: u8 = 4;
const RESP_FLAG: u8 = 5;
const SPOOL_OPEN: u8 = 1;
const SPOOL_MISSING: u8 = 2;
const SPOOL_REFUSED: u8 = 3;
const SPOOL_FAILED: u8 = 4;

/// A password on its way through the helper; zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log line, not even a debug one.
        f.write_str("Secret(..)")
    }
}

/// What the network process asks of the helper.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Check a password; on success also open the account's spool, so a
    /// spool can only be had together with the account's password.
    Verify { user: String, password: Secret },
    /// The account without a password (SASL EXTERNAL with a verified
    /// certificate, SCRAM after its proof), with its spool.
    Lookup { user: String },
    /// The account's SCRAM-SHA-256 secret (passwd-file field syntax).
    ScramSecret { user: String },
    /// Whether any account has a SCRAM-SHA-256 secret.
    OffersScram,
}

/// The state of the spool the helper opened for an accepted login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spool {
    /// Opened; its descriptor travels with the frame (SCM_RIGHTS).
    Open,
    /// There is no spool file: an empty maildrop.
    Missing,
    /// The spool exists but must not be served (symlink, wrong owner, ...).
    Refused(String),
    /// Opening it failed with this errno.
    Failed(i32),
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Accepted {
        user: String,
        mailbox: PathBuf,
        spool: Spool,
    },
    Rejected,
    Unavailable(String),
    /// A SCRAM secret, `{SCRAM-SHA-256}...`.
    Secret(Secret),
    Flag(bool),
}

/// A frame under construction; refuses to grow past [`MAX_FRAME`].
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn new(tag: u8) -> Encoder {
        let mut buf = Vec::with_capacity(256);
        buf.push(tag);
        Encoder { buf }
    }

    fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }

    fn field(&mut self, bytes: &[u8], max: usize) -> Option<()> {
        if bytes.len() > max || self.buf.len() + 2 + bytes.len() > MAX_FRAME {
            return None;
        }
        let len = u16::try_from(bytes.len()).ok()?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        Some(())
    }

    fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields off a received frame.
struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn field(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self.rest.get(..2)?;
        let len = usize::from(u16::from_be_bytes([*len.first()?, *len.get(1)?]));
        if len > max {
            return None;
        }
        let bytes = self.rest.get(2..2 + len)?;
        self.rest = self.rest.get(2 + len..)?;
        Some(bytes)
    }

    fn text(&mut self, max: usize) -> Option<String> {
        String::from_utf8(self.field(max)?.to_vec()).ok()
    }

    fn i32(&mut self) -> Option<i32> {
        let b = self.rest.get(..4)?;
        let v = i32::from_be_bytes(b.try_into().ok()?);
        self.rest = self.rest.get(4..)?;
        Some(v)
    }

    /// The frame must end exactly here.
    fn end<T>(self, value: T) -> Option<T> {
        self.rest.is_empty().then_some(value)
    }
}

impl Request {
    /// `None` when a field is over its bound (the caller refuses the login).
    pub fn encode(&self) -> Option<Vec<u8>> {
        match self {
            Request::Verify { user, password } => {
                let mut e = Encoder::new(REQ_VERIFY);
                e.field(user.as_bytes(), MAX_USER)?;
                e.field(&password.0, MAX_PASSWORD)?;
                Some(e.finish())
            }
            Request::Lookup { user } => {
                let mut e = Encoder::new(REQ_LOOKUP);
                e.field(user.as_bytes(), MAX_USER)?;
                Some(e.finish())
            }
            Request::ScramSecret { user } => {
                let mut e = Encoder::new(REQ_SCRAM_SECRET);
                e.field(user.as_bytes(), MAX_USER)?;
                Some(e.finish())
            }
            Request::OffersScram => Some(Encoder::new(REQ_OFFERS_SCRAM).finish()),
        }
    }

    pub fn decode(frame: &[u8]) -> Option<Request> {
        let mut d = Decoder { rest: frame };
        match d.byte()? {
            REQ_VERIFY => {
                let user = d.text(MAX_USER)?;
                let password = Secret(d.field(MAX_PASSWORD)?.to_vec());
                d.end(Request::Verify { user, password })
            }
            REQ_LOOKUP => {
                let user = d.text(MAX_USER)?;
                d.end(Request::Lookup { user })
            }
            REQ_SCRAM_SECRET => {
                let user = d.text(MAX_USER)?;
                d.end(Request::ScramSecret { user })
            }
            REQ_OFFERS_SCRAM => d.end(Request::OffersScram),
            _ => None,
        }
    }
}

/// Cuts explanatory text to its bound on a character boundary.
fn bounded(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

impl Response {
    /// `None` only when the user name or path is over its bound.
    pub fn encode(&self) -> Option<Vec<u8>> {
        Some(match self {
            Response::Accepted {
                user,
                mailbox,
                spool,
            } => {
                let mut e = Encoder::new(RESP_ACCEPTED);
                e.field(user.as_bytes(), MAX_USER)?;
                e.field(mailbox.to_str()?.as_bytes(), MAX_PATH)?;
                match spool {
                    Spool::Open => e.byte(SPOOL_OPEN),
                    Spool::Missing => e.byte(SPOOL_MISSING),
                    Spool::Refused(why) => {
                        e.byte(SPOOL_REFUSED);
                        e.field(bounded(why).as_bytes(), MAX_TEXT)?;
                    }
                    Spool::Failed(errno) => {
                        e.byte(SPOOL_FAILED);
                        e.buf.extend_from_slice(&errno.to_be_bytes());
                    }
                }
                e.finish()
            }
            Response::Rejected => Encoder::new(RESP_REJECTED).finish(),
            Response::Unavailable(why) => {
                let mut e = Encoder::new(RESP_UNAVAILABLE);
                e.field(bounded(why).as_bytes(), MAX_TEXT)?;
                e.finish()
            }
            Response::Secret(secret) => {
                let mut e = Encoder::new(RESP_SECRET);
                e.field(&secret.0, MAX_TEXT)?;
                e.finish()
            }
            Response::Flag(flag) => {
                let mut e = Encoder::new(RESP_FLAG);
                e.byte(u8::from(*flag));
                e.finish()
            }
        })
    }

    pub fn decode(frame: &[u8]) -> Option<Response> {
        let mut d = Decoder { rest: frame };
        match d.byte()? {
            RESP_ACCEPTED => {
                let user = d.text(MAX_USER)?;
                let mailbox = PathBuf::from(d.text(MAX_PATH)?);
                let spool = match d.byte()? {
                    SPOOL_OPEN => Spool::Open,
                    SPOOL_MISSING => Spool::Missing,
                    SPOOL_REFUSED => Spool::Refused(d.text(MAX_TEXT)?),
                    SPOOL_FAILED => Spool::Failed(d.i32()?),
                    _ => return None,
                };
                d.end(Response::Accepted {
                    user,
                    mailbox,
                    spool,
                })
            }
            RESP_REJECTED => d.end(Response::Rejected),
            RESP_UNAVAILABLE => {
                let why = d.text(MAX_TEXT)?;
                d.end(Response::Unavailable(why))
            }
            RESP_SECRET => {
                let secret = Secret(d.field(MAX_TEXT)?.to_vec());
                d.end(Response::Secret(secret))
            }
            RESP_FLAG => match d.byte()? {
                0 => d.end(Response::Flag(false)),
                1 => d.end(Response::Flag(true)),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(user: &str, pw: &[u8]) -> Request {
        Request::Verify {
            user: user.into(),
            password: Secret(pw.to_vec()),
        }
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            verify("alice", b"pa:ss\0word"),
            Request::Lookup { user: "bob".into() },
            Request::ScramSecret {
                user: "carol".into(),
            },
            Request::OffersScram,
        ] {
            let frame = r.encode().unwrap();
            assert!(frame.len() <= MAX_FRAME);
            assert_eq!(Request::decode(&frame), Some(r));
        }
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            Response::Rejected,
            Response::Flag(true),
            Response::Flag(false),
            Response::Secret(Secret(b"{SCRAM-SHA-256}4096,c2FsdA==,a,b".to_vec())),
            Response::Unavailable("shadow unreadable".into()),
            Response::Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: Spool::Open,
            },
            Response::Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: Spool::Missing,
            },
            Response::Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: Spool::Refused("it is a symbolic link".into()),
            },
            Response::Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: Spool::Failed(13),
            },
        ] {
            let frame = r.encode().unwrap();
            assert_eq!(Response::decode(&frame), Some(r));
        }
    }

    #[test]
    fn oversized_fields_are_not_encoded() {
        assert!(verify(&"u".repeat(MAX_USER + 1), b"x").encode().is_none());
        assert!(verify("u", &[b'p'; MAX_PASSWORD + 1]).encode().is_none());
        let long = Response::Unavailable("é".repeat(MAX_TEXT))
            .encode()
            .unwrap();
        assert!(long.len() <= MAX_FRAME);
        match Response::decode(&long) {
            Some(Response::Unavailable(t)) => assert!(t.len() <= MAX_TEXT && !t.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_frames_are_rejected() {
        let good = verify("alice", b"secret").encode().unwrap();
        // Every truncation, trailing garbage, unknown tags, empty frames.
        for cut in 0..good.len() {
            assert_eq!(Request::decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Request::decode(&trailing), None);
        let mut tag = good.clone();
        tag[0] = 99;
        assert_eq!(Request::decode(&tag), None);
        // A length over the field's bound.
        let mut e = Encoder::new(REQ_VERIFY);
        e.buf.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Request::decode(&e.finish()), None);
        // A user name that is not UTF-8.
        let mut e = Encoder::new(REQ_VERIFY);
        e.field(&[0xff, 0xfe], MAX_USER).unwrap();
        e.field(b"pw", MAX_PASSWORD).unwrap();
        assert_eq!(Request::decode(&e.finish()), None);
        assert_eq!(Response::decode(&[]), None);
        assert_eq!(Response::decode(&[RESP_REJECTED, 0]), None);
        assert_eq!(Response::decode(&[RESP_ACCEPTED, 0, 1, b'a']), None);
    }

    #[test]
    fn secret_debug_hides_the_password() {
        assert!(!format!("{:?}", verify("a", b"hunter2")).contains("hunter2"));
    }
}
