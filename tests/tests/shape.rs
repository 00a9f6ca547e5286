//! The shape the code promises a newcomer (`docs/architecture.md`, "The shape of the code"):
//! no source file over 500 lines and no function over 80, tests beside the code not counted.
//! Files are read as rustfmt writes them, so a function ends at the first line that closes
//! its brace at the indentation it opened with.

use std::path::{Path, PathBuf};

use oprelay_e2e::k8s;

const MAX_FILE_LINES: usize = 500;
const MAX_FUNCTION_LINES: usize = 80;

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library and binary sources: `crates/*/src` and `examples/*/src`.
fn sources() -> Vec<PathBuf> {
    let root = k8s::root();
    let mut files = Vec::new();
    for group in ["crates", "examples"] {
        for entry in std::fs::read_dir(root.join(group))
            .expect("the workspace")
            .flatten()
        {
            rust_files(&entry.path().join("src"), &mut files);
        }
    }
    files.sort();
    files
}

/// The lines before the file's `#[cfg(test)] mod …`, if it has one.
fn code_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| {
            w[0].starts_with("#[cfg(test)]") && w[1].trim_start().starts_with("mod ")
                || w[0].starts_with("#[cfg(test)]")
                    && w[1].trim_start().starts_with("pub(crate) mod ")
        })
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// Each function's name and length in lines, signature to closing brace.
fn functions(lines: &[&str]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = ["pub(crate) ", "pub(super) ", "pub ", ""]
            .iter()
            .flat_map(|vis| ["async fn ", "const fn ", "fn "].map(move |f| format!("{vis}{f}")))
            .find(|prefix| trimmed.starts_with(prefix.as_str()));
        let Some(prefix) = signature else { continue };
        let name: String = trimmed[prefix.len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        // A declaration without a body (in a trait) ends with `;` before any `{`.
        let body = lines[i..]
            .iter()
            .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'))
            .filter(|&k| lines[i + k].trim_end().ends_with('{'));
        if body.is_none() {
            continue;
        }
        if let Some(len) = lines[i..].iter().position(|l| *l == close) {
            found.push((name, len + 1));
        }
    }
    found
}

#[test]
fn no_file_over_500_lines_and_no_function_over_80() {
    let root = k8s::root();
    let mut problems = Vec::new();
    let files = sources();
    assert!(files.len() > 50, "found only {} source files", files.len());
    for path in &files {
        let text = std::fs::read_to_string(path).expect("a readable source file");
        let lines = code_lines(&text);
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        if lines.len() > MAX_FILE_LINES {
            problems.push(format!("{shown}: {} lines", lines.len()));
        }
        for (name, len) in functions(&lines) {
            if len > MAX_FUNCTION_LINES {
                problems.push(format!("{shown}: fn {name} is {len} lines"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "split these (one concept per file, short named steps):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_measure_finds_what_it_should() {
    let source = "\
fn short() {
    a();
}

impl X {
    pub async fn longer(&self) -> u8 {
        let x = {
            1
        };
        x
    }
}

trait T {
    fn declared(&self);
}

#[cfg(test)]
mod tests {
    fn not_counted() {}
}
";
    let lines = code_lines(source);
    assert_eq!(lines.len(), 17, "the test module is cut off");
    assert_eq!(
        functions(&lines),
        vec![("short".to_owned(), 3), ("longer".to_owned(), 6)]
    );
}
