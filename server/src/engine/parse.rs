//! Items decide bodies from bytes straight into hashed features (docs/decide-path.md).
//!
//! [`ItemsRequest::parse`] reads the body once with a serde visitor over
//! `serde_json::Deserializer::from_slice`: candidate ids go into one arena string, context and
//! candidate features are hashed as they are read ([`FeaturesSeed`]) into flat
//! entry lists, and attributes are only checked for their shape. No `serde_json::Value` is built.
//! Campaigns with plugins, and the rare features object that repeats a key, get the request's
//! `Value`s from [`ItemsRequest::values`], which parses the kept body again the old way.
//!
//! The body is the same JSON contract as `tailor_wire::DecideRequest` (that type stays the public
//! one, for the SDK and the OpenAPI document): unknown fields, missing `candidates` or `id`, and
//! wrong types are refused as before, naming the JSON path (`candidates[2].id`).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use tailor_wire::DecideRequest;

use super::featurize::{
    skip_map, skip_seq, BagStatus, ErrorPath, FeaturesSeed, Key, Tracked, WalkBuffers,
};
use crate::error::EngineError;

/// A parsed items decide request: what the decide path reads, with features already hashed.
#[derive(Debug, Clone, Default)]
pub struct ItemsRequest {
    pub event_id: Option<String>,
    pub k: Option<usize>,
    pub shopper_id: Option<String>,
    pub explore: Option<bool>,
    pub distribution: bool,
    /// The context's hashed entries, `(namespace hash, feature hash, value)`.
    pub(crate) context: Vec<(u64, u64, f64)>,
    pub(crate) context_status: BagStatus,
    pub(crate) candidates: Vec<CandidateEntry>,
    /// Every candidate id, one after the other.
    ids: String,
    /// Every candidate's hashed feature entries, one bag after the other.
    features: Vec<(u64, u64, f64)>,
    /// Where the `context` key ends in the body (for [`read_values`](Self::read_values)).
    context_at: Option<u32>,
    /// Every `context`, `features` and `attributes` key present was located in the body: the
    /// parts a campaign reads as `Value`s can be read from their spans
    /// ([`read_values`](Self::read_values)). False only when such a key was written with escapes.
    spans_ok: bool,
}

/// One candidate of an [`ItemsRequest`]: ranges into its arenas.
#[derive(Debug, Clone, Default)]
pub(crate) struct CandidateEntry {
    id: Range<u32>,
    features: Range<u32>,
    pub(crate) status: BagStatus,
    /// `attributes` is absent, `null` or an object.
    pub(crate) attributes_ok: bool,
    /// Where the `features` and `attributes` keys end in the body, when present.
    features_at: Option<u32>,
    attributes_at: Option<u32>,
}

const FIELDS: &[&str] = &[
    "context",
    "candidates",
    "event_id",
    "k",
    "shopper_id",
    "explore",
    "distribution",
];
const CANDIDATE_FIELDS: &[&str] = &["id", "features", "attributes"];

/// A decide body that is not JSON of the request's shape: the JSON path and what is wrong (the
/// API layer answers it as `malformed_json`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MalformedBody {
    pub field: String,
    pub message: String,
}

impl ItemsRequest {
    /// Parses a decide body. Syntax, unknown fields, missing fields and wrong types are a
    /// `Malformed` error naming the JSON path; problems inside features objects are kept (see
    /// [`context_error`](Self::context_error)) and reported where the decide featurizes.
    pub fn parse(body: &[u8]) -> Result<Self, MalformedBody> {
        if body.is_empty() {
            return Err(MalformedBody {
                field: "body".into(),
                message: "a JSON body is required".into(),
            });
        }
        let mut buffers = POOL.with(|p| std::mem::take(&mut p.borrow_mut().walk));
        buffers.path = ErrorPath::default();
        let request = match std::str::from_utf8(body) {
            // Checked once for the whole body, so no string inside is checked again (a
            // tenth of the parse on a catalog body with features).
            Ok(text) => parse_from(serde_json::Deserializer::from_str(text), body, &mut buffers),
            // serde_json finds the bad bytes and names where they are.
            Err(_) => parse_from(
                serde_json::Deserializer::from_slice(body),
                body,
                &mut buffers,
            ),
        };
        POOL.with(|p| p.borrow_mut().walk = buffers);
        request
    }

    /// The request as `Value`s, parsed again from its body: for the plugin stage and for
    /// features objects that repeat a key.
    pub fn values(body: &[u8]) -> Result<DecideRequest, EngineError> {
        // The body already parsed, so this does not fail on a body `parse` accepted.
        serde_json::from_slice(body).map_err(|e| EngineError::invalid_owned("body", e.to_string()))
    }

