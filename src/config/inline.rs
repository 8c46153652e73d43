//! The fast path for hosts written inline: a strict byte-level reader of
//! `hosts:` block sequences whose every item is one line of a narrow grammar
//! (`{ip: 10.0.0.1, bk_cloud_id: 0, bk_agent_id: "…"}`, `"0:10.0.0.1"`, an
//! agent id), with serde-saphyr the authority on everything else.
//!
//! serde-saphyr reads about 17 MB of hosts a second. Here each qualifying
//! block is read in one pass over its lines, and the YAML parser is given a
//! *skeleton* of the text: the same lines, except that each such block's items
//! become one `- []` where its first item stood and empty lines for the rest,
//! so every line keeps its number. Each group's `hosts` carries where its
//! value began ([`RawHosts`]); a block's hosts go to the one group whose
//! `hosts` began at the block's `- []`, and from there through the same
//! validation as hosts the parser read. A block with any item outside the
//! grammar stays in the skeleton as written, for the parser.
//!
//! Why a claim is sound: up to a block's `hosts:` line the skeleton is the
//! original text, so the parser is in the same state there. If it reads the
//! `- []` as a group's `hosts`, that key is in block context, and the
//! original's items are the entries of that same block sequence (each a
//! whole node on its line, all at one indentation deeper than the key, the
//! block ending at a line no deeper than the key). In a flow collection the
//! skeleton does not parse (`-` starts nothing there); in a quoted or block
//! scalar no group claims the block; an aliased group claims it twice.
//!
//! When the skeleton does not parse, or a block is not claimed by exactly one
//! group, the fast result is thrown away and the original text parsed the
//! slow way, so every error is the parser's own on the original text: the
//! fast path only ever makes a configuration faster, never changes what it
//! means or what an error says.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::hosts::{HostKey, RawHost, Scalar};
use super::schema::RawConfig;

/// Longest `bk_cloud_id` read here, in digits: it always fits an `i64`.
const MAX_CLOUD_DIGITS: usize = 18;

/// A group's `hosts` as parsed, with where its value began.
#[derive(Debug, Default)]
pub(crate) struct RawHosts {
    /// The hosts, in file order.
    pub(crate) list: Vec<RawHost>,
    /// The 1-based line and column where the value was defined (the
    /// anchor's, for an alias); line 0 when unknown.
    start: (u64, u64),
}

impl<'de> Deserialize<'de> for RawHosts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<Vec<RawHost>>::deserialize(d)?;
        Ok(RawHosts {
            list: spanned.value,
            start: (spanned.defined.line(), spanned.defined.column()),
        })
    }
}

/// The key path of a parse error as the user wrote it: reading a group's
/// `hosts` through [`serde_saphyr::Spanned`] adds a `value` step after it.
pub(super) fn written_path(path: String) -> String {
    let Some((group, rest)) = path
        .strip_prefix("groups[")
        .and_then(|rest| rest.split_once("].hosts.value"))
    else {
        return path;
    };
    if group.is_empty() || !group.bytes().all(|b| b.is_ascii_digit()) {
        return path;
    }
    format!("groups[{group}].hosts{rest}")
}

/// `text` parsed with its qualifying hosts blocks read here, or `None` when
/// none qualifies or anything is off: the caller then parses `text` itself.
pub(super) fn parse(text: &str) -> Option<RawConfig> {
    // The parser breaks lines at `\r` as well: its line numbers would differ.
    // A text nested too deeply is refused by the slow path, as always.
    if text.as_bytes().contains(&b'\r') {
        return None;
    }
    // Blocks first: a text with none is left to the parser at once, which
    // bounds its nesting itself (one pass over it, not two).
    let blocks = blocks(text);
    if blocks.is_empty() || super::nesting::too_deep(text).is_some() {
        return None;
    }
    let mut raw: RawConfig = super::parse_yaml(&skeleton(text, &blocks)).ok()?;
    claim(&mut raw, blocks)?;
    Some(raw)
}

