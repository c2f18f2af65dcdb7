//! The library's top-level modules import each other without a cycle: each one can be
//! read, tested and changed with only the modules below it in mind.
//!
//! The graph is read from the source: every `crate::NAME` path (in a `use` or inline) in
//! a module's files outside `#[cfg(test)]` is an edge from that module to `NAME`. The
//! binary's command line (`src/main.rs`, `src/cli/`) sits on top of the library and is
//! not part of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/foo.rs` and `src/foo/**.rs` are module `foo`.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "cli")).then(|| name.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules `text` names as `crate::NAME`, with the first line naming each; test
/// modules (from the first `#[cfg(test)]` on) are left out.
fn imports(text: &str) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            // Not `monkeysee_crate::` or the like.
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.entry(name).or_insert(i + 1);
            }
        }
        // `use crate::{a, b::c}`
        if let Some(group) = code
            .split("crate::{")
            .nth(1)
            .and_then(|g| g.split('}').next())
        {
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.entry(name).or_insert(i + 1);
                }
            }
        }
    }
    found
}

type Graph = BTreeMap<String, BTreeMap<String, (PathBuf, usize)>>;

/// module → module it imports → (a file and line that does).
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(from) = top_module(src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let edges = graph.entry(from.clone()).or_default();
        for (to, line) in imports(&text) {
            if to != from && modules.contains(&to) {
                edges.entry(to).or_insert((file.clone(), line));
            }
        }
    }
    graph
}

/// One cycle of `graph`, as the modules along it, if there is any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, State>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(State::Done) => return None,
            Some(State::Open) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node.to_string(), State::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(next, graph, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(node.to_string(), State::Done);
        None
    }
    let mut state = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut state, &mut Vec::new()))
}

fn describe(graph: &Graph, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|pair| {
            let (file, line) = &graph[&pair[0]][&pair[1]];
            format!("{} -> {} ({}:{line})", pair[0], pair[1], file.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The reading itself works: the daemon is built on the decoder and the config.
    assert!(graph["daemon"].contains_key("decoder"), "{graph:?}");
    assert!(graph["daemon"].contains_key("config"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "an import cycle between top-level modules:\n{}",
            describe(&graph, &cycle)
        );
    }
}

#[test]
fn a_cycle_is_found_and_named_with_the_lines_that_close_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::thing;\n").unwrap();
    std::fs::write(
        src.join("b/mod.rs"),
        "// crate::a in a comment is no import\nmod inner;\n",
    )
    .unwrap();
    std::fs::write(src.join("b/inner.rs"), "use crate::{c, units};\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "fn f() { crate::a::g() }\n#[cfg(test)]\nmod tests { use crate::b; }\n",
    )
    .unwrap();
    let graph = module_graph(src);
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a");
    let text = describe(&graph, &cycle);
    assert!(text.contains("b -> c ("), "{text}");
    assert!(text.contains("inner.rs:1"), "{text}");
    assert!(text.contains("c -> a ("), "{text}");
    // Without c's inline path there is none: comments and test modules do not count.
    std::fs::write(
        src.join("c.rs"),
        "fn f() {}\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    assert_eq!(find_cycle(&module_graph(src)), None);
}
