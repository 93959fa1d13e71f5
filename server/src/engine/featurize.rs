//! Request JSON to [`SparseFeatures`]: nested objects are namespaces, strings are categorical,
//! numbers numeric, booleans categorical, arrays of strings are sets.
//!
//! Two walks give the same features: [`FeaturesSeed`] parses a features object from the request
//! bytes straight into hashed entries (the decide path, docs/decide-path.md); [`features`] walks
//! a `serde_json::Value` (features merged by extractor plugins, the Personalizer API's merged
//! features, and the oracle the streaming walk is tested against).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use tailor_policies::features::{categorical_hash, name_hash, namespace_hash};
use tailor_policies::SparseFeatures;

use crate::error::EngineError;

/// Walk a features object. `field` names it in errors (e.g. `candidates[3].features`).
pub fn features(field: &str, value: &Value) -> Result<SparseFeatures, EngineError> {
    features_at(|| field.to_string(), value)
}

/// [`features`] with the field name built only when there is an error (hot path).
pub fn features_at(
    field: impl Fn() -> String,
    value: &Value,
) -> Result<SparseFeatures, EngineError> {
    let mut out = SparseFeatures::default();
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                if let Err(e) = push(&mut out, "", k, v, 0) {
                    return Err(prefix(e, &field()));
                }
            }
        }
        _ => {
            return Err(EngineError::invalid(
                &field(),
                "must be a JSON object of features",
            ))
        }
    }
    Ok(out)
}

/// Errors inside are built with an empty field prefix; put the real one in front.
fn prefix(e: EngineError, field: &str) -> EngineError {
    match e {
        EngineError::Invalid {
            field: inner,
            message,
        } => EngineError::Invalid {
            field: format!("{field}{inner}"),
            message,
        },
        other => other,
    }
}

/// The path of `key` below the features object (`.a.b.key`), for errors.
fn path(namespace: &str, key: &str) -> String {
    if namespace.is_empty() {
        format!(".{key}")
    } else {
        format!(".{namespace}.{key}")
    }
}

/// How many levels deep namespaces may nest: deep enough for real payloads (Personalizer
/// accepted contexts nested past 4 levels), while the bound keeps the recursive walk's stack
/// small. serde_json's parser refuses 128 levels before this walk ever sees them.
pub const MAX_DEPTH: usize = 32;

fn push(
    out: &mut SparseFeatures,
    namespace: &str,
    key: &str,
    value: &Value,
    depth: usize,
) -> Result<(), EngineError> {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_categorical(namespace, key, if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => out.push_numeric(namespace, key, f),
            _ => {
                return Err(EngineError::invalid_owned(
                    &path(namespace, key),
                    "must be a finite number".into(),
                ))
            }
        },
        Value::String(s) => out.push_categorical(namespace, key, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push_categorical(namespace, key, s),
                    Value::Number(n) => match n.as_f64() {
                        Some(f) if f.is_finite() => {
                            out.push_numeric(namespace, &format!("{key}[{i}]"), f)
                        }
                        _ => {
                            return Err(EngineError::invalid_owned(
                                &format!("{}[{i}]", path(namespace, key)),
                                "must be a finite number".into(),
                            ))
                        }
                    },
                    Value::Bool(b) => {
                        out.push_categorical(namespace, key, if *b { "true" } else { "false" })
                    }
                    _ => {
                        return Err(EngineError::invalid_owned(
                            &format!("{}[{i}]", path(namespace, key)),
                            "arrays may hold strings, numbers or booleans only".into(),
                        ))
                    }
                }
            }
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(EngineError::invalid_owned(
                    &path(namespace, key),
                    format!("namespaces nest at most {MAX_DEPTH} deep"),
                ));
            }
            let ns = if namespace.is_empty() {
                key.to_string()
            } else {
                format!("{namespace}.{key}")
            };
            for (k, v) in map {
                push(out, &ns, k, v, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// A problem found in a features object while parsing it from bytes, reported when the decide
/// reaches featurizing (after the request-wide checks, as the [`features`] walk reports it).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureError {
    /// Below the features object, as [`features`] names it (`.a.b`, `.tags[2]`, or empty for
    /// the object itself).
    pub path: String,
    pub message: String,
}

impl FeatureError {
    /// The 400 for the features object named `field` (`context`, `candidates[3].features`).
    pub fn at(&self, field: &str) -> EngineError {
        EngineError::invalid_owned(&format!("{field}{}", self.path), self.message.clone())
    }
}

/// What the streaming walk found in one features object besides its entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BagStatus {
    /// The first problem, in document order.
    pub error: Option<FeatureError>,
    /// An object repeats a key. A `Value` keeps the last one, so such a bag is featurized from
    /// its `Value` (the request parsed again) to give the same features as ever.
    pub repeated_key: bool,
}

