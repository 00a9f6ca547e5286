//! How the read commands print: tables for people, JSON for scripts (`--output json`).
//!
//! Every read command first builds a value that derives `Serialize` and then renders it one way
//! or the other, so the JSON carries exactly what the table shows (with full timestamps
//! instead of "3m ago").

use serde::Serialize;

/// `--output`: `text` (tables) or `json` (one JSON document on standard output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// A borderless table, like kubectl's: a header row, columns as wide as their content.
pub fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(header)
        .add_rows(rows);
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Pretty JSON with a trailing newline.
pub fn json(value: &impl Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_lines_have_no_trailing_blanks() {
        let text = table(
            ["SINK", "BACKLOG"],
            [
                ["elastic".to_owned(), "12".to_owned()],
                ["a-much-longer-sink".to_owned(), "0".to_owned()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let column = lines[0].find("BACKLOG").unwrap();
        assert_eq!(lines[1].find("12"), Some(column), "{text}");
        assert_eq!(lines[2].find('0'), Some(column), "{text}");
        assert!(column > "a-much-longer-sink".len(), "{text}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{text:?}");
    }
}
