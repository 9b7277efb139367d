//! placeholder, replaced by the log module