/// Buffers of the streaming walk, reused across the features objects of a request.
#[derive(Debug, Default)]
pub struct WalkBuffers {
    /// The namespace being walked, dotted.
    ns: String,
    /// Scratch for numeric array entries' names (`key[i]`).
    name: String,
    /// Name hashes of the keys of every object being walked, innermost last.
    keys: Vec<u64>,
    /// Where a syntax error was met, innermost first (see [`ErrorPath`]).
    pub path: ErrorPath,
}

/// The JSON path of a parse error, collected innermost first as the error travels out.
#[derive(Debug, Default)]
pub struct ErrorPath(Vec<Segment>);

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl ErrorPath {
    pub fn key(&mut self, key: &str) {
        self.0.push(Segment::Key(key.to_string()));
    }

    pub fn index(&mut self, i: usize) {
        self.0.push(Segment::Index(i));
    }

    /// `candidates[2].features.a`, or `body` at the top.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in self.0.iter().rev() {
            match s {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            "body".to_string()
        } else {
            out
        }
    }
}

/// Parses one features object (or `null`) from a JSON deserializer straight into hashed
/// entries, the same entries [`features`] would push for its `Value` (order aside: objects are
/// walked in document order, a `Value` in key order; the featurizer's vectors do not depend on
/// the order). Problems of the features themselves (not an object, nesting, array contents) go
/// to `status` and the rest of the object is skipped; only a JSON syntax error fails.
pub struct FeaturesSeed<'a> {
    pub out: &'a mut Vec<(u64, u64, f64)>,
    pub status: &'a mut BagStatus,
    pub buffers: &'a mut WalkBuffers,
}

impl<'de> DeserializeSeed<'de> for FeaturesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.buffers.ns.clear();
        d.deserialize_any(RootVisitor(self))
    }
}

struct RootVisitor<'a>(FeaturesSeed<'a>);

impl RootVisitor<'_> {
    fn not_an_object(self) {
        self.0.status.error = Some(FeatureError {
            path: String::new(),
            message: "must be a JSON object of features".into(),
        });
    }
}

impl<'de> Visitor<'de> for RootVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of features")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let s = self.0;
        let mut walk = Walk {
            out: s.out,
            status: s.status,
            buf: s.buffers,
        };
        walk.object(map, 0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        skip_seq(seq, &mut self.0.buffers.path)?;
        self.not_an_object();
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
}

/// The state of one features object's walk.
struct Walk<'a> {
    out: &'a mut Vec<(u64, u64, f64)>,
    status: &'a mut BagStatus,
    buf: &'a mut WalkBuffers,
}

