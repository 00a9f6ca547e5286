//! What Elasticsearch does with an index template, for the test receiver: it refuses a
//! template with an unknown key, field type or mapping parameter (400, as ES answers), and it
//! refuses a document whose value does not fit its field's mapped type (a date that does not
//! match the field's format, an IP that is not one, an object where a keyword is mapped). Only
//! the field types and parameters oprelay's templates use are known; anything else is refused,
//! so a template that relies on more fails here instead of passing unchecked.

use std::net::IpAddr;

use serde_json::{Map, Value};

const TEMPLATE_KEYS: &[&str] = &[
    "index_patterns",
    "template",
    "priority",
    "version",
    "_meta",
    "composed_of",
    "data_stream",
    "allow_auto_create",
];
const TEMPLATE_PARTS: &[&str] = &["settings", "mappings", "aliases"];
const MAPPING_KEYS: &[&str] = &[
    "properties",
    "dynamic_templates",
    "dynamic",
    "_meta",
    "_source",
];
const COMMON_PARAMS: &[&str] = &["index", "doc_values", "store", "meta", "null_value"];

/// The parameters each known field type takes besides [`COMMON_PARAMS`].
fn params_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "date" | "date_nanos" => &["format", "ignore_malformed"],
        "keyword" => &["ignore_above", "normalizer"],
        "ip" => &["ignore_malformed"],
        "long" | "integer" | "double" | "float" => &["ignore_malformed", "coerce"],
        "boolean" => &[],
        "flattened" => &["ignore_above", "depth_limit"],
        "geo_point" => &["ignore_malformed", "ignore_z_value"],
        _ => return None,
    })
}

fn unknown(keys: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), String> {
    match keys.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "x_content_parse_exception: [{at}] unknown field [{k}]"
        )),
        None => Ok(()),
    }
}

/// `PUT _index_template/{name}`: the body as ES checks it.
pub fn validate_template(body: &Value) -> Result<(), String> {
    let top = body.as_object().ok_or("the template must be an object")?;
    unknown(top, TEMPLATE_KEYS, "index_template")?;
    let patterns = top
        .get("index_patterns")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or("action_request_validation_exception: index patterns are missing")?;
    for p in patterns {
        let p = p.as_str().ok_or("index_patterns must be strings")?;
        if p.contains(' ') || p.contains(',') || p.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "invalid_index_template_exception: invalid index pattern [{p}]"
            ));
        }
    }
    let Some(template) = top.get("template") else {
        return Ok(());
    };
    let template = template.as_object().ok_or("[template] must be an object")?;
    unknown(template, TEMPLATE_PARTS, "template")?;
    if let Some(mappings) = template.get("mappings") {
        let mappings = mappings.as_object().ok_or("[mappings] must be an object")?;
        unknown(mappings, MAPPING_KEYS, "mappings")?;
        if let Some(props) = mappings.get("properties") {
            validate_properties(props, "")?;
        }
        for t in mappings
            .get("dynamic_templates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (name, rule) = t
                .as_object()
                .filter(|o| o.len() == 1)
                .and_then(|o| o.iter().next())
                .ok_or("a dynamic template is an object with one named rule")?;
            let mapping = rule
                .get("mapping")
                .ok_or(format!("dynamic template [{name}] has no mapping"))?;
            validate_field(mapping, name)?;
        }
    }
    Ok(())
}

fn validate_properties(props: &Value, at: &str) -> Result<(), String> {
    let props = props.as_object().ok_or("[properties] must be an object")?;
    for (name, field) in props {
        validate_field(field, &format!("{at}{name}"))?;
    }
    Ok(())
}

fn validate_field(field: &Value, path: &str) -> Result<(), String> {
    let field = field.as_object().ok_or(format!(
        "mapper_parsing_exception: [{path}] is not an object"
    ))?;
    if let Some(props) = field.get("properties") {
        unknown(field, &["properties", "type", "dynamic"], path)?;
        return validate_properties(props, &format!("{path}."));
    }
    let kind = field.get("type").and_then(Value::as_str).ok_or(format!(
        "mapper_parsing_exception: no type specified for field [{path}]"
    ))?;
    let params = params_of(kind).ok_or(format!(
        "mapper_parsing_exception: no handler for type [{kind}] declared on field [{path}]"
    ))?;
    for k in field.keys().filter(|k| k.as_str() != "type") {
        if !params.contains(&k.as_str()) && !COMMON_PARAMS.contains(&k.as_str()) {
            return Err(format!(
                "mapper_parsing_exception: unknown parameter [{k}] on mapper [{path}] of type [{kind}]"
            ));
        }
    }
    if let Some(format) = field.get("format") {
        let format = format.as_str().ok_or("[format] must be a string")?;
        for part in format.split("||") {
            DateFormat::parse(part).map_err(|e| {
                format!("mapper_parsing_exception: invalid format [{format}] on [{path}]: {e}")
            })?;
        }
    }
    Ok(())
}

