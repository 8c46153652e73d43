//! The Chinese pages (`README.zh-CN.md`, `docs/*.zh-CN.md`) stay in step with
//! their English originals. Every `X.zh-CN.md` is compared with `X.md`; the
//! README and every page of `docs/` must have one.
//!
//! What "in step" means, so that a change to one page that the other lacks
//! fails here (prose is free: it is translated):
//!
//! 1. **Headings.** The ATX headings outside fenced blocks have the same
//!    levels in the same order. A heading that is one CamelCase word (an
//!    alert name such as `GseAgentOffline`) is the same word in both, so the
//!    rules' `runbook_url` anchors work on either page.
//! 2. **Inline code.** The same set of inline code spans written only in
//!    ASCII: config keys, metric and label names, flags, alert names, label
//!    values, commands, paths. Whitespace inside a span is collapsed (a span
//!    may wrap differently). A span with any non-ASCII character (a Chinese
//!    UI name) is prose and may appear on one page only.
//! 3. **Fenced blocks.** The same number of blocks, in order, with the same
//!    info string and the same code. Comments may be translated: a comment
//!    starts at a `#` that begins a line or follows whitespace, outside single
//!    and double quotes, and runs to the end of the line (shell, YAML, PromQL
//!    and the `text` files the pages show all use `#`). Code is compared line
//!    by line with comments and trailing whitespace removed, and lines left
//!    empty are dropped, so a translated comment may take more or fewer lines.
//!    A commented-out example key is a comment too and may be translated; the
//!    keys that matter are in the code, which must match.
//! 4. **Links.** The same set of link targets once a target's `.zh-CN.md`
//!    is read as `.md` and its `#fragment` dropped; every `#fragment` of a
//!    link to a page of this repository names a heading of that page
//!    (GitHub's anchors: lower case, spaces to `-`, punctuation dropped, CJK
//!    kept).
//! 5. **Cross-links.** Each page links to the other within its first five
//!    lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// English pages that must have a Chinese version: the README and every
/// page of `docs/`, so a new page comes with its translation.
fn required() -> Vec<String> {
    let mut pages = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && !name.ends_with(".zh-CN.md") {
            pages.push(format!("docs/{name}"));
        }
    }
    pages.sort();
    pages
}

/// Lines at the top of a page in which it must link to its counterpart.
const CROSS_LINK_LINES: usize = 5;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// `X.zh-CN.md` → `X.md`; anything else unchanged.
fn english_name(name: &str) -> String {
    name.strip_suffix(".zh-CN.md")
        .map_or_else(|| name.to_string(), |stem| format!("{stem}.md"))
}

/// `X.md` → `X.zh-CN.md`.
fn chinese_name(name: &str) -> String {
    format!("{}.zh-CN.md", name.strip_suffix(".md").unwrap_or(name))
}

/// Every Chinese page of the repository (top level and `docs/`), relative.
fn chinese_pages() -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["", "docs"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            if name.ends_with(".zh-CN.md") {
                found.push(if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                });
            }
        }
    }
    found.sort();
    found
}

/// A Markdown page cut into what the rules compare.
#[derive(Debug, Default)]
struct Page {
    /// (level, text) of each heading.
    headings: Vec<(usize, String)>,
    /// (info string, lines) of each fenced block.
    blocks: Vec<(String, Vec<String>)>,
    /// Text outside fenced blocks, headings included.
    prose: String,
    /// The first lines, for the cross-link.
    top: String,
}

