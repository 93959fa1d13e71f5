//! Building a [`RequestView`] from a decide request's JSON.
//!
//! The host builds one [`OwnedRequest`] per decide request and hands the same view to every
//! plugin in the campaign's chain; plugin authors use the same builder to unit-test their rules
//! in-process. Strings are borrowed from the JSON, never copied.
//!
//! Flattening rules: nested objects become `.`-joined names (`{"shopper": {"tier": "gold"}}` is
//! `shopper.tier`); numbers and booleans (0 / 1) become number columns; strings become string
//! columns; arrays of strings become string-set columns (non-string members are skipped); `null`
//! is absent. A column's kind is fixed by the first row that has the name; a later row whose value
//! has another kind is absent in that column.

use std::borrow::Cow;

use serde_json::Value;

use crate::abi::{self, Column, RequestView, Str, Table};
use crate::view::Request;

/// Column names deeper than this are not flattened further (protects against pathological input).
const MAX_DEPTH: usize = 8;

struct ColumnBuf<'a> {
    name: Cow<'a, str>,
    kind: u32,
    present: Vec<u8>,
    numbers: Vec<f64>,
    strings: Vec<Str>,
    set_offsets: Vec<u32>,
    set_values: Vec<Str>,
}

impl<'a> ColumnBuf<'a> {
    fn new(name: Cow<'a, str>, kind: u32, rows_before: usize, cap: usize) -> Self {
        let mut c = ColumnBuf {
            name,
            kind,
            present: Vec::with_capacity(cap),
            numbers: Vec::new(),
            strings: Vec::new(),
            set_offsets: Vec::new(),
            set_values: Vec::new(),
        };
        match kind {
            abi::COLUMN_NUMBER => c.numbers.reserve(cap),
            abi::COLUMN_STRING => c.strings.reserve(cap),
            _ => {
                c.set_offsets.reserve(cap + 1);
                c.set_offsets.push(0);
            }
        }
        c.pad_to(rows_before);
        c
    }

    fn rows(&self) -> usize {
        self.present.len()
    }

    /// Appends absent rows until the column has `rows` rows.
    fn pad_to(&mut self, rows: usize) {
        while self.present.len() < rows {
            self.present.push(0);
            match self.kind {
                abi::COLUMN_NUMBER => self.numbers.push(f64::NAN),
                abi::COLUMN_STRING => self.strings.push(Str::NULL),
                _ => self.set_offsets.push(self.set_values.len() as u32),
            }
        }
    }

    /// Sets row `row` (which must be the next row) from `v`; a kind mismatch leaves it absent.
    #[inline]
    fn push(&mut self, row: usize, v: &'a Value) {
        let rows = self.rows();
        if rows > row {
            return; // the same flattened name twice in one row: first one wins
        }
        if rows < row {
            self.pad_to(row);
        }
        match (self.kind, v) {
            (abi::COLUMN_NUMBER, Value::Number(n)) => {
                self.present.push(1);
                self.numbers.push(n.as_f64().unwrap_or(f64::NAN));
            }
            (abi::COLUMN_NUMBER, Value::Bool(b)) => {
                self.present.push(1);
                self.numbers.push(if *b { 1.0 } else { 0.0 });
            }
            (abi::COLUMN_STRING, Value::String(s)) => {
                self.present.push(1);
                self.strings.push(Str::new(s));
            }
            (abi::COLUMN_STRING_SET, Value::Array(items)) => {
                self.present.push(1);
                for item in items {
                    if let Value::String(s) = item {
                        self.set_values.push(Str::new(s));
                    }
                }
                self.set_offsets.push(self.set_values.len() as u32);
            }
            _ => self.pad_to(row + 1),
        }
    }

