//! Event timestamps: parsed leniently, kept verbatim, rendered the Panther way.
//!
//! 1Password sends RFC 3339 with 0, 3 or 9 fractional digits, `Z` or an offset, depending on the
//! feed. Detections and the SIEM must see the string 1Password sent (`docs/architecture.md`: original fields
//! are never rewritten), while the `p_*` fields need one UTC rendering. A [`Timestamp`] holds both.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A timestamp as 1Password sent it, and the instant it denotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    raw: String,
    instant: OffsetDateTime,
}

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not an RFC 3339 timestamp (expected e.g. 2024-12-02T11:54:19.710457472Z)")]
pub struct TimestampError {
    /// The text as it was.
    pub value: String,
}

impl Timestamp {
    /// Parses RFC 3339 (`T`/`t`, `Z`/`z` or `±hh:mm`, 0–9 fractional digits). Panther's own
    /// rendering (`YYYY-MM-DD HH:MM:SS[.f…]`, UTC) is accepted too, because Panther exports and
    /// its rule fixtures carry it and re-processing such files should not fail on it.
    pub fn parse(raw: &str) -> Result<Self, TimestampError> {
        let instant = parse_instant(raw).ok_or_else(|| TimestampError {
            value: raw.to_owned(),
        })?;
        Ok(Timestamp {
            raw: raw.to_owned(),
            instant,
        })
    }

    /// A timestamp for an instant, rendered as RFC 3339 in UTC with nanoseconds.
    pub fn from_instant(instant: OffsetDateTime) -> Self {
        let instant = instant.to_offset(UtcOffset::UTC);
        let raw = format_rfc3339_nanos(instant);
        Timestamp { raw, instant }
    }

    /// The text exactly as 1Password sent it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The instant it denotes.
    pub fn instant(&self) -> OffsetDateTime {
        self.instant
    }
}

fn parse_instant(raw: &str) -> Option<OffsetDateTime> {
    // Digits past the ninth are truncated by `time`; the original string is kept anyway, so
    // nothing the SIEM sees is lost.
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(t);
    }
    let panther = format_description!(
        version = 2,
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(raw, &panther)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Panther's timestamp rendering: UTC, `YYYY-MM-DD HH:MM:SS.fffffffff`, always nine digits.
pub fn format_panther(instant: OffsetDateTime) -> String {
    date_time(instant, b' ', "")
}

/// RFC 3339 in UTC with exactly nine fractional digits, the shape audit events use.
pub fn format_rfc3339_nanos(instant: OffsetDateTime) -> String {
    date_time(instant, b'T', "Z")
}

/// `YYYY-MM-DD{sep}HH:MM:SS.fffffffff{end}` in UTC. Every record carries two or three of these,
/// so the digits are written into a fixed buffer: `format!` took several times as long. Years
/// before 0 (which 1Password never sends) take the slow path.
fn date_time(instant: OffsetDateTime, sep: u8, end: &str) -> String {
    let t = instant.to_offset(UtcOffset::UTC);
    let Ok(year) = u32::try_from(t.year()) else {
        return slow_date_time(t, sep, end);
    };
    if year > 9999 {
        return slow_date_time(t, sep, end);
    }
    let mut b = *b"0000-00-00 00:00:00.000000000";
    let mut digits = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, u8::from(t.month()).into());
    digits(8, 2, t.day().into());
    digits(11, 2, t.hour().into());
    digits(14, 2, t.minute().into());
    digits(17, 2, t.second().into());
    digits(20, 9, t.nanosecond());
    b[10] = sep;
    let mut out = String::with_capacity(b.len() + end.len());
    // Only ASCII digits and separators were written.
    out.extend(b.iter().map(|&c| char::from(c)));
    out.push_str(end);
    out
}

fn slow_date_time(t: OffsetDateTime, sep: u8, end: &str) -> String {
    format!(
        "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}.{:09}{end}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        char::from(sep),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The digit writer renders what `time`'s own formatting says, for any instant from
        /// 1970 to 9999 and any offset it is given in.
        #[test]
        fn fast_renderings_match_time_s_own(
            secs in 0i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            offset_minutes in -1439i32..1439,
        ) {
            let utc = OffsetDateTime::from_unix_timestamp(secs).unwrap().replace_nanosecond(nanos).unwrap();
            let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
            let t = utc.to_offset(offset);
            let rfc = utc.format(&Rfc3339).unwrap();
            let whole = rfc.trim_end_matches('Z').split('.').next().unwrap().to_owned();
            let want_rfc = format!("{whole}.{nanos:09}Z");
            proptest::prop_assert_eq!(format_rfc3339_nanos(t), want_rfc.clone());
            let want_panther = want_rfc.replace('T', " ").trim_end_matches('Z').to_owned();
            proptest::prop_assert_eq!(format_panther(t), want_panther);
        }
    }

    #[test]
    fn years_before_zero_still_render() {
        let date = time::Date::from_calendar_date(-1, time::Month::March, 4).unwrap();
        let t = date.with_hms(5, 6, 7).unwrap().assume_utc();
        assert_eq!(format_rfc3339_nanos(t), "-001-03-04T05:06:07.000000000Z");
        assert_eq!(format_panther(t), "-001-03-04 05:06:07.000000000");
    }

    #[test]
    fn accepts_every_fraction_length_and_offsets() {
        let cases = [
            ("2021-08-11T14:28:03Z", "2021-08-11 14:28:03.000000000"),
            ("2021-08-30T18:57:42.4Z", "2021-08-30 18:57:42.400000000"),
            ("2021-08-30T18:57:42.484Z", "2021-08-30 18:57:42.484000000"),
            (
                "2021-08-30T18:57:42.484123Z",
                "2021-08-30 18:57:42.484123000",
            ),
            (
                "2024-12-02T11:54:19.710457472Z",
                "2024-12-02 11:54:19.710457472",
            ),
            ("2020-06-11T16:32:50-03:00", "2020-06-11 19:32:50.000000000"),
            (
                "2020-06-11T16:32:50.5+05:30",
                "2020-06-11 11:02:50.500000000",
            ),
            ("2020-06-11t16:32:50z", "2020-06-11 16:32:50.000000000"),
            ("2022-02-23 20:27:17.071", "2022-02-23 20:27:17.071000000"),
            ("2021-12-15 18:02:23", "2021-12-15 18:02:23.000000000"),
            (
                "2021-08-11T14:28:03.1234567891Z",
                "2021-08-11 14:28:03.123456789",
            ),
        ];
        for (raw, panther) in cases {
            let ts = Timestamp::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(format_panther(ts.instant()), panther, "{raw}");
            assert_eq!(ts.as_str(), raw, "the original string is kept");
        }
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for raw in [
            "",
            "yesterday",
            "2021-13-01T00:00:00Z",
            "2021-08-11T14:28:03",
            "1629000000",
        ] {
            let err = Timestamp::parse(raw).expect_err(raw);
            assert!(err.to_string().contains("not an RFC 3339"), "{err}");
        }
    }

    #[test]
    fn from_instant_round_trips() {
        let ts = Timestamp::parse("2024-12-02T11:54:19.710457472+01:00").unwrap();
        let again = Timestamp::from_instant(ts.instant());
        assert_eq!(again.as_str(), "2024-12-02T10:54:19.710457472Z");
        assert_eq!(
            Timestamp::parse(again.as_str()).unwrap().instant(),
            ts.instant()
        );
    }
}