fn parse(markdown: &str) -> Page {
    let mut page = Page {
        top: markdown
            .lines()
            .take(CROSS_LINK_LINES)
            .collect::<Vec<_>>()
            .join("\n"),
        ..Page::default()
    };
    let mut open: Option<(String, Vec<String>)> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (Some(_), true) => page.blocks.push(open.take().unwrap()),
            (Some((_, lines)), false) => lines.push(line.to_string()),
            (None, true) => {
                let info = line.trim_start().trim_start_matches('`').trim();
                open = Some((info.to_string(), Vec::new()));
            }
            (None, false) => {
                if let Some(heading) = heading(line) {
                    page.headings.push(heading);
                }
                page.prose.push_str(line);
                page.prose.push('\n');
            }
        }
    }
    if let Some(block) = open {
        page.blocks.push(block);
    }
    page
}

/// `## Text` → (2, "Text").
fn heading(line: &str) -> Option<(usize, String)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let rest = &line[level..];
    (level > 0 && level <= 6 && rest.starts_with(' '))
        .then(|| (level, rest.trim().trim_end_matches('#').trim().to_string()))
}

/// Inline code spans of prose, whitespace collapsed, and the prose with each
/// span blanked out.
fn code_spans(prose: &str) -> (Vec<String>, String) {
    let mut spans = Vec::new();
    let mut rest = String::new();
    let mut i = 0;
    let bytes = prose.as_bytes();
    while i < bytes.len() {
        if bytes[i] != b'`' {
            let c = prose[i..].chars().next().unwrap();
            rest.push(c);
            i += c.len_utf8();
            continue;
        }
        let ticks = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let fence = "`".repeat(ticks);
        let body_start = i + ticks;
        // The closing run has exactly as many backticks.
        let mut search = body_start;
        let close = loop {
            match prose[search..].find(&fence) {
                None => break None,
                Some(at) => {
                    let at = search + at;
                    let run = bytes[at..].iter().take_while(|&&b| b == b'`').count();
                    if run == ticks {
                        break Some(at);
                    }
                    search = at + run;
                }
            }
        };
        match close {
            Some(end) => {
                let body = prose[body_start..end]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                spans.push(body);
                rest.push(' ');
                i = end + ticks;
            }
            None => {
                rest.push_str(&fence);
                i = body_start;
            }
        }
    }
    (spans, rest)
}

/// Targets of `[text](target)` links in prose whose code spans are blanked.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let mut depth = 0usize;
        let end = after.char_indices().find_map(|(i, c)| match c {
            '(' => {
                depth += 1;
                None
            }
            ')' if depth == 0 => Some(i),
            ')' => {
                depth -= 1;
                None
            }
            '\n' => Some(i),
            _ => None,
        });
        let end = end.unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        if !target.is_empty() {
            found.push(target.to_string());
        }
        rest = &after[end..];
    }
    found
}

/// A link target as the rules compare it: fragment dropped, Chinese page
/// read as its English original.
fn normalised(target: &str) -> String {
    let path = target.split('#').next().unwrap_or_default();
    english_name(path)
}

/// GitHub's anchor of a heading text.
fn anchor(text: &str) -> String {
    // Inline code keeps its text; the backticks go.
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    parse(markdown)
        .headings
        .iter()
        .map(|(_, text)| anchor(text))
        .collect()
}

/// The code of a fenced block line: comment and trailing whitespace removed.
fn code_of(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut after_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && after_space => return line[..i].trim_end(),
            None if c == '"' || c == '\'' => quote = Some(c),
            None => {}
        }
        after_space = c.is_whitespace();
    }
    line.trim_end()
}

