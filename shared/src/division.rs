//! Statistical division codes (统计用区划代码): 12 digits, of which the first 2 name the
//! province, 4 the prefecture, 6 the county, 9 the township and all 12 the village.

/// Whether `code` is a 12-digit village code.
pub fn is_village_code(code: &str) -> bool {
    code.len() == 12 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The 9-digit township code of a village code.
pub fn township_of(village_code: &str) -> Option<&str> {
    is_village_code(village_code).then(|| &village_code[..9])
}

/// The 6-digit county code of a village code.
pub fn county_of(village_code: &str) -> Option<&str> {
    is_village_code(village_code).then(|| &village_code[..6])
}

/// The first code after every code that starts with `prefix`, for a range scan
/// `code >= prefix AND code < upper_bound(prefix)`: the prefix with its last digit raised, or
/// `None` when the prefix is all nines (no upper bound needed).
pub fn upper_bound(prefix: &str) -> Option<String> {
    let mut digits: Vec<u8> = prefix.bytes().collect();
    while let Some(last) = digits.pop() {
        if last < b'9' {
            digits.push(last + 1);
            return String::from_utf8(digits).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn village_codes_are_twelve_digits() {
        assert!(is_village_code("410327101001"));
        assert!(!is_village_code("4103271010011"));
        assert!(!is_village_code("41032710100"));
        assert!(!is_village_code("41032710100a"));
        assert_eq!(township_of("410327101001"), Some("410327101"));
        assert_eq!(county_of("410327101001"), Some("410327"));
        assert_eq!(township_of("4103"), None);
    }

    #[test]
    fn upper_bounds_close_prefix_ranges() {
        assert_eq!(upper_bound("410327101").as_deref(), Some("410327102"));
        assert_eq!(upper_bound("410329").as_deref(), Some("41033"));
        assert_eq!(upper_bound("99"), None);
    }
}
