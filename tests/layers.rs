//! The layers of `src/` (see docs/architecture.md): each module of the
//! library may use only the modules `src/lib.rs` declares before it, so
//! imports never run in circles and a reader can stop at any layer.
//!
//! This is a small reader of `crate::` paths, not a build of `cargo-modules`:
//! the rule is one line of order, and compiling a tool for it on CI's two
//! cores would cost minutes for nothing the compiler does not already know.

use std::path::{Path, PathBuf};

/// The library's top modules in declaration order: the layers.
fn layers(lib_rs: &str) -> Vec<String> {
    lib_rs
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or(l.trim().strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

/// Every `crate::NAME` a line of code names (comments skipped).
fn crate_paths(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(i, _)| !code[..*i].ends_with("pub(") && !code[..*i].ends_with('_'))
        .map(|(i, m)| {
            let rest = &code[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// `file:line: A uses B` for every use of a module that is not above.
fn violations(order: &[String], files: &[(PathBuf, String)]) -> Vec<String> {
    let rank = |name: &str| order.iter().position(|m| m == name);
    let mut found = Vec::new();
    for (path, text) in files {
        let top = path
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs"))
            .unwrap_or_default();
        let Some(own) = rank(top) else { continue };
        for (n, line) in text.lines().enumerate() {
            for used in crate_paths(line) {
                if used != top && rank(used).is_none_or(|r| r >= own) {
                    found.push(format!(
                        "src/{}:{}: {top} uses {used}",
                        path.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(base).unwrap().to_owned(), text));
        }
    }
}

#[test]
fn modules_depend_only_on_the_layers_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(order.len() > 10, "lib.rs declares {order:?}");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let found = violations(&order, &files);
    assert!(
        found.is_empty(),
        "layer order is {order:?}; these reach down or sideways:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_a_module_reaching_down() {
    let order: Vec<String> = ["model", "config", "poller"].map(String::from).to_vec();
    let files = vec![
        (
            PathBuf::from("model.rs"),
            "// crate::poller in a comment is fine\nuse crate::config::Config;\n".to_string(),
        ),
        (
            PathBuf::from("poller/mod.rs"),
            "pub(crate) fn f() { crate::model::x(); crate::poller::y(); }\n".to_string(),
        ),
    ];
    assert_eq!(
        violations(&order, &files),
        ["src/model.rs:2: model uses config"]
    );
}

#[test]
fn docs_list_the_layers_in_the_order_of_lib_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = layers(&std::fs::read_to_string(root.join("src/lib.rs")).unwrap());
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let block = doc
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("docs/architecture.md has a ```text block of layers");
    let listed: Vec<String> = block
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.trim_end_matches('/').to_string())
        .collect();
    assert_eq!(listed, order, "docs/architecture.md's layer list");
}
