//! SKELETON

pub mod cert_identity;
pub mod line_buffer;
pub mod tls;
