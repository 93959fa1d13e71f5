//! Tailor's Rust SDK: the [`wire`] types the server and clients share.

pub mod wire;
