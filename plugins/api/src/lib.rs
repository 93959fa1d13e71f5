//! Tailor's plugin ABI and the safe authoring crate.
//!
//! A Tailor plugin is a `cdylib` that encodes one retailer rule. It is one of two kinds:
//!
//! - a [`Constraint`] looks at the request [`Context`] and each candidate's attribute
//!   [`Columns`] and marks candidates ineligible (with a reason code) or scales their score
//!   ([`Verdicts`]); the server runs constraints before the policy samples, so logged
//!   propensities are over the eligible set;
//! - a [`FeatureExtractor`] adds context features and/or per-candidate features ([`Features`]).
//!
//! Authors implement one of the two traits in safe Rust and call [`export_plugin!`] once. The
//! macro emits the only exported symbol (the versioned handshake of [`abi`]) and `extern "C"`
//! shims that catch every panic and free what the plugin allocated. Plugin code never writes
//! `unsafe`.
//!
//! ```ignore
//! use tailor_plugin::{export_plugin, Constraint, Request, Verdicts};
//!
//! struct InventoryFloor { min: f64 }
//!
//! impl Constraint for InventoryFloor {
//!     const REASONS: &'static [&'static str] = &["low_inventory"];
//!     fn from_config(config: &serde_json::Value) -> Result<Self, String> {
//!         let min = config["min"].as_f64().ok_or("`min` must be a number")?;
//!         Ok(InventoryFloor { min })
//!     }
//!     fn evaluate(&self, req: &Request<'_>, out: &mut Verdicts<'_>) -> Result<(), String> {
//!         let Some(stock) = req.candidates().numbers("inventory") else { return Ok(()) };
//!         for i in 0..req.len() {
//!             if stock.get(i).is_some_and(|n| n < self.min) {
//!                 out.exclude(i, 1);
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(constraint: InventoryFloor);
//! ```
//!
//! The host side (`tailor-server`) builds the view with [`RequestBuilder`]; plugin tests use the
//! same builder together with [`testing`] to run a rule in-process.

pub mod abi;
mod owned;
pub mod testing;
mod view;

pub use owned::{OwnedRequest, RequestBuilder};
pub use serde_json;
pub use view::{Columns, Context, Numbers, Request, Sets, StrList, Strings};

/// A rule that marks candidates eligible or not.
///
/// One instance is created per campaign attachment from that campaign's config and then called
/// concurrently from many request threads (hence `Send + Sync`; `evaluate` takes `&self`).
pub trait Constraint: Sized + Send + Sync + 'static {
    /// Names of the reason codes this plugin reports: code `1` is `REASONS[0]`, and so on. The
    /// server records the name with every removed candidate.
    const REASONS: &'static [&'static str] = &[];

    /// Validates `config` (the campaign's JSON config for this plugin). The error text is shown to
    /// the admin who attached the plugin, so name the field and what is wrong with it.
    fn from_config(config: &serde_json::Value) -> Result<Self, String>;

    /// Marks candidates. Every candidate starts eligible with multiplier 1.0.
    fn evaluate(&self, request: &Request<'_>, verdicts: &mut Verdicts<'_>) -> Result<(), String>;
}

/// A plugin that adds features to a request.
pub trait FeatureExtractor: Sized + Send + Sync + 'static {
    /// Validates `config`; see [`Constraint::from_config`].
    fn from_config(config: &serde_json::Value) -> Result<Self, String>;

    /// Emits context and/or per-candidate features.
    fn extract(&self, request: &Request<'_>, features: &mut Features<'_>) -> Result<(), String>;
}

/// A constraint's output: one verdict per candidate.
#[derive(Debug)]
pub struct Verdicts<'a> {
    eligible: &'a mut [u8],
    multiplier: &'a mut [f64],
    reason: &'a mut [u32],
}

