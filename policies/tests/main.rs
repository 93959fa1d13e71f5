//! Integration tests for `tailor-policies`, one binary (see `suite/`).

mod suite;