/// One `hosts:` block read here.
#[derive(Debug)]
struct Block {
    /// Byte range from the first item's line to the end of the last's.
    start: usize,
    end: usize,
    /// Line breaks in that range.
    breaks: usize,
    /// Indentation of the items.
    indent: usize,
    /// The 1-based line and column of the first item's `-`.
    at: (u64, u64),
    /// The items.
    hosts: Vec<RawHost>,
}

/// The qualifying blocks of `text`, in file order.
fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = Lines::new(text);
    while let Some(line) = lines.next() {
        let Some(key_indent) = hosts_key(line.text) else {
            continue;
        };
        if let Some((block, after)) = Block::read(lines.clone(), key_indent) {
            blocks.push(block);
            lines = after;
        }
    }
    blocks
}

impl Block {
    /// The block of items after a `hosts:` line indented `key_indent`, and
    /// the lines after its last item; `None` unless every item is in the
    /// grammar and the block ends at a line indented no deeper than the key.
    fn read(mut lines: Lines<'_>, key_indent: usize) -> Option<(Block, Lines<'_>)> {
        let mut block: Option<Block> = None;
        let mut after = lines.clone();
        while let Some(line) = lines.next() {
            let indent = spaces(line.text);
            let rest = &line.text[indent..];
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            if indent <= key_indent {
                break;
            }
            let block = block.get_or_insert_with(|| Block {
                start: line.start,
                end: line.start,
                breaks: 0,
                indent,
                at: (line.number, indent as u64 + 1),
                hosts: Vec::new(),
            });
            if indent != block.indent {
                return None;
            }
            block.hosts.push(item(rest)?);
            block.end = line.next;
            after = lines.clone();
        }
        let mut block = block?;
        block.breaks = line_breaks(&lines.text[block.start..block.end]);
        Some((block, after))
    }
}

/// The indentation of a `hosts:` line (nothing else on it but a comment).
fn hosts_key(line: &str) -> Option<usize> {
    let indent = spaces(line);
    let rest = line[indent..].strip_prefix("hosts:")?;
    let after = rest.trim_start_matches(' ');
    let ends = after.is_empty() || (after.starts_with('#') && after.len() < rest.len());
    ends.then_some(indent)
}

/// The text the YAML parser reads: each block's items replaced by `- []`
/// and empty lines.
fn skeleton(text: &str, blocks: &[Block]) -> String {
    let kept = text.len() - blocks.iter().map(|b| b.end - b.start).sum::<usize>();
    let added: usize = blocks.iter().map(|b| b.indent + 4 + b.breaks).sum();
    let mut out = String::with_capacity(kept + added);
    let mut from = 0;
    for block in blocks {
        out.push_str(&text[from..block.start]);
        out.extend(std::iter::repeat_n(' ', block.indent));
        out.push_str("- []");
        out.extend(std::iter::repeat_n('\n', block.breaks));
        from = block.end;
    }
    out.push_str(&text[from..]);
    out
}

/// Gives each block's hosts to the one group whose `hosts` began at it;
/// `None` if any block has no such group, or more than one.
fn claim(raw: &mut RawConfig, blocks: Vec<Block>) -> Option<()> {
    let mut owners: Vec<Option<usize>> = vec![None; blocks.len()];
    for (index, group) in raw.groups.iter().enumerate() {
        let Ok(at) = blocks.binary_search_by_key(&group.hosts.start, |b| b.at) else {
            continue;
        };
        if owners[at].replace(index).is_some() || group.hosts.list.len() != 1 {
            return None;
        }
    }
    for (block, owner) in blocks.into_iter().zip(owners) {
        raw.groups[owner?].hosts.list = block.hosts;
    }
    Some(())
}

fn spaces(line: &str) -> usize {
    line.bytes().take_while(|b| *b == b' ').count()
}

fn line_breaks(text: &str) -> usize {
    text.bytes().filter(|b| *b == b'\n').count()
}