    /// The parts of the request `wants` names, as `Value`s in a `DecideRequest` whose other
    /// parts are empty (ids, unasked keys), read from where the parse located them in `body`
    /// (the body this request was parsed from) rather than by parsing the whole body again. A
    /// body whose `context`, `features` or `attributes` keys held escapes is parsed whole
    /// ([`values`](Self::values)).
    pub fn read_values(
        &self,
        body: &[u8],
        wants: &Wants<'_>,
    ) -> Result<DecideRequest, EngineError> {
        if !self.spans_ok {
            return Self::values(body);
        }
        let mut out = DecideRequest::default();
        if let (Some(field), Some(at)) = (wants.context_field, self.context_at) {
            out.context = value_at(body, at, PickKeys(&[field]))?;
        }
        if wants.attributes || !wants.feature_keys.is_empty() {
            out.candidates.reserve(self.candidates.len());
            for c in &self.candidates {
                let mut candidate = tailor_wire::Candidate::new(String::new());
                if let (true, Some(at)) = (wants.attributes, c.attributes_at) {
                    candidate.attributes = value_at(body, at, PhantomData::<serde_json::Value>)?;
                }
                if let (false, Some(at)) = (wants.feature_keys.is_empty(), c.features_at) {
                    candidate.features = value_at(body, at, PickKeys(&wants.feature_keys))?;
                }
                out.candidates.push(candidate);
            }
        }
        Ok(out)
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// True when the request has no candidates.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The id of candidate `i`.
    pub fn id(&self, i: usize) -> &str {
        let r = &self.candidates[i].id;
        &self.ids[r.start as usize..r.end as usize]
    }

    /// Every candidate id, in request order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.candidates.len()).map(|i| self.id(i))
    }

    /// The hashed feature entries of candidate `i`.
    pub fn features(&self, i: usize) -> &[(u64, u64, f64)] {
        let r = &self.candidates[i].features;
        &self.features[r.start as usize..r.end as usize]
    }

    /// The hashed context entries.
    pub fn context(&self) -> &[(u64, u64, f64)] {
        &self.context
    }

    /// The first problem of the context's features, as [`super::featurize::features`] reports
    /// it.
    pub fn context_error(&self) -> Option<EngineError> {
        self.context_status.error.as_ref().map(|e| e.at("context"))
    }

    /// The first problem of candidate `i`'s features.
    pub fn features_error(&self, i: usize) -> Option<EngineError> {
        self.candidates[i]
            .status
            .error
            .as_ref()
            .map(|e| e.at(&format!("candidates[{i}].features")))
    }

    /// Some features object repeats a key: featurize from [`values`](Self::values).
    pub fn repeats_keys(&self) -> bool {
        self.context_status.repeated_key || self.candidates.iter().any(|c| c.status.repeated_key)
    }
}

/// What a campaign reads from a decide request as `Value`s besides its features
/// ([`ItemsRequest::read_values`]).
#[derive(Debug, Default)]
pub struct Wants<'a> {
    /// This top-level context field (the campaign's `audience_field`).
    pub context_field: Option<&'a str>,
    /// Every candidate's `attributes` (boosts, variety limits, promotions).
    pub attributes: bool,
    /// These top-level keys of every candidate's `features` (variety and promotions read an
    /// attribute from the features when the attributes lack it).
    pub feature_keys: Vec<&'a str>,
}

/// [`ItemsRequest::parse`] through `de`, a reader over `body`.
fn parse_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    body: &'de [u8],
    buffers: &mut WalkBuffers,
) -> Result<ItemsRequest, MalformedBody> {
    let request = RequestSeed {
        buffers,
        body: Body(body.as_ptr() as usize, body.len()),
    }
    .deserialize(&mut de)
    .map_err(|e| MalformedBody {
        field: buffers.path.render(),
        message: e.to_string(),
    })?;
    de.end().map_err(|e| MalformedBody {
        field: "body".into(),
        message: e.to_string(),
    })?;
    Ok(request)
}

/// The value whose key ends at `key_end` in `body` (after the closing quote, optional
/// whitespace and the colon), through `seed`. The body parsed already, so this does not fail.
fn value_at<'de, S: DeserializeSeed<'de>>(
    body: &'de [u8],
    key_end: u32,
    seed: S,
) -> Result<S::Value, EngineError> {
    let rest = body.get(key_end as usize + 1..).unwrap_or_default();
    let colon = rest.iter().position(|&b| b == b':');
    let from = colon.map_or(rest.len(), |c| c + 1);
    let mut de = serde_json::Deserializer::from_slice(&rest[from..]);
    seed.deserialize(&mut de)
        .map_err(|e| EngineError::invalid_owned("body", e.to_string()))
}

/// An object's entries under the given keys as a `Value` object (the last of a repeated key,
/// as a `Value` parse keeps); anything but an object is `null`, as `Value::get` finds nothing
/// in it.
struct PickKeys<'k>(&'k [&'k str]);

impl<'de> DeserializeSeed<'de> for PickKeys<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<serde_json::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PickKeys<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<serde_json::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if self.0.contains(&key.as_ref()) {
                out.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(serde_json::Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<serde_json::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(serde_json::Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }
}

/// Buffers of parsed requests, kept per thread for the next parse on it: a decide's arenas
/// (ids, feature entries, candidates) come back when its request is dropped, so a worker
/// serving requests of one shape allocates them once.
#[derive(Default)]
struct Pool {
    walk: WalkBuffers,
    ids: Vec<String>,
    entries: Vec<Vec<(u64, u64, f64)>>,
    candidates: Vec<Vec<CandidateEntry>>,
}

/// Largest arena kept for reuse, in elements (a 10,000-candidate request's arenas are let go).
const POOL_KEEP: usize = 1 << 14;
/// Arenas of each kind kept per thread.
const POOL_DEPTH: usize = 2;

thread_local! {
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool::default());
}

impl ItemsRequest {
    /// An empty request whose arenas come from this thread's pool.
    fn recycled() -> Self {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            ItemsRequest {
                event_id: None,
                k: None,
                shopper_id: None,
                explore: None,
                distribution: false,
                context: p.entries.pop().unwrap_or_default(),
                context_status: BagStatus::default(),
                candidates: p.candidates.pop().unwrap_or_default(),
                ids: p.ids.pop().unwrap_or_default(),
                features: p.entries.pop().unwrap_or_default(),
                context_at: None,
                spans_ok: false,
            }
        })
    }
}

