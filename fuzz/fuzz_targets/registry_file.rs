//! Any bytes as a registry file (CSV in any encoding, or a ZIP taken as `.xlsx`): the reader
//! never panics, numbers rows upward from 2 (the header is row 1), and every member it accepts
//! has its required cells filled and within the registry's cell bound.
#![no_main]

use std::io::Cursor;

use huikan_registry_file::{Item, read_from};
use huikan_shared::limits;
use huikan_shared::submission::Datum;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut last_row = 1;
    let _ = read_from(Cursor::new(data), Datum::Wgs84, &mut |item| {
        let row = match item {
            Item::Member(member) => {
                for (column, value) in [
                    ("household_id", &member.household_id),
                    ("village_code", &member.village_code),
                    ("name", &member.name),
                    ("relation", &member.relation),
                ] {
                    assert!(!value.trim().is_empty(), "{column} accepted blank");
                    assert!(
                        limits::check(value, limits::REGISTRY_CELL).is_ok(),
                        "{column} accepted over its bound"
                    );
                }
                if let (Some(lat), Some(lon)) = (member.lat, member.lon) {
                    assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
                }
                member.row
            }
            Item::Rejected { row, reason, .. } => {
                assert!(!reason.is_empty(), "a row rejected without a reason");
                row
            }
        };
        assert!(row > last_row, "row {row} after row {last_row}");
        last_row = row;
    });
});
