//! The fast path for GSE 2.0 replies (issue 19): a strict byte-level reader
//! of the common shape of a successful `list_agent_state` / `list_agent_info`
//! reply, with serde (the rest of [`super`]) the authority on everything else.
//!
//! The common shape is an object whose `code` is 0 (or, without a `code`,
//! whose `result` is true) and whose `data` is an array of objects. An
//! item's wanted members ([`Item::FIELDS`]) are read by their bytes when
//! their value is `null`, a string without escapes (borrowed from the reply)
//! or an integer without sign, fraction or exponent that fits an `i64`;
//! every other member's value is skipped, checked as serde_json checks a
//! value it ignores, string content eight bytes at a time as serde_json
//! scans it. An info item has ~19 members, of which 6 are wanted.
//!
//! Anything else is "not mine" ([`read`] gives `None`) and the caller reads
//! the reply with serde, unchanged, for its own result or its own error: a
//! body that is not UTF-8, anything after the object, an error envelope,
//! `data` that is not an array, an item that is not an object or lacks a
//! required member, a wanted value of any other form (a numeric string, a
//! float, a bool, a string with an escape), a key with an escape (serde
//! would match it unescaped), a wanted member given twice (serde's derive
//! refuses a duplicate field; so does its envelope), a `message` other than
//! `null` or a string without escapes (serde reads it as a JSON value), or a
//! skipped value nested deeper than [`MAX_DEPTH`].
//!
//! Why a claim is sound: what is read here is a subset of what serde reads
//! the same way. The grammar is JSON's, as strict as serde_json (whitespace
//! is only space, tab, CR and LF; no trailing commas; numbers without
//! leading zeros; strings without control characters, with only JSON's
//! escapes), and a wanted value in the forms read here means what the
//! lenient serde functions make of it. Each item is filed as it is read
//! (never all held at once) through the same `Answers` as serde's, so the
//! reply is the same; a reply found not mine part way drops what was filed.

use std::borrow::Cow;

use super::{V2InfoItem, V2StateItem};

/// Deepest nesting of a skipped value read here; serde reads deeper ones.
const MAX_DEPTH: usize = 32;

/// Most wanted members an item type may have.
const MAX_FIELDS: usize = 8;

/// The bytes that end a run of string content: a quote, a backslash and the
/// control characters (which JSON does not allow in a string).
const STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        stops[byte] = true;
        byte += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// Whether a byte of `word` is in [`STOPS`] (as serde_json tests eight
/// bytes at once): a byte is below 0x20, or one is zero once XORed with the
/// quote or the backslash. Never false for a word with such a byte.
fn has_stop(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (below(word, 0x20) | below(quote, 1) | below(backslash, 1)) != 0
}

/// A wanted member's value, in the forms read here.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scalar<'a> {
    Null,
    Text(&'a str),
    Int(i64),
}

/// An item's wanted members, in the order of [`Item::FIELDS`]; `None` where
/// a member is missing.
pub(super) type Fields<'a> = [Option<Scalar<'a>>; MAX_FIELDS];

/// An item type read here.
pub(super) trait Item<'a>: Sized {
    /// The members serde reads (the struct's fields), at most [`MAX_FIELDS`].
    const FIELDS: &'static [&'static str];

    /// The item serde makes of these members, or `None` where serde would
    /// refuse them or read them another way.
    fn build(fields: &Fields<'a>) -> Option<Self>;
}

impl<'a> Item<'a> for V2StateItem<'a> {
    const FIELDS: &'static [&'static str] =
        &["bk_agent_id", "status_code", "version", "report_time"];

    fn build([id, code, version, time, ..]: &Fields<'a>) -> Option<Self> {
        Some(V2StateItem {
            bk_agent_id: text(*id)?,
            status_code: int(*code)?,
            version: string(*version),
            report_time: opt_int(*time)?.map(|t| t as f64),
        })
    }
}

impl<'a> Item<'a> for V2InfoItem<'a> {
    const FIELDS: &'static [&'static str] = &[
        "bk_agent_id",
        "bk_cloud_id",
        "bk_host_ip",
        "version",
        "parent_ip",
        "report_time",
    ];

    fn build([id, cloud, host, version, parent, time, ..]: &Fields<'a>) -> Option<Self> {
        Some(V2InfoItem {
            bk_agent_id: text(*id)?,
            bk_cloud_id: opt_int(*cloud)?,
            bk_host_ip: string(*host),
            version: string(*version),
            parent_ip: string(*parent),
            report_time: opt_int(*time)?.map(|t| t as f64),
        })
    }
}

