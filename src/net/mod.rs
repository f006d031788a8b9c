//! Network I/O: client connections, bounded line framing and the blocking session driver.

pub mod conn;
pub mod driver;
pub mod line_buffer;
pub mod output;
pub mod stdio;

pub use conn::Conn;