    fn raw(&self) -> Column {
        fn ptr_or_null<T>(unused: bool, p: *const T) -> *const T {
            if unused {
                std::ptr::null()
            } else {
                p
            }
        }
        Column {
            name: Str::new(&self.name),
            kind: self.kind,
            present: self.present.as_ptr(),
            numbers: ptr_or_null(self.kind != abi::COLUMN_NUMBER, self.numbers.as_ptr()),
            strings: ptr_or_null(self.kind != abi::COLUMN_STRING, self.strings.as_ptr()),
            set_offsets: ptr_or_null(
                self.kind != abi::COLUMN_STRING_SET,
                self.set_offsets.as_ptr(),
            ),
            set_values: ptr_or_null(
                self.kind != abi::COLUMN_STRING_SET,
                self.set_values.as_ptr(),
            ),
        }
    }
}

fn kind_of(v: &Value) -> Option<u32> {
    match v {
        Value::Number(_) | Value::Bool(_) => Some(abi::COLUMN_NUMBER),
        Value::String(_) => Some(abi::COLUMN_STRING),
        Value::Array(_) => Some(abi::COLUMN_STRING_SET),
        Value::Null | Value::Object(_) => None,
    }
}

struct TableBuf<'a> {
    columns: Vec<ColumnBuf<'a>>,
    rows: usize,
    cap: usize,
    /// The column the next attribute most likely belongs to. Candidates of one request almost
    /// always carry the same keys in the same (sorted) order, and columns are created in that
    /// order, so checking `columns[cursor]` first makes the lookup one string comparison.
    cursor: usize,
}

impl<'a> TableBuf<'a> {
    fn new(cap: usize) -> Self {
        TableBuf {
            columns: Vec::new(),
            rows: 0,
            cap,
            cursor: 0,
        }
    }

    /// Adds one row from a JSON object (anything else is an empty row).
    fn push_row(&mut self, attrs: &'a Value) {
        let row = self.rows;
        self.cursor = 0;
        if let Value::Object(map) = attrs {
            for (k, v) in map {
                if v.is_object() {
                    self.push_value(row, Cow::Borrowed(k.as_str()), v, 0);
                } else {
                    self.push_scalar(row, k.as_str(), v);
                }
            }
        }
        self.rows += 1;
    }

    /// The hot path: a top-level, non-object attribute, named by a key borrowed from the JSON.
    #[inline(always)]
    fn push_scalar(&mut self, row: usize, name: &'a str, v: &'a Value) {
        if let Some(c) = self.columns.get_mut(self.cursor) {
            if *c.name == *name {
                c.push(row, v);
                self.cursor += 1;
                return;
            }
        }
        self.push_value(row, Cow::Borrowed(name), v, 0);
    }

    fn push_value(&mut self, row: usize, name: Cow<'a, str>, v: &'a Value, depth: usize) {
        if let Value::Object(map) = v {
            if depth < MAX_DEPTH {
                for (k, inner) in map {
                    let nested = Cow::Owned(format!("{name}.{k}"));
                    self.push_value(row, nested, inner, depth + 1);
                }
            }
            return;
        }
        let Some(kind) = kind_of(v) else { return };
        let name_str: &str = &name;
        let hit = match self.columns.get(self.cursor) {
            Some(c) if *c.name == *name_str => Some(self.cursor),
            // Linear search: requests carry a handful of attributes; this beats hashing them.
            _ => self.columns.iter().position(|c| *c.name == *name_str),
        };
        match hit {
            Some(i) => {
                self.columns[i].push(row, v);
                self.cursor = i + 1;
            }
            None => {
                let mut c = ColumnBuf::new(name, kind, row, self.cap);
                c.push(row, v);
                self.columns.push(c);
                self.cursor = self.columns.len();
            }
        }
    }

    fn finish(mut self) -> (Vec<ColumnBuf<'a>>, usize) {
        for c in &mut self.columns {
            c.pad_to(self.rows);
        }
        self.columns.sort_by(|a, b| a.name.cmp(&b.name));
        (self.columns, self.rows)
    }
}