/// Lines split at `\n`, with their numbers and where they start.
#[derive(Clone)]
struct Lines<'a> {
    text: &'a str,
    at: usize,
    number: u64,
}

/// One line: its 1-based number, its text without the break, and where it
/// and the next line start.
struct Line<'a> {
    number: u64,
    text: &'a str,
    start: usize,
    next: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        Lines {
            text,
            at: 0,
            number: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.at >= self.text.len() {
            return None;
        }
        let start = self.at;
        let rest = &self.text[start..];
        let (text, next) = match rest.find('\n') {
            Some(at) => (&rest[..at], start + at + 1),
            None => (rest, self.text.len()),
        };
        self.at = next;
        self.number += 1;
        Some(Line {
            number: self.number,
            text,
            start,
            next,
        })
    }
}

/// One item line after its indentation: `- ` and a host in the grammar,
/// then optionally ` # comment`.
fn item(line: &str) -> Option<RawHost> {
    let mut cursor = Cursor { text: line, at: 0 };
    cursor.eat(b'-')?;
    if cursor.spaces() == 0 {
        return None;
    }
    let host = match cursor.peek()? {
        b'{' => cursor.host_map()?,
        b'"' => RawHost::from_text(cursor.quoted()?),
        _ => RawHost::from_text(cursor.plain_host()?),
    };
    cursor.line_end()?;
    Some(host)
}

