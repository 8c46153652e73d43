//! A cheap bound on how deeply a YAML text nests, checked before the parser
//! sees it: the parser's cost grows with the square of the depth of flow
//! collections (`[[[[…` 50,000 deep took 17 s), and no configuration nests
//! more than a handful of levels.
//!
//! One pass over the bytes, line by line: flow brackets outside quotes and
//! comments are counted (carried across lines), block nesting is bounded by
//! the indentation plus the `- `/`? ` indicators that open a line, and the
//! content of block scalars (`|`, `>`) is skipped.

/// Deepest flow nesting (`[` and `{`) accepted.
pub(crate) const MAX_FLOW_DEPTH: usize = 64;
/// Deepest block nesting accepted, in columns of indentation (a line's
/// leading `- ` and `? ` count as their width).
pub(crate) const MAX_INDENT: usize = 256;

/// Where and why a text nests too deeply: the 1-based line and the rule.
pub(crate) fn too_deep(text: &str) -> Option<(usize, &'static str)> {
    let mut scan = Scan::default();
    for (n, line) in text.lines().enumerate() {
        if let Some(rule) = scan.line(line) {
            return Some((n + 1, rule));
        }
    }
    None
}

#[derive(Default)]
struct Scan {
    flow: usize,
    /// Inside a quoted scalar that spans lines: its quote character.
    quote: Option<u8>,
    /// Inside a block scalar: lines indented more than this belong to it.
    block_scalar: Option<usize>,
}

impl Scan {
    fn line(&mut self, line: &str) -> Option<&'static str> {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        if let Some(parent) = self.block_scalar {
            if indent > parent || bytes[indent..].is_empty() {
                return None;
            }
            self.block_scalar = None;
        }
        let mut column = indent;
        if self.quote.is_none() && self.flow == 0 {
            column += indicators(&bytes[indent..]);
        }
        if column > MAX_INDENT {
            return Some("is indented (or opens sequences) more than 256 columns deep");
        }
        self.flow_line(&bytes[indent..], indent)
    }

    /// Counts flow brackets outside quotes and comments; notes a block
    /// scalar's header.
    fn flow_line(&mut self, bytes: &[u8], indent: usize) -> Option<&'static str> {
        let mut previous = b' ';
        let mut end = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(quote) = self.quote {
                if b == quote {
                    self.quote = None;
                }
            } else {
                match b {
                    b'#' if previous == b' ' || previous == b'\t' => {
                        end = i;
                        break;
                    }
                    b'\'' | b'"' if b" \t[{,:-".contains(&previous) => self.quote = Some(b),
                    b'[' | b'{' => {
                        self.flow += 1;
                        if self.flow > MAX_FLOW_DEPTH {
                            return Some("nests flow collections ([ ] { }) more than 64 deep");
                        }
                    }
                    b']' | b'}' => self.flow = self.flow.saturating_sub(1),
                    _ => {}
                }
            }
            previous = b;
        }
        if self.quote.is_none() && self.flow == 0 && block_scalar_header(&bytes[..end]) {
            self.block_scalar = Some(indent);
        }
        None
    }
}

/// Columns taken by the `- ` and `? ` indicators opening a line.
fn indicators(bytes: &[u8]) -> usize {
    let mut columns = 0;
    let mut rest = bytes;
    while let [b'-' | b'?', b' ', tail @ ..] = rest {
        let spaces = tail.iter().take_while(|b| **b == b' ').count();
        columns += 2 + spaces;
        rest = &tail[spaces..];
    }
    columns
}

/// Whether a line ends in a block scalar header: `|` or `>`, with optional
/// chomping and indentation indicators (`|-`, `>+2`).
fn block_scalar_header(content: &[u8]) -> bool {
    let last = content
        .split(|b| b.is_ascii_whitespace())
        .rfind(|token| !token.is_empty());
    match last {
        Some([b'|' | b'>', rest @ ..]) => rest.iter().all(|b| b"+-0123456789".contains(b)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configurations_pass() {
        let text = "gse:\n  url: http://x # [comment\n  app_secret: '[[[['\n\
            groups:\n  - name: a\n    hosts: [\"0:10.0.0.1\", {ip: 10.0.0.2, bk_cloud_id: 0}]\n\
            tls:\n  key: |\n    ]]]]{{{{[[[[\n    -----\n  cert: |-\n    [[[[[\n  x: 1\n";
        assert_eq!(too_deep(text), None);
        let pem_heavy = format!("a: |\n{}\n", "  [\n".repeat(1000));
        assert_eq!(too_deep(&pem_heavy), None);
    }

    #[test]
    fn deep_flow_and_block_nesting_are_refused_at_their_line() {
        let flow = format!("gse: {{}}\ngroups: {}{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(too_deep(&flow).map(|p| p.0), Some(2));
        assert!(too_deep(&format!("a: {}", "[".repeat(64))).is_none());
        let spread = format!("a:\n{}", "  [\n".repeat(100));
        assert_eq!(too_deep(&spread).map(|p| p.0), Some(66));
        let seqs = format!("a:\n{}x\n", "- ".repeat(200));
        assert_eq!(too_deep(&seqs).map(|p| p.0), Some(2));
        let mut maps = String::new();
        for depth in 0..300 {
            maps.push_str(&format!("{}k{depth}:\n", " ".repeat(depth)));
        }
        assert_eq!(too_deep(&maps).map(|p| p.0), Some(258));
        let huge = format!("a: {}", "[".repeat(100_000));
        let started = std::time::Instant::now();
        assert!(too_deep(&huge).is_some());
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }
}
