//! placeholder, replaced by the domain module
