//! The privileged helper's wire format: bounded request/response frames, encoded and decoded without I/O.
//!
//! One frame is one `SOCK_SEQPACKET` message, so framing is the kernel's;
//! this module only lays out the fields. Every field is a tag byte or a
//! length-prefixed (u16, big-endian) byte string with its own bound, and a
//! decoder that meets anything unexpected (unknown tag, short field,
//! trailing bytes, a field over its bound) returns `None`: the helper then
//! ends the conversation rather than guess.

use std::path::PathBuf;

use crate::account::Password;
use crate::limits::{
    MAX_AUTH_MESSAGE, MAX_CERT, MAX_CERT_CHAIN, MAX_HELPER_FRAME, MAX_HELPER_PATH, MAX_HELPER_TEXT,
    MAX_HELPER_USER, MAX_PASSWORD,
};
use crate::sasl::KEY_LEN;

const REQ_VERIFY: u8 = 1;
const REQ_OFFERS_SCRAM: u8 = 4;
const REQ_CERTIFICATE: u8 = 5;
const REQ_SCRAM_PARAMS: u8 = 6;
const REQ_SCRAM_PROOF: u8 = 7;
const REQ_STARTUP_SPOOL: u8 = 8;
const RESP_ACCEPTED: u8 = 1;
const RESP_REJECTED: u8 = 2;
const RESP_UNAVAILABLE: u8 = 3;
const RESP_FLAG: u8 = 5;
const RESP_SCRAM_PARAMS: u8 = 6;
const SPOOL_OPEN: u8 = 1;
const SPOOL_MISSING: u8 = 2;
const SPOOL_REFUSED: u8 = 3;
const SPOOL_FAILED: u8 = 4;

/// What the network process asks of the helper.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Check a password; on success also open the account's spool, so a
    /// spool can only be had together with the account's password.
    Verify { user: String, password: Password },
    /// AUTH EXTERNAL: the client's certificate chain (DER, end entity
    /// first) and authorization identity. The helper verifies the chain
    /// against `tls_client_ca` and opens the spool of the account it names.
    Certificate {
        chain: Vec<Vec<u8>>,
        authzid: String,
    },
    /// The salt and iteration count of the account's SCRAM secret (never
    /// the keys).
    ScramParams { user: String },
    /// A SCRAM client proof over the AuthMessage; the helper checks it
    /// against the stored key and, if right, opens the spool and returns
    /// the ServerSignature.
    ScramProof {
        user: String,
        auth_message: Vec<u8>,
        proof: [u8; KEY_LEN],
    },
    /// Whether any account has a SCRAM-SHA-256 secret.
    OffersScram,
    /// Startup recovery: open `user`'s spool, which an update journal
    /// names as `mailbox`. No credential: answered only on the startup
    /// channel, which the daemon closes before its first accept
    /// (`helper.rs`), and only when `mailbox` is the account's own spool.
    /// The path is absolute (a template expansion always is).
    StartupSpool { user: String, mailbox: PathBuf },
}

/// The state of the spool the helper opened for an accepted login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolAnswer {
    /// Opened; its descriptor travels with the frame (SCM_RIGHTS).
    Open,
    /// There is no spool file: an empty maildrop.
    Missing,
    /// The spool exists but must not be served (symlink, wrong owner, ...).
    Refused(String),
    /// Opening it failed with this errno.
    Failed(i32),
}

/// An accepted login as the helper answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub user: String,
    pub mailbox: PathBuf,
    pub spool: SpoolAnswer,
    /// SCRAM's ServerSignature, after a [`Request::ScramProof`] only.
    pub server_signature: Option<[u8; KEY_LEN]>,
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Accepted(Accepted),
    Rejected,
    Unavailable(String),
    /// The public half of a SCRAM secret.
    ScramParams {
        salt: Vec<u8>,
        iterations: u32,
    },
    Flag(bool),
}