impl Drop for ItemsRequest {
    fn drop(&mut self) {
        let keep = |cap: usize| cap > 0 && cap <= POOL_KEEP;
        let _ = POOL.try_with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else {
                return;
            };
            if keep(self.ids.capacity()) && p.ids.len() < POOL_DEPTH {
                let mut v = std::mem::take(&mut self.ids);
                v.clear();
                p.ids.push(v);
            }
            for v in [&mut self.features, &mut self.context] {
                if keep(v.capacity()) && p.entries.len() < 2 * POOL_DEPTH {
                    let mut v = std::mem::take(v);
                    v.clear();
                    p.entries.push(v);
                }
            }
            if keep(self.candidates.capacity()) && p.candidates.len() < POOL_DEPTH {
                let mut v = std::mem::take(&mut self.candidates);
                v.clear();
                p.candidates.push(v);
            }
        });
    }
}

/// The next value of `map` through `seed`, and whether the value itself was reached.
fn tracked<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
    map: &mut A,
    seed: S,
) -> (Result<S::Value, A::Error>, bool) {
    let mut entered = false;
    let r = map.next_value_seed(Tracked {
        seed,
        entered: &mut entered,
    });
    (r, entered)
}

struct RequestSeed<'a> {
    buffers: &'a mut WalkBuffers,
    body: Body,
}

/// The body being parsed, as an address range: keys borrowed from it are located by pointer.
#[derive(Clone, Copy)]
struct Body(usize, usize);

impl Body {
    /// Where `key`, borrowed from the body, ends in it (its closing quote); None for a key that
    /// was not borrowed (it held escapes).
    #[allow(clippy::ptr_arg)] // The `Cow` matters: only a borrowed key lies in the body.
    fn end_of(self, key: &Cow<'_, str>) -> Option<u32> {
        let Cow::Borrowed(k) = key else { return None };
        let at = (k.as_ptr() as usize).checked_sub(self.0)? + k.len();
        (at < self.1).then_some(at as u32)
    }
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = ItemsRequest;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ItemsRequest, D::Error> {
        d.deserialize_map(self)
    }
}

/// Names `key` in the error path when its value failed (not when the text before the value did:
/// `serde_path_to_error` names the object then).
fn at_key<T, E>(
    buffers: &mut WalkBuffers,
    key: &str,
    (r, entered): (Result<T, E>, bool),
) -> Result<T, E> {
    if r.is_err() && entered {
        buffers.path.key(key);
    }
    r
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = ItemsRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct DecideRequest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemsRequest, A::Error> {
        let (buffers, body) = (self.buffers, self.body);
        let mut req = ItemsRequest::recycled();
        req.spans_ok = true;
        let mut seen = [false; 7];
        let mut candidates_seen = false;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let Some(field) = FIELDS.iter().position(|f| *f == key) else {
                buffers.path.key(&key);
                return Err(de::Error::unknown_field(&key, FIELDS));
            };
            if std::mem::replace(&mut seen[field], true) {
                buffers.path.key(&key);
                return Err(de::Error::duplicate_field(FIELDS[field]));
            }
            match field {
                0 => {
                    req.context_at = body.end_of(&key);
                    req.spans_ok &= req.context_at.is_some();
                    let r = tracked(
                        &mut map,
                        FeaturesSeed {
                            out: &mut req.context,
                            status: &mut req.context_status,
                            buffers,
                        },
                    );
                    at_key(buffers, &key, r)?;
                }
                1 => {
                    let r = tracked(
                        &mut map,
                        CandidatesSeed {
                            req: &mut req,
                            buffers,
                            body,
                        },
                    );
                    at_key(buffers, &key, r)?;
                    candidates_seen = true;
                }
                2 => req.event_id = at_key(buffers, &key, tracked(&mut map, PhantomData))?,
                3 => req.k = at_key(buffers, &key, tracked(&mut map, PhantomData))?,
                4 => req.shopper_id = at_key(buffers, &key, tracked(&mut map, PhantomData))?,
                5 => req.explore = at_key(buffers, &key, tracked(&mut map, PhantomData))?,
                _ => req.distribution = at_key(buffers, &key, tracked(&mut map, PhantomData))?,
            }
        }
        if !candidates_seen {
            buffers.path.key("candidates");
            return Err(de::Error::missing_field("candidates"));
        }
        Ok(req)
    }
}

struct CandidatesSeed<'a> {
    req: &'a mut ItemsRequest,
    buffers: &'a mut WalkBuffers,
    body: Body,
}

