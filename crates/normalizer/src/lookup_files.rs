//! Lookup files operators already have, in the formats they come in: the JSON of
//! `op item list`, `op vault list`, `op user list`, `op group list` (all `--format json`), and
//! Panther-style CSV or JSON Lines with `uuid,title[,updatedAt]`.
//!
//! A file is validated whole before anything is written: a bad element stops the import with
//! its position and the problem, and the tables stay as they were.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use oprelay_events::{LookupKind, LookupRow, LookupSource};

/// What a lookup file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    OpItemList,
    OpVaultList,
    OpUserList,
    OpGroupList,
    Csv,
    JsonLines,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::OpItemList => "op item list JSON",
            FileFormat::OpVaultList => "op vault list JSON",
            FileFormat::OpUserList => "op user list JSON",
            FileFormat::OpGroupList => "op group list JSON",
            FileFormat::Csv => "CSV (uuid,title[,updatedAt])",
            FileFormat::JsonLines => "JSON Lines ({uuid,title[,updatedAt]})",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct LookupFileError {
    /// `element 3`, `line 17`, …
    pub at: String,
    pub problem: String,
}

fn err(at: impl Into<String>, problem: impl Into<String>) -> LookupFileError {
    LookupFileError {
        at: at.into(),
        problem: problem.into(),
    }
}

/// The rows of a file, every one validated, and the format detected.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    pub format: FileFormat,
    pub rows: Vec<LookupRow>,
}

impl ParsedFile {
    pub fn counts(&self) -> BTreeMap<LookupKind, usize> {
        let mut c = BTreeMap::new();
        for r in &self.rows {
            *c.entry(r.kind).or_insert(0) += 1;
        }
        c
    }
}

/// A UUID is used in a KV key (`{kind}.{uuid}`): letters, digits, `-`, `_`, `=`.
fn check_uuid(at: &str, uuid: &str) -> Result<(), LookupFileError> {
    if uuid.is_empty() {
        return Err(err(at, "uuid is empty"));
    }
    if uuid.len() > 128
        || !uuid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    {
        return Err(err(
            at,
            format!("uuid `{uuid}` has characters a 1Password UUID never has"),
        ));
    }
    Ok(())
}

fn row(
    at: &str,
    kind: LookupKind,
    uuid: &str,
    title: &str,
    email: Option<&str>,
    updated_at: Option<&str>,
) -> Result<LookupRow, LookupFileError> {
    check_uuid(at, uuid)?;
    if title.trim().is_empty() {
        return Err(err(at, "title/name is empty"));
    }
    Ok(LookupRow {
        uuid: uuid.to_owned(),
        kind,
        title: title.to_owned(),
        email: email.filter(|e| !e.is_empty()).map(str::to_owned),
        updated_at: updated_at.filter(|u| !u.is_empty()).map(str::to_owned),
        source: LookupSource::Imported,
    })
}

fn field<'a>(obj: &'a Map<String, Value>, at: &str, key: &str) -> Result<&'a str, LookupFileError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(err(at, format!("`{key}` is not a string"))),
        None => Err(err(at, format!("`{key}` is missing"))),
    }
}

fn opt_field<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
}

/// Which `op … list` an array element looks like.
fn detect_op(obj: &Map<String, Value>) -> Option<FileFormat> {
    if obj.contains_key("email") {
        Some(FileFormat::OpUserList)
    } else if obj.contains_key("title") {
        Some(FileFormat::OpItemList)
    } else if obj.contains_key("content_version")
        || obj.contains_key("items")
        || obj.contains_key("attribute_version")
    {
        Some(FileFormat::OpVaultList)
    } else if obj.contains_key("description") || obj.contains_key("state") {
        Some(FileFormat::OpGroupList)
    } else {
        None
    }
}

/// Parses and validates a whole file. `kind` overrides what the format implies (CSV and JSON
/// Lines name items by default, as in Panther's guide).
pub fn parse(text: &str, kind: Option<LookupKind>) -> Result<ParsedFile, LookupFileError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.is_empty() {
        return Err(err("file", "is empty"));
    }
    match trimmed.as_bytes()[0] {
        b'[' => parse_op(trimmed, kind),
        b'{' => parse_jsonl(trimmed, kind),
        _ => parse_csv(trimmed, kind),
    }
}

fn parse_op(text: &str, kind: Option<LookupKind>) -> Result<ParsedFile, LookupFileError> {
    let values: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| err(format!("line {}", e.line()), format!("not valid JSON: {e}")))?;
    let first = values.first().and_then(Value::as_object);
    let format = match kind {
        Some(LookupKind::Item) => FileFormat::OpItemList,
        Some(LookupKind::Vault) => FileFormat::OpVaultList,
        Some(LookupKind::User) => FileFormat::OpUserList,
        Some(LookupKind::Group) => FileFormat::OpGroupList,
        None => match first.and_then(detect_op) {
            Some(f) => f,
            None if values.is_empty() => return Ok(ParsedFile { format: FileFormat::OpItemList, rows: vec![] }),
            None => return Err(err("element 0", "cannot tell which `op … list` this is (no title, email, content_version or state); pass --kind")),
        },
    };
    let (kind, name_key) = match format {
        FileFormat::OpItemList => (LookupKind::Item, "title"),
        FileFormat::OpVaultList => (LookupKind::Vault, "name"),
        FileFormat::OpUserList => (LookupKind::User, "name"),
        _ => (LookupKind::Group, "name"),
    };
    let mut rows = Vec::with_capacity(values.len());
    let mut vaults: BTreeMap<String, String> = BTreeMap::new();
    for (i, v) in values.iter().enumerate() {
        let at = format!("element {i}");
        let obj = v
            .as_object()
            .ok_or_else(|| err(&at, "is not a JSON object"))?;
        let id = field(obj, &at, "id")?;
        let name = field(obj, &at, name_key)?;
        let email = if kind == LookupKind::User {
            opt_field(obj, &["email"])
        } else {
            None
        };
        rows.push(row(
            &at,
            kind,
            id,
            name,
            email,
            opt_field(obj, &["updated_at", "updatedAt"]),
        )?);
        // Items carry their vault's name: learn it too.
        if let Some(vault) = obj
            .get("vault")
            .and_then(Value::as_object)
            .filter(|_| kind == LookupKind::Item)
        {
            if let (Some(vid), Some(vname)) = (
                vault.get("id").and_then(Value::as_str),
                vault.get("name").and_then(Value::as_str),
            ) {
                check_uuid(&format!("{at}.vault"), vid)?;
                vaults.insert(vid.to_owned(), vname.to_owned());
            }
        }
    }
    for (vid, vname) in vaults {
        if !vname.trim().is_empty() {
            rows.push(row("vault", LookupKind::Vault, &vid, &vname, None, None)?);
        }
    }
    Ok(ParsedFile { format, rows })
}

