//! ARCHITECTURE.md's invariant that the daemon's top-level modules import each other in one
//! direction only: every `crate::<module>` path outside comments and tests is an edge, and the
//! graph of edges has no circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Edges = BTreeMap<String, BTreeMap<String, String>>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(relative: &str) -> bool {
    relative.split('/').any(|part| {
        let stem = part.trim_end_matches(".rs");
        stem == "tests" || stem == "test" || stem.ends_with("_tests")
    })
}

/// Edges from each top-level module to the others it names, with one place each is named.
fn module_edges(src: &Path) -> Edges {
    let mut files = Vec::new();
    source_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|path| top_module(src, path))
        .filter(|module| module != "lib" && module != "main")
        .collect();
    let mut edges = Edges::new();
    for path in &files {
        let relative = path
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let from = top_module(src, path);
        if !modules.contains(&from) || is_test_file(&relative) {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        // An inline `mod tests` comes last in a file by this codebase's convention.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for (number, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (index, _) in line.match_indices("crate::") {
                let rest = &line[index + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    let place = format!("{relative}:{}", number + 1);
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(place);
                }
            }
        }
    }
    edges
}

fn top_module(src: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// A circle through `start`, if there is one, as the modules along it.
fn circle_through(edges: &Edges, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in edges.get(&module).into_iter().flat_map(BTreeMap::keys) {
            if next == start {
                return Some(path.clone());
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_in_one_direction_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = module_edges(&src);
    assert!(
        edges.contains_key("server"),
        "the scan found no edges: {edges:?}"
    );
    for module in edges.keys() {
        if let Some(circle) = circle_through(&edges, module) {
            let places: Vec<String> = circle
                .iter()
                .zip(circle.iter().cycle().skip(1))
                .map(|(from, to)| format!("{from} -> {to} ({})", edges[from][to]))
                .collect();
            panic!("import circle: {}", places.join(", "));
        }
    }
}

#[test]
fn a_circle_is_found() {
    let mut edges = Edges::new();
    let edge = |edges: &mut Edges, from: &str, to: &str| {
        edges
            .entry(from.into())
            .or_default()
            .insert(to.into(), String::new());
    };
    edge(&mut edges, "a", "b");
    edge(&mut edges, "b", "c");
    assert_eq!(circle_through(&edges, "a"), None);
    edge(&mut edges, "c", "a");
    assert_eq!(circle_through(&edges, "a").unwrap(), ["a", "b", "c"]);
}