/// A frame under construction; refuses to grow past [`MAX_HELPER_FRAME`].
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn new(tag: u8) -> Encoder {
        let mut buf = Vec::with_capacity(256);
        buf.push(tag);
        Encoder { buf }
    }

    /// A frame about one account: the tag, then the account name.
    fn for_account(tag: u8, user: &str) -> Option<Encoder> {
        let mut e = Encoder::new(tag);
        e.field(user.as_bytes(), MAX_HELPER_USER)?;
        Some(e)
    }

    fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }

    fn field(&mut self, bytes: &[u8], max: usize) -> Option<()> {
        if bytes.len() > max || self.buf.len() + 2 + bytes.len() > MAX_HELPER_FRAME {
            return None;
        }
        let len = u16::try_from(bytes.len()).ok()?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        Some(())
    }

    /// Fixed-size bytes (no length prefix).
    fn raw(&mut self, bytes: &[u8]) -> Option<()> {
        if self.buf.len() + bytes.len() > MAX_HELPER_FRAME {
            return None;
        }
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

    fn key(&mut self) -> Option<[u8; KEY_LEN]> {
        let b = self.rest.get(..KEY_LEN)?.try_into().ok()?;
        self.rest = self.rest.get(KEY_LEN..)?;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.rest.get(..4)?;
        let v = u32::from_be_bytes(b.try_into().ok()?);
        self.rest = self.rest.get(4..)?;
        Some(v)
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
                let mut e = Encoder::for_account(REQ_VERIFY, user)?;
                e.field(password.as_bytes(), MAX_PASSWORD)?;
                Some(e.finish())
            }
            Request::Certificate { chain, authzid } => {
                if chain.is_empty() || chain.len() > MAX_CERT_CHAIN {
                    return None;
                }
                let mut e = Encoder::new(REQ_CERTIFICATE);
                e.field(authzid.as_bytes(), MAX_HELPER_USER)?;
                e.byte(u8::try_from(chain.len()).ok()?);
                for cert in chain {
                    e.field(cert, MAX_CERT)?;
                }
                Some(e.finish())
            }
            Request::ScramParams { user } => {
                Some(Encoder::for_account(REQ_SCRAM_PARAMS, user)?.finish())
            }
            Request::ScramProof {
                user,
                auth_message,
                proof,
            } => {
                let mut e = Encoder::for_account(REQ_SCRAM_PROOF, user)?;
                e.field(auth_message, MAX_AUTH_MESSAGE)?;
                e.raw(proof)?;
                Some(e.finish())
            }
            Request::OffersScram => Some(Encoder::new(REQ_OFFERS_SCRAM).finish()),
            Request::StartupSpool { user, mailbox } => {
                if !mailbox.is_absolute() {
                    return None;
                }
                let mut e = Encoder::for_account(REQ_STARTUP_SPOOL, user)?;
                e.field(mailbox.to_str()?.as_bytes(), MAX_HELPER_PATH)?;
                Some(e.finish())
            }
        }
    }

    pub fn decode(frame: &[u8]) -> Option<Request> {
        let mut d = Decoder { rest: frame };
        match d.byte()? {
            REQ_VERIFY => {
                let user = d.text(MAX_HELPER_USER)?;
                let password = Password::new(d.field(MAX_PASSWORD)?.to_vec());
                d.end(Request::Verify { user, password })
            }
            REQ_CERTIFICATE => {
                let authzid = d.text(MAX_HELPER_USER)?;
                let count = usize::from(d.byte()?);
                if count == 0 || count > MAX_CERT_CHAIN {
                    return None;
                }
                let mut chain = Vec::with_capacity(count);
                for _ in 0..count {
                    chain.push(d.field(MAX_CERT)?.to_vec());
                }
                d.end(Request::Certificate { chain, authzid })
            }
            REQ_SCRAM_PARAMS => {
                let user = d.text(MAX_HELPER_USER)?;
                d.end(Request::ScramParams { user })
            }
            REQ_SCRAM_PROOF => {
                let user = d.text(MAX_HELPER_USER)?;
                let auth_message = d.field(MAX_AUTH_MESSAGE)?.to_vec();
                let proof = d.key()?;
                d.end(Request::ScramProof {
                    user,
                    auth_message,
                    proof,
                })
            }
            REQ_OFFERS_SCRAM => d.end(Request::OffersScram),
            REQ_STARTUP_SPOOL => {
                let user = d.text(MAX_HELPER_USER)?;
                let mailbox = PathBuf::from(d.text(MAX_HELPER_PATH)?);
                if !mailbox.is_absolute() {
                    return None;
                }
                d.end(Request::StartupSpool { user, mailbox })
            }
            _ => None,
        }
    }
}

