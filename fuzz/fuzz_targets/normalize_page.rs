//! Any byte string in, no panic out: the page parser and the normalizer together.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oprelay_events::Feed;
use oprelay_normalizer::lookup::LookupIndex;
use oprelay_normalizer::normalize::{normalize_page, Source};

fuzz_target!(|data: &[u8]| {
    let source = Source::for_account("fuzz", None, None);
    let now = time::OffsetDateTime::UNIX_EPOCH;
    for feed in Feed::ALL {
        let mut index = LookupIndex::new();
        let page = normalize_page(data, feed, &source, &mut index, now);
        // Every line written must be a JSON object.
        for line in page.ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            assert!(line.starts_with(b"{") && line.ends_with(b"}"));
        }
    }
});
