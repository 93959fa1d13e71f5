//! The C ABI between the Tailor host and a plugin library.
//!
//! Everything here is `#[repr(C)]` and made of integers, floats, pointer + length pairs, nullable
//! function pointers and opaque handles. Nothing Rust-specific (`String`, `Vec`, `Result`, trait
//! objects, enums with data) ever crosses the boundary, so a plugin built by a different compiler
//! version than the server still works as long as [`ABI_VERSION`] matches.
//!
//! # Protocol
//!
//! 1. The host resolves exactly one symbol, [`HANDSHAKE_SYMBOL`], and calls it. It returns a
//!    pointer to a [`Handshake`] in the plugin's static memory.
//! 2. The host reads the first two fields (`abi_version`, `handshake_size`), which keep their
//!    position in every ABI version, and refuses the library if either differs from its own. Only
//!    then does it read the rest, check the other struct sizes and the kind, and keep the
//!    function pointers. Nothing else in the library is called before this check passes.
//! 3. `attach` turns a JSON config into an opaque instance (or an error message); `detach` frees
//!    it. The plugin allocated the instance, so the plugin frees it.
//! 4. `constrain` / `extract` read a [`RequestView`] the host owns and write into buffers the host
//!    owns ([`ConstraintOut`], [`ErrorBuf`]) or hand values to a host callback ([`FeatureSink`]).
//!    Whoever allocates frees: no memory changes owner across the boundary.
//!
//! Every function returns a status: [`STATUS_OK`], [`STATUS_ERROR`] (message in the error buffer)
//! or [`STATUS_PANIC`] (the plugin panicked; the export shim caught it and wrote the panic message).
//!
//! # Versioning promise
//!
//! Any change to a type in this module, to the meaning of a field, or to the protocol above bumps
//! [`ABI_VERSION`]. The host loads only libraries whose handshake reports exactly its own version
//! and struct sizes; everything else is refused with a message naming the field that differed.

use std::ffi::c_void;

/// The ABI version this crate implements. Bumped on every incompatible change.
pub const ABI_VERSION: u32 = 1;

/// Name of the one symbol the host resolves (NUL-terminated for `dlsym`).
pub const HANDSHAKE_SYMBOL: &[u8] = b"tailor_plugin_handshake\0";

/// Plugin kind: marks candidates eligible or not.
pub const KIND_CONSTRAINT: u32 = 1;
/// Plugin kind: adds context and/or per-candidate features.
pub const KIND_FEATURE_EXTRACTOR: u32 = 2;

/// The call succeeded.
pub const STATUS_OK: i32 = 0;
/// The plugin reported an error; the message is in the [`ErrorBuf`].
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked; the shim caught it and put the panic message in the [`ErrorBuf`].
pub const STATUS_PANIC: i32 = 2;

/// Column kind: one `f64` per row (booleans become 0 / 1).
pub const COLUMN_NUMBER: u32 = 1;
/// Column kind: one UTF-8 string per row.
pub const COLUMN_STRING: u32 = 2;
/// Column kind: a set (list) of UTF-8 strings per row.
pub const COLUMN_STRING_SET: u32 = 3;

/// `row` value passed to [`FeatureSink::emit`] for a context (request-level) feature.
pub const CONTEXT_ROW: u32 = u32::MAX;

/// Reason code meaning "no reason" (the candidate stayed eligible). Codes `1..=n_reasons` index
/// the handshake's reason table (`reasons[code - 1]`).
pub const REASON_NONE: u32 = 0;

/// A borrowed UTF-8 string: pointer + length, not NUL-terminated. A null `ptr` means "absent".
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    /// First byte, or null when the value is absent.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Str {
    /// The absent string.
    pub const NULL: Str = Str {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `s` (the caller keeps `s` alive while the `Str` is in use).
    pub fn new(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// True when the value is absent.
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }
}

/// What the handshake symbol returns. The first two fields never move.
#[repr(C)]
#[derive(Debug)]
pub struct Handshake {
    /// [`ABI_VERSION`] the plugin was built against.
    pub abi_version: u32,
    /// `size_of::<Handshake>()` as the plugin sees it.
    pub handshake_size: u32,
    /// `size_of::<RequestView>()` as the plugin sees it.
    pub view_size: u32,
    /// `size_of::<Column>()` as the plugin sees it.
    pub column_size: u32,
    /// [`KIND_CONSTRAINT`] or [`KIND_FEATURE_EXTRACTOR`].
    pub kind: u32,
    /// Number of entries in `reasons`.
    pub n_reasons: u32,
    /// Plugin name (the cargo package name unless overridden). Static.
    pub name: Str,
    /// Plugin version (semver text). Static.
    pub version: Str,
    /// Reason-code names, `reasons[code - 1]`. Static.
    pub reasons: *const Str,
    /// Validates a JSON config and creates an instance.
    pub attach: AttachFn,
    /// Frees an instance created by `attach`.
    pub detach: DetachFn,
    /// Present for constraints.
    pub constrain: Option<ConstrainFn>,
    /// Present for feature extractors.
    pub extract: Option<ExtractFn>,
}

