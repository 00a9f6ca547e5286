//! How a normalized page is cut into bus messages.
//!
//! A page whose records do not fit one message goes as consecutive parts `events:{raw id}:{n}`.
//! The cut must be the same every time the raw page is processed: a redelivery (after a crash,
//! or on another replica) publishes the parts again under the same ids, and JetStream drops the
//! ones it has. Enriched sizes depend on the lookups of the moment, so the cut is made from the
//! *raw* items' sizes alone, with room for enrichment: a part holds raw items worth at most a
//! third of the bus's message limit (an API item of ~700 bytes becomes ~1 500 once enriched).
//!
//! Two rare cases fall back to sizes after enrichment: a part whose records still outgrow the
//! limit (very long looked-up names) is halved again as `{n}.{m}`, and a record that alone is
//! bigger than any message can be is handed back to be dead-lettered. A redelivery in those
//! cases may duplicate records (never lose them); idempotent sinks absorb that.

use crate::normalize::NormalizedPage;

/// One bus message of a normalized page: records `first..first + records` of the page, bytes
/// `from..to` of its NDJSON, published as `events:{raw id}{suffix}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub suffix: String,
    pub from: usize,
    pub to: usize,
    pub first: usize,
    pub records: usize,
}

/// A page's parts, and the records too big for any message (one record each).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cut {
    pub parts: Vec<Part>,
    pub oversized: Vec<Part>,
}

/// One normalized record: its byte range in the NDJSON and its raw item's size.
#[derive(Clone, Copy)]
struct Line {
    from: usize,
    to: usize,
    raw: usize,
}

/// Cuts `page` into parts of at most `limit` bytes, between records.
pub fn cut(page: &NormalizedPage, limit: usize) -> Cut {
    let mut lines = Vec::with_capacity(page.count);
    let mut from = 0;
    for (&to, &raw) in page.ends.iter().zip(&page.raw_sizes) {
        lines.push(Line { from, to, raw });
        from = to;
    }
    // Groups of consecutive records by raw size: the deterministic cut.
    let raw_budget = (limit / 3).max(1);
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (first record, records)
    let (mut first, mut n, mut raw) = (0usize, 0usize, 0usize);
    for (i, line) in lines.iter().enumerate() {
        if n > 0 && raw + line.raw > raw_budget {
            groups.push((first, n));
            (first, n, raw) = (i, 0, 0);
        }
        n += 1;
        raw += line.raw;
    }
    if n > 0 {
        groups.push((first, n));
    }
    let single = groups.len() == 1;
    let mut out = Cut::default();
    for (g, (first, n)) in groups.into_iter().enumerate() {
        let suffix = if single {
            String::new()
        } else {
            format!(":{g}")
        };
        let group = &lines[first..first + n];
        let bytes = group.last().map_or(0, |l| l.to) - group.first().map_or(0, |l| l.from);
        if bytes <= limit {
            out.parts.push(part(suffix, group, first));
            continue;
        }
        // The fallback: split by enriched size; a record alone over the limit is handed back.
        let sub_suffix = if single { ":0" } else { suffix.as_str() };
        let mut sub = 0;
        let mut start: Option<usize> = None;
        for (k, line) in group.iter().enumerate() {
            if line.to - line.from > limit {
                if let Some(s) = start.take() {
                    out.parts
                        .push(part(format!("{sub_suffix}.{sub}"), &group[s..k], first + s));
                    sub += 1;
                }
                out.oversized
                    .push(part(String::new(), &group[k..=k], first + k));
                continue;
            }
            if let Some(s) = start {
                if line.to - group[s].from > limit {
                    out.parts
                        .push(part(format!("{sub_suffix}.{sub}"), &group[s..k], first + s));
                    sub += 1;
                    start = Some(k);
                }
            } else {
                start = Some(k);
            }
        }
        if let Some(s) = start {
            out.parts
                .push(part(format!("{sub_suffix}.{sub}"), &group[s..], first + s));
        }
    }
    out
}

fn part(suffix: String, lines: &[Line], first: usize) -> Part {
    Part {
        suffix,
        from: lines.first().map_or(0, |l| l.from),
        to: lines.last().map_or(0, |l| l.to),
        first,
        records: lines.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of records with the given (raw, enriched) sizes.
    fn page(sizes: &[(usize, usize)]) -> NormalizedPage {
        let mut p = NormalizedPage::default();
        for (raw, enriched) in sizes {
            p.ndjson.extend(std::iter::repeat_n(b'x', enriched - 1));
            p.ndjson.push(b'\n');
            p.ends.push(p.ndjson.len());
            p.raw_sizes.push(*raw);
            p.count += 1;
        }
        p
    }

    #[test]
    fn a_page_that_fits_is_one_part_without_a_number() {
        let c = cut(&page(&[(10, 20), (10, 20)]), 300);
        assert_eq!(c.parts.len(), 1);
        assert_eq!(c.parts[0].suffix, "");
        assert_eq!(
            (c.parts[0].from, c.parts[0].to, c.parts[0].records),
            (0, 40, 2)
        );
    }

    #[test]
    fn the_cut_follows_raw_sizes_whatever_the_enrichment() {
        let lean = cut(&page(&[(40, 60); 10]), 300);
        let rich = cut(&page(&[(40, 95); 10]), 300);
        let ranges = |c: &Cut| {
            c.parts
                .iter()
                .map(|p| (p.suffix.clone(), p.first, p.records))
                .collect::<Vec<_>>()
        };
        assert_eq!(ranges(&lean), ranges(&rich));
        assert_eq!(
            lean.parts.len(),
            5,
            "100 raw bytes per part: two records each → {lean:?}"
        );
    }

    #[test]
    fn a_part_that_outgrows_the_limit_is_halved_again() {
        let c = cut(&page(&[(30, 200); 3]), 300);
        assert!(c.parts.iter().all(|p| p.to - p.from <= 300), "{c:?}");
        assert_eq!(c.parts.iter().map(|p| p.records).sum::<usize>(), 3);
        assert_eq!(c.parts[0].suffix, ":0.0");
    }

    #[test]
    fn a_record_bigger_than_any_message_is_handed_back() {
        let c = cut(&page(&[(10, 20), (50, 400), (10, 20)]), 300);
        assert_eq!(
            c.oversized.iter().map(|p| p.first).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!((c.oversized[0].from, c.oversized[0].to), (20, 420));
        assert_eq!(c.parts.iter().map(|p| p.records).sum::<usize>(), 2);
        assert!(c.parts.iter().all(|p| p.first != 1));
    }
}
