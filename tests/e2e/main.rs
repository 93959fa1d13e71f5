//! End-to-end tests: the real `tailor` binary on port 0 with a temporary sled directory.
//! One test binary for the workspace so it links once.

mod audiences;
mod autopilot;
mod browser;
mod cluster;
mod cluster_share;
mod cluster_snapshot;
mod control_room;
mod defaults;
mod event_ids;
mod foundation;
mod harness;
mod if_match;
mod killloop;
mod memory;
mod merchandising;
mod ope;
mod openapi;
mod optimize;
mod personalizer;
mod plugins;
mod retention;
mod returns;
mod rewards;
mod schemathesis;
mod sdk;
mod security;
mod send_time;
mod simulate;
mod transport;
mod validate;
mod variety;