/// One `||` alternative of a date field's `format`.
enum DateFormat {
    /// ISO 8601 with optional time and zone (`strict_date_optional_time[_nanos]`).
    Iso,
    EpochMillis,
    /// A Java `DateTimeFormatter` pattern: fixed-width digit fields and literals.
    Pattern(Vec<PatternPart>),
}

enum PatternPart {
    Digits(usize),
    Literal(char),
}

impl DateFormat {
    fn parse(format: &str) -> Result<DateFormat, String> {
        Ok(match format {
            "strict_date_optional_time"
            | "strict_date_optional_time_nanos"
            | "date_optional_time" => DateFormat::Iso,
            "epoch_millis" => DateFormat::EpochMillis,
            pattern => {
                let mut parts = Vec::new();
                let chars: Vec<char> = pattern.chars().collect();
                let mut i = 0;
                while i < chars.len() {
                    let c = chars[i];
                    let run = chars[i..].iter().take_while(|&&d| d == c).count();
                    match c {
                        'y' | 'u' | 'M' | 'd' | 'H' | 'm' | 's' | 'S' => {
                            parts.push(PatternPart::Digits(run))
                        }
                        '-' | ':' | '.' | ' ' | '/' | 'T' => {
                            (0..run).for_each(|_| parts.push(PatternPart::Literal(c)))
                        }
                        '\'' => {}
                        other => return Err(format!("unsupported pattern letter [{other}]")),
                    }
                    i += run;
                }
                DateFormat::Pattern(parts)
            }
        })
    }

    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (DateFormat::EpochMillis, v) => {
                v.as_i64().is_some() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok())
            }
            (DateFormat::Iso, Value::String(s)) => iso_date(s),
            (DateFormat::Pattern(parts), Value::String(s)) => {
                let mut rest = s.as_str();
                for part in parts {
                    match part {
                        PatternPart::Literal(c) => match rest.strip_prefix(*c) {
                            Some(r) => rest = r,
                            None => return false,
                        },
                        PatternPart::Digits(n) => {
                            if rest.len() < *n || !rest[..*n].bytes().all(|b| b.is_ascii_digit()) {
                                return false;
                            }
                            rest = &rest[*n..];
                        }
                    }
                }
                rest.is_empty()
            }
            _ => false,
        }
    }
}

/// `2026-03-01`, `2026-03-01T12:00:00`, `…12:00:00.123456789Z`, `…+05:00`.
fn iso_date(s: &str) -> bool {
    use time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(s, &Rfc3339).is_ok() {
        return true;
    }
    let date = s.get(..10).and_then(|d| {
        time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()
    });
    date.is_some() && (s.len() == 10 || s.get(10..11) == Some("T"))
}

/// The default formats ES gives a date field without `format`.
fn default_format(kind: &str) -> &'static str {
    if kind == "date_nanos" {
        "strict_date_optional_time_nanos||epoch_millis"
    } else {
        "strict_date_optional_time||epoch_millis"
    }
}

/// A document against a template's `mappings`: `Err` is ES's `document_parsing_exception`
/// reason. Fields the mapping does not name are mapped dynamically and always accepted.
pub fn check_document(mappings: &Value, doc: &Value) -> Result<(), String> {
    match (mappings.get("properties"), doc.as_object()) {
        (Some(props), Some(doc)) => check_object(props, doc, ""),
        _ => Ok(()),
    }
}

fn check_object(props: &Value, doc: &Map<String, Value>, at: &str) -> Result<(), String> {
    for (name, value) in doc {
        if let Some(field) = props.get(name) {
            check_field(field, value, &format!("{at}{name}"))?;
        }
    }
    Ok(())
}