impl<'de> DeserializeSeed<'de> for CandidatesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CandidatesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let req = self.req;
        if let Some(n) = seq.size_hint() {
            req.candidates.reserve(n);
        }
        let mut i = 0;
        loop {
            let mut entered = false;
            let r = seq.next_element_seed(Tracked {
                seed: CandidateSeed {
                    req: &mut *req,
                    buffers: &mut *self.buffers,
                    body: self.body,
                },
                entered: &mut entered,
            });
            match r {
                Ok(Some(())) => i += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if entered {
                        self.buffers.path.index(i);
                    }
                    return Err(e);
                }
            }
        }
    }
}

struct CandidateSeed<'a> {
    req: &'a mut ItemsRequest,
    buffers: &'a mut WalkBuffers,
    body: Body,
}

impl<'de> DeserializeSeed<'de> for CandidateSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CandidateSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct Candidate")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (req, buffers) = (self.req, self.buffers);
        let mut entry = CandidateEntry {
            attributes_ok: true,
            ..CandidateEntry::default()
        };
        let start = req.features.len() as u32;
        let mut seen = [false; 3];
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let Some(field) = CANDIDATE_FIELDS.iter().position(|f| *f == key) else {
                buffers.path.key(&key);
                return Err(de::Error::unknown_field(&key, CANDIDATE_FIELDS));
            };
            if std::mem::replace(&mut seen[field], true) {
                buffers.path.key(&key);
                return Err(de::Error::duplicate_field(CANDIDATE_FIELDS[field]));
            }
            match field {
                0 => {
                    let from = req.ids.len() as u32;
                    let r = tracked(&mut map, IdSeed(&mut req.ids));
                    at_key(buffers, &key, r)?;
                    entry.id = from..req.ids.len() as u32;
                }
                1 => {
                    entry.features_at = self.body.end_of(&key);
                    req.spans_ok &= entry.features_at.is_some();
                    let r = tracked(
                        &mut map,
                        FeaturesSeed {
                            out: &mut req.features,
                            status: &mut entry.status,
                            buffers,
                        },
                    );
                    at_key(buffers, &key, r)?;
                }
                _ => {
                    entry.attributes_at = self.body.end_of(&key);
                    req.spans_ok &= entry.attributes_at.is_some();
                    let r = tracked(&mut map, ShapeSeed(&mut buffers.path));
                    entry.attributes_ok = at_key(buffers, &key, r)?;
                }
            }
        }
        if !seen[0] {
            buffers.path.key("id");
            return Err(de::Error::missing_field("id"));
        }
        entry.features = start..req.features.len() as u32;
        req.candidates.push(entry);
        Ok(())
    }
}

/// A candidate id, appended to the request's id arena.
struct IdSeed<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for IdSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IdSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

