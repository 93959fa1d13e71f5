//! Test-only library whose handshake claims a future ABI version. The host must refuse it before
//! calling anything else, naming `abi_version` in the error. Written by hand (not with
//! `export_plugin!`) precisely because it lies about the ABI.
#![allow(unsafe_code)] // a hand-written C export; real plugins never need this

use std::ffi::c_void;

use tailor_plugin::abi::{self, ErrorBuf, Handshake, RequestView, Str};

unsafe extern "C" fn attach(_: Str, _: *mut *mut c_void, _: *mut ErrorBuf) -> i32 {
    // Reaching this means the host ignored the version check.
    std::process::abort()
}

unsafe extern "C" fn detach(_: *mut c_void) {}

struct Cell(Handshake);
// SAFETY: the handshake only points at `'static` strings.
unsafe impl Sync for Cell {}

static HANDSHAKE: Cell = Cell(Handshake {
    abi_version: abi::ABI_VERSION + 1,
    handshake_size: size_of::<Handshake>() as u32,
    view_size: size_of::<RequestView>() as u32,
    column_size: size_of::<abi::Column>() as u32,
    kind: abi::KIND_CONSTRAINT,
    n_reasons: 0,
    name: Str {
        ptr: b"abi-mismatch".as_ptr(),
        len: 12,
    },
    version: Str {
        ptr: b"9.9.9".as_ptr(),
        len: 5,
    },
    reasons: std::ptr::null(),
    attach,
    detach,
    constrain: None,
    extract: None,
});

/// The handshake, claiming `ABI_VERSION + 1`.
#[no_mangle]
pub extern "C" fn tailor_plugin_handshake() -> *const Handshake {
    &HANDSHAKE.0
}
