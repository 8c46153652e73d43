//! Typed decoding of GSE replies: the envelope, then `data` per API.
//!
//! Pure functions from bytes to observations, so they are unit-tested and fuzzed
//! without a network. Unknown fields are ignored; a missing `data`, a `data` of
//! the wrong type, or an item without its key field is an error, never "all
//! offline".

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer};
use serde_json::value::RawValue;

use super::{Info, Reply, Status};
use crate::model::Key as AgentKey;
use crate::upstream::GseError;

mod scan;

/// GSE 2.0: none of the asked ids is known.
pub const V2_NONE_FOUND: i64 = 1011003;
/// ESB rate-limit code.
pub(crate) const ESB_RATE_LIMITED: i64 = 1306429;
/// Gateway rate and concurrency limits: 16429xx (1642901-1642904 documented).
pub(crate) const GATEWAY_RATE_LIMITED_FIRST: i64 = 1642900;
/// Last code of the gateway's rate-limit range.
pub(crate) const GATEWAY_RATE_LIMITED_LAST: i64 = 1642999;

#[derive(Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
struct Envelope<D> {
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    code: Option<i64>,
    #[serde(default)]
    result: Option<bool>,
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<D>,
}

impl<D> Envelope<D> {
    /// Whether the envelope says the call succeeded (`code` 0, else
    /// `result` true); `None` when it has neither.
    fn succeeded(&self) -> Option<bool> {
        match (self.code, self.result) {
            (Some(code), _) => Some(code == 0),
            (None, Some(result)) => Some(result),
            (None, None) => None,
        }
    }
}

/// The outcome of reading an envelope: its `data` on success.
enum Body<'a> {
    Data(&'a RawValue),
    NoneFound,
}

fn open_envelope(body: &[u8]) -> Result<Body<'_>, GseError> {
    let Obj(env): Obj<Envelope<&RawValue>> =
        serde_json::from_slice(body).map_err(|e| GseError::Decode(e.to_string()))?;
    let Some(ok) = env.succeeded() else {
        return Err(GseError::Decode("reply has neither code nor result".into()));
    };
    let code = env.code.unwrap_or(-1);
    if !ok {
        return error_envelope(code, env.message);
    }
    match env.data {
        Some(data) if data.get() != "null" => Ok(Body::Data(data)),
        _ => Err(GseError::Decode("reply has no data".into())),
    }
}

/// Reads a reply's `data` with the seed `seed` makes. A successful reply is
/// read in one pass; anything else (an error envelope, no data, data of the
/// wrong shape) is read again the careful way, envelope first, for the
/// right error, with a new seed (the first may have taken some items).
fn read_data<'a, S: DeserializeSeed<'a>>(
    body: &'a [u8],
    what: &str,
    seed: impl Fn() -> S,
) -> Result<Option<S::Value>, GseError> {
    if let Ok(env) = with_seed(body, EnvelopeSeed(seed()))
        && env.succeeded() == Some(true)
        && let Some(data) = env.data
    {
        return Ok(Some(data));
    }
    match open_envelope(body)? {
        Body::NoneFound => Ok(None),
        Body::Data(data) => with_seed(data.get().as_bytes(), seed())
            .map(Some)
            .map_err(|e| GseError::Decode(format!("{what}: {e}"))),
    }
}

/// Reads a whole body with `seed`. A body that is valid UTF-8 throughout
/// (every GSE reply seen) is checked once, not string by string as its
/// fields are read: a third of the time serde_json spent on a reply's
/// strings.
fn with_seed<'a, S: DeserializeSeed<'a>>(body: &'a [u8], seed: S) -> serde_json::Result<S::Value> {
    fn run<'a, R: serde_json::de::Read<'a>, S: DeserializeSeed<'a>>(
        mut reader: serde_json::Deserializer<R>,
        seed: S,
    ) -> serde_json::Result<S::Value> {
        let value = seed.deserialize(&mut reader)?;
        reader.end()?;
        Ok(value)
    }
    match std::str::from_utf8(body) {
        Ok(text) => run(serde_json::Deserializer::from_str(text), seed),
        Err(_) => run(serde_json::Deserializer::from_slice(body), seed),
    }
}