/// Skips a value, answering whether it is `null` or an object.
struct ShapeSeed<'a>(&'a mut ErrorPath);

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        skip_map(map, self.0)?;
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        skip_seq(seq, self.0)?;
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use tailor_policies::{FeaturizerConfig, SparseFeatures, VectorScratch};

    use super::*;
    use crate::engine::featurize::{self, MAX_DEPTH};

    fn field_of(body: &str) -> String {
        ItemsRequest::parse(body.as_bytes()).unwrap_err().field
    }

    /// The fields `api::body::parse` names for the same bodies (its `names_fields` test).
    #[test]
    fn names_fields_as_the_value_parse_does() {
        let bodies = [
            r#"{"context": {}}"#,
            r#"{"candidates": [{"id": 3}]}"#,
            r#"{"candidates": [{"features": {}}]}"#,
            r#"{"candidates": [], "k": "x"}"#,
            r#"{"candidates": [], "bogus": 1}"#,
            r#"{"candidates": [{"id": "a", "bogus": 1}]}"#,
            r#"{"candidates": [{"id": "a"}, {"id": "b", "features": {"x": [1, }}]}"#,
            r#"{"candidates": null}"#,
            r#"{"candidates": [], "distribution": null}"#,
            r#"{"candidates": [], "explore": 3}"#,
            r#"{"candidates": [], "event_id": 3}"#,
            r#"[]"#,
            "{",
            "",
            r#"{"candidates": []} x"#,
            r#"{"candidates": [{"id": "a", "features": {"price": 1e999}}]}"#,
            r#"{"context": {"a": [1, {"b": 1e999}]}, "candidates": []}"#,
            r#"{"context": {"a": [{"b": 1}, {"b": 1e999}]}, "candidates": []}"#,
            r#"{"candidates": ["#,
            r#"{"candidates": [{"id": "a"}, "#,
            r#"{"candidates": [{"id": "a", "attributes": {"x": [1, {"y": 1e999}]}}]}"#,
            r#"{"candidates": [{"id": "a", "features": [1, [2, 1e999]]}]}"#,
            r#"{"candidates": [{"id": "a", "features": {"x": [[1, 1e999]]}}]}"#,
            r#"{"candidates": [{"id": "a", "features": {"x": {"y": 1e999}}}]}"#,
            r#"{"context": {"a": 1, "b": 1e999}, "candidates": []}"#,
            r#"{"context": {"a": ["#,
            r#"{"context": {"a": "#,
            r#"{"context": {"a""#,
            r#"{"k""#,
            r#"{"k": "#,
            r#"{"candidates": [{"id""#,
            r#"{"candidates": [{"id": "a", "features": {"b": {"c""#,
            r#"{"candidates": [{"id": "a", "attributes": {"b": {"c""#,
        ];
        for body in bodies {
            let old = match crate::api::body::parse::<DecideRequest>(body.as_bytes()) {
                Err(crate::api::error::TransportError::Malformed { field, .. }) => field,
                other => panic!("{body}: {other:?}"),
            };
            assert_eq!(field_of(body), old, "{body}");
        }
        assert_eq!(
            field_of(r#"{"candidates": [{"id": 3}]}"#),
            "candidates[0].id"
        );
        assert_eq!(
            field_of(r#"{"candidates": [{"id": "a"}, {"features": {}}]}"#),
            "candidates[1].id"
        );
        assert_eq!(field_of(r#"{"candidates": [], "bogus": 1}"#), "bogus");
    }

    /// A body that is not UTF-8 is refused as the `Value` parse refuses it, naming the same
    /// field; valid multi-byte text reads the same as before (the body is checked once, its
    /// strings not again).
    #[test]
    fn utf8_is_checked_once_with_the_same_refusals() {
        let bad: &[&[u8]] = &[
            b"{\"candidates\": [{\"id\": \"a\xff\"}]}",
            b"{\"candidates\": [{\"id\": \"a\", \"features\": {\"c\": \"\xe2\x82\"}}]}",
            b"{\"candidates\": [{\"id\": \"a\"}]} \xff",
        ];
        for body in bad {
            let old = match crate::api::body::parse::<DecideRequest>(body) {
                Err(crate::api::error::TransportError::Malformed { field, .. }) => field,
                other => panic!("{body:?}: {other:?}"),
            };
            let new = ItemsRequest::parse(body).unwrap_err();
            assert_eq!(new.field, old, "{body:?}");
        }
        let body = r#"{"context": {"città": "Zürich"}, "candidates": [{"id": "ß-€-😀", "features": {"farbe": "grün"}}]}"#;
        let req = ItemsRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(req.id(0), "ß-€-😀");
        let old = featurize::features("context", &json!({"città": "Zürich"})).unwrap();
        assert_eq!(sorted(old.entries), sorted(req.context().to_vec()));
    }

    #[test]
    fn messages_are_serdes() {
        let e = ItemsRequest::parse(br#"{"candidates": [], "bogus": 1}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown field `bogus`, expected one of `context`"),
            "{e}"
        );
        let e = ItemsRequest::parse(br#"{"candidates": [{"id": 3}]}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
    }

    /// Problems inside features are kept for the featurizing step, named as the `Value` walk
    /// names them.
    #[test]
    fn feature_problems_name_the_path() {
        let nested = |levels: usize| {
            let mut v = json!(1);
            for _ in 0..=levels {
                v = json!({ "n": v });
            }
            v
        };
        let cases = [
            (json!([1, 2]), "candidates[0].features"),
            (json!("x"), "candidates[0].features"),
            (json!({"a": {"b": [1, {"x": 1}]}}), "candidates[0].features.a.b[1]"),
            (json!({"a": [null]}), "candidates[0].features.a[0]"),
            (json!({"a": [[1]]}), "candidates[0].features.a[0]"),
            (
                nested(MAX_DEPTH + 1),
                "candidates[0].features.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n",
            ),
        ];
        for (features, field) in cases {
            let body = json!({"candidates": [{"id": "a", "features": features}]});
            let req = ItemsRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
            let e = req.features_error(0).expect("a problem");
            assert_eq!(e.field(), Some(field), "{body}");
            let old =
                featurize::features("candidates[0].features", &body["candidates"][0]["features"])
                    .unwrap_err();
            assert_eq!(old.field(), Some(field));
            assert_eq!(old.to_string(), e.to_string());
        }
        let body = json!({"context": {"n": nested(MAX_DEPTH)}, "candidates": [{"id": "a"}]});
        let req = ItemsRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        let e = req.context_error().expect("too deep");
        assert_eq!(
            e.field(),
            Some(format!("context{}", ".n".repeat(MAX_DEPTH + 1)).as_str())
        );
        let req = ItemsRequest::parse(br#"{"context": {"a": 1}, "candidates": [{"id": "a", "attributes": [1]}, {"id": "b", "attributes": {"x": [1]}}]}"#).unwrap();
        assert!(req.context_error().is_none());
        assert!(!req.candidates[0].attributes_ok);
        assert!(req.candidates[1].attributes_ok);
    }

    /// `check_items_request` reports the first failing candidate in request order, as the
    /// hash-set loop before it did.
    #[test]
    fn candidate_checks_report_the_first_failure() {
        use crate::engine::check_items_request;
        let field = |body: &str| {
            let req = ItemsRequest::parse(body.as_bytes()).unwrap();
            check_items_request(&req)
                .unwrap_err()
                .field()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            field(r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "a"}, {"id": "b"}]}"#),
            "candidates[2].id"
        );
        assert_eq!(
            field(r#"{"candidates": [{"id": "a"}, {"id": ""}, {"id": "a"}]}"#),
            "candidates[1].id"
        );
        assert_eq!(
            field(r#"{"candidates": [{"id": "a", "attributes": 1}, {"id": "a"}]}"#),
            "candidates[0].attributes"
        );
        assert_eq!(
            field(r#"{"candidates": [{"id": "a"}, {"id": "a", "attributes": 1}]}"#),
            "candidates[1].id"
        );
        // One id sent 10,000 times: found at once, in linear time.
        let many: Vec<Value> = (0..10_000).map(|_| json!({"id": "same"})).collect();
        let body = serde_json::to_vec(&json!({ "candidates": many })).unwrap();
        let req = ItemsRequest::parse(&body).unwrap();
        let e = check_items_request(&req).unwrap_err();
        assert_eq!(e.field(), Some("candidates[1].id"));
        // The candidate-set hash is the sum it always was, whatever the order.
        let a =
            ItemsRequest::parse(br#"{"candidates": [{"id": "x"}, {"id": "y"}], "k": 2}"#).unwrap();
        let b = ItemsRequest::parse(br#"{"candidates": [{"id": "y"}, {"id": "x"}]}"#).unwrap();
        let (ca, cb) = (
            check_items_request(&a).unwrap(),
            check_items_request(&b).unwrap(),
        );
        assert_eq!((ca.k, cb.k), (2, 1));
        assert_eq!(ca.candidate_set, cb.candidate_set);
        let h = |id: &str| xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 3);
        assert_eq!(ca.candidate_set, h("x").wrapping_add(h("y")));
    }

    /// Through the engine: a features object that repeats a key is featurized from its `Value`
    /// (the last value wins, as ever), and the logged vectors are the featurizer's vectors of
    /// the `Value` walk.
    #[tokio::test]
    async fn the_engine_logs_the_value_walks_vectors() {
        use crate::campaign::CampaignConfig;
        use crate::engine::{DecideInput, Engine};
        use crate::store::{SledStore, Store};
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let engine = Engine::open(store, Default::default()).unwrap();
        let config: CampaignConfig = serde_json::from_value(json!({
            "id": "c", "policy": {"type": "linucb"}, "featurizer": {"dimension": 32}
        }))
        .unwrap();
        let featurizer = config.featurizer.build().unwrap();
        engine.create_campaign(config).unwrap();
        let served = |event: &str, body: &str| {
            let mut body: Value = serde_json::from_str(body).unwrap();
            body["event_id"] = json!(event);
            // Keys written by hand so the repeat survives.
            let text = serde_json::to_string(&body)
                .unwrap()
                .replace(r#""REPEAT":1"#, r#""a":5,"a":1"#);
            let input = DecideInput::parse(text.into_bytes()).unwrap();
            engine.decide_items("c", input).unwrap();
            let seq = engine
                .store()
                .event("c", event)
                .unwrap()
                .unwrap()
                .decision_seq;
            let mut actions = engine.store().decision("c", seq).unwrap().unwrap().actions;
            actions.sort_by(|a, b| a.id.cmp(&b.id));
            actions.into_iter().map(|a| (a.id, a.x)).collect::<Vec<_>>()
        };
        let candidates = r#"[{"id": "p", "features": {"b": {"c": 2, "d": "x"}}}, {"id": "q", "features": {"REPEAT": 1, "t": ["u", "v"]}}]"#;
        let repeated = served(
            "e1",
            &format!(
                r#"{{"context": {{"s": {{"REPEAT": 1}}, "n": 3}}, "candidates": {candidates}, "k": 2}}"#
            ),
        );
        let plain = served(
            "e2",
            &format!(
                r#"{{"context": {{"s": {{"a": 1}}, "n": 3}}, "candidates": {}, "k": 2}}"#,
                candidates.replace(r#""REPEAT": 1"#, r#""a": 1"#)
            ),
        );
        assert_eq!(repeated, plain);
        let context = featurize::features("context", &json!({"s": {"a": 1}, "n": 3})).unwrap();
        let q = featurize::features("f", &json!({"a": 1, "t": ["u", "v"]})).unwrap();
        assert_eq!(plain[1].1, featurizer.vector(&context, "q", &q));
        let p = featurize::features("f", &json!({"b": {"c": 2, "d": "x"}})).unwrap();
        assert_eq!(plain[0].1, featurizer.vector(&context, "p", &p));
    }

    /// What boosts, variety, promotions and the audience field read, from the spans the parse
    /// located: the same `Value`s as the whole body parsed again.
    #[test]
    fn read_values_match_the_whole_parse() {
        let bodies = [
            r#"{"context": {"tier": "gold", "x": {"tier": 1}}, "candidates": [{"id": "a", "attributes": {"brand": "b", "tags": ["x", 1.5]}, "features": {"brand": "f", "p": 2}}, {"id": "b"}, {"id": "c", "attributes": null, "features": null}]}"#,
            // Whitespace around the colon, keys in another order, a repeated top-level key.
            "{\"candidates\" :[ {\"features\"\n :\t{\"brand\": 3, \"brand\": true}, \"id\": \"a\", \"attributes\" : {\"n\": {\"m\": 1e3}}}], \"context\"  :  {\"tier\": 12345678901234567890, \"tier\": 0.1}}",
            // Escaped keys: the whole body is parsed again.
            r#"{"cont\u0065xt": {"tier": "t"}, "candidates": [{"id": "a", "attributes": {"brand": "x"}}]}"#,
            r#"{"candidates": [{"id": "a", "attrib\u0075tes": {"brand": "x"}, "features": {"brand": 1}}]}"#,
            // A context that is not an object, no context at all.
            r#"{"context": null, "candidates": [{"id": "a", "features": {"brand": [1, 2]}}]}"#,
            r#"{"candidates": [{"id": "a", "attributes": {}}], "k": 1}"#,
        ];
        let wants = Wants {
            context_field: Some("tier"),
            attributes: true,
            feature_keys: vec!["brand", "p"],
        };
        for body in bodies {
            let req = ItemsRequest::parse(body.as_bytes()).unwrap();
            let got = req.read_values(body.as_bytes(), &wants).unwrap();
            let all = ItemsRequest::values(body.as_bytes()).unwrap();
            assert_eq!(got.context.get("tier"), all.context.get("tier"), "{body}");
            assert_eq!(got.candidates.len(), all.candidates.len(), "{body}");
            for (g, a) in got.candidates.iter().zip(&all.candidates) {
                assert_eq!(g.attributes, a.attributes, "{body}");
                for key in ["brand", "p", "other"] {
                    let want = if key == "other" {
                        None
                    } else {
                        a.features.get(key)
                    };
                    assert_eq!(g.features.get(key), want, "{body}: {key}");
                }
            }
        }
        // Only what is asked for is read.
        let body = bodies[0].as_bytes();
        let req = ItemsRequest::parse(body).unwrap();
        let only = req
            .read_values(
                body,
                &Wants {
                    context_field: Some("tier"),
                    ..Wants::default()
                },
            )
            .unwrap();
        assert_eq!(only.context, json!({"tier": "gold"}));
        assert!(only.candidates.is_empty());
    }

    /// Through the engine: a campaign with a variety limit and an audience field serves and
    /// records the same from spans as from the whole body parsed again (escaped keys force the
    /// whole parse).
    #[tokio::test]
    async fn variety_and_audiences_read_from_spans_as_from_the_whole_body() {
        use crate::campaign::CampaignConfig;
        use crate::engine::{DecideInput, Engine};
        use crate::store::{SledStore, Store};
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let engine = Engine::open(store, Default::default()).unwrap();
        let config: CampaignConfig = serde_json::from_value(json!({
            "id": "v", "policy": {"type": "thompson"}, "audience_field": "tier",
            "variety": {"attribute": "brand", "max_per_value": 1}
        }))
        .unwrap();
        engine.create_campaign(config).unwrap();
        let candidates: Vec<Value> = (0..12)
            .map(|i| {
                let mut c = json!({"id": format!("p{i}")});
                if i % 3 == 0 {
                    c["features"] = json!({"brand": format!("b{}", i % 4), "x": i});
                } else {
                    c["attributes"] = json!({"brand": format!("b{}", i % 2)});
                }
                c
            })
            .collect();
        let served = |event: &str, escaped: bool| {
            let body = json!({"context": {"tier": "gold", "n": 1}, "candidates": candidates,
                "k": 4, "distribution": true, "event_id": event});
            let mut text = serde_json::to_string(&body).unwrap();
            if escaped {
                text = text
                    .replace(r#""attributes""#, r#""attribut\u0065s""#)
                    .replace(r#""context""#, r#""cont\u0065xt""#);
            }
            let response = engine
                .decide_items("v", DecideInput::parse(text.into_bytes()).unwrap())
                .unwrap();
            let seq = engine
                .store()
                .event("v", event)
                .unwrap()
                .unwrap()
                .decision_seq;
            let decision = engine.store().decision("v", seq).unwrap().unwrap();
            let mut brands: Vec<String> = response
                .actions
                .iter()
                .map(|a| {
                    let i: usize = a.id[1..].parse().unwrap();
                    let c = &candidates[i];
                    c["attributes"]["brand"]
                        .as_str()
                        .or(c["features"]["brand"].as_str())
                        .unwrap()
                        .to_string()
                })
                .collect();
            brands.sort();
            (response.distribution, decision.audience, brands)
        };
        let (spans, spans_audience, brands) = served("e1", false);
        let (whole, whole_audience, _) = served("e2", true);
        assert_eq!(spans, whole);
        assert_eq!(spans_audience, whole_audience);
        assert_eq!(spans_audience.0.as_deref(), Some("gold"));
        // At most one served candidate per brand.
        let mut unique = brands.clone();
        unique.dedup();
        assert_eq!(unique, brands);
    }

    #[test]
    fn repeated_keys_are_flagged() {
        let req = ItemsRequest::parse(
            br#"{"context": {"a": {"x": 1, "x": 2}}, "candidates": [{"id": "a", "features": {"b": 1}}]}"#,
        )
        .unwrap();
        assert!(req.context_status.repeated_key);
        assert!(!req.candidates[0].status.repeated_key);
        assert!(req.repeats_keys());
        // The same key in two objects is no repeat.
        let req = ItemsRequest::parse(
            br#"{"context": {"a": {"x": 1}, "b": {"x": 1}, "x": 2}, "candidates": [{"id": "a"}]}"#,
        )
        .unwrap();
        assert!(!req.repeats_keys());
    }

    /// JSON text for `v` with every object's keys in an order given by `order` (a `Value`
    /// always writes them sorted), so the parse meets keys in orders other than the `Value`
    /// walk's.
    fn write_shuffled(v: &Value, order: u64, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                let n = entries.len();
                if n > 1 {
                    entries.rotate_left((order as usize) % n);
                    if order & 1 == 1 {
                        entries.reverse();
                    }
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    write_shuffled(v, order.rotate_left(7) ^ i as u64, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_shuffled(item, order, out);
                }
                out.push(']');
            }
            other => out.push_str(&serde_json::to_string(other).unwrap()),
        }
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "a", "b", "price", "x.y", "", "ключ", "価格", "🙂", "a\"b", "tab\tkey", "n",
            ])
            .prop_map(str::to_string),
            "[a-z]{1,6}",
            "\\PC{0,5}",
        ]
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|v| json!(v)),
            any::<u64>().prop_map(|v| json!(v)),
            (-1e6f64..1e6).prop_map(|v| json!(v)),
            prop::sample::select(vec![0.0, -0.0, 1e-300, 3.5, -2.0, 1e300]).prop_map(|v| json!(v)),
            "\\PC{0,8}".prop_map(Value::String),
        ]
    }

    /// Features objects: nested namespaces, arrays (mostly of scalars, sometimes holding
    /// objects or arrays, which are refused), every scalar kind.
    fn features_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            6 => scalar(),
            2 => prop::collection::vec(scalar(), 0..4).prop_map(Value::Array),
            1 => prop::collection::vec(
                prop_oneof![scalar(), Just(json!({"x": 1})), Just(json!([1]))],
                1..3
            )
            .prop_map(Value::Array),
        ];
        let tree = leaf.prop_recursive(5, 48, 6, |inner| {
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        });
        prop_oneof![
            8 => prop::collection::btree_map(key(), tree, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => Just(Value::Null),
            1 => scalar(),
        ]
    }

    fn sorted(mut entries: Vec<(u64, u64, f64)>) -> Vec<(u64, u64, u64)> {
        entries.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        entries
            .into_iter()
            .map(|(a, b, v)| (a, b, v.to_bits()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(18), ..ProptestConfig::default() })]

        /// Issue 18: the streaming parse gives exactly the features, vectors and refusals of
        /// the `Value` walk, whatever the key order in the body.
        #[test]
        fn streaming_parse_matches_the_value_walk(
            context in features_value(),
            features in prop::collection::vec(features_value(), 1..5),
            order in any::<u64>(),
            dimension in prop::sample::select(vec![1usize, 7, 64, 4096]),
            interactions in any::<bool>(),
            context_features in any::<bool>(),
        ) {
            let candidates: Vec<Value> = features
                .iter()
                .enumerate()
                .map(|(i, f)| json!({"id": format!("sku-{i}-ü"), "features": f}))
                .collect();
            let body = json!({"context": context, "candidates": candidates});
            let mut text = String::new();
            write_shuffled(&body, order, &mut text);
            let req = ItemsRequest::parse(text.as_bytes()).unwrap();
            prop_assert!(!req.repeats_keys());
            let featurizer = FeaturizerConfig { dimension, interactions, context_features }
                .build()
                .unwrap();
            let old_context = featurize::features("context", &context);
            prop_assert_eq!(old_context.is_err(), req.context_error().is_some());
            let old_context = old_context.unwrap_or_default();
            if req.context_error().is_none() {
                prop_assert_eq!(sorted(old_context.entries.clone()), sorted(req.context().to_vec()));
            }
            let keys = featurizer.context_keys(req.context());
            let mut scratch = VectorScratch::default();
            for (i, f) in features.iter().enumerate() {
                let old = featurize::features_at(|| format!("candidates[{i}].features"), f);
                let new_error = req.features_error(i);
                prop_assert_eq!(old.is_err(), new_error.is_some(), "candidate {}: {:?}", i, new_error);
                let Ok(old) = old else { continue };
                prop_assert_eq!(sorted(old.entries.clone()), sorted(req.features(i).to_vec()));
                let id = format!("sku-{i}-ü");
                prop_assert_eq!(req.id(i), id.as_str());
                if req.context_error().is_none() {
                    let a = featurizer.vector(&old_context, &id, &old);
                    let b = featurizer.vector_with(&keys, req.id(i), req.features(i), &mut scratch);
                    prop_assert_eq!(a, b);
                }
            }
        }
    }

    /// The vectors of a body whose objects each hold one problem name the same field either way.
    #[test]
    fn single_problems_name_the_same_field() {
        for features in [
            json!({"ns": {"deep": {"tags": ["a", 1, {"no": 1}]}}}),
            json!({"z": 1, "a": [true, null]}),
        ] {
            let old = featurize::features("context", &features).unwrap_err();
            let body = json!({"context": features, "candidates": [{"id": "a"}]});
            let req = ItemsRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
            assert_eq!(req.context_error().unwrap().field(), old.field());
        }
        let _ = SparseFeatures::new();
    }
}
