//! Helpers to start the real binaries.