/// An envelope read in one pass, as `Envelope` reads one (a JSON object,
/// each member at most once, unknown ones ignored), its `data` with the
/// seed: which files each item as it is read, so that a reply's items are
/// never all held at once.
struct EnvelopeSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for EnvelopeSeed<S> {
    type Value = Envelope<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> de::Visitor<'de> for EnvelopeSeed<S> {
    type Value = Envelope<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        fn once<V, E: de::Error>(
            slot: &mut Option<V>,
            name: &'static str,
            value: V,
        ) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let mut seed = Some(self.0);
        let (mut code, mut result, mut message, mut data) = (None, None, None, None);
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "code" => once(&mut code, "code", map.next_value::<Code>()?.0)?,
                "result" => once(&mut result, "result", map.next_value::<Option<bool>>()?)?,
                // Read, not skipped: a skipped string's bytes are not
                // checked to be UTF-8, and the reply is JSON only if they are
                // (as the envelope read whole has always refused it).
                "message" => once(&mut message, "message", {
                    map.next_value::<serde_json::Value>()?;
                })?,
                "data" => {
                    let seed = seed
                        .take()
                        .ok_or_else(|| de::Error::duplicate_field("data"))?;
                    data = map.next_value_seed(Nullable(seed))?;
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Envelope {
            code: code.flatten(),
            result: result.flatten(),
            message: None,
            data,
        })
    }
}

/// An envelope's `code`, read as `Envelope` reads it.
#[derive(Deserialize)]
struct Code(#[serde(deserialize_with = "lenient_opt_i64")] Option<i64>);

/// `null` as `None`, anything else read by the seed (as `Option` reads).
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> de::Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or a value")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

fn error_envelope<'a>(code: i64, message: Option<serde_json::Value>) -> Result<Body<'a>, GseError> {
    let message = match message {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    match code {
        V2_NONE_FOUND => Ok(Body::NoneFound),
        ESB_RATE_LIMITED | GATEWAY_RATE_LIMITED_FIRST..=GATEWAY_RATE_LIMITED_LAST => {
            Err(GseError::RateLimited {
                code,
                retry_after: None,
            })
        }
        _ => Err(GseError::Api { code, message }),
    }
}

/// Reads the code and message of an error body, if it is an envelope at all.
pub(crate) fn error_code(body: &[u8]) -> (Option<i64>, String) {
    match serde_json::from_slice::<Obj<Envelope<serde::de::IgnoredAny>>>(body) {
        Ok(Obj(env)) => {
            let message = match env.message {
                Some(serde_json::Value::String(s)) => s,
                _ => String::new(),
            };
            (env.code, message)
        }
        Err(_) => (None, String::new()),
    }
}

/// A value that must be a JSON object: serde's derive also reads a struct
/// from an array of its fields in order, so `["a1", 2]` would pass for
/// `{"bk_agent_id": "a1", "status_code": 2}`.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visit(PhantomData)).map(Obj)
    }
}

/// Files each entry of an object (ESB's `data` maps `cloud:ip` to an item)
/// under the asked key it answers, as it is read.
struct FileEntries<'k, V, T> {
    answers: Answers<'k, T>,
    answer: fn(&V) -> T,
}

impl<'de, 'k, V: Deserialize<'de>, T> DeserializeSeed<'de> for FileEntries<'k, V, T> {
    type Value = Answers<'k, T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'k, V: Deserialize<'de>, T> de::Visitor<'de> for FileEntries<'k, V, T> {
    type Value = Answers<'k, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: de::MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some((Key(key), Obj(item))) = map.next_entry::<Key, Obj<V>>()? {
            self.answers.put(&key, (self.answer)(&item));
        }
        Ok(self.answers)
    }
}

/// Files each item of a list (GSE 2.0's `data`) under the asked key it
/// answers, as it is read.
struct FileItems<'k, I, T> {
    answers: Answers<'k, T>,
    answer: Answer<I, T>,
}

impl<'de, 'k, I: Deserialize<'de>, T> DeserializeSeed<'de> for FileItems<'k, I, T> {
    type Value = Answers<'k, T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, 'k, I: Deserialize<'de>, T> de::Visitor<'de> for FileItems<'k, I, T> {
    type Value = Answers<'k, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        while let Some(Obj(item)) = seq.next_element::<Obj<I>>()? {
            self.answers.file(&item, self.answer);
        }
        Ok(self.answers)
    }
}

