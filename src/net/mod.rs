//! Network I/O: client connections, bounded line framing, TLS and the blocking session driver.

pub mod client_cert;
pub mod conn;
pub mod driver;
pub mod line_buffer;
pub mod live;
pub mod output;
pub mod proxy;
pub mod proxy_read;
pub mod socket;
pub mod stdio;
#[cfg(test)]
pub(crate) mod test_pki;
pub mod tls;
pub mod tls_conn;

pub use conn::Conn;