impl Verdicts<'_> {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.eligible.len()
    }

    /// True when there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.eligible.is_empty()
    }

    /// Excludes candidate `i` with a reason code (`1..=REASONS.len()`).
    pub fn exclude(&mut self, i: usize, reason: u32) {
        self.eligible[i] = 0;
        self.reason[i] = reason;
    }

    /// Multiplies candidate `i`'s score by `factor` (finite, ≥ 0; the host ignores anything else).
    pub fn scale(&mut self, i: usize, factor: f64) {
        self.multiplier[i] *= factor;
    }

    /// Whether candidate `i` is still eligible.
    pub fn is_eligible(&self, i: usize) -> bool {
        self.eligible[i] != 0
    }
}

/// A feature extractor's output.
pub struct Features<'a> {
    rows: usize,
    emit: &'a mut dyn FnMut(u32, &str, f64),
}

impl std::fmt::Debug for Features<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("rows", &self.rows)
            .finish()
    }
}

impl Features<'_> {
    /// Adds a request-level feature.
    pub fn context(&mut self, name: &str, value: f64) {
        (self.emit)(abi::CONTEXT_ROW, name, value);
    }

    /// Adds a feature to candidate `i`.
    ///
    /// # Panics
    /// If `i` is not a candidate index (the shim turns the panic into an error status).
    pub fn candidate(&mut self, i: usize, name: &str, value: f64) {
        assert!(
            i < self.rows,
            "candidate index {i} out of range ({} candidates)",
            self.rows
        );
        (self.emit)(i as u32, name, value);
    }
}

