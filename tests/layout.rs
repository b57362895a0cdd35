//! The architecture the layout promises: module dependencies point one way (no cycles among
//! the library's top-level modules, nor among a module's children), the command-line parser
//! stays in the binary, and nothing refers to files outside the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// The module path of a file under src/ (`src/train/run.rs` -> ["train", "run"]).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix("src").unwrap().with_extension("");
    let mut m: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// Paths named after `crate::` or `super::` in a file, resolved to module paths.
fn references(file: &Path, module: &[String]) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        for (i, _) in text.match_indices(prefix) {
            let before = text[..i].chars().last().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
            let rest = &text[i + prefix.len()..];
            let path: Vec<String> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
    }
    out
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g_keys(graph).find_map(|n| visit(&n, graph, &mut Vec::new(), &mut done))
}

fn g_keys(g: &BTreeMap<String, BTreeSet<String>>) -> impl Iterator<Item = String> + '_ {
    g.keys().cloned()
}

/// Edges between sibling modules at depth `depth` under `parent` (depth 1: top level).
fn sibling_graph(files: &[PathBuf], parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let d = parent.len();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(f);
        if m.len() <= d || m[..d] != *parent || m.first().is_some_and(|s| s == "cli") {
            continue;
        }
        for r in references(f, &m) {
            if r.len() > d
                && r[..d] == *parent
                && r[d] != m[d]
                && r[d] != "Error"
                && r[d] != "Result"
            {
                g.entry(m[d].clone()).or_default().insert(r[d].clone());
            }
        }
    }
    g
}

#[test]
fn module_dependencies_have_no_cycles() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut parents: BTreeSet<Vec<String>> = BTreeSet::new();
    parents.insert(Vec::new());
    for f in &files {
        let m = module_of(f);
        if m.len() >= 2 {
            parents.insert(m[..m.len() - 1].to_vec());
        }
    }
    for p in &parents {
        let g = sibling_graph(&files, p);
        if let Some(c) = find_cycle(&g) {
            panic!("import cycle under src/{}: {}", p.join("/"), c.join(" -> "));
        }
    }
    // The check sees real edges: train's loop uses its methods.
    let train = sibling_graph(&files, &["train".to_string()]);
    assert!(train["run"].contains("methods") && train["run"].contains("classifier"));
}

#[test]
fn the_library_knows_nothing_of_the_command_line_or_outside_files() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let in_binary = f.starts_with("src/cli") || f == Path::new("src/main.rs");
        if !in_binary {
            assert!(!text.contains("clap"), "{} uses clap", f.display());
        }
        assert!(
            !text.contains("../shared"),
            "{} refers outside the repository",
            f.display()
        );
    }
    for doc in [
        "README.md",
        "docs/method.md",
        "docs/results.md",
        "docs/benchmarks.md",
        "docs/portability.md",
    ] {
        let text = std::fs::read_to_string(doc).unwrap();
        assert!(
            !text.contains("../shared"),
            "{doc} refers outside the repository"
        );
    }
}