fn code_lines(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| code_of(l))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Problems of a pair of pages, as sentences naming the page at fault.
/// `resolve` reads a page of the repository for anchor checks (relative to
/// the page's folder), `None` when it is not a Markdown file here.
fn compare(
    english_path: &str,
    english: &str,
    chinese_path: &str,
    chinese: &str,
    resolve: &dyn Fn(&str, &str) -> Option<String>,
) -> Vec<String> {
    let en = parse(english);
    let zh = parse(chinese);
    let mut problems = Vec::new();
    problems.extend(compare_headings(chinese_path, &en, &zh));
    problems.extend(compare_spans(english_path, chinese_path, &en, &zh));
    problems.extend(compare_blocks(chinese_path, &en, &zh));
    problems.extend(compare_links(english_path, chinese_path, &en, &zh));
    for (path, page, other) in [
        (english_path, &en, chinese_path),
        (chinese_path, &zh, english_path),
    ] {
        let other_name = Path::new(other).file_name().unwrap().to_string_lossy();
        if !links(&page.top)
            .iter()
            .any(|t| t.split('#').next() == Some(&*other_name))
        {
            problems.push(format!(
                "{path}: no link to {other_name} in its first {CROSS_LINK_LINES} lines"
            ));
        }
        let (_, text) = code_spans(&page.prose);
        for target in links(&text) {
            if let Some(problem) = check_anchor(path, &target, resolve) {
                problems.push(problem);
            }
        }
    }
    problems
}

fn compare_headings(chinese_path: &str, en: &Page, zh: &Page) -> Vec<String> {
    let mut problems = Vec::new();
    let levels = |p: &Page| p.headings.iter().map(|(l, _)| *l).collect::<Vec<_>>();
    if levels(en) != levels(zh) {
        let first = (0..en.headings.len().max(zh.headings.len()))
            .find(|&i| en.headings.get(i).map(|h| h.0) != zh.headings.get(i).map(|h| h.0))
            .unwrap_or(0);
        let show = |p: &Page| {
            p.headings
                .get(first)
                .map_or("(none)".to_string(), |(l, t)| {
                    format!("{} {t}", "#".repeat(*l))
                })
        };
        problems.push(format!(
            "{chinese_path}: headings differ from the English page ({} there, {} here); \
             heading {} is `{}` in English and `{}` here",
            en.headings.len(),
            zh.headings.len(),
            first + 1,
            show(en),
            show(zh),
        ));
        return problems;
    }
    for ((_, e), (_, z)) in en.headings.iter().zip(&zh.headings) {
        if camel_case(e) && e != z {
            problems.push(format!(
                "{chinese_path}: heading `{e}` must stay `{e}` (an alert name's anchor), not `{z}`"
            ));
        }
    }
    problems
}

/// `GseAgentOffline`: one ASCII word, a capital, then another capital later.
fn camel_case(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && text.chars().all(|c| c.is_ascii_alphanumeric())
        && text.chars().any(|c| c.is_ascii_lowercase())
        && chars.any(|c| c.is_ascii_uppercase())
}

fn ascii_spans(page: &Page) -> BTreeSet<String> {
    code_spans(&page.prose)
        .0
        .into_iter()
        .filter(|s| s.is_ascii() && !s.is_empty())
        .collect()
}

fn compare_spans(english_path: &str, chinese_path: &str, en: &Page, zh: &Page) -> Vec<String> {
    let (en, zh) = (ascii_spans(en), ascii_spans(zh));
    let mut problems = Vec::new();
    let missing: Vec<_> = en.difference(&zh).map(|s| format!("`{s}`")).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{chinese_path}: lacks inline code of {english_path}: {}",
            missing.join(", ")
        ));
    }
    let extra: Vec<_> = zh.difference(&en).map(|s| format!("`{s}`")).collect();
    if !extra.is_empty() {
        problems.push(format!(
            "{chinese_path}: has inline code that {english_path} lacks: {}",
            extra.join(", ")
        ));
    }
    problems
}