/// Collects a request's context and candidates; [`RequestBuilder::build`] makes the view.
pub struct RequestBuilder<'a> {
    ids: Vec<Str>,
    candidates: TableBuf<'a>,
    context: &'a Value,
    _borrow: std::marker::PhantomData<&'a str>,
}

impl std::fmt::Debug for RequestBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("candidates", &self.ids.len())
            .finish()
    }
}

impl<'a> RequestBuilder<'a> {
    /// Starts a request with `context` (a JSON object; anything else is treated as empty).
    pub fn new(context: &'a Value) -> Self {
        Self::with_capacity(context, 0)
    }

    /// Like [`RequestBuilder::new`], reserving room for `candidates` candidates.
    pub fn with_capacity(context: &'a Value, candidates: usize) -> Self {
        RequestBuilder {
            ids: Vec::with_capacity(candidates),
            candidates: TableBuf::new(candidates),
            context,
            _borrow: std::marker::PhantomData,
        }
    }

    /// Adds a candidate with its attributes (a JSON object).
    pub fn candidate(&mut self, id: &'a str, attributes: &'a Value) -> &mut Self {
        self.ids.push(Str::new(id));
        self.candidates.push_row(attributes);
        self
    }

    /// Builds the columnar view.
    pub fn build(self) -> OwnedRequest<'a> {
        let mut ctx = TableBuf::new(1);
        ctx.push_row(self.context);
        let (context, _) = ctx.finish();
        let (candidates, rows) = self.candidates.finish();
        let candidate_cols: Vec<Column> = candidates.iter().map(ColumnBuf::raw).collect();
        let context_cols: Vec<Column> = context.iter().map(ColumnBuf::raw).collect();
        // Moving the Vecs into the struct below does not move their heap buffers, so the
        // pointers taken above and here stay valid for the life of the OwnedRequest.
        let view = RequestView {
            n_candidates: self.ids.len() as u32,
            candidate_ids: self.ids.as_ptr(),
            candidates: Table {
                rows: rows as u32,
                n_columns: candidate_cols.len() as u32,
                columns: candidate_cols.as_ptr(),
            },
            context: Table {
                rows: 1,
                n_columns: context_cols.len() as u32,
                columns: context_cols.as_ptr(),
            },
        };
        OwnedRequest {
            view: Box::new(view),
            _ids: self.ids,
            _candidates: candidates,
            _context: context,
            _candidate_cols: candidate_cols,
            _context_cols: context_cols,
        }
    }
}

/// A built request: owns the columnar buffers and the [`RequestView`] that points into them (and
/// into the JSON it was built from, hence `'a`).
pub struct OwnedRequest<'a> {
    view: Box<RequestView>,
    _ids: Vec<Str>,
    _candidates: Vec<ColumnBuf<'a>>,
    _context: Vec<ColumnBuf<'a>>,
    _candidate_cols: Vec<Column>,
    _context_cols: Vec<Column>,
}

// SAFETY: the raw pointers inside point only at buffers this value owns or at `&'a Value` data,
// none of which is ever mutated after `build`; sharing or sending read-only data is sound.
#[allow(unsafe_code)]
unsafe impl Send for OwnedRequest<'_> {}
#[allow(unsafe_code)]
unsafe impl Sync for OwnedRequest<'_> {}

impl std::fmt::Debug for OwnedRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.request().fmt(f)
    }
}

impl OwnedRequest<'_> {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.view.n_candidates as usize
    }

    /// True when there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw view handed to a plugin library. Valid while `self` lives.
    pub fn raw(&self) -> *const RequestView {
        &*self.view
    }

    /// The safe reader a plugin sees (used to unit-test plugins in-process).
    #[allow(unsafe_code)]
    pub fn request(&self) -> Request<'_> {
        // SAFETY: the view was built by `RequestBuilder::build` from buffers `self` owns.
        unsafe { Request::from_raw(&self.view) }
    }
}
