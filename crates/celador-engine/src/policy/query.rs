//! The query string as rules read it: `request.query` and
//! `request.query_all`, each decoded on first read.
//!
//! Data flow: [`super::activation`] holds one [`Query`] per request, over
//! the raw query string of the [`crate::Attributes`]; nothing is
//! decoded unless a rule reads it.
//!
//! A name given more than once (`?debug=false&debug=true`) is ambiguous:
//! frameworks take the first value, the last, or all of them. Reading such a
//! name through `request.query` is an evaluation error, so a deny rule on
//! it matches and an allow rule does not (the engine's rule-error
//! semantics); `request.query_all` gives every value, in order, for rules
//! that handle repetition themselves. A query without repetition is a plain
//! map, exactly as before.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use cel::ExecutionError;
use cel::common::traits::{Container, Indexer, Iterable, Sizer, Zeroer};
use cel::common::types::{CelList, CelMap, CelMapKey, CelString, Type};
use cel::common::value::{CowVal, Val};

use crate::percent;

/// The query of one request, decoded lazily.
#[derive(Debug, Clone)]
pub(super) struct Query<'a> {
    raw: &'a str,
    first: OnceLock<Single<'a>>,
    all: OnceLock<CelMap<'a>>,
}

/// `request.query`: a plain map, or one that refuses repeated names.
#[derive(Debug, Clone)]
enum Single<'a> {
    Plain(CelMap<'a>),
    Repeated(Repeated<'a>),
}

impl<'a> Query<'a> {
    /// The query `raw` (after `?`, not decoded).
    pub(super) fn new(raw: &'a str) -> Self {
        Query {
            raw,
            first: OnceLock::new(),
            all: OnceLock::new(),
        }
    }

    /// `request.query`.
    pub(super) fn single(&self) -> &(dyn Val + 'a) {
        match self.first.get_or_init(|| single(self.raw)) {
            Single::Plain(map) => map,
            Single::Repeated(map) => map,
        }
    }

    /// `request.query_all`.
    pub(super) fn all(&self) -> &CelMap<'a> {
        self.all.get_or_init(|| {
            let mut values: HashMap<CelMapKey<'a>, Vec<Box<dyn Val + 'a>>> = HashMap::new();
            for (name, value) in pairs(self.raw) {
                values
                    .entry(key(name))
                    .or_default()
                    .push(Box::new(string(value)));
            }
            let entries: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = values
                .into_iter()
                .map(|(k, v)| (k, Box::new(CelList::from(v)) as Box<dyn Val + 'a>))
                .collect();
            CelMap::from(entries)
        })
    }
}

/// The decoded name and value of each parameter, in order.
fn pairs(raw: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    raw.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (
            percent::decode_lossy(k, true),
            percent::decode_lossy(v, true),
        )
    })
}

fn key(name: Cow<'_, str>) -> CelMapKey<'_> {
    match name {
        Cow::Borrowed(k) => CelMapKey::from(k),
        Cow::Owned(k) => CelMapKey::from(k),
    }
}

fn string(value: Cow<'_, str>) -> CelString<'_> {
    match value {
        Cow::Borrowed(v) => CelString::from(v),
        Cow::Owned(v) => CelString::from(v),
    }
}

fn single(raw: &str) -> Single<'_> {
    let mut entries: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = HashMap::new();
    let mut repeated: HashMap<String, usize> = HashMap::new();
    for (name, value) in pairs(raw) {
        match entries.entry(key(name)) {
            std::collections::hash_map::Entry::Occupied(entry) => {
                let name = entry
                    .key()
                    .inner()
                    .downcast_ref::<CelString>()
                    .map(|s| s.inner().to_owned())
                    .unwrap_or_default();
                *repeated.entry(name).or_insert(1) += 1;
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Box::new(string(value)));
            }
        }
    }
    let first = CelMap::from(entries);
    if repeated.is_empty() {
        Single::Plain(first)
    } else {
        Single::Repeated(Repeated { first, repeated })
    }
}

/// `request.query` when a name is repeated: a map whose repeated names
/// cannot be read. Presence (`in`, `has` on another name), size and
/// iteration over names work as on any map.
#[derive(Debug, Clone)]
struct Repeated<'a> {
    /// Every name, with its first value (never handed out for a repeated
    /// name).
    first: CelMap<'a>,
    /// Repeated names, with how often each was given.
    repeated: HashMap<String, usize>,
}

impl Repeated<'_> {
    /// The error for reading `name`, if it is repeated.
    fn refusal(&self, name: &dyn Val) -> Option<ExecutionError> {
        let name = name.downcast_ref::<CelString>()?.inner();
        let times = self.repeated.get(name)?;
        Some(ExecutionError::function_error(
            "request.query",
            format!(
                "the query parameter {name:?} is given {times} times, so its value is ambiguous (servers take the first, the last or all); read request.query_all[{name:?}]"
            ),
        ))
    }
}

impl Val for Repeated<'_> {
    fn get_type(&self) -> &Type {
        self.first.get_type()
    }

    fn cel_type() -> &'static Type
    where
        Self: Sized,
    {
        <CelMap as Val>::cel_type()
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(&self.first)
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_iterable<'b, 'v>(&'b self) -> Option<&'b (dyn Iterable + 'v)>
    where
        Self: 'v,
    {
        Some(&self.first)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(&self.first)
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        Some(&self.first)
    }

    // Equality keeps the default, `false`: comparing the whole map would
    // read the repeated names' values.

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(self.clone())
    }
}

impl<'a> Indexer for Repeated<'a> {
    fn get<'b, 'v>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        match self.refusal(key) {
            Some(error) => Err(error),
            None => self.first.get(key),
        }
    }

    fn steal<'v>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(key).map(CowVal::into_owned)
    }
}

#[cfg(test)]
mod tests;
