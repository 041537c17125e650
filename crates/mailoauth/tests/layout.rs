//! The house rules of the source tree, checked: no import circle between source
//! files, no module over 600 lines without a stated reason, no function in the
//! CLI over 60 lines. They keep the code easy to find and change; a failure
//! names the files and what to do.
//!
//! Edges are `crate::a::b` paths and `super::sibling` paths. A child using its
//! parent's items (`super::Item`) is not an edge: a directory module's `mod.rs`
//! is its facade, and its children implement it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module that may be longer says why in a line starting with this.
const SIZE_REASON: &str = "//! Size:";
const MAX_MODULE_LINES: usize = 600;
const MAX_CLI_FN_LINES: usize = 60;

fn crates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["mailoauth", "mailoauth-cli"]
        .iter()
        .map(|c| root.join(c).join("src"))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` → `["a","b"]`, `a/mod.rs` → `["a"]`, `lib.rs`/`main.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Identifier paths following `prefix` in `text` (`crate::a::b::C` → `[a, b, C]`).
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        let mut segs = Vec::new();
        let mut cur = rest;
        loop {
            let n = cur
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(cur.len());
            if n == 0 {
                break;
            }
            segs.push(cur[..n].to_owned());
            match cur[n..].strip_prefix("::") {
                Some(r) => cur = r,
                None => break,
            }
        }
        // `use crate::{a, b::c}`: each item of the group.
        if segs.is_empty() && cur.starts_with('{') {
            let group = &cur[1..cur.find('}').unwrap_or(cur.len())];
            for item in group.split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    out.push(item.split("::").map(|s| s.trim().to_owned()).collect());
                }
            }
        } else if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

/// Strip `//` comments so prose mentioning `crate::x` does not count.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Crate {
    /// module path → file (relative, for messages)
    files: BTreeMap<Vec<String>, String>,
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn load(src: &Path) -> Crate {
    let mut all = Vec::new();
    rust_files(src, &mut all);
    let mut files = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for f in &all {
        let m = module_path(src, f);
        files.insert(
            m.clone(),
            f.strip_prefix(src.join("../.."))
                .unwrap_or(f)
                .display()
                .to_string(),
        );
        texts.insert(m, code_only(&std::fs::read_to_string(f).unwrap()));
    }
    // The longest known module prefix of a path.
    let resolve = |p: &[String]| -> Vec<String> {
        (0..=p.len())
            .rev()
            .map(|n| p[..n].to_vec())
            .find(|m| files.contains_key(m))
            .unwrap_or_default()
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, text) in &texts {
        let mut targets = Vec::new();
        for p in paths_after(text, "crate::") {
            targets.push(resolve(&p));
        }
        if let Some((_, parent)) = m.split_last() {
            for p in paths_after(text, "super::") {
                let mut full = parent.to_vec();
                full.extend(p);
                targets.push(resolve(&full));
            }
        }
        for t in targets {
            // Self, and a child's use of one of its ancestors (the facade), are not edges.
            if t == *m || m.starts_with(&t) {
                continue;
            }
            edges.entry(m.clone()).or_default().insert(t);
        }
    }
    Crate { files, edges }
}

fn find_cycle(c: &Crate) -> Option<Vec<Vec<String>>> {
    fn visit(
        c: &Crate,
        m: &Vec<String>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cyc = stack[i..].to_vec();
            cyc.push(m.clone());
            return Some(cyc);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.clone());
        for t in c.edges.get(m).into_iter().flatten() {
            if let Some(cyc) = visit(c, t, stack, done) {
                return Some(cyc);
            }
        }
        stack.pop();
        done.insert(m.clone());
        None
    }
    let mut done = BTreeSet::new();
    for m in c.files.keys() {
        if let Some(cyc) = visit(c, m, &mut Vec::new(), &mut done) {
            return Some(cyc);
        }
    }
    None
}

#[test]
fn no_import_circle_between_source_files() {
    for src in crates() {
        let c = load(&src);
        if let Some(cyc) = find_cycle(&c) {
            let names: Vec<&str> = cyc.iter().map(|m| c.files[m].as_str()).collect();
            panic!(
                "import circle: {}\nfix: move what both sides need into a module of its own \
                 (as `clock` and `jwt` were), or turn one direction into a parameter",
                names.join(" → ")
            );
        }
    }
}

#[test]
fn the_circle_detector_finds_a_circle() {
    // The check above must be able to fail: a scripted pair of modules that use each other.
    let text_a = "use crate::b::X;";
    let text_b = "fn f() { crate::a::y() }";
    let files: BTreeMap<_, _> = [
        (vec!["a".to_owned()], "a.rs".to_owned()),
        (vec!["b".to_owned()], "b.rs".to_owned()),
    ]
    .into_iter()
    .collect();
    let mut edges = BTreeMap::new();
    for (m, t) in [("a", text_a), ("b", text_b)] {
        let set: BTreeSet<Vec<String>> = paths_after(t, "crate::")
            .into_iter()
            .map(|p| p[..1].to_vec())
            .collect();
        edges.insert(vec![m.to_owned()], set);
    }
    assert!(find_cycle(&Crate { files, edges }).is_some());
}

#[test]
fn no_module_over_600_lines_without_a_reason() {
    let mut long = Vec::new();
    for src in crates() {
        let mut all = Vec::new();
        rust_files(&src, &mut all);
        for f in all {
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests at the end of a file do not make the module harder to read.
            let code = text.split("\n#[cfg(test)]").next().unwrap_or(&text);
            let n = code.lines().count();
            if n > MAX_MODULE_LINES && !text.lines().any(|l| l.starts_with(SIZE_REASON)) {
                long.push(format!("{} ({n} lines)", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "modules over {MAX_MODULE_LINES} lines: {}\nfix: split them by what they own, or say why not \
         in a `{SIZE_REASON}` line of the module comment",
        long.join(", ")
    );
}

#[test]
fn cli_functions_are_short() {
    let cli = crates()[1].join("cli");
    let mut all = Vec::new();
    rust_files(&cli, &mut all);
    let mut long = Vec::new();
    for f in all {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("\n#[cfg(test)]").next().unwrap_or(&text);
        let lines: Vec<&str> = code.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let indent = l.len() - t.len();
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "async fn ",
                "pub async fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if !is_fn
                || !l.trim_end().ends_with('{')
                    && !lines[i..]
                        .iter()
                        .take(12)
                        .any(|x| x.trim_end().ends_with('{'))
            {
                continue;
            }
            // The body ends at the first `}` at the function's own indentation.
            let close = " ".repeat(indent) + "}";
            if let Some(len) = lines[i + 1..].iter().position(|x| x.trim_end() == close)
                && len + 2 > MAX_CLI_FN_LINES
            {
                long.push(format!("{}:{} ({} lines)", f.display(), i + 1, len + 2));
            }
        }
    }
    assert!(
        long.is_empty(),
        "CLI functions over {MAX_CLI_FN_LINES} lines: {}\nfix: move the rule into the library and keep \
         the command to parse → call → render",
        long.join(", ")
    );
}
