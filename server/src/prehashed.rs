//! Hash maps whose keys are already keyed hashes (the report aggregates' event keys, the close
//! files' event-id hashes): used as they are, not hashed again.

use std::hash::{BuildHasherDefault, Hasher};

/// Passes a `u64` key through unchanged.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The `BuildHasher` of maps keyed by a hash.
pub(crate) type PreHashed = BuildHasherDefault<PassThrough>;