fn compare_blocks(chinese_path: &str, en: &Page, zh: &Page) -> Vec<String> {
    if en.blocks.len() != zh.blocks.len() {
        return vec![format!(
            "{chinese_path}: {} fenced blocks, the English page has {}",
            zh.blocks.len(),
            en.blocks.len()
        )];
    }
    let mut problems = Vec::new();
    for (i, ((en_info, en_lines), (zh_info, zh_lines))) in
        en.blocks.iter().zip(&zh.blocks).enumerate()
    {
        if en_info != zh_info {
            problems.push(format!(
                "{chinese_path}: fenced block {} is ```{zh_info}, in English ```{en_info}",
                i + 1
            ));
            continue;
        }
        let (en_code, zh_code) = (code_lines(en_lines), code_lines(zh_lines));
        if en_code != zh_code {
            let at = (0..en_code.len().max(zh_code.len()))
                .find(|&j| en_code.get(j) != zh_code.get(j))
                .unwrap_or(0);
            problems.push(format!(
                "{chinese_path}: fenced block {} ({en_info}) differs from the English one outside comments: \
                 English `{}`, here `{}`",
                i + 1,
                en_code.get(at).unwrap_or(&"(end)"),
                zh_code.get(at).unwrap_or(&"(end)"),
            ));
        }
    }
    problems
}

fn compare_links(english_path: &str, chinese_path: &str, en: &Page, zh: &Page) -> Vec<String> {
    let targets = |p: &Page| -> BTreeSet<String> {
        links(&code_spans(&p.prose).1)
            .iter()
            .map(|t| normalised(t))
            .filter(|t| !t.is_empty())
            .collect()
    };
    let (en_targets, zh_targets) = (targets(en), targets(zh));
    let mut problems = Vec::new();
    for t in en_targets.difference(&zh_targets) {
        problems.push(format!(
            "{chinese_path}: no link to {t} (or its Chinese page), which {english_path} has"
        ));
    }
    for t in zh_targets.difference(&en_targets) {
        problems.push(format!(
            "{chinese_path}: links to {t}, which {english_path} does not"
        ));
    }
    problems
}

/// A `#fragment` that names no heading of its page.
fn check_anchor(
    page: &str,
    target: &str,
    resolve: &dyn Fn(&str, &str) -> Option<String>,
) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, fragment) = target.split_once('#')?;
    let markdown = resolve(page, path)?;
    (!anchors(&markdown).contains(fragment))
        .then(|| format!("{page}: link {target}: no heading with anchor #{fragment}"))
}

/// Reads `path` relative to `page`'s folder (the page itself when empty).
fn resolve_in_repo(page: &str, path: &str) -> Option<String> {
    let page_dir = Path::new(page).parent().unwrap_or(Path::new(""));
    let file: PathBuf = if path.is_empty() {
        PathBuf::from(page)
    } else {
        page_dir.join(path)
    };
    if file.extension().is_none_or(|e| e != "md") {
        return None;
    }
    Some(
        std::fs::read_to_string(root().join(&file))
            .unwrap_or_else(|e| panic!("{page}: link to {}: {e}", file.display())),
    )
}

#[test]
fn every_chinese_page_keeps_in_step_with_its_english_page() {
    let pages = chinese_pages();
    for english in required() {
        assert!(
            pages.contains(&chinese_name(&english)),
            "{english} has no Chinese page {} (found {pages:?})",
            chinese_name(&english)
        );
    }
    let mut problems = Vec::new();
    for chinese in &pages {
        let english = english_name(chinese);
        assert!(
            root().join(&english).exists(),
            "{chinese} has no English original {english}"
        );
        problems.extend(compare(
            &english,
            &read(&english),
            chinese,
            &read(chinese),
            &resolve_in_repo,
        ));
    }
    assert!(
        problems.is_empty(),
        "\n{}\n\nA Chinese page changes with its English page: translate new prose and \
         headings, copy inline code and fenced blocks as they are (comments inside blocks \
         may be translated); the rules are in tests/translations.rs.",
        problems.join("\n")
    );
}

/// The real configuration pair, with `edit` applied to the English side.
fn problems_after(edit: impl Fn(&str) -> String) -> Vec<String> {
    let english = edit(&read("docs/configuration.md"));
    compare(
        "docs/configuration.md",
        &english,
        "docs/configuration.zh-CN.md",
        &read("docs/configuration.zh-CN.md"),
        &resolve_in_repo,
    )
}