fn parse_jsonl(text: &str, kind: Option<LookupKind>) -> Result<ParsedFile, LookupFileError> {
    let kind = kind.unwrap_or(LookupKind::Item);
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("line {}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| err(&at, format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| err(&at, "is not a JSON object"))?;
        let uuid = field(obj, &at, "uuid")?;
        let title = field(obj, &at, "title")?;
        rows.push(row(
            &at,
            kind,
            uuid,
            title,
            opt_field(obj, &["email"]),
            opt_field(obj, &["updatedAt", "updated_at"]),
        )?);
    }
    Ok(ParsedFile {
        format: FileFormat::JsonLines,
        rows,
    })
}

fn parse_csv(text: &str, kind: Option<LookupKind>) -> Result<ParsedFile, LookupFileError> {
    let kind = kind.unwrap_or(LookupKind::Item);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| err("line 1", format!("not CSV: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(uuid_col), Some(title_col)) = (col("uuid"), col("title")) else {
        return Err(err(
            "line 1",
            "the header must name `uuid` and `title` columns (Panther's lookup layout)",
        ));
    };
    let updated_col = col("updatedAt").or_else(|| col("updated_at"));
    let email_col = col("email");
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let at = format!("line {}", i + 2);
        let record = record.map_err(|e| err(&at, format!("bad CSV: {e}")))?;
        let get = |c: Option<usize>| c.and_then(|c| record.get(c));
        let uuid = get(Some(uuid_col)).unwrap_or_default();
        let title = get(Some(title_col)).unwrap_or_default();
        rows.push(row(
            &at,
            kind,
            uuid,
            title,
            get(email_col),
            get(updated_col),
        )?);
    }
    Ok(ParsedFile {
        format: FileFormat::Csv,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_detected() {
        let items = r#"[{"id":"abc","title":"AWS root","vault":{"id":"v1","name":"Prod"},"updated_at":"2026-01-01T00:00:00Z"}]"#;
        let p = parse(items, None).unwrap();
        assert_eq!(p.format, FileFormat::OpItemList);
        assert_eq!(p.counts()[&LookupKind::Item], 1);
        assert_eq!(
            p.counts()[&LookupKind::Vault],
            1,
            "vault names come with items"
        );
        let users = r#"[{"id":"U1","name":"Ada","email":"ada@example.com","type":"MEMBER","state":"ACTIVE"}]"#;
        assert_eq!(
            parse(users, None).unwrap().rows[0].email.as_deref(),
            Some("ada@example.com")
        );
        let vaults = r#"[{"id":"v1","name":"Prod","content_version":3}]"#;
        assert_eq!(parse(vaults, None).unwrap().format, FileFormat::OpVaultList);
        let groups = r#"[{"id":"g1","name":"Owners","description":"","state":"ACTIVE"}]"#;
        assert_eq!(parse(groups, None).unwrap().rows[0].kind, LookupKind::Group);
        let csv = "uuid,title,updatedAt\nabc,AWS root,2022-02-14 17:44:50\n";
        let p = parse(csv, None).unwrap();
        assert_eq!(
            (p.format, p.rows[0].kind),
            (FileFormat::Csv, LookupKind::Item)
        );
        let jsonl = "{\"uuid\":\"abc\",\"title\":\"AWS root\",\"updatedAt\":null}\n{\"uuid\":\"def\",\"title\":\"VPN\"}\n";
        assert_eq!(parse(jsonl, None).unwrap().rows.len(), 2);
    }

    #[test]
    fn bad_files_name_the_element_and_the_problem() {
        let cases = [
            (
                r#"[{"id":"a","title":"x"},{"id":"b"}]"#,
                "element 1",
                "`title` is missing",
            ),
            (r#"[{"id":"a b","title":"x"}]"#, "element 0", "never has"),
            ("uuid,title\na,x\n,y\n", "line 3", "uuid is empty"),
            ("id,name\na,x\n", "line 1", "uuid` and `title"),
            (
                "{\"uuid\":\"a\",\"title\":\"x\"}\nnot json\n",
                "line 2",
                "not valid JSON",
            ),
            (r#"[{"id":"a","foo":1}]"#, "element 0", "pass --kind"),
            ("", "file", "empty"),
        ];
        for (text, at, problem) in cases {
            let e = parse(text, None).unwrap_err();
            assert_eq!(e.at, at, "{text}");
            assert!(e.problem.contains(problem), "{e}");
        }
    }
}