/// `attach(config_json, &mut instance, &mut err) -> status`.
pub type AttachFn =
    unsafe extern "C" fn(config: Str, instance: *mut *mut c_void, err: *mut ErrorBuf) -> i32;
/// `detach(instance)`: frees the instance. Never fails (a panic in `Drop` is swallowed).
pub type DetachFn = unsafe extern "C" fn(instance: *mut c_void);
/// `constrain(instance, view, out, err) -> status`.
pub type ConstrainFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RequestView,
    out: *const ConstraintOut,
    err: *mut ErrorBuf,
) -> i32;
/// `extract(instance, view, sink, err) -> status`.
pub type ExtractFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RequestView,
    sink: *const FeatureSink,
    err: *mut ErrorBuf,
) -> i32;
/// The type of the handshake symbol.
pub type HandshakeFn = unsafe extern "C" fn() -> *const Handshake;

/// A host-owned buffer for an error message. The plugin writes at most `cap` bytes of UTF-8
/// (truncated on a character boundary) and sets `len`.
#[repr(C)]
#[derive(Debug)]
pub struct ErrorBuf {
    /// Host-owned bytes.
    pub ptr: *mut u8,
    /// Capacity of `ptr`.
    pub cap: usize,
    /// Bytes written by the plugin.
    pub len: usize,
}

/// Host-owned output arrays of a constraint, each `len` long (one entry per candidate). The host
/// pre-fills them with "eligible, multiplier 1.0, no reason".
#[repr(C)]
#[derive(Debug)]
pub struct ConstraintOut {
    /// Number of candidates.
    pub len: usize,
    /// 1 = eligible, 0 = excluded.
    pub eligible: *mut u8,
    /// Score multiplier (demotion / promotion) for eligible candidates.
    pub multiplier: *mut f64,
    /// Reason code ([`REASON_NONE`] or an index into the handshake's reason table, 1-based).
    pub reason: *mut u32,
}

/// A host callback that receives extracted features. The plugin calls `emit` once per feature;
/// `name` is only borrowed for the duration of the call (the host copies it).
#[repr(C)]
#[derive(Debug)]
pub struct FeatureSink {
    /// Opaque host state.
    pub ctx: *mut c_void,
    /// `row` is a candidate index or [`CONTEXT_ROW`].
    pub emit: unsafe extern "C" fn(ctx: *mut c_void, row: u32, name: Str, value: f64),
}

/// A table of named columns, `rows` rows each, sorted by name (byte order) so a plugin can
/// binary-search the name table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Rows in every column.
    pub rows: u32,
    /// Number of columns.
    pub n_columns: u32,
    /// `n_columns` columns.
    pub columns: *const Column,
}

/// One column. Which pointers are set depends on `kind`; the others are null.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name (flattened JSON path, `.`-separated for nested objects).
    pub name: Str,
    /// [`COLUMN_NUMBER`], [`COLUMN_STRING`] or [`COLUMN_STRING_SET`].
    pub kind: u32,
    /// `rows` bytes: 1 when the row has a value of this column's kind.
    pub present: *const u8,
    /// `rows` numbers (NaN where absent) for [`COLUMN_NUMBER`].
    pub numbers: *const f64,
    /// `rows` strings (null where absent) for [`COLUMN_STRING`].
    pub strings: *const Str,
    /// `rows + 1` offsets into `set_values` for [`COLUMN_STRING_SET`]; row `r` is
    /// `set_values[set_offsets[r]..set_offsets[r + 1]]`.
    pub set_offsets: *const u32,
    /// The set members of all rows, concatenated.
    pub set_values: *const Str,
}

/// The read-only request a plugin sees: candidate ids, candidate attribute columns and the
/// request context as a one-row table.
#[repr(C)]
#[derive(Debug)]
pub struct RequestView {
    /// Number of candidates.
    pub n_candidates: u32,
    /// `n_candidates` ids.
    pub candidate_ids: *const Str,
    /// Candidate attributes, `n_candidates` rows.
    pub candidates: Table,
    /// The request context (shopper attributes, local hour, ...), one row.
    pub context: Table,
}