/// A JSON object key, borrowed from the body unless it holds escapes.
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl Walk<'_> {
    fn failed(&self) -> bool {
        self.status.error.is_some()
    }

    fn fail(&mut self, path: String, message: String) {
        if self.status.error.is_none() {
            self.status.error = Some(FeatureError { path, message });
        }
    }

    /// The path of `key` in the current namespace (`.a.b.key`), as [`path`] names it.
    fn path_of(&self, key: &str) -> String {
        path(&self.buf.ns, key)
    }

    /// The entries of an object whose namespace is `self.buf.ns`, `depth` levels below the
    /// features object.
    fn object<'de, A: MapAccess<'de>>(&mut self, mut map: A, depth: usize) -> Result<(), A::Error> {
        let ns_hash = namespace_hash(&self.buf.ns);
        let frame = self.buf.keys.len();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if self.failed() {
                let mut entered = false;
                let r = map.next_value_seed(Tracked {
                    seed: Skip(&mut self.buf.path),
                    entered: &mut entered,
                });
                if let Err(e) = r {
                    if entered {
                        self.buf.path.key(&key);
                    }
                    return Err(e);
                }
                continue;
            }
            let name = name_hash(&key);
            self.buf.keys.push(name);
            let mut entered = false;
            let r = map.next_value_seed(Tracked {
                seed: ValueSeed {
                    walk: self,
                    key: &key,
                    name,
                    ns_hash,
                    depth,
                },
                entered: &mut entered,
            });
            if let Err(e) = r {
                if entered {
                    self.buf.path.key(&key);
                }
                return Err(e);
            }
        }
        if repeats(&self.buf.keys[frame..]) {
            self.status.repeated_key = true;
        }
        self.buf.keys.truncate(frame);
        Ok(())
    }

    fn number(&mut self, ns_hash: u64, name: u64, key: &str, f: f64) {
        if f.is_finite() {
            self.out_numeric(ns_hash, name, f);
        } else {
            let path = self.path_of(key);
            self.fail(path, "must be a finite number".into());
        }
    }

    fn out_numeric(&mut self, ns_hash: u64, name: u64, f: f64) {
        if f != 0.0 {
            self.out.push((ns_hash, name, f));
        }
    }

    fn categorical(&mut self, ns_hash: u64, name: u64, value: &str) {
        self.out.push((ns_hash, categorical_hash(name, value), 1.0));
    }
}

/// Whether a list of key hashes holds one twice (a hash collision between two different keys
/// also counts: it only sends the bag down the exact `Value` path).
fn repeats(keys: &[u64]) -> bool {
    match keys.len() {
        0 | 1 => false,
        n if n <= 16 => (1..n).any(|i| keys[..i].contains(&keys[i])),
        _ => {
            let mut sorted = keys.to_vec();
            sorted.sort_unstable();
            sorted.windows(2).any(|w| w[0] == w[1])
        }
    }
}

/// The value of one key of a features object.
struct ValueSeed<'w, 'a, 'k> {
    walk: &'w mut Walk<'a>,
    key: &'k str,
    name: u64,
    ns_hash: u64,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a feature value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.walk
            .categorical(self.ns_hash, self.name, if b { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.walk
            .number(self.ns_hash, self.name, self.key, v as f64);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.walk
            .number(self.ns_hash, self.name, self.key, v as f64);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.walk.number(self.ns_hash, self.name, self.key, v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.walk.categorical(self.ns_hash, self.name, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let mut entered = false;
            let skip = self.walk.failed();
            let item = seq.next_element_seed(Tracked {
                seed: ItemSeed {
                    path: &mut self.walk.buf.path,
                    skip,
                },
                entered: &mut entered,
            });
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    if entered {
                        self.walk.buf.path.index(i);
                    }
                    return Err(e);
                }
            };
            let Some(item) = item else { break };
            match item {
                Item::Skip => {}
                Item::Str(s) => self.walk.categorical(self.ns_hash, self.name, &s),
                Item::Bool(b) => {
                    self.walk
                        .categorical(self.ns_hash, self.name, if b { "true" } else { "false" })
                }
                Item::Number(f) => {
                    if f.is_finite() {
                        let buf = &mut self.walk.buf.name;
                        buf.clear();
                        let _ = write!(buf, "{}[{i}]", self.key);
                        let name = name_hash(buf);
                        self.walk.out_numeric(self.ns_hash, name, f);
                    } else {
                        let path = format!("{}[{i}]", self.walk.path_of(self.key));
                        self.walk.fail(path, "must be a finite number".into());
                    }
                }
                Item::Other => {
                    let path = format!("{}[{i}]", self.walk.path_of(self.key));
                    self.walk.fail(
                        path,
                        "arrays may hold strings, numbers or booleans only".into(),
                    );
                }
            }
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let walk = self.walk;
        if self.depth >= MAX_DEPTH {
            let path = walk.path_of(self.key);
            walk.fail(path, format!("namespaces nest at most {MAX_DEPTH} deep"));
            return skip_map(map, &mut walk.buf.path);
        }
        let len = walk.buf.ns.len();
        if len > 0 {
            walk.buf.ns.push('.');
        }
        walk.buf.ns.push_str(self.key);
        let r = walk.object(map, self.depth + 1);
        walk.buf.ns.truncate(len);
        r
    }
}

