//! Authentication as the network process sees it: the privileged helper's client, where each session gets its `Authenticator`, the failed-login throttle, and `--hash-password`.

pub mod access;
pub mod hash_cmd;
mod helper_channel;
pub mod helper_client;
pub mod throttle;

pub use hash_cmd::hash_password_command;
