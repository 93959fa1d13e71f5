//! Safe, zero-copy readers over a [`RequestView`](crate::abi::RequestView).
//!
//! A plugin receives a [`Request`]: candidate ids, candidate attribute columns and the context
//! (one row). Look a column up once per call (`request.candidates().numbers("inventory")`), then
//! index it per candidate; nothing here allocates or parses JSON.
#![allow(unsafe_code)] // the one place that turns the host's raw pointers into slices

use crate::abi::{self, Column, RequestView, Str};

/// Turns a host string into `&str`. The host guarantees UTF-8 and that the bytes outlive `'a`.
fn str_of<'a>(s: &Str) -> &'a str {
    if s.ptr.is_null() || s.len == 0 {
        return "";
    }
    // SAFETY: the ABI requires every non-null `Str` the host passes to be valid UTF-8 that lives
    // as long as the view it belongs to.
    unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(s.ptr, s.len)) }
}

fn slice_of<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the ABI requires `ptr` to point at `len` initialized values owned by the host for
    // the duration of the call.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// The request a plugin evaluates.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    ids: &'a [Str],
    candidates: Columns<'a>,
    context: Columns<'a>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("candidates", &self.len())
            .field(
                "candidate_columns",
                &self.candidates.names().collect::<Vec<_>>(),
            )
            .field("context_columns", &self.context.names().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> Request<'a> {
    /// Wraps a raw view.
    ///
    /// # Safety
    /// `view` must satisfy the ABI's invariants (valid pointers and lengths, UTF-8 strings) for
    /// `'a`. Only the export shims and [`crate::OwnedRequest`] call this.
    pub(crate) unsafe fn from_raw(view: &'a RequestView) -> Request<'a> {
        let n = view.n_candidates as usize;
        Request {
            ids: slice_of(view.candidate_ids, n),
            candidates: Columns::from_table(&view.candidates),
            context: Columns::from_table(&view.context),
        }
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of candidate `i`.
    pub fn candidate_id(&self, i: usize) -> &'a str {
        str_of(&self.ids[i])
    }

    /// Candidate attribute columns (one row per candidate).
    pub fn candidates(&self) -> Columns<'a> {
        self.candidates
    }

    /// The request context (shopper attributes, local hour, ...).
    pub fn context(&self) -> Context<'a> {
        Context(self.context)
    }
}

/// A set of named columns with the same number of rows.
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    rows: usize,
    columns: &'a [Column],
}

impl<'a> Columns<'a> {
    fn from_table(t: &'a abi::Table) -> Columns<'a> {
        Columns {
            rows: t.rows as usize,
            columns: slice_of(t.columns, t.n_columns as usize),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Column names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.columns.iter().map(|c| str_of(&c.name))
    }

    fn find(&self, name: &str, kind: u32) -> Option<&'a Column> {
        // The host sends columns sorted by name, one column per name (a column's kind is fixed
        // by its first value), so a binary search finds the only candidate.
        let i = self
            .columns
            .binary_search_by(|c| str_of(&c.name).cmp(name))
            .ok()?;
        let c = &self.columns[i];
        (c.kind == kind).then_some(c)
    }

    /// The numeric column `name`, if present and numeric.
    pub fn numbers(&self, name: &str) -> Option<Numbers<'a>> {
        let c = self.find(name, abi::COLUMN_NUMBER)?;
        Some(Numbers {
            present: slice_of(c.present, self.rows),
            values: slice_of(c.numbers, self.rows),
        })
    }

    /// The string column `name`, if present and of string kind.
    pub fn strings(&self, name: &str) -> Option<Strings<'a>> {
        let c = self.find(name, abi::COLUMN_STRING)?;
        Some(Strings {
            values: slice_of(c.strings, self.rows),
        })
    }

    /// The string-set column `name`, if present and of string-set kind.
    pub fn sets(&self, name: &str) -> Option<Sets<'a>> {
        let c = self.find(name, abi::COLUMN_STRING_SET)?;
        let offsets = slice_of(c.set_offsets, self.rows + 1);
        let total = offsets.last().copied().unwrap_or(0) as usize;
        Some(Sets {
            present: slice_of(c.present, self.rows),
            offsets,
            values: slice_of(c.set_values, total),
        })
    }
}

/// A numeric column.
#[derive(Clone, Copy, Debug)]
pub struct Numbers<'a> {
    present: &'a [u8],
    values: &'a [f64],
}

impl Numbers<'_> {
    /// The value in row `i`, `None` when absent.
    pub fn get(&self, i: usize) -> Option<f64> {
        (self.present.get(i) == Some(&1)).then(|| self.values[i])
    }
}

/// A string column.
#[derive(Clone, Copy, Debug)]
pub struct Strings<'a> {
    values: &'a [Str],
}

impl<'a> Strings<'a> {
    /// The value in row `i`, `None` when absent.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        let s = self.values.get(i)?;
        (!s.is_null()).then(|| str_of(s))
    }
}

/// A string-set column.
#[derive(Clone, Copy, Debug)]
pub struct Sets<'a> {
    present: &'a [u8],
    offsets: &'a [u32],
    values: &'a [Str],
}

impl<'a> Sets<'a> {
    /// The set in row `i`, `None` when absent.
    pub fn get(&self, i: usize) -> Option<StrList<'a>> {
        if self.present.get(i) != Some(&1) {
            return None;
        }
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        Some(StrList(&self.values[a..b]))
    }
}

/// The members of one string set.
#[derive(Clone, Copy, Debug)]
pub struct StrList<'a>(&'a [Str]);

impl<'a> StrList<'a> {
    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members in request order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().map(str_of)
    }

    /// Whether `s` is a member (linear scan: sets in requests are small).
    pub fn contains(&self, s: &str) -> bool {
        self.iter().any(|m| m == s)
    }
}

/// The request context: one row of named values.
#[derive(Clone, Copy)]
pub struct Context<'a>(Columns<'a>);

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.names()).finish()
    }
}

impl<'a> Context<'a> {
    /// The numeric context value `name` (booleans are 0 / 1).
    pub fn number(&self, name: &str) -> Option<f64> {
        self.0.numbers(name)?.get(0)
    }

    /// The string context value `name`.
    pub fn string(&self, name: &str) -> Option<&'a str> {
        self.0.strings(name)?.get(0)
    }

    /// The string-set context value `name`.
    pub fn set(&self, name: &str) -> Option<StrList<'a>> {
        self.0.sets(name)?.get(0)
    }

    /// Context value names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.names()
    }
}