/// One element of an array inside features.
enum Item<'de> {
    Str(Cow<'de, str>),
    Number(f64),
    Bool(bool),
    /// `null`, an array or an object: refused.
    Other,
    /// Not looked at (the bag already failed).
    Skip,
}

/// One element of an array inside features; `skip` only consumes it.
struct ItemSeed<'a> {
    path: &'a mut ErrorPath,
    skip: bool,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = Item<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item<'de>, D::Error> {
        if self.skip {
            Skip(self.path).deserialize(d)?;
            return Ok(Item::Skip);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Item<'de>, E> {
        Ok(Item::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item<'de>, E> {
        Ok(Item::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item<'de>, E> {
        Ok(Item::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Item<'de>, E> {
        Ok(Item::Number(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Owned(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item<'de>, A::Error> {
        skip_seq(seq, self.path)?;
        Ok(Item::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item<'de>, A::Error> {
        skip_map(map, self.path)?;
        Ok(Item::Other)
    }
}

/// A seed that notes whether the deserializer reached it: an error before it is the
/// container's (named without the element's index, as `serde_path_to_error` names it).
pub struct Tracked<'f, S> {
    pub seed: S,
    pub entered: &'f mut bool,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Tracked<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        *self.entered = true;
        self.seed.deserialize(d)
    }
}

/// Skips any value, naming the path of a syntax error inside it. Numbers are parsed (not only
/// scanned), so a skipped part refuses what a `Value` parse refuses (`1e999`).
pub struct Skip<'a>(pub &'a mut ErrorPath);

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        skip_seq(seq, self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        skip_map(map, self.0)
    }
}

/// Consumes the rest of an object ([`Skip`]).
pub fn skip_map<'de, A: MapAccess<'de>>(mut map: A, path: &mut ErrorPath) -> Result<(), A::Error> {
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let mut entered = false;
        let r = map.next_value_seed(Tracked {
            seed: Skip(path),
            entered: &mut entered,
        });
        if let Err(e) = r {
            if entered {
                path.key(&key);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Consumes the rest of an array ([`Skip`]).
pub fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A, path: &mut ErrorPath) -> Result<(), A::Error> {
    let mut i = 0;
    loop {
        let mut entered = false;
        let r = seq.next_element_seed(Tracked {
            seed: Skip(path),
            entered: &mut entered,
        });
        match r {
            Ok(Some(())) => i += 1,
            Ok(None) => return Ok(()),
            Err(e) => {
                if entered {
                    path.index(i);
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_and_types() {
        let f = features(
            "context",
            &json!({"device": "mobile", "price": 9.5, "shopper": {"segment": "a", "tags": ["x", "y"]}, "vip": true}),
        )
        .unwrap();
        assert_eq!(f.entries.len(), 6);
    }

    #[test]
    fn rejects_non_objects_and_deep_nesting() {
        let e = features("candidates[0].features", &json!([1, 2])).unwrap_err();
        assert_eq!(e.field(), Some("candidates[0].features"));
        // Five levels, as Personalizer callers send, are namespaces like any other.
        let five = json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}});
        assert_eq!(features("context", &five).unwrap().entries.len(), 1);
        // MAX_DEPTH namespace levels below the features object pass; one more is refused,
        // naming the whole path.
        let nested = |levels: usize| {
            let mut v = json!(1);
            for _ in 0..=levels {
                v = json!({ "n": v });
            }
            v
        };
        assert_eq!(
            features("context", &nested(MAX_DEPTH))
                .unwrap()
                .entries
                .len(),
            1
        );
        let e = features("context", &nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("nest"), "{e}");
        let expected = format!("context{}", ".n".repeat(MAX_DEPTH + 1));
        assert_eq!(e.field(), Some(expected.as_str()));
        let e = features("context", &json!({"a": [{"x": 1}]})).unwrap_err();
        assert_eq!(e.field(), Some("context.a[0]"));
    }
}