#[test]
fn a_heading_key_block_or_link_added_to_the_english_page_only_fails() {
    assert!(problems_after(|s| s.to_string()).is_empty());

    let heading = problems_after(|s| format!("{s}\n## A new section\n\nMore.\n"));
    assert!(
        heading.iter().any(|p| p.contains("headings differ")),
        "{heading:?}"
    );

    let key = problems_after(|s| format!("{s}\nAlso `gse.brand_new_key`.\n"));
    assert!(
        key.iter()
            .any(|p| p.contains("lacks inline code") && p.contains("`gse.brand_new_key`")),
        "{key:?}"
    );

    let flag = problems_after(|s| s.replace("`--config.check`", "`--config.verify`"));
    assert!(
        flag.iter()
            .any(|p| p.contains("lacks inline code") && p.contains("`--config.verify`")),
        "{flag:?}"
    );
    assert!(
        flag.iter()
            .any(|p| p.contains("has inline code") && p.contains("`--config.check`")),
        "{flag:?}"
    );

    let block = problems_after(|s| s.replacen("  api: v2\n", "  api: v1\n", 1));
    assert!(
        block.iter().any(|p| p.contains("fenced block 1 (yaml)")),
        "{block:?}"
    );

    let anchor = problems_after(|s| format!("{s}\nSee [gone](metrics.md#no-such-heading).\n"));
    assert!(
        anchor
            .iter()
            .any(|p| p.contains("no heading with anchor #no-such-heading")),
        "{anchor:?}"
    );

    let link = problems_after(|s| format!("{s}\nSee [the web page](web.md).\n"));
    assert!(
        link.iter().any(|p| p.contains("no link to web.md")),
        "{link:?}"
    );
}

#[test]
fn comments_may_be_translated_code_may_not() {
    let no_files = |_: &str, _: &str| None;
    let en = "[中文](zh.zh-CN.md)\n\n# T\n\n```yaml\n# a comment\nkey: 1   # why\nurl: \"http://x/#y\"  # quoted # stays\n```\n";
    let zh = "[English](zh.md)\n\n# 标题\n\n```yaml\n# 注释\n# 第二行注释\nkey: 1 # 原因\nurl: \"http://x/#y\"\n```\n";
    assert_eq!(
        compare("zh.md", en, "zh.zh-CN.md", zh, &no_files),
        Vec::<String>::new()
    );

    let changed = zh.replace("key: 1", "key: 2");
    let problems = compare("zh.md", en, "zh.zh-CN.md", &changed, &no_files);
    assert!(
        problems.iter().any(|p| p.contains("`key: 1`")),
        "{problems:?}"
    );

    // An alert-name heading keeps its anchor.
    let en = "[中文](r.zh-CN.md)\n# R\n## GseAgentOffline\n";
    let zh = "[English](r.md)\n# 手册\n## Gse 离线\n";
    let problems = compare("r.md", en, "r.zh-CN.md", zh, &no_files);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("must stay `GseAgentOffline`")),
        "{problems:?}"
    );

    // Spans wrap freely; non-ASCII spans are prose.
    let en = "[中文](w.zh-CN.md)\nRun `curl -X POST\nhttp://h/-/reload` now, in `蓝鲸`.\n";
    let zh = "[English](w.md)\n执行 `curl -X POST http://h/-/reload`。\n";
    assert_eq!(
        compare("w.md", en, "w.zh-CN.md", zh, &no_files),
        Vec::<String>::new()
    );
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor("OTLP push"), "otlp-push");
    assert_eq!(anchor("OTLP 推送"), "otlp-推送");
    assert_eq!(
        anchor("`gse_exporter node` 的指标"),
        "gse_exporter-node-的指标"
    );
    assert_eq!(
        anchor("Least privilege (CAP_SYS_PTRACE)"),
        "least-privilege-cap_sys_ptrace"
    );
}