/// A position in one line.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Skips spaces; how many.
    fn spaces(&mut self) -> usize {
        let n = spaces(&self.text[self.at..]);
        self.at += n;
        n
    }

    /// Takes the bytes `keep` accepts.
    fn take(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.at;
        let len = self.text.as_bytes()[start..]
            .iter()
            .take_while(|b| keep(**b))
            .count();
        self.at += len;
        &self.text[start..self.at]
    }

    /// The end of the line: spaces, then nothing or a comment.
    fn line_end(&mut self) -> Option<()> {
        let spaced = self.spaces() > 0;
        match self.peek() {
            None => Some(()),
            Some(b'#') if spaced => Some(()),
            _ => None,
        }
    }

    /// `{key: value, …}` with each of `ip`, `bk_cloud_id` and `bk_agent_id`
    /// at most once.
    fn host_map(&mut self) -> Option<RawHost> {
        self.eat(b'{')?;
        self.spaces();
        let mut fields: Vec<(HostKey, Scalar)> = Vec::with_capacity(3);
        loop {
            let key = self.key()?;
            if fields.iter().any(|(k, _)| *k == key) || self.spaces() == 0 {
                return None;
            }
            let value = match key {
                HostKey::Ip => Scalar::Text(self.ip()?.to_string()),
                HostKey::Cloud => Scalar::Int(self.cloud()?),
                _ => Scalar::Text(self.agent_id()?.to_string()),
            };
            fields.push((key, value));
            self.spaces();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => break,
                _ => return None,
            }
            self.spaces();
        }
        self.at += 1;
        Some(RawHost::from_fields(&fields))
    }

    /// A key of the grammar and its `:`.
    fn key(&mut self) -> Option<HostKey> {
        let rest = &self.text[self.at..];
        let (key, len) = if rest.starts_with("ip:") {
            (HostKey::Ip, 3)
        } else if rest.starts_with("bk_cloud_id:") {
            (HostKey::Cloud, 12)
        } else if rest.starts_with("bk_agent_id:") {
            (HostKey::Agent, 12)
        } else {
            return None;
        };
        self.at += len;
        Some(key)
    }

    /// A plain IPv4 address (four dotted parts: never a YAML number).
    fn ip(&mut self) -> Option<&'a str> {
        let ip = self.take(|b| b.is_ascii_digit() || b == b'.');
        ip.parse::<Ipv4Addr>().ok().map(|_| ip)
    }

    /// Plain decimal digits without a leading zero that fit an `i64`.
    fn cloud(&mut self) -> Option<i64> {
        let digits = self.take(|b| b.is_ascii_digit());
        let fits = digits.len() <= MAX_CLOUD_DIGITS;
        let canonical = digits == "0" || !digits.starts_with('0');
        if fits && canonical {
            digits.parse().ok()
        } else {
            None
        }
    }

    /// A double-quoted agent id or a plain one.
    fn agent_id(&mut self) -> Option<&'a str> {
        if self.peek()? == b'"' {
            self.quoted()
        } else {
            self.plain_id()
        }
    }

    /// A double-quoted scalar of printable ASCII with no escapes: its content.
    fn quoted(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let content = self.take(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        self.eat(b'"')?;
        Some(content)
    }

    /// A plain agent id that YAML reads as a string: letters and digits,
    /// starting with a digit not followed by a base prefix (`0x`, `0o`,
    /// `0b`), with a letter other than an exponent's `e`. Ids starting
    /// with a letter (`true`, `null`, `yes`, …) are read only when quoted.
    fn plain_id(&mut self) -> Option<&'a str> {
        let id = self.take(|b| b.is_ascii_alphanumeric());
        let bytes = id.as_bytes();
        let starts_with_digit = bytes.first()?.is_ascii_digit();
        let no_base = !matches!(bytes.get(1)?, b'x' | b'X' | b'o' | b'O' | b'b' | b'B');
        let not_float = bytes
            .iter()
            .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E'));
        (starts_with_digit && no_base && not_float).then_some(id)
    }

    /// A plain `cloud:ip` or agent id.
    fn plain_host(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.cloud().is_some() && self.eat(b':').is_some() && self.ip().is_some() {
            return Some(&self.text[start..self.at]);
        }
        self.at = start;
        self.plain_id()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use proptest::sample::select;

    use super::super::{Config, ConfigError, parse_raw, parse_yaml};
    use super::*;

    const HEAD: &str =
        "gse:\n  api: v2\n  url: http://127.0.0.1:9\n  app_code: a\n  app_secret: s\ngroups:\n";

    /// The configuration and problems `text` means, read the slow way only.
    fn slow(text: &str) -> Result<Config, ConfigError> {
        parse_yaml::<RawConfig>(text)
            .and_then(|raw| Config::from_raw(raw, &|_| None, Path::new(".")))
    }

    /// The same, read as the exporter reads it (the fast path first).
    fn fast(text: &str) -> Result<Config, ConfigError> {
        parse_raw(text).and_then(|raw| Config::from_raw(raw, &|_| None, Path::new(".")))
    }

    fn same(text: &str) {
        assert_eq!(
            format!("{:?}", fast(text)),
            format!("{:?}", slow(text)),
            "{text}"
        );
    }

    fn one_block(items: &[&str]) -> String {
        let lines: Vec<String> = items.iter().map(|i| format!("      - {i}\n")).collect();
        format!(
            "{HEAD}  - name: a\n    bk_biz_id: 1\n    hosts:\n{}",
            lines.concat()
        )
    }

    #[test]
    fn the_benchmark_form_is_read_here_and_means_what_the_parser_reads() {
        let mut items: Vec<String> = (0..1000)
            .map(|i| {
                let ip = format!("10.0.{}.{}", i / 250, i % 250 + 1);
                format!("{{ip: {ip}, bk_cloud_id: 0, bk_agent_id: \"0100{i:028x}\"}}")
            })
            .collect();
        items.push(items[7].clone());
        items.push("{ip: 10.0.9.9, bk_agent_id: \"0100-bad\"}".into());
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let text = one_block(&items);
        assert!(parse(&text).is_some(), "read here");
        let err = fast(&text).unwrap_err();
        assert_eq!(
            format!("{err:?}"),
            format!("{:?}", slow(&text).unwrap_err())
        );
        assert_eq!(
            err.problems(),
            [
                "groups[0].hosts[1001]: ip: 10.0.9.9, bk_agent_id: 0100-bad: \
              is neither cloud:ip nor an agent id (1-64 letters and digits)"
            ]
        );
        let good = one_block(&items[..1001]);
        let config = fast(&good).unwrap();
        assert_eq!(config.groups[0].hosts.len(), 1000, "the repeat is dropped");
        assert_eq!(config, slow(&good).unwrap());
    }

    #[test]
    fn every_form_of_the_grammar_is_read_here() {
        for item in [
            "{ip: 10.0.0.1}",
            "{ ip: 10.0.0.1 }",
            "{ ip: 10.0.0.1 , bk_cloud_id: 3 }",
            "{bk_agent_id: \"0100ab\", ip: 10.0.0.1,bk_cloud_id: 0}",
            "{bk_cloud_id: 123456789012345678, ip: 10.0.0.1}",
            "{bk_agent_id: 0100ab}",
            "{bk_agent_id: 1e5x}",
            "{bk_agent_id: \"0:10.0.0.1\", ip: 10.0.0.1}",
            "{bk_agent_id: \"not-an-id\"}",
            "{bk_agent_id: \"\"}",
            "{bk_cloud_id: 0}",
            "{ip: 10.0.0.1}  # a comment {ip: x}",
            "\"0:10.0.0.1\"",
            "\"0100ab\" # a comment",
            "\"0:10.0.0.256\"",
            "7:10.0.0.1",
            "0100ab",
        ] {
            let text = one_block(&[item, "{ip: 10.0.0.200}"]);
            assert!(parse(&text).is_some(), "{item} is read here");
            same(&text);
        }
        let spaced = format!(
            "{HEAD}  - name: a\n    bk_biz_id: 1\n    hosts:   # the fleet\n\n      # rack 1\n      - {{ip: 10.0.0.1}}\n\n  # odd\n      -   \"0:10.0.0.2\"\n\n  - name: b\n    bk_biz_id: 1\n    hosts:\n      - 0100ab\n"
        );
        assert!(parse(&spaced).is_some());
        same(&spaced);
    }

    #[test]
    fn blocks_outside_the_grammar_are_left_to_the_parser() {
        let group = "  - name: a\n    bk_biz_id: 1\n";
        for (what, text) in [
            ("an odd item", one_block(&["{ip: 10.0.0.1}", "{ip: 10.0}"])),
            ("a float id", one_block(&["{bk_agent_id: 0100e5}"])),
            ("a word id", one_block(&["{bk_agent_id: abc}"])),
            (
                "a leading zero",
                one_block(&["{ip: 10.0.0.1, bk_cloud_id: 01}"]),
            ),
            (
                "a huge cloud",
                one_block(&["{ip: 10.0.0.1, bk_cloud_id: 99999999999999999999}"]),
            ),
            ("a key twice", one_block(&["{ip: 10.0.0.1, ip: 10.0.0.2}"])),
            ("an escape", one_block(&["{bk_agent_id: \"a\\\"b\"}"])),
            ("non-ASCII", one_block(&["{bk_agent_id: \"é\"}"])),
            ("a tight comment", one_block(&["{ip: 10.0.0.1}#c"])),
            ("an anchor", one_block(&["&h {ip: 10.0.0.1}", "*h"])),
            ("CRLF", one_block(&["{ip: 10.0.0.1}"]).replace('\n', "\r\n")),
            (
                "a lone CR",
                one_block(&["{ip: 10.0.0.1}"]).replace("groups:", "# a\r# b\ngroups:"),
            ),
            (
                "items at the key's indent",
                format!("{HEAD}{group}    hosts:\n    - {{ip: 10.0.0.1}}\n"),
            ),
            (
                "a block scalar",
                format!(
                    "{HEAD}{group}    labels:\n      note: |\n        hosts:\n          - {{ip: 10.0.0.1}}\n    hosts: [\"0:10.0.0.2\"]\n"
                ),
            ),
            (
                "under cmdb",
                format!("{HEAD}{group}    cmdb:\n      hosts:\n        - {{ip: 10.0.0.1}}\n"),
            ),
            (
                "a flow group",
                format!(
                    "{HEAD}  - {{name: a, bk_biz_id: 1,\n    hosts:\n      - {{ip: 10.0.0.1}}}}\n"
                ),
            ),
            (
                "a flow group closed after the block",
                format!(
                    "{HEAD}  - {{name: a, bk_biz_id: 1,\n    hosts:\n      - {{ip: 10.0.0.1}}\n  }}\n"
                ),
            ),
            (
                "an aliased group",
                format!(
                    "{HEAD}  - &g\n    name: a\n    bk_biz_id: 1\n    hosts:\n      - {{ip: 10.0.0.1}}\n  - *g\n"
                ),
            ),
            (
                "items at two indents",
                format!(
                    "{HEAD}{group}    hosts:\n      - {{ip: 10.0.0.1}}\n        - {{ip: 10.0.0.2}}\n"
                ),
            ),
        ] {
            assert!(parse(&text).is_none(), "{what}");
            same(&text);
        }
    }

    #[test]
    fn an_error_after_a_block_names_its_own_line() {
        let text = format!("{}interval: [\n", one_block(&["{ip: 10.0.0.1}"; 3]));
        let err = fast(&text).unwrap_err().to_string();
        assert!(err.contains("interval") && err.contains("line 13"), "{err}");
        same(&text);
    }

    #[test]
    fn parse_errors_inside_hosts_name_the_hosts_key() {
        let text = format!("{HEAD}  - name: a\n    bk_biz_id: 1\n    hosts: 5\n");
        let Err(ConfigError::Parse { path, .. }) = fast(&text) else {
            panic!("refused");
        };
        assert_eq!(path, "groups[0].hosts");
        assert_eq!(
            written_path("groups[2].hosts.value[3]".into()),
            "groups[2].hosts[3]"
        );
        assert_eq!(
            written_path("groups[x].hosts.value".into()),
            "groups[x].hosts.value"
        );
        assert_eq!(written_path("gse.url".into()), "gse.url");
    }

    /// One of `good` most of the time, else one of `odd`.
    fn mostly(
        good: &'static [&'static str],
        odd: &'static [&'static str],
    ) -> BoxedStrategy<String> {
        prop_oneof![14 => select(good), 1 => select(odd)]
            .prop_map(String::from)
            .boxed()
    }

    /// A scalar value: odd ones are often in the grammar's edges, rarely
    /// YAML errors, so they come often.
    fn value(good: &'static [&'static str], odd: &'static [&'static str]) -> BoxedStrategy<String> {
        prop_oneof![3 => select(good), 1 => select(odd)]
            .prop_map(String::from)
            .boxed()
    }

    fn map_item() -> impl Strategy<Value = String> {
        let ip = value(
            &["10.0.0.1", "10.0.0.2", "192.168.0.1"],
            &[
                "10.0.0.300",
                "10.0",
                "010.0.0.1",
                "1.2.3",
                "10.0.0.1x",
                "\"10.0.0.3\"",
                "true",
                "",
                "[10.0.0.1]",
                "10.0.0.1 x",
                "&a 10.0.0.1",
                "*a",
            ],
        );
        let cloud = value(
            &["0", "1", "7", "123456789012345678"],
            &[
                "01",
                "-1",
                "99999999999999999999",
                "1234567890123456789",
                "1e3",
                "0x10",
                "\"0\"",
                "1.5",
                "null",
                "1_0",
                "+1",
            ],
        );
        let agent = value(
            &[
                "\"0100abcd\"",
                "0100abcd",
                "\"0:10.0.0.1\"",
                "\"1:10.0.0.2\"",
                "1e5x",
                "\"abc-def\"",
                "\"\"",
                "\"0:10.0.0.9\"",
                "\"a b#c: d\"",
            ],
            &[
                "0100e5",
                "0x1f",
                "0b11",
                "0o7a",
                "abc",
                "true",
                "null",
                "\"a\\\"b\"",
                "'0100ab'",
                "\"é\"",
                "01:10.0.0.1",
                "1_0a",
                "0100abcd: x",
                "1E5",
                "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
            ],
        );
        let odd_field = prop_oneof![
            12 => Just(None),
            1 => select(&["name: x", "ip:10.0.0.1", "ip : 10.0.0.1", "ip:  10.0.0.4", "? ip", "ip: 10.0.0.2"][..])
                .prop_map(Some),
        ];
        let keys = prop::sample::subsequence(vec![0, 1, 2], 1..=3).prop_shuffle();
        let fields =
            (keys, ip, cloud, agent, odd_field).prop_map(|(keys, ip, cloud, agent, odd)| {
                let mut fields = host_fields(&keys, &ip, &cloud, &agent);
                fields.extend(odd.map(String::from));
                fields
            });
        let sep = mostly(&[", ", ",", " , "], &[",\t", " ,, "]);
        let open = mostly(&["{", "{ "], &["{\t", "!!map {"]);
        let close = mostly(&["}", " }"], &[",}", "\t}"]);
        (fields, sep, open, close)
            .prop_map(|(fields, sep, open, close)| format!("{open}{}{close}", fields.join(&sep)))
    }

    fn item_line() -> impl Strategy<Value = String> {
        let text = mostly(
            &[
                "\"0:10.0.0.1\"",
                "0:10.0.0.1",
                "0100abcd",
                "\"0:10.0.0.256\"",
                "\"x-y\"",
            ],
            &[
                "'0:10.0.0.1'",
                "10.0.0.1",
                "- x",
                "[]",
                "{}",
                "",
                "~",
                "&h {ip: 10.0.0.7}",
                "*h",
                "01:10.0.0.1",
                "true",
                "0100e5",
                "\"é\"",
                "1:20",
                "|",
                "\"a",
                "0:10.0.0.1: x",
            ],
        );
        let item = prop_oneof![3 => map_item(), 1 => text];
        let dash = mostly(&["- ", "-  "], &["-", "-\t", "? "]);
        let indent = prop_oneof![28 => Just(6), 1 => Just(4), 1 => Just(8)];
        let end = mostly(
            &["", "  # note", " #é", "  "],
            &["#c", "\t", " # \"", "\u{a0}"],
        );
        (indent, dash, item, end).prop_map(|(indent, dash, item, end)| {
            format!("{}{dash}{item}{end}", " ".repeat(indent))
        })
    }

    fn block_line() -> impl Strategy<Value = String> {
        prop_oneof![
            20 => item_line(),
            1 => select(&["", "   ", "      # rack", "# top", "\t- {ip: 10.0.0.5}", "    tenant_id: t",
                          "     - {ip: 10.0.0.6}", "  - name: h\n    bk_biz_id: 1"][..])
                .prop_map(String::from),
        ]
    }

    /// One group, its `hosts:` block last.
    fn group(name: usize) -> impl Strategy<Value = String> {
        let before = mostly(
            &["", "    per_agent_metrics: false\n"],
            &[
                "    labels:\n      note: |\n        hosts:\n          - {ip: 10.0.0.1}\n",
                "    cmdb:\n      hosts:\n        - {ip: 10.0.0.1}\n",
                "    labels: {note: \"a\n      hosts:\n        - {ip: 10.0.0.1}\n      b\"}\n",
                "    labels: {a: \"x\\\"]}\", b: \"\\\"\"\n",
                "    labels: {a: b,\n",
                "    hosts_file: /nonexistent\n",
            ],
        );
        let key = mostly(
            &["    hosts:", "    hosts: # c", "    hosts:  "],
            &[
                "    hosts:#c",
                "    hosts: []",
                "    hosts: &l",
                "    hosts: !!seq",
                "   hosts:",
            ],
        );
        let anchor = mostly(&[""], &["&g"]);
        let lines = prop::collection::vec(block_line(), 0..4);
        (before, key, anchor, lines).prop_map(move |(before, key, anchor, lines)| {
            let mut text =
                format!("  - {anchor}\n    name: g{name}\n    bk_biz_id: 1\n{before}{key}\n");
            for line in lines {
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    }

    fn config() -> impl Strategy<Value = String> {
        let api = mostly(&["v2"], &["v1"]);
        let tail = mostly(
            &["", "interval: 30s\n"],
            &[
                "  - *g\n",
                "interval: [\n",
                "  - {name: f, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}\n",
                "  - name: f\n    bk_biz_id: 1\n    hosts:\n    - {ip: 10.0.0.1}\n",
                "x: *l\n",
            ],
        );
        let crlf = prop::bool::weighted(0.05);
        (api, group(0), group(1), prop::bool::ANY, tail, crlf).prop_map(
            |(api, first, second, two, tail, crlf)| {
                let head = HEAD.replace("v2", &api);
                let second = if two { second } else { String::new() };
                let text = format!("{head}{first}{second}{tail}");
                if crlf {
                    text.replace('\n', "\r\n")
                } else {
                    text
                }
            },
        )
    }

    /// A host map's fields as written, in the order `keys` gives (0 `ip`,
    /// 1 `bk_cloud_id`, 2 `bk_agent_id`).
    fn host_fields(keys: &[u8], ip: &str, cloud: &str, agent: &str) -> Vec<String> {
        keys.iter()
            .map(|key| match key {
                0 => format!("ip: {ip}"),
                1 => format!("bk_cloud_id: {cloud}"),
                _ => format!("bk_agent_id: {agent}"),
            })
            .collect()
    }

    /// A configuration whose every hosts block is in the grammar.
    fn grammar_config() -> impl Strategy<Value = String> {
        let ip = select(&["10.0.0.1", "10.0.0.2", "192.168.1.1"][..]);
        let cloud = select(&["0", "1", "12"][..]);
        let agent = select(&["\"0100ab\"", "0100ab", "\"0:10.0.0.1\"", "\"bad-id\""][..]);
        let keys = prop::sample::subsequence(vec![0, 1, 2], 1..=3).prop_shuffle();
        let map = (keys, ip, cloud, agent).prop_map(|(keys, ip, cloud, agent)| {
            format!("{{{}}}", host_fields(&keys, ip, cloud, agent).join(", "))
        });
        let item = prop_oneof![
            map,
            select(&["\"0:10.0.0.1\"", "0:10.0.0.3", "0100ab", "\"x-y\""][..])
                .prop_map(String::from),
        ];
        prop::collection::vec(item, 1..6).prop_map(|items| {
            let items: Vec<&str> = items.iter().map(String::as_str).collect();
            one_block(&items)
        })
    }

    /// Cases per property: 1,000, or `GSE_FUZZ_CASES` (as `tests/fuzz.rs`).
    fn cases() -> u32 {
        std::env::var("GSE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1_000)
    }

    #[test]
    fn the_generated_configurations_take_both_paths() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = config();
        let read_here = (0..1000)
            .filter(|_| parse(&strategy.new_tree(&mut runner).unwrap().current()).is_some())
            .count();
        assert!(
            (100..=900).contains(&read_here),
            "{read_here} of 1000 read here"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn the_fast_path_means_what_the_parser_reads(text in config()) {
            prop_assert_eq!(format!("{:?}", fast(&text)), format!("{:?}", slow(&text)), "{}", text);
        }

        #[test]
        fn blocks_in_the_grammar_are_read_here(text in grammar_config()) {
            prop_assert!(parse(&text).is_some(), "{}", text);
            prop_assert_eq!(format!("{:?}", fast(&text)), format!("{:?}", slow(&text)), "{}", text);
        }
    }
}
