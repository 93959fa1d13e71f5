//! End-to-end tests: the real `tailor` binary on port 0 with a temporary sled directory.
//! One test binary for the workspace so it links once.

mod browser;
mod control_room;
mod foundation;
mod harness;
mod killloop;
mod ope;
mod openapi;
mod personalizer;
mod plugins;
mod schemathesis;
mod sdk;
mod send_time;
mod simulate;
