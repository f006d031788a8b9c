//! SKELETON

pub mod line_buffer;
