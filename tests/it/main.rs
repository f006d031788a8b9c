//! Integration tests (temporary entry point until the tests package merges its own).

mod daemon;