fn check_field(field: &Value, value: &Value, path: &str) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    if let Some(props) = field.get("properties") {
        return match value {
            Value::Object(o) => check_object(props, o, &format!("{path}.")),
            Value::Array(items) => items
                .iter()
                .try_for_each(|v| check_field(field, v, path)),
            _ => Err(format!(
                "object mapping for [{path}] tried to parse field [{path}] as object, but found a concrete value"
            )),
        };
    }
    let kind = field["type"].as_str().unwrap_or("object");
    if let Value::Array(items) = value {
        if kind != "flattened" && kind != "geo_point" {
            return items.iter().try_for_each(|v| check_field(field, v, path));
        }
    }
    let lenient = field["ignore_malformed"] == Value::Bool(true);
    let fail = || format!("failed to parse field [{path}] of type [{kind}]: {value}");
    let fits = match kind {
        "date" | "date_nanos" => {
            let format = field["format"].as_str().unwrap_or(default_format(kind));
            let parsed = format
                .split("||")
                .filter_map(|f| DateFormat::parse(f).ok())
                .any(|f| f.matches(value));
            // date_nanos holds nanoseconds since 1970 in a long: nothing earlier.
            let before_1970 = kind == "date_nanos"
                && value
                    .as_str()
                    .and_then(|s| s.get(..4))
                    .and_then(|y| y.parse::<i32>().ok())
                    .is_some_and(|y| y < 1970);
            parsed && !before_1970
        }
        "ip" => value.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
        "keyword" => !value.is_object(),
        "long" | "integer" => {
            value.is_i64()
                || value.is_u64()
                || value.as_str().is_some_and(|s| s.parse::<i64>().is_ok())
        }
        "double" | "float" => value.is_number(),
        "boolean" => value.is_boolean(),
        "flattened" => value.is_object() || value.is_array(),
        "geo_point" => {
            value.get("lat").is_some_and(Value::is_number)
                && value.get("lon").is_some_and(Value::is_number)
        }
        _ => false,
    };
    if fits || lenient {
        Ok(())
    } else {
        Err(fail())
    }
}

/// Whether an index name matches a template's pattern (`*` matches any run).
pub fn pattern_matches(pattern: &str, index: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == index,
        Some((head, tail)) => {
            index.starts_with(head)
                && (0..=index.len() - head.len()).any(|i| {
                    index
                        .get(head.len() + i..)
                        .is_some_and(|rest| pattern_matches(tail, rest))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(props: Value) -> Value {
        json!({"index_patterns": ["oprelay-*"], "template": {"mappings": {"properties": props}}})
    }

    #[test]
    fn templates_with_unknown_keys_types_or_parameters_are_refused() {
        let good = template(
            json!({"t": {"type": "date_nanos", "format": "yyyy-MM-dd HH:mm:ss.SSSSSSSSS"}}),
        );
        assert_eq!(validate_template(&good), Ok(()));
        for bad in [
            json!({"index_patterns": ["x-*"], "mappings": {}}),
            json!({"template": {}}),
            template(json!({"t": {"type": "datetime"}})),
            template(json!({"t": {"type": "keyword", "format": "x"}})),
            template(json!({"t": {"type": "date", "format": "yyyy-MM-dd Q"}})),
            template(json!({"t": {"ignore_above": 5}})),
        ] {
            assert!(validate_template(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn documents_must_fit_their_mapped_types() {
        let mappings = json!({"properties": {
            "p_event_time": {"type": "date_nanos", "format": "yyyy-MM-dd HH:mm:ss.SSSSSSSSS"},
            "timestamp": {"type": "date_nanos"},
            "ip": {"type": "ip"},
            "lenient_ip": {"type": "ip", "ignore_malformed": true},
            "client": {"properties": {"id": {"type": "keyword"}}},
        }});
        let ok = json!({"p_event_time": "2026-03-01 12:00:00.000000000", "timestamp": "2026-03-01T12:00:00.123-05:00",
                        "ip": ["2001:DB8::1", "10.0.0.1"], "lenient_ip": "not one", "client": {"id": "x"}, "other": {"a": 1}});
        assert_eq!(check_document(&mappings, &ok), Ok(()));
        for bad in [
            json!({"p_event_time": "2026-03-01T12:00:00Z"}),
            json!({"timestamp": "1969-12-31T23:59:59Z"}),
            json!({"ip": "10.0.0.300"}),
            json!({"client": "flat"}),
            json!({"client": {"id": {"deep": 1}}}),
        ] {
            assert!(check_document(&mappings, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_as_globs() {
        assert!(pattern_matches(
            "oprelay-*",
            "oprelay-onepassword-itemusage-2026.03.01"
        ));
        assert!(pattern_matches("a*-*z", "ab-cz"));
        assert!(!pattern_matches("oprelay-*", "other-1"));
        assert!(pattern_matches("exact", "exact"));
    }
}