/// An object key, borrowed where it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Loose::deserialize(d)? {
            Loose::Text(text) => Ok(Key(text)),
            _ => Err(de::Error::custom("expected a string key")),
        }
    }
}

/// The answers of a batch in the order its keys were asked. GSE answers in
/// that order in every reply seen, so an item is first tried against the
/// next asked key; an index of the asked keys is built only for a reply in
/// another order.
struct Answers<'k, T> {
    asked: &'k [AgentKey],
    next: usize,
    index: Option<FxHashMap<AgentKey, usize>>,
    got: Vec<Option<T>>,
    /// Items filed under an asked key, and items for keys not asked.
    filed: usize,
    stray: usize,
}

impl<'k, T> Answers<'k, T> {
    fn new(asked: &'k [AgentKey]) -> Self {
        Answers {
            asked,
            next: 0,
            index: None,
            got: std::iter::repeat_with(|| None).take(asked.len()).collect(),
            filed: 0,
            stray: 0,
        }
    }

    /// Keeps `value` as the answer for `key`; a key not asked is counted
    /// and otherwise ignored, and a key answered twice keeps its last answer.
    fn put(&mut self, key: &str, value: T) {
        let at = match self.asked.get(self.next) {
            Some(next) if next.is(key) => Some(self.next),
            _ => {
                let asked = self.asked;
                let index = self.index.get_or_insert_with(|| {
                    asked
                        .iter()
                        .enumerate()
                        .map(|(i, k)| (k.clone(), i))
                        .collect()
                });
                index.get(&AgentKey::new(key)).copied()
            }
        };
        match at {
            Some(at) => {
                self.next = at + 1;
                self.got[at] = Some(value);
                self.filed += 1;
            }
            None => self.stray += 1,
        }
    }

    /// Files a GSE 2.0 item under the asked key it answers.
    fn file<I>(&mut self, item: &I, answer: Answer<I, T>) {
        let (key, value) = answer(item);
        self.put(key, value);
    }

    /// The reply, unless it answers for none of the agents asked while
    /// naming others: GSE echoes the ids it is asked for, so such a reply
    /// is not its answer to this request (a cache that ignores the request
    /// body gives one) and must not turn every agent asked "not found".
    fn reply(self, what: &str) -> Result<Reply<T>, GseError> {
        if self.filed == 0 && self.stray > 0 {
            return Err(GseError::Decode(format!(
                "{what}: the reply names {} agents, none of those asked",
                self.stray
            )));
        }
        Ok(Reply {
            answers: self.got,
            none_found: false,
        })
    }
}

#[derive(Deserialize)]
struct V1StatusItem {
    #[serde(deserialize_with = "lenient_i64")]
    bk_agent_alive: i64,
}

// Strings borrow from the reply where they have no escapes, so an item costs
// no allocation for its key and one for each cleaned value kept.

#[derive(Deserialize)]
struct V1InfoItem<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_string")]
    version: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "lenient_string")]
    parent_ip: Cow<'a, str>,
}

#[derive(Deserialize)]
struct V2StateItem<'a> {
    #[serde(borrow)]
    bk_agent_id: Cow<'a, str>,
    #[serde(deserialize_with = "lenient_i64")]
    status_code: i64,
    #[serde(borrow, default, deserialize_with = "lenient_string")]
    version: Cow<'a, str>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    report_time: Option<f64>,
}

#[derive(Deserialize)]
struct V2InfoItem<'a> {
    #[serde(borrow)]
    bk_agent_id: Cow<'a, str>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    bk_cloud_id: Option<i64>,
    #[serde(borrow, default, deserialize_with = "lenient_string")]
    bk_host_ip: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "lenient_string")]
    version: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "lenient_string")]
    parent_ip: Cow<'a, str>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    report_time: Option<f64>,
}