/// Cuts explanatory text to its bound on a character boundary.
fn bounded(text: &str) -> &str {
    if text.len() <= MAX_HELPER_TEXT {
        return text;
    }
    let mut end = MAX_HELPER_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

impl Response {
    /// `None` only when the user name or path is over its bound.
    pub fn encode(&self) -> Option<Vec<u8>> {
        Some(match self {
            Response::Accepted(accepted) => {
                let mut e = Encoder::for_account(RESP_ACCEPTED, &accepted.user)?;
                e.field(accepted.mailbox.to_str()?.as_bytes(), MAX_HELPER_PATH)?;
                match &accepted.spool {
                    SpoolAnswer::Open => e.byte(SPOOL_OPEN),
                    SpoolAnswer::Missing => e.byte(SPOOL_MISSING),
                    SpoolAnswer::Refused(why) => {
                        e.byte(SPOOL_REFUSED);
                        e.field(bounded(why).as_bytes(), MAX_HELPER_TEXT)?;
                    }
                    SpoolAnswer::Failed(errno) => {
                        e.byte(SPOOL_FAILED);
                        e.buf.extend_from_slice(&errno.to_be_bytes());
                    }
                }
                match &accepted.server_signature {
                    None => e.byte(0),
                    Some(sig) => {
                        e.byte(1);
                        e.raw(sig)?;
                    }
                }
                e.finish()
            }
            Response::Rejected => Encoder::new(RESP_REJECTED).finish(),
            Response::Unavailable(why) => {
                let mut e = Encoder::new(RESP_UNAVAILABLE);
                e.field(bounded(why).as_bytes(), MAX_HELPER_TEXT)?;
                e.finish()
            }
            Response::ScramParams { salt, iterations } => {
                let mut e = Encoder::new(RESP_SCRAM_PARAMS);
                e.field(salt, MAX_HELPER_TEXT)?;
                e.raw(&iterations.to_be_bytes())?;
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
                let user = d.text(MAX_HELPER_USER)?;
                let mailbox = PathBuf::from(d.text(MAX_HELPER_PATH)?);
                let spool = match d.byte()? {
                    SPOOL_OPEN => SpoolAnswer::Open,
                    SPOOL_MISSING => SpoolAnswer::Missing,
                    SPOOL_REFUSED => SpoolAnswer::Refused(d.text(MAX_HELPER_TEXT)?),
                    SPOOL_FAILED => SpoolAnswer::Failed(d.i32()?),
                    _ => return None,
                };
                let server_signature = match d.byte()? {
                    0 => None,
                    1 => Some(d.key()?),
                    _ => return None,
                };
                d.end(Response::Accepted(Accepted {
                    user,
                    mailbox,
                    spool,
                    server_signature,
                }))
            }
            RESP_REJECTED => d.end(Response::Rejected),
            RESP_UNAVAILABLE => {
                let why = d.text(MAX_HELPER_TEXT)?;
                d.end(Response::Unavailable(why))
            }
            RESP_SCRAM_PARAMS => {
                let salt = d.field(MAX_HELPER_TEXT)?.to_vec();
                let iterations = d.u32()?;
                d.end(Response::ScramParams { salt, iterations })
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
            password: Password::new(pw.to_vec()),
        }
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            verify("alice", b"pa:ss\0word"),
            Request::Certificate {
                chain: vec![vec![0x30; MAX_CERT], vec![1, 2, 3]],
                authzid: String::new(),
            },
            Request::Certificate {
                chain: vec![vec![0x30; MAX_CERT]; MAX_CERT_CHAIN],
                authzid: "bob".into(),
            },
            Request::ScramParams {
                user: "carol".into(),
            },
            Request::ScramProof {
                user: "carol".into(),
                auth_message: b"n=carol,r=a,r=ab,s=c2FsdA==,i=4096,c=biws,r=ab".to_vec(),
                proof: [7; KEY_LEN],
            },
            Request::OffersScram,
            Request::StartupSpool {
                user: "dave".into(),
                mailbox: "/home/dave/mbox".into(),
            },
            Request::StartupSpool {
                user: "u".repeat(MAX_HELPER_USER),
                mailbox: PathBuf::from(format!("/{}", "p".repeat(MAX_HELPER_PATH - 1))),
            },
        ] {
            let frame = r.encode().unwrap();
            assert!(frame.len() <= MAX_HELPER_FRAME);
            assert_eq!(Request::decode(&frame), Some(r));
        }
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            Response::Rejected,
            Response::Flag(true),
            Response::Flag(false),
            Response::ScramParams {
                salt: b"salt".to_vec(),
                iterations: 4096,
            },
            Response::Unavailable("shadow unreadable".into()),
            Response::Accepted(Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: SpoolAnswer::Open,
                server_signature: None,
            }),
            Response::Accepted(Accepted {
                user: "carol".into(),
                mailbox: "/var/mail/carol".into(),
                spool: SpoolAnswer::Open,
                server_signature: Some([9; KEY_LEN]),
            }),
            Response::Accepted(Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: SpoolAnswer::Missing,
                server_signature: None,
            }),
            Response::Accepted(Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: SpoolAnswer::Refused("it is a symbolic link".into()),
                server_signature: None,
            }),
            Response::Accepted(Accepted {
                user: "bob".into(),
                mailbox: "/var/mail/bob".into(),
                spool: SpoolAnswer::Failed(13),
                server_signature: None,
            }),
        ] {
            let frame = r.encode().unwrap();
            assert_eq!(Response::decode(&frame), Some(r));
        }
    }

    #[test]
    fn certificate_chains_are_bounded() {
        let cert = |n| Request::Certificate {
            chain: vec![vec![0x30; 10]; n],
            authzid: String::new(),
        };
        assert!(cert(0).encode().is_none(), "no certificate, no request");
        assert!(cert(MAX_CERT_CHAIN + 1).encode().is_none());
        let big = Request::Certificate {
            chain: vec![vec![0x30; MAX_CERT + 1]],
            authzid: String::new(),
        };
        assert!(big.encode().is_none());
        // A count byte that disagrees with the fields, or is out of range.
        let mut frame = cert(2).encode().unwrap();
        let count_at = 1 + 2; // tag, empty authzid
        frame[count_at] = 3;
        assert_eq!(Request::decode(&frame), None);
        frame[count_at] = 1;
        assert_eq!(Request::decode(&frame), None);
        frame[count_at] = 0;
        assert_eq!(Request::decode(&frame), None);
        // A truncated proof.
        let mut proof = Request::ScramProof {
            user: "c".into(),
            auth_message: b"m".to_vec(),
            proof: [1; KEY_LEN],
        }
        .encode()
        .unwrap();
        proof.pop();
        assert_eq!(Request::decode(&proof), None);
    }

    #[test]
    fn oversized_fields_are_not_encoded() {
        assert!(verify(&"u".repeat(MAX_HELPER_USER + 1), b"x")
            .encode()
            .is_none());
        assert!(verify("u", &[b'p'; MAX_PASSWORD + 1]).encode().is_none());
        let long = Response::Unavailable("é".repeat(MAX_HELPER_TEXT))
            .encode()
            .unwrap();
        assert!(long.len() <= MAX_HELPER_FRAME);
        match Response::decode(&long) {
            Some(Response::Unavailable(t)) => assert!(t.len() <= MAX_HELPER_TEXT && !t.is_empty()),
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
        e.field(&[0xff, 0xfe], MAX_HELPER_USER).unwrap();
        e.field(b"pw", MAX_PASSWORD).unwrap();
        assert_eq!(Request::decode(&e.finish()), None);
        assert_eq!(Response::decode(&[]), None);
        assert_eq!(Response::decode(&[RESP_REJECTED, 0]), None);
        assert_eq!(Response::decode(&[RESP_ACCEPTED, 0, 1, b'a']), None);
    }

    #[test]
    fn a_startup_spool_request_names_an_absolute_path() {
        let request = |mailbox: &str| Request::StartupSpool {
            user: "dave".into(),
            mailbox: mailbox.into(),
        };
        assert!(request("mbox").encode().is_none());
        assert!(request("").encode().is_none());
        // Decoding refuses what encoding would not make.
        let mut e = Encoder::new(REQ_STARTUP_SPOOL);
        e.field(b"dave", MAX_HELPER_USER).unwrap();
        e.field(b"home/dave/mbox", MAX_HELPER_PATH).unwrap();
        assert_eq!(Request::decode(&e.finish()), None);
        let good = request("/home/dave/mbox").encode().unwrap();
        for cut in 0..good.len() {
            assert_eq!(Request::decode(&good[..cut]), None, "cut at {cut}");
        }
        let long = PathBuf::from(format!("/{}", "p".repeat(MAX_HELPER_PATH)));
        let too_long = Request::StartupSpool {
            user: "dave".into(),
            mailbox: long,
        };
        assert!(too_long.encode().is_none());
    }

    #[test]
    fn debug_hides_the_password() {
        assert!(!format!("{:?}", verify("a", b"hunter2")).contains("hunter2"));
    }
}