/// Exports a type as a Tailor plugin: `export_plugin!(constraint: MyRule);` or
/// `export_plugin!(feature_extractor: MyFeatures);`.
///
/// The plugin's name and version default to the cargo package's; override them with
/// `export_plugin!(constraint: MyRule, name: "my-rule", version: "2.1.0");`. Call it once per
/// library.
#[macro_export]
macro_rules! export_plugin {
    (constraint: $ty:ty) => {
        $crate::export_plugin!(constraint: $ty, name: env!("CARGO_PKG_NAME"), version: env!("CARGO_PKG_VERSION"));
    };
    (feature_extractor: $ty:ty) => {
        $crate::export_plugin!(feature_extractor: $ty, name: env!("CARGO_PKG_NAME"), version: env!("CARGO_PKG_VERSION"));
    };
    (constraint: $ty:ty, name: $name:expr, version: $version:expr) => {
        $crate::__export_handshake!($crate::__private::HandshakeParts {
            kind: $crate::abi::KIND_CONSTRAINT,
            name: $name,
            version: $version,
            reasons: <$ty as $crate::Constraint>::REASONS,
            attach: $crate::__private::attach_constraint::<$ty>,
            detach: $crate::__private::detach::<$ty>,
            constrain: ::core::option::Option::Some($crate::__private::constrain::<$ty>),
            extract: ::core::option::Option::None,
        });
    };
    (feature_extractor: $ty:ty, name: $name:expr, version: $version:expr) => {
        $crate::__export_handshake!($crate::__private::HandshakeParts {
            kind: $crate::abi::KIND_FEATURE_EXTRACTOR,
            name: $name,
            version: $version,
            reasons: &[],
            attach: $crate::__private::attach_extractor::<$ty>,
            detach: $crate::__private::detach::<$ty>,
            constrain: ::core::option::Option::None,
            extract: ::core::option::Option::Some($crate::__private::extract::<$ty>),
        });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_handshake {
    ($parts:expr) => {
        /// The versioned handshake: the only symbol a Tailor host resolves.
        #[allow(unsafe_code)] // `no_mangle` is how a C symbol is exported; the body is safe
        #[no_mangle]
        pub extern "C" fn tailor_plugin_handshake() -> *const $crate::abi::Handshake {
            static CELL: $crate::__private::HandshakeCell = $crate::__private::HandshakeCell::new();
            CELL.get(|| $parts)
        }
    };
}

#[doc(hidden)]
pub mod __private {
    //! The `extern "C"` shims behind [`export_plugin!`]. Not a public API.
    #![allow(unsafe_code)]

    use std::any::Any;
    use std::ffi::c_void;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::OnceLock;

    use crate::abi::{self, ConstraintOut, ErrorBuf, FeatureSink, Handshake, RequestView, Str};
    use crate::{Constraint, FeatureExtractor, Features, Request, Verdicts};

    /// What the macro knows about a plugin.
    pub struct HandshakeParts {
        pub kind: u32,
        pub name: &'static str,
        pub version: &'static str,
        pub reasons: &'static [&'static str],
        pub attach: abi::AttachFn,
        pub detach: abi::DetachFn,
        pub constrain: Option<abi::ConstrainFn>,
        pub extract: Option<abi::ExtractFn>,
    }

    struct Built {
        handshake: Handshake,
        _reasons: Vec<Str>,
    }

    /// Lazily built, never freed handshake (a library is never unloaded).
    pub struct HandshakeCell(OnceLock<Built>);

    // SAFETY: `Built` holds pointers only to `'static` strings and to its own `_reasons` buffer,
    // which is never mutated after construction.
    unsafe impl Sync for HandshakeCell {}
    unsafe impl Send for HandshakeCell {}

    impl Default for HandshakeCell {
        fn default() -> Self {
            Self::new()
        }
    }

    impl HandshakeCell {
        pub const fn new() -> Self {
            HandshakeCell(OnceLock::new())
        }

        /// The handshake, or null if building it panicked.
        pub fn get(&self, parts: impl FnOnce() -> HandshakeParts) -> *const Handshake {
            let built = catch_unwind(AssertUnwindSafe(|| {
                self.0.get_or_init(|| {
                    let p = parts();
                    let reasons: Vec<Str> = p.reasons.iter().map(|r| Str::new(r)).collect();
                    Built {
                        handshake: Handshake {
                            abi_version: abi::ABI_VERSION,
                            handshake_size: size_of::<Handshake>() as u32,
                            view_size: size_of::<RequestView>() as u32,
                            column_size: size_of::<abi::Column>() as u32,
                            kind: p.kind,
                            n_reasons: reasons.len() as u32,
                            name: Str::new(p.name),
                            version: Str::new(p.version),
                            reasons: reasons.as_ptr(),
                            attach: p.attach,
                            detach: p.detach,
                            constrain: p.constrain,
                            extract: p.extract,
                        },
                        _reasons: reasons,
                    }
                })
            }));
            match built {
                Ok(b) => &b.handshake,
                Err(_) => std::ptr::null(),
            }
        }
    }

    pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            format!("plugin panicked: {s}")
        } else if let Some(s) = payload.downcast_ref::<String>() {
            format!("plugin panicked: {s}")
        } else {
            "plugin panicked".to_owned()
        }
    }

    fn write_error(err: *mut ErrorBuf, msg: &str) {
        // SAFETY: a non-null `err` points at a host-owned buffer of `cap` writable bytes.
        let Some(err) = (unsafe { err.as_mut() }) else {
            return;
        };
        if err.ptr.is_null() {
            return;
        }
        let mut n = msg.len().min(err.cap);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: see above; `n <= cap`.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), err.ptr, n) };
        err.len = n;
    }

    /// Runs `f`, turning an error into [`abi::STATUS_ERROR`] and a panic into
    /// [`abi::STATUS_PANIC`], with the message in `err`.
    fn guard(err: *mut ErrorBuf, f: impl FnOnce() -> Result<(), String>) -> i32 {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => abi::STATUS_OK,
            Ok(Err(msg)) => {
                write_error(err, &msg);
                abi::STATUS_ERROR
            }
            Err(payload) => {
                write_error(err, &panic_message(&*payload));
                abi::STATUS_PANIC
            }
        }
    }

    fn attach_with<T>(
        config: Str,
        out: *mut *mut c_void,
        err: *mut ErrorBuf,
        from_config: fn(&serde_json::Value) -> Result<T, String>,
    ) -> i32 {
        guard(err, || {
            if out.is_null() {
                return Err("host passed a null instance pointer".to_owned());
            }
            let text: &[u8] = if config.ptr.is_null() {
                b"null"
            } else {
                // SAFETY: the host passes `len` readable bytes.
                unsafe { std::slice::from_raw_parts(config.ptr, config.len) }
            };
            let value: serde_json::Value = serde_json::from_slice(text)
                .map_err(|e| format!("config is not valid JSON: {e}"))?;
            let plugin = from_config(&value)?;
            // SAFETY: checked non-null above; the host owns the slot.
            unsafe { *out = Box::into_raw(Box::new(plugin)).cast() };
            Ok(())
        })
    }

    /// # Safety
    /// Called by the host per the ABI.
    pub unsafe extern "C" fn attach_constraint<T: Constraint>(
        config: Str,
        out: *mut *mut c_void,
        err: *mut ErrorBuf,
    ) -> i32 {
        attach_with(config, out, err, T::from_config)
    }

    /// # Safety
    /// Called by the host per the ABI.
    pub unsafe extern "C" fn attach_extractor<T: FeatureExtractor>(
        config: Str,
        out: *mut *mut c_void,
        err: *mut ErrorBuf,
    ) -> i32 {
        attach_with(config, out, err, T::from_config)
    }

    /// # Safety
    /// `instance` came from this library's `attach` for `T` and is not used afterwards.
    pub unsafe extern "C" fn detach<T>(instance: *mut c_void) {
        if instance.is_null() {
            return;
        }
        // A panicking Drop must not unwind into the host; the instance is gone either way.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: per the contract above, this is the Box created in `attach_with`.
            drop(unsafe { Box::from_raw(instance.cast::<T>()) });
        }));
    }

    /// # Safety
    /// Called by the host per the ABI with an instance from `attach_constraint::<T>`.
    pub unsafe extern "C" fn constrain<T: Constraint>(
        instance: *const c_void,
        view: *const RequestView,
        out: *const ConstraintOut,
        err: *mut ErrorBuf,
    ) -> i32 {
        guard(err, || {
            if instance.is_null() || view.is_null() || out.is_null() {
                return Err("host passed a null pointer".to_owned());
            }
            // SAFETY: non-null, and valid per the ABI for the duration of this call.
            let (plugin, view, out) = unsafe { (&*instance.cast::<T>(), &*view, &*out) };
            // SAFETY: the host built `view` per the ABI.
            let request = unsafe { Request::from_raw(view) };
            if out.len != request.len() {
                return Err(format!(
                    "host passed {} output slots for {} candidates",
                    out.len,
                    request.len()
                ));
            }
            let n = out.len;
            // SAFETY: the host owns three arrays of `n` elements, exclusively lent for this call.
            let mut verdicts = unsafe {
                Verdicts {
                    eligible: slice_mut(out.eligible, n),
                    multiplier: slice_mut(out.multiplier, n),
                    reason: slice_mut(out.reason, n),
                }
            };
            plugin.evaluate(&request, &mut verdicts)
        })
    }

    unsafe fn slice_mut<'a, E>(ptr: *mut E, n: usize) -> &'a mut [E] {
        if n == 0 || ptr.is_null() {
            return &mut [];
        }
        // SAFETY: forwarded to the caller.
        unsafe { std::slice::from_raw_parts_mut(ptr, n) }
    }

    /// # Safety
    /// Called by the host per the ABI with an instance from `attach_extractor::<T>`.
    pub unsafe extern "C" fn extract<T: FeatureExtractor>(
        instance: *const c_void,
        view: *const RequestView,
        sink: *const FeatureSink,
        err: *mut ErrorBuf,
    ) -> i32 {
        guard(err, || {
            if instance.is_null() || view.is_null() || sink.is_null() {
                return Err("host passed a null pointer".to_owned());
            }
            // SAFETY: non-null, and valid per the ABI for the duration of this call.
            let (plugin, view, sink) = unsafe { (&*instance.cast::<T>(), &*view, &*sink) };
            // SAFETY: the host built `view` per the ABI.
            let request = unsafe { Request::from_raw(view) };
            let mut emit = |row: u32, name: &str, value: f64| {
                // SAFETY: the host's callback copies `name` before returning.
                unsafe { (sink.emit)(sink.ctx, row, Str::new(name), value) }
            };
            let mut features = Features {
                rows: request.len(),
                emit: &mut emit,
            };
            plugin.extract(&request, &mut features)
        })
    }
}