/// A required string (a borrowed `Cow<str>` in serde): only a string.
fn text(value: Option<Scalar<'_>>) -> Option<Cow<'_, str>> {
    match value? {
        Scalar::Text(text) => Some(Cow::Borrowed(text)),
        Scalar::Null | Scalar::Int(_) => None,
    }
}

/// A required integer (`lenient_i64`).
fn int(value: Option<Scalar<'_>>) -> Option<i64> {
    match value? {
        Scalar::Int(int) => Some(int),
        Scalar::Null | Scalar::Text(_) => None,
    }
}

/// An optional integer (`lenient_opt_i64`): missing or `null` is none; a
/// string is left to serde.
fn opt_int(value: Option<Scalar<'_>>) -> Option<Option<i64>> {
    match value {
        None | Some(Scalar::Null) => Some(None),
        Some(Scalar::Int(int)) => Some(Some(int)),
        Some(Scalar::Text(_)) => None,
    }
}

/// A string with a default (`lenient_string`): missing or `null` is empty,
/// an integer its digits.
fn string(value: Option<Scalar<'_>>) -> Cow<'_, str> {
    match value {
        None | Some(Scalar::Null) => Cow::Borrowed(""),
        Some(Scalar::Text(text)) => Cow::Borrowed(text),
        Some(Scalar::Int(int)) => Cow::Owned(int.to_string()),
    }
}

/// Reads `body` when it is a successful reply of the common shape, handing
/// each item of its `data` to `each` as it is read, so that a reply's items
/// are never all held at once; `None` (not mine) otherwise, possibly after
/// some items were handed over, which the caller then drops.
pub(super) fn read<'a, T: Item<'a>>(body: &'a [u8], mut each: impl FnMut(T)) -> Option<()> {
    let text = std::str::from_utf8(body).ok()?;
    let mut reader = Reader { text, at: 0 };
    reader.ws();
    reader.envelope(&mut each)?;
    reader.ws();
    (reader.at == text.len()).then_some(())
}

/// The envelope's members, each at most once.
struct Envelope {
    code: Option<Option<i64>>,
    result: Option<Option<bool>>,
    message: Option<()>,
    data: Option<()>,
}

impl Envelope {
    /// `code` 0, else `result` true (as serde's `Envelope::succeeded`).
    fn succeeded(&self) -> bool {
        match (self.code.flatten(), self.result.flatten()) {
            (Some(code), _) => code == 0,
            (None, result) => result == Some(true),
        }
    }
}

/// Keeps a member's value; `None` when it was given before.
fn once<V>(slot: &mut Option<V>, value: V) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// A cursor over a reply; every read gives `None` on anything it does not
/// take, and never indexes past the end.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }

    /// Takes `byte`, or nothing.
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Reads an object member by member: `member` reads each value (the
    /// reader at its first byte) knowing its key, `None` for a key with an
    /// escape.
    fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, Option<&'a str>) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let key = self.key()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            if self.eat(b'}').is_some() {
                return Some(());
            }
            self.eat(b',')?;
            self.ws();
        }
    }

    /// Reads an array element by element with `element`.
    fn elements(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            element(self)?;
            self.ws();
            if self.eat(b']').is_some() {
                return Some(());
            }
            self.eat(b',')?;
            self.ws();
        }
    }

    /// The envelope, its items handed to `each`; `None` unless it says the
    /// call succeeded and has a `data`.
    fn envelope<T: Item<'a>>(&mut self, each: &mut impl FnMut(T)) -> Option<()> {
        let mut env = Envelope {
            code: None,
            result: None,
            message: None,
            data: None,
        };
        self.members(|r, key| match key? {
            "code" => once(&mut env.code, r.nullable(Self::int)?),
            "result" => once(&mut env.result, r.nullable(Self::bool)?),
            "message" => once(&mut env.message, r.message()?),
            "data" => once(&mut env.data, r.list(each)?),
            _ => r.skip(0),
        })?;
        if env.succeeded() { env.data } else { None }
    }

    /// `null` as `None`, else what `read` reads.
    fn nullable<V>(&mut self, read: impl FnOnce(&mut Self) -> Option<V>) -> Option<Option<V>> {
        match self.literal(b"null") {
            Some(()) => Some(None),
            None => read(self).map(Some),
        }
    }

    fn bool(&mut self) -> Option<bool> {
        match self.literal(b"true") {
            Some(()) => Some(true),
            None => self.literal(b"false").map(|()| false),
        }
    }

    /// A message serde reads as a JSON value: `null` or a plain string.
    fn message(&mut self) -> Option<()> {
        if self.literal(b"null").is_none() {
            self.eat(b'"')?;
            self.plain_str()?;
        }
        Some(())
    }

    fn list<T: Item<'a>>(&mut self, each: &mut impl FnMut(T)) -> Option<()> {
        self.elements(|r| {
            each(r.item()?);
            Some(())
        })
    }

    fn item<T: Item<'a>>(&mut self) -> Option<T> {
        let mut fields: Fields<'a> = [None; MAX_FIELDS];
        self.members(|r, key| {
            let key = key?;
            match T::FIELDS.iter().position(|&f| f == key) {
                Some(i) => once(fields.get_mut(i)?, r.scalar()?),
                None => r.skip(0),
            }
        })?;
        T::build(&fields)
    }

    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.plain_str().map(Scalar::Text)
            }
            b'n' => self.literal(b"null").map(|()| Scalar::Null),
            _ => self.int().map(Scalar::Int),
        }
    }

    /// The rest of a key (its opening quote taken): `None` when it has an
    /// escape (serde matches it unescaped).
    fn key(&mut self) -> Option<Option<&'a str>> {
        let start = self.at;
        let escaped = self.skip_str()?;
        let key = self.text.get(start..self.at - 1)?;
        Some((!escaped).then_some(key))
    }

    /// The rest of a string without escapes (its opening quote taken).
    fn plain_str(&mut self) -> Option<&'a str> {
        let start = self.at;
        self.plain_run();
        let text = self.text.get(start..self.at)?;
        self.eat(b'"')?;
        Some(text)
    }

    /// The rest of any string (its opening quote taken); says whether it
    /// had an escape.
    fn skip_str(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.plain_run();
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    self.at += 1;
                    self.escape()?;
                    escaped = true;
                }
                _ => return None,
            }
        }
    }

    /// Moves past string content up to a quote, a backslash or a control
    /// character: eight bytes at a time while none of them is one.
    fn plain_run(&mut self) {
        let bytes = self.text.as_bytes();
        let mut at = self.at;
        while let Some(word) = bytes
            .get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        {
            if has_stop(u64::from_le_bytes(word)) {
                break;
            }
            at += 8;
        }
        while let Some(&b) = bytes.get(at) {
            if STOPS[usize::from(b)] {
                break;
            }
            at += 1;
        }
        self.at = at;
    }

    /// An escape after its backslash: `\u` takes four hex digits, whatever
    /// code point they name (as serde_json checks a string it ignores).
    fn escape(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
            b'u' => {
                let hex = self.rest().get(1..5)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                self.at += 5;
            }
            _ => return None,
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.rest().starts_with(word).then(|| self.at += word.len())
    }

    /// Takes the digits here and says how many.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// An integer part: `0` or digits not starting with `0`.
    fn int_part(&mut self) -> Option<()> {
        let leading_zero = self.peek() == Some(b'0');
        match self.digits() {
            1 => Some(()),
            n if n > 1 && !leading_zero => Some(()),
            _ => None,
        }
    }

    /// A wanted integer that fits: no sign, and no fraction or exponent
    /// (what follows it must end the member, or the reply is not mine).
    fn int(&mut self) -> Option<i64> {
        let start = self.at;
        self.int_part()?;
        self.text.get(start..self.at)?.parse().ok()
    }

    /// Any JSON number.
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        self.int_part()?;
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e').or_else(|| self.eat(b'E')).is_some() {
            let _ = self.eat(b'+').or_else(|| self.eat(b'-'));
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    /// Skips any JSON value nested at most [`MAX_DEPTH`] deep.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.members(|r, _| r.skip(depth + 1)),
            b'[' => self.elements(|r| r.skip(depth + 1)),
            b'"' => {
                self.at += 1;
                self.skip_str().map(drop)
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::super::tests::v2_built;
    use super::super::{v2_info, v2_serde, v2_state};
    use super::*;
    use crate::model::Key;
    use crate::upstream::GseError;

    /// Both calls decode `body` as serde alone decodes it, and serde's path
    /// as serde's derive did when it built every item before filing any;
    /// says whether each call's reply was read here.
    fn same(body: &[u8]) -> (bool, bool) {
        let keys: Vec<Key> = ["a1", "a2", "a3", "x"].map(Key::new).to_vec();
        let what = "list_agent_state data";
        let serde = format!("{:?}", v2_serde(body, what, &keys, V2StateItem::answer));
        let text = String::from_utf8_lossy(body);
        assert_eq!(
            format!("{:?}", v2_state(body, &keys)),
            serde,
            "state: {text}"
        );
        let built = v2_built(body, what, &keys, V2StateItem::answer);
        assert_eq!(format!("{built:?}"), serde, "state built: {text}");
        let what = "list_agent_info data";
        let serde = format!("{:?}", v2_serde(body, what, &keys, V2InfoItem::answer));
        assert_eq!(format!("{:?}", v2_info(body, &keys)), serde, "info: {text}");
        let built = v2_built(body, what, &keys, V2InfoItem::answer);
        assert_eq!(format!("{built:?}"), serde, "info built: {text}");
        (
            read(body, |_: V2StateItem| ()).is_some(),
            read(body, |_: V2InfoItem| ()).is_some(),
        )
    }

    /// A success reply whose `message` is not UTF-8 (one byte of it
    /// damaged) is refused by every path, as the envelope read whole
    /// refused it: the streaming envelope skipped the message unchecked and
    /// took the reply (found by the property test below).
    #[test]
    fn a_message_that_is_not_utf8_is_refused_by_every_path() {
        let body = b"\n{\r\n  \"code\"\r\n  :0\n,\"message\"\t :\r\n  \"succes\xd8\"\r\n  , \"data\":[\t \n] }\n";
        assert_eq!(same(body), (false, false));
        let keys = [Key::new("a1")];
        assert!(v2_state(body, &keys).is_err());
    }

    // Value pools: `~` marks where whitespace may go.
    const IDS: &[&str] = &[
        r#""a1""#,
        r#""a2""#,
        r#""a3""#,
        r#""x""#,
        r#""a\u0031""#,
        r#""a1 ""#,
        "1",
        "null",
        r#""""#,
        r#""中""#,
    ];
    const PLAIN_IDS: &[&str] = &[r#""a1""#, r#""a2""#, r#""a3""#, r#""x""#, r#""中""#];
    const INTS: &[&str] = &[
        "2",
        "3",
        "0",
        r#""2""#,
        "2.0",
        "2e0",
        "true",
        "null",
        "-1",
        "-0",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551616",
        "01",
        r#"" 2""#,
        "1700000000000",
        "1.7e12",
        "1e400",
        "[]",
    ];
    const PLAIN_INTS: &[&str] = &["0", "2", "3", "1700000000", "1700000000000"];
    const TEXTS: &[&str] = &[
        r#""2.1.3""#,
        r#""2.1.3\n""#,
        "null",
        "3",
        "1.5",
        "true",
        r#""bash: x""#,
        r#""v\u00e9""#,
        r#""""#,
        "{}",
        r#"" 10.0.0.2 ""#,
        r#""10.0.0.1""#,
        r#""::1""#,
        r#""10.0.0.\u0031""#,
        r#""bad""#,
        "\"a\tb\"",
        "\"a\nb\"",
        "\"long text \u{1f} with a control\"",
    ];
    const PLAIN_TEXTS: &[&str] = &[
        r#""2.1.3""#,
        "null",
        "7",
        r#""bash: x""#,
        r#""""#,
        r#"" 10.0.0.2 ""#,
        r#""10.0.0.1""#,
        r#""::1""#,
        r#""é""#,
    ];
    const SKIPPED: &[&str] = &[
        "1",
        "-0",
        "0.5",
        "1e5",
        "-1.2E-3",
        "2E+2",
        r#""s""#,
        r#""a\"b\\c\/\b\f\n\r\t""#,
        r#""\ud83d\ude00""#,
        r#""\ud800""#,
        r#""中文""#,
        "[~]",
        "{~}",
        r#"[~1~,~[2,{"k"~:~null}]~]"#,
        r#"{"a":{"b":[true,~false]}}"#,
        "true",
        "false",
        "null",
        r#"{"\u006b":1}"#,
    ];
    const BAD: &[&str] = &[
        "01",
        "1.",
        ".5",
        "+1",
        "tru",
        r#""\x""#,
        r#""\u12""#,
        r#""\u123x""#,
        "[1,]",
        r#"{"a" 1}"#,
        r#"{"a":1,}"#,
        "NaN",
        "\"a\tb\"",
        "\"a\nb\"",
        "\"long text \u{1f} with a control\"",
        "-",
        "1e",
        "[1 2]",
        "",
    ];

    /// A value nested `depth` deep.
    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    fn member(key: &str, values: &'static [&'static str]) -> BoxedStrategy<String> {
        let key = key.to_string();
        select(values)
            .prop_map(move |v| format!("\"{key}\"~:~{v}"))
            .boxed()
    }

    fn skipped_value() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => select(SKIPPED).prop_map(String::from),
            1 => select(BAD).prop_map(String::from),
            1 => select(&[20, 40, 130][..]).prop_map(nested),
        ]
    }

    fn skipped_member() -> impl Strategy<Value = String> {
        let key = select(&["run_mode", "remark", "status", r"bk_agent\u005fid", ""][..]);
        (key, skipped_value()).prop_map(|(k, v)| format!("\"{k}\"~:~{v}"))
    }

    /// A member whose value is mostly of the form read here.
    fn wanted(
        key: &str,
        plain: &'static [&'static str],
        odd: &'static [&'static str],
    ) -> BoxedStrategy<String> {
        prop_oneof![4 => member(key, plain), 1 => member(key, odd)].boxed()
    }

    /// Any member of an item, wanted by either call or by neither.
    fn item_member() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => wanted("bk_agent_id", PLAIN_IDS, IDS),
            1 => wanted("status_code", PLAIN_INTS, INTS),
            1 => wanted("report_time", PLAIN_INTS, INTS),
            1 => wanted("bk_cloud_id", PLAIN_INTS, INTS),
            1 => wanted("version", PLAIN_TEXTS, TEXTS),
            1 => wanted("bk_host_ip", PLAIN_TEXTS, TEXTS),
            1 => wanted("parent_ip", PLAIN_TEXTS, TEXTS),
            3 => skipped_member().boxed(),
        ]
    }

    fn object(members: Vec<String>) -> String {
        format!("{{~{}~}}", members.join("~,~"))
    }

    /// Any item: mostly an object with its required members, and others
    /// (some twice) in any order.
    fn item() -> impl Strategy<Value = String> {
        let required = |key, plain, odd| prop::option::weighted(0.9, wanted(key, plain, odd));
        let object = (
            required("bk_agent_id", PLAIN_IDS, IDS),
            required("status_code", PLAIN_INTS, INTS),
            prop::collection::vec(item_member(), 0..6),
        )
            .prop_map(|(id, code, mut members)| {
                members.extend(id.into_iter().chain(code));
                members
            })
            .prop_flat_map(|members| Just(members).prop_shuffle())
            .prop_map(object);
        prop_oneof![
            8 => object,
            1 => select(&[r#"["a1",2]"#, "null", r#""a1""#, "1"][..]).prop_map(String::from),
        ]
    }

    /// An item of the common shape: every member at most once, in any
    /// order, the optional ones sometimes missing.
    fn plain_item() -> impl Strategy<Value = String> {
        let optional = |values| prop::option::weighted(0.8, select(values));
        let texts = prop::collection::vec(optional(PLAIN_TEXTS), 3);
        let ints = prop::collection::vec(optional(&["null", "0", "1", "1700000000000"][..]), 2);
        let skipped = prop::collection::vec(select(SKIPPED), 0..4);
        let wanted = (select(PLAIN_IDS), select(PLAIN_INTS), texts, ints);
        (wanted, skipped)
            .prop_map(|((id, code, texts, ints), skipped)| {
                let mut members = vec![
                    format!(r#""bk_agent_id"~:~{id}"#),
                    format!(r#""status_code"~:~{code}"#),
                ];
                let keys = [
                    "version",
                    "bk_host_ip",
                    "parent_ip",
                    "report_time",
                    "bk_cloud_id",
                ];
                let values = texts.into_iter().chain(ints);
                for (key, value) in keys.iter().zip(values) {
                    members.extend(value.map(|v| format!(r#""{key}"~:~{v}"#)));
                }
                let names = ["run_mode", "remark", "status", "cpu_rate"];
                members.extend(
                    names
                        .iter()
                        .zip(skipped)
                        .map(|(k, v)| format!("\"{k}\"~:~{v}")),
                );
                members
            })
            .prop_flat_map(|members| Just(members).prop_shuffle())
            .prop_map(object)
    }

    fn list(item: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        prop::collection::vec(item, 0..5).prop_map(|items| format!("[~{}~]", items.join("~,~")))
    }

    /// Any reply: envelope members in any order, some given twice.
    fn reply() -> impl Strategy<Value = String> {
        let data = prop_oneof![
            8 => list(item()).boxed(),
            1 => select(&["null", "{}", r#""x""#][..]).prop_map(String::from).boxed(),
        ];
        let envelope = prop_oneof![
            member(
                "code",
                &[
                    "0", r#""0""#, "null", "1640001", "0.0", "1011003", "-0", "1306429"
                ]
            ),
            member("result", &["true", "false", "null", r#""x""#]),
            member(
                "message",
                &[r#""success""#, r#""成功""#, "null", r#""a\nb""#, "{}", "1"]
            ),
            skipped_member().boxed(),
        ];
        let members = prop::collection::vec(envelope, 0..4);
        (
            members,
            prop::option::weighted(0.9, data),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(mut members, data, code_zero)| {
                if code_zero {
                    members.push("\"code\"~:~0".into());
                }
                members.extend(data.map(|d| format!("\"data\"~:~{d}")));
                members
            })
            .prop_flat_map(|members| Just(members).prop_shuffle())
            .prop_map(object)
    }

    /// A reply of the common shape.
    fn plain_reply() -> impl Strategy<Value = String> {
        let head = select(
            &[
                r#""code"~:~0"#,
                r#""result"~:~true"#,
                r#""code"~:~0,~"result"~:~false"#,
            ][..],
        );
        let message = select(
            &[
                r#""message"~:~"success""#,
                r#""message"~:~null"#,
                r#""request_id"~:~"r1""#,
            ][..],
        );
        (head, message, list(plain_item()))
            .prop_map(|(head, message, data)| {
                vec![
                    head.to_string(),
                    message.to_string(),
                    format!("\"data\"~:~{data}"),
                ]
            })
            .prop_flat_map(|members| Just(members).prop_shuffle())
            .prop_map(object)
    }

    /// `template` with each `~` made whitespace (or nothing).
    fn spaced(template: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        let ws = prop::collection::vec(select(&["", "", " ", "\n", "\t ", "\r\n  "][..]), 16);
        (template, ws, select(&["", " ", "\n"][..])).prop_map(|(template, ws, edge)| {
            let mut ws = ws.iter().cycle();
            let body: String = template
                .split('~')
                .flat_map(|part| [part, ws.next().copied().unwrap_or("")])
                .collect();
            format!("{edge}{}{edge}", body.trim_end())
        })
    }

    /// What may be done to a reply's bytes afterwards.
    #[derive(Debug, Clone)]
    enum Damage {
        None,
        Truncate(prop::sample::Index),
        Append(&'static str),
        Set(prop::sample::Index, u8),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            6 => Just(Damage::None),
            1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
            1 => select(&["x", "}", "{}", "\u{feff}", ",", "\0"][..]).prop_map(Damage::Append),
            1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        ]
    }

    fn damaged(body: &str, damage: &Damage) -> Vec<u8> {
        let mut bytes = body.as_bytes().to_vec();
        match damage {
            Damage::None => {}
            Damage::Truncate(at) => bytes.truncate(at.index(bytes.len().max(1))),
            Damage::Append(tail) => bytes.extend_from_slice(tail.as_bytes()),
            Damage::Set(at, byte) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            Damage::Set(..) => {}
        }
        bytes
    }

    /// Cases per property: 1,000, or `GSE_FUZZ_CASES` (as `tests/fuzz.rs`).
    fn cases() -> u32 {
        std::env::var("GSE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1_000)
    }

    const SAMPLE: &str = r#" {"code":0,"result":true,"message":"success","request_id":"r\u0031","data":[
        {"bk_agent_id":"a2","bk_cloud_id":0,"status_code":2,"version":"2.1.3","report_time":1700000000000,
         "remark":"a\"b\ud83d\ude00","nested":{"k":[1,-2.5e-3,true,null,{}]}},
        {"status_code":3,"bk_host_ip":" 10.0.0.2 ","parent_ip":null,"bk_agent_id":"a1"} ] }
"#;

    #[test]
    fn the_sample_is_read_here_and_every_prefix_and_extension_as_serde_reads_it() {
        assert_eq!(same(SAMPLE.as_bytes()), (true, true));
        for end in 0..SAMPLE.len() {
            if let Some(prefix) = SAMPLE.get(..end) {
                let claimed = same(prefix.as_bytes());
                assert!(
                    end >= SAMPLE.trim_end().len() || claimed == (false, false),
                    "{end}"
                );
            }
        }
        for tail in ["x", "}", "0", ","] {
            assert_eq!(same(format!("{SAMPLE}{tail}").as_bytes()), (false, false));
        }
    }

    #[test]
    fn a_member_given_twice_is_refused_by_serde_and_not_read_here() {
        for body in [
            r#"{"code":0,"data":[{"bk_agent_id":"a1","status_code":2,"status_code":3}]}"#,
            r#"{"code":0,"data":[{"bk_agent_id":"a1","status_code":2,"version":null,"version":"1"}]}"#,
            r#"{"code":0,"code":0,"data":[{"bk_agent_id":"a1","status_code":2}]}"#,
            r#"{"code":0,"message":"a","message":"b","data":[{"bk_agent_id":"a1","status_code":2}]}"#,
        ] {
            let keys = [Key::new("a1")];
            assert!(
                matches!(v2_state(body.as_bytes(), &keys), Err(GseError::Decode(_))),
                "{body}"
            );
            assert!(!same(body.as_bytes()).0, "{body}");
        }
        // A member the call does not read may come twice.
        let body = r#"{"code":0,"data":[{"bk_agent_id":"a1","status_code":2,"bk_cloud_id":1,"bk_cloud_id":2}]}"#;
        assert_eq!(same(body.as_bytes()), (true, false));
    }

    #[test]
    fn strings_with_a_stop_at_every_place_read_as_serde_reads_them() {
        // A quote, a backslash or a control character at every place of
        // strings up to three words long, in a wanted and a skipped member.
        let stops = [
            "\\\"", "\\", "\\u00e9", "\\u12x4", "\\q", "\u{1}", "\n", "\u{1f}", " ", "\u{7f}", "é",
        ];
        for len in 0..24 {
            for at in 0..=len {
                for stop in stops {
                    let text = format!("{}{stop}{}", "a".repeat(at), "b".repeat(len - at));
                    for key in ["bk_agent_id", "remark"] {
                        let body = format!(
                            r#"{{"code":0,"data":[{{"status_code":2,"bk_agent_id":"a1","{key}":"{text}"}}]}}"#
                        );
                        let body = body.replacen(
                            r#""bk_agent_id":"a1","bk_agent_id""#,
                            r#""bk_agent_id""#,
                            1,
                        );
                        same(body.as_bytes());
                    }
                }
            }
        }
    }

    #[test]
    fn skipped_values_nested_deeper_than_the_bound_are_left_to_serde() {
        let body = |depth| {
            format!(
                r#"{{"code":0,"data":[{{"bk_agent_id":"a1","status_code":2,"x":{}}}]}}"#,
                nested(depth)
            )
        };
        assert_eq!(same(body(MAX_DEPTH).as_bytes()), (true, true));
        assert_eq!(same(body(MAX_DEPTH + 1).as_bytes()), (false, false));
        // Never read here, so never deep enough to overflow the stack.
        assert!(read(body(1_000_000).as_bytes(), |_: V2StateItem| ()).is_none());
    }

    #[test]
    fn the_generated_replies_take_both_paths() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = spaced(reply());
        let read_here = (0..1000)
            .filter(|_| same(strategy.new_tree(&mut runner).unwrap().current().as_bytes()).0)
            .count();
        assert!(
            (50..=900).contains(&read_here),
            "{read_here} of 1000 read here"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_reply_decodes_as_serde_decodes_it(body in spaced(reply()), damage in damage()) {
            same(&damaged(&body, &damage));
        }

        #[test]
        fn replies_of_the_common_shape_are_read_here(body in spaced(plain_reply())) {
            prop_assert_eq!(same(body.as_bytes()), (true, true), "{}", body);
        }

        #[test]
        fn any_bytes_decode_as_serde_decodes_them(
            head in select(&["", r#"{"code":0,"data":[{"#, r#"{"data":[{"bk_agent_id":"a1","#][..]),
            bytes in prop::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut body = head.as_bytes().to_vec();
            body.extend(bytes);
            same(&body);
        }
    }
}