/// Decodes a reply whose `data` the seed `file` makes reads, filing each
/// item under the asked key it answers as it is read.
fn decode<'a, 'k, S, T>(
    body: &'a [u8],
    what: &str,
    asked: &'k [AgentKey],
    file: impl Fn(Answers<'k, T>) -> S,
) -> Result<Reply<T>, GseError>
where
    S: DeserializeSeed<'a, Value = Answers<'k, T>>,
{
    match read_data(body, what, || file(Answers::new(asked)))? {
        Some(answers) => answers.reply(what),
        None => Ok(Reply {
            answers: std::iter::repeat_with(|| None).take(asked.len()).collect(),
            none_found: true,
        }),
    }
}

/// Decodes an ESB `get_agent_status` reply: `data` maps `cloud:ip` to status.
pub fn v1_status(body: &[u8], asked: &[AgentKey]) -> Result<Reply<Status>, GseError> {
    decode(body, "get_agent_status data", asked, |answers| {
        FileEntries {
            answers,
            answer: v1_status_of,
        }
    })
}

fn v1_status_of(item: &V1StatusItem) -> Status {
    Status {
        alive: item.bk_agent_alive == 1,
        status_code: None,
        version: None,
        report_time: None,
    }
}

/// Decodes an ESB `get_agent_info` reply: `data` maps `cloud:ip` to info.
pub fn v1_info(body: &[u8], asked: &[AgentKey]) -> Result<Reply<Info>, GseError> {
    decode(body, "get_agent_info data", asked, |answers| FileEntries {
        answers,
        answer: v1_info_of,
    })
}

fn v1_info_of(item: &V1InfoItem) -> Info {
    Info {
        version: clean_version(&item.version),
        parent_ip: clean_ip(&item.parent_ip),
        ..Info::default()
    }
}

/// Decodes a gateway `list_agent_state` reply: `data` lists items by `bk_agent_id`.
pub fn v2_state(body: &[u8], asked: &[AgentKey]) -> Result<Reply<Status>, GseError> {
    v2(body, "list_agent_state data", asked, V2StateItem::answer)
}

/// Decodes a gateway `list_agent_info` reply.
pub fn v2_info(body: &[u8], asked: &[AgentKey]) -> Result<Reply<Info>, GseError> {
    v2(body, "list_agent_info data", asked, V2InfoItem::answer)
}

/// An item's agent id and what it says of that agent.
type Answer<I, T> = fn(&I) -> (&str, T);

/// Decodes a GSE 2.0 reply: one of the common shape is read by [`scan`],
/// any other by serde ([`v2_serde`]).
fn v2<'a, I, T>(
    body: &'a [u8],
    what: &str,
    asked: &[AgentKey],
    answer: Answer<I, T>,
) -> Result<Reply<T>, GseError>
where
    I: scan::Item<'a> + Deserialize<'a>,
{
    let mut answers = Answers::new(asked);
    match scan::read::<I>(body, |item| answers.file(&item, answer)) {
        Some(()) => answers.reply(what),
        None => v2_serde(body, what, asked, answer),
    }
}

/// Decodes a GSE 2.0 reply with serde.
fn v2_serde<'a, I, T>(
    body: &'a [u8],
    what: &str,
    asked: &[AgentKey],
    answer: Answer<I, T>,
) -> Result<Reply<T>, GseError>
where
    I: Deserialize<'a>,
{
    decode(body, what, asked, |answers| FileItems { answers, answer })
}

impl V2StateItem<'_> {
    fn answer(&self) -> (&str, Status) {
        let status = Status {
            alive: self.status_code == 2,
            status_code: Some(self.status_code),
            version: Some(clean_version(&self.version)),
            report_time: self.report_time.and_then(unix_seconds),
        };
        (&self.bk_agent_id, status)
    }
}

impl V2InfoItem<'_> {
    fn answer(&self) -> (&str, Info) {
        let info = Info {
            version: clean_version(&self.version),
            parent_ip: clean_ip(&self.parent_ip),
            host_ip: Some(clean_ip(&self.bk_host_ip)).filter(|ip| !ip.is_empty()),
            bk_cloud_id: self.bk_cloud_id,
            report_time: self.report_time.and_then(unix_seconds),
        };
        (&self.bk_agent_id, info)
    }
}

/// Cleans a version string the way bk-nodeman does: trimmed, and emptied
/// unless it is only `[A-Za-z0-9.-]` (at most 64 characters).
pub fn clean_version(raw: &str) -> String {
    let trimmed = raw.trim();
    let ok = trimmed.len() <= 64
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        trimmed.to_string()
    } else {
        String::new()
    }
}

fn clean_ip(raw: &str) -> String {
    let trimmed = raw.trim();
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        trimmed.to_string()
    } else {
        String::new()
    }
}

