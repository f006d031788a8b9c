//! The POP3 protocol core: parser, replies, capabilities and the session
//! state machine, all without I/O of their own.

pub mod capa;
pub mod command;
pub mod reply;
pub mod session;
mod transaction;

pub use session::{Backend, Control, Session, SessionSettings, State};

#[cfg(test)]
mod tests;