/// GSE 2.0 `report_time` looks like milliseconds in every sample seen, and
/// seconds in a few; values past year 5138 in seconds are taken as ms.
fn unix_seconds(raw: f64) -> Option<f64> {
    if !raw.is_finite() || raw <= 0.0 {
        return None;
    }
    Some(if raw > 1e11 { raw / 1000.0 } else { raw })
}

/// A scalar GSE may send as a number, a numeric string or a bool.
enum Loose<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(Cow<'a, str>),
}

/// Reads a [`Loose`] directly (an untagged enum would buffer and retry).
struct LooseVisitor;

impl<'de> de::Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number, a string or a bool")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Loose<'de>, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose<'de>, E> {
        Ok(Loose::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose<'de>, E> {
        Ok(i64::try_from(v).map_or(Loose::Float(v as f64), Loose::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose<'de>, E> {
        Ok(Loose::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Loose<'de>, E> {
        Ok(Loose::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<'de>, E> {
        Ok(Loose::Text(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose<'de>, E> {
        Ok(Loose::Text(Cow::Owned(v)))
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose<'de>, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

impl Loose<'_> {
    fn as_f64(&self) -> Option<f64> {
        match self {
            Loose::Int(i) => Some(*i as f64),
            Loose::Float(f) => Some(*f),
            Loose::Bool(b) => Some(f64::from(u8::from(*b))),
            Loose::Text(t) => t.trim().parse().ok(),
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match self {
            Loose::Int(i) => Some(*i),
            Loose::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
            Loose::Bool(b) => Some(i64::from(*b)),
            Loose::Text(t) => t.trim().parse().ok(),
            Loose::Float(_) => None,
        }
    }
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let loose = Loose::deserialize(d)?;
    loose
        .as_i64()
        .ok_or_else(|| de::Error::custom("expected an integer"))
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<Loose>::deserialize(d)?.and_then(|l| l.as_i64()))
}

fn lenient_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Option::<Loose>::deserialize(d)?.and_then(|l| l.as_f64()))
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    Ok(match Option::<Loose>::deserialize(d)? {
        Some(Loose::Text(t)) => t,
        Some(Loose::Int(i)) => Cow::Owned(i.to_string()),
        Some(Loose::Float(f)) => Cow::Owned(f.to_string()),
        Some(Loose::Bool(_)) | None => Cow::Borrowed(""),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A reply's `data` as the decoders read it before they filed items as
    /// they were read: built whole by serde's derive (one pass, else the
    /// envelope first), then filed. The reference the filing seeds are held
    /// to, here and in the scanner's differential tests.
    fn built_then_filed<'a, D: Deserialize<'a>, T>(
        body: &'a [u8],
        what: &str,
        asked: &[AgentKey],
        file: impl FnOnce(D, &mut Answers<'_, T>),
    ) -> Result<Reply<T>, GseError> {
        let data = match serde_json::from_slice::<Obj<Envelope<D>>>(body) {
            Ok(Obj(env)) if env.succeeded() == Some(true) && env.data.is_some() => env.data,
            _ => match open_envelope(body)? {
                Body::NoneFound => None,
                Body::Data(data) => Some(
                    serde_json::from_str(data.get())
                        .map_err(|e| GseError::Decode(format!("{what}: {e}")))?,
                ),
            },
        };
        let Some(data) = data else {
            return Ok(Reply {
                answers: std::iter::repeat_with(|| None).take(asked.len()).collect(),
                none_found: true,
            });
        };
        let mut answers = Answers::new(asked);
        file(data, &mut answers);
        answers.reply(what)
    }

    /// [`built_then_filed`] for a GSE 2.0 reply.
    pub(in crate::upstream::gse::decode) fn v2_built<'a, I: Deserialize<'a>, T>(
        body: &'a [u8],
        what: &str,
        asked: &[AgentKey],
        answer: Answer<I, T>,
    ) -> Result<Reply<T>, GseError> {
        built_then_filed(body, what, asked, |items: Vec<Obj<I>>, answers| {
            for Obj(item) in items {
                answers.file(&item, answer);
            }
        })
    }

    /// [`built_then_filed`] for an ESB reply.
    fn v1_built<'a, V: Deserialize<'a>, T>(
        body: &'a [u8],
        what: &str,
        asked: &[AgentKey],
        answer: fn(&V) -> T,
    ) -> Result<Reply<T>, GseError> {
        built_then_filed(body, what, asked, |Entries(entries), answers| {
            for (key, Obj(item)) in entries {
                answers.put(&key, answer(&item));
            }
        })
    }

    /// An object read whole, as its entries in order (how ESB's `data` was read).
    struct Entries<'a, V>(Vec<(Cow<'a, str>, Obj<V>)>);

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<'de, V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit<V>(PhantomData<V>);
            impl<'de, V: Deserialize<'de>> de::Visitor<'de> for Visit<V> {
                type Value = Entries<'de, V>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut entries = Vec::new();
                    while let Some((Key(key), value)) = map.next_entry()? {
                        entries.push((key, value));
                    }
                    Ok(Entries(entries))
                }
            }
            d.deserialize_map(Visit(PhantomData))
        }
    }

    /// ESB replies, good and bad, decode as they did when built whole.
    #[test]
    fn esb_replies_decode_as_when_built_whole() {
        let asked = keys(&["0:10.0.0.1", "0:10.0.0.2", "0:10.0.0.9"]);
        let bodies = [
            r#"{"result":true,"code":0,"data":{"0:10.0.0.1":{"bk_agent_alive":1,"version":"1.2"},"0:10.0.0.2":{"bk_agent_alive":"0","parent_ip":" 10.0.0.5 "}}}"#,
            r#"{"data":{"0:10.0.0.2":{"bk_agent_alive":1},"0:u":{"bk_agent_alive":1},"0:10.0.0.1":{"bk_agent_alive":0}},"code":0,"result":true}"#,
            r#"{"data":{"0:10.0.0.1":{"bk_agent_alive":1}},"code":1306429,"result":false,"message":"limit"}"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.1":{"bk_agent_alive":1},"0:10.0.0.1":{"bk_agent_alive":0}}}"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.\u0031":{"bk_agent_alive":1,"version":2}}}"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.1":{"bk_agent_alive":true}}}"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.1":{"version":"1"}}}"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.1":[1]}}"#,
            r#"{"code":0,"result":true,"data":[{"0:10.0.0.1":{"bk_agent_alive":1}}]}"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.1":{"bk_agent_alive":1}},"data":{}}"#,
            r#"{"code":0,"code":0,"result":true,"data":{}}"#,
            r#"{"code":"0","result":null,"message":{"a":[1]},"data":{}}"#,
            r#"{"code":0,"result":true,"data":null}"#,
            r#"{"code":0,"result":true}"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.1":{"bk_agent_alive":1}}} x"#,
            r#"{"code":0,"result":true,"data":{"0:10.0.0.1":{"bk_agent_alive":1}"#,
            r#"["code",0]"#,
            "",
        ];
        for body in bodies {
            assert_eq!(
                format!("{:?}", v1_status(body.as_bytes(), &asked)),
                format!(
                    "{:?}",
                    v1_built(
                        body.as_bytes(),
                        "get_agent_status data",
                        &asked,
                        v1_status_of
                    )
                ),
                "status: {body}"
            );
            assert_eq!(
                format!("{:?}", v1_info(body.as_bytes(), &asked)),
                format!(
                    "{:?}",
                    v1_built(body.as_bytes(), "get_agent_info data", &asked, v1_info_of)
                ),
                "info: {body}"
            );
        }
    }

    fn keys(keys: &[&str]) -> Vec<AgentKey> {
        keys.iter().map(|&k| AgentKey::new(k)).collect()
    }

    #[test]
    fn answers_follow_the_asked_order_whatever_the_reply_order() {
        let body = br#"{"code":0,"result":true,"data":[
            {"bk_agent_id":"c","status_code":2},
            {"bk_agent_id":"x","status_code":2},
            {"bk_agent_id":"a","status_code":3},
            {"bk_agent_id":"b","status_code":2}]}"#;
        let reply = v2_state(body, &keys(&["a", "b", "c", "d"])).unwrap();
        let codes: Vec<_> = reply
            .answers
            .iter()
            .map(|a| a.as_ref().and_then(|s| s.status_code))
            .collect();
        assert_eq!(
            codes,
            [Some(3), Some(2), Some(2), None],
            "x was not asked: ignored"
        );
        assert!(!reply.none_found);
    }

    #[test]
    fn an_error_envelope_with_a_list_for_data_is_still_an_error() {
        // The one-pass read must not take a failed reply's data for answers.
        let body = br#"{"code":1640001,"result":false,"message":"no","data":[{"bk_agent_id":"a","status_code":2}]}"#;
        assert!(matches!(
            v2_state(body, &keys(&["a"])),
            Err(GseError::Api { code: 1640001, .. })
        ));
        let body =
            br#"{"data":[{"bk_agent_id":"a","status_code":2}],"result":true,"code":"1306201"}"#;
        assert!(matches!(
            v2_state(body, &keys(&["a"])),
            Err(GseError::Api { code: 1306201, .. })
        ));
    }

    #[test]
    fn v1_status_reads_the_map_and_alive_flag() {
        let body = br#"{"result":true,"code":0,"message":"ok","request_id":"x","data":{
            "0:10.0.0.1":{"ip":"10.0.0.1","bk_cloud_id":0,"bk_agent_alive":1},
            "0:10.0.0.2":{"ip":"10.0.0.2","bk_cloud_id":0,"bk_agent_alive":0,"extra":[1]}}}"#;
        let reply = v1_status(body, &keys(&["0:10.0.0.1", "0:10.0.0.2"])).unwrap();
        assert!(reply.answers[0].as_ref().unwrap().alive);
        assert!(!reply.answers[1].as_ref().unwrap().alive);
        assert_eq!(reply.answers.len(), 2);
    }

    #[test]
    fn esb_error_envelope_is_an_error_not_an_empty_fleet() {
        let body = br#"{"result":false,"code":1306201,"message":"third party","data":null}"#;
        assert!(matches!(
            v1_status(body, &[]),
            Err(GseError::Api { code: 1306201, .. })
        ));
        let body = br#"{"result":false,"code":1306429,"message":"slow down"}"#;
        assert!(matches!(
            v1_status(body, &[]),
            Err(GseError::RateLimited { code: 1306429, .. })
        ));
    }

    #[test]
    fn missing_or_mistyped_data_is_a_decode_error() {
        for body in [
            &br#"{"result":true,"code":0,"message":"ok"}"#[..],
            br#"{"result":true,"code":0,"data":null}"#,
            br#"{"result":true,"code":0,"data":"oops"}"#,
            br#"{"result":true,"code":0,"data":[]}"#,
            br#"{"result":true,"code":0,"data":{"0:1.2.3.4":{"ip":"1.2.3.4"}}}"#,
            br#"<html>502</html>"#,
            br#"{"result":true,"code":0,"data":{"0:1.2.3.4":"#,
        ] {
            assert!(
                matches!(v1_status(body, &[]), Err(GseError::Decode(_))),
                "{body:?}"
            );
        }
        assert!(matches!(
            v2_state(br#"{"code":0,"data":{}}"#, &[]),
            Err(GseError::Decode(_))
        ));
    }

    #[test]
    fn items_and_envelopes_in_array_form_are_decode_errors() {
        // serde's derive reads structs from arrays too: these were decoded as
        // agents (a1 online) before items had to be objects.
        assert!(matches!(
            v2_state(br#"{"code":0,"data":[["a1",2]]}"#, &[]),
            Err(GseError::Decode(_))
        ));
        assert!(matches!(
            v2_info(br#"{"code":0,"data":[["a1"]]}"#, &[]),
            Err(GseError::Decode(_))
        ));
        assert!(matches!(
            v1_status(br#"{"result":true,"data":{"0:10.0.0.1":[1]}}"#, &[]),
            Err(GseError::Decode(_))
        ));
        assert!(matches!(
            v1_info(br#"{"result":true,"data":{"0:10.0.0.1":["1.0"]}}"#, &[]),
            Err(GseError::Decode(_))
        ));
        assert!(matches!(
            v1_status(br#"[0,true,"ok",{"0:10.0.0.1":{"bk_agent_alive":1}}]"#, &[]),
            Err(GseError::Decode(_))
        ));
        assert_eq!(error_code(br#"[1306201,false,"m"]"#), (None, String::new()));
    }

    #[test]
    fn a_reply_that_is_not_utf8_throughout_reads_as_before() {
        // Checked once up front, a body with a stray byte in a field that is
        // not read is read field by field instead, as it always was.
        let body = b"{\"code\":0,\"data\":[{\"bk_agent_id\":\"a\",\"status_code\":2,\"remark\":\"\xff\"}]}";
        let reply = v2_state(body, &keys(&["a"])).unwrap();
        assert_eq!(reply.answers[0].as_ref().unwrap().status_code, Some(2));
        let body = b"{\"code\":0,\"data\":[{\"bk_agent_id\":\"a\xff\",\"status_code\":2}]}";
        assert!(matches!(
            v2_state(body, &keys(&["a"])),
            Err(GseError::Decode(_))
        ));
    }

    #[test]
    fn a_reply_naming_only_agents_not_asked_is_not_an_answer() {
        // As a cache that ignores the request body would answer: another
        // batch's reply. Read as "not found", every agent asked went offline.
        let asked = keys(&["a1", "a2"]);
        let other = br#"{"code":0,"result":true,"data":[
            {"bk_agent_id":"b1","status_code":2},{"bk_agent_id":"b2","status_code":2}]}"#;
        for reply in [
            v2_state(other, &asked).map(|_| ()),
            v2_info(other, &asked).map(|_| ()),
            v2_built(other, "d", &asked, V2StateItem::answer).map(|_| ()),
        ] {
            let Err(GseError::Decode(why)) = reply else {
                panic!("{reply:?}")
            };
            assert!(why.contains("names 2 agents, none of those asked"), "{why}");
        }
        let esb = br#"{"result":true,"code":0,"data":{"0:10.9.9.9":{"bk_agent_alive":1}}}"#;
        let asked = keys(&["0:10.0.0.1"]);
        assert!(matches!(v1_status(esb, &asked), Err(GseError::Decode(_))));
        assert!(matches!(v1_info(esb, &asked), Err(GseError::Decode(_))));
        // One asked agent answered among others: the reply stands, and the
        // agent it left out is not found, as GSE means by leaving one out.
        let mixed = br#"{"code":0,"result":true,"data":[
            {"bk_agent_id":"b1","status_code":2},{"bk_agent_id":"a2","status_code":2}]}"#;
        let reply = v2_state(mixed, &keys(&["a1", "a2"])).unwrap();
        assert!(reply.answers[0].is_none() && reply.answers[1].is_some());
        // Nothing at all is GSE knowing none of them, as before.
        let empty = br#"{"code":0,"result":true,"data":[]}"#;
        assert_eq!(v2_state(empty, &keys(&["a1"])).unwrap().answers, [None]);
    }

    #[test]
    fn v2_none_found_is_not_a_failure() {
        let body = br#"{"code":1011003,"result":false,"message":"agent not found","data":null}"#;
        let reply = v2_state(body, &keys(&["a1", "a2"])).unwrap();
        assert!(reply.none_found);
        assert_eq!(reply.answers, [None, None]);
    }

    #[test]
    fn v2_state_decodes_codes_versions_and_report_time_in_ms() {
        let body = br#"{"code":0,"result":true,"data":[
            {"bk_agent_id":"a1","bk_cloud_id":0,"version":"2.1.3","status_code":2,"report_time":1700000000000},
            {"bk_agent_id":"a2","status_code":"3","version":"2.1.3\n\u001b[0m","report_time":1700000000}]}"#;
        let reply = v2_state(body, &keys(&["a1", "a2"])).unwrap();
        let a1 = reply.answers[0].as_ref().unwrap();
        assert!(a1.alive);
        assert_eq!(a1.report_time, Some(1_700_000_000.0));
        let a2 = reply.answers[1].as_ref().unwrap();
        assert!(!a2.alive);
        assert_eq!(a2.status_code, Some(3));
        assert_eq!(a2.version.as_deref(), Some(""));
        assert_eq!(a2.report_time, Some(1_700_000_000.0));
    }

    #[test]
    fn versions_are_cleaned_like_nodeman() {
        assert_eq!(clean_version(" 2.1.4-beta.12\n"), "2.1.4-beta.12");
        assert_eq!(clean_version("V0.01R060D38"), "V0.01R060D38");
        assert_eq!(clean_version("bash: line 1: x"), "");
        assert_eq!(clean_version(&"9".repeat(65)), "");
    }

    #[test]
    fn gateway_rate_limit_codes_are_rate_limits() {
        let body = br#"{"result":false,"code":1642902,"code_name":"RATE_LIMIT_RESTRICTION","message":"m","data":null}"#;
        assert!(matches!(
            v2_info(body, &[]),
            Err(GseError::RateLimited { code: 1642902, .. })
        ));
    }
}
