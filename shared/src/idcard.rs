//! 身份证号 (resident identity number, GB 11643-1999): 17 digits and a check character. Digits
//! 1–6 are the region (the first two a province), 7–14 the birth date (YYYYMMDD).

use chrono::{Datelike, NaiveDate};

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Province-level codes (GB/T 2260), the first two digits of every region code.
const PROVINCES: [&str; 34] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdNumberError {
    Length(usize),
    NotDigits,
    Region(String),
    BirthDate(String),
    CheckCharacter { expected: char, found: char },
}

impl std::fmt::Display for IdNumberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdNumberError::Length(n) => write!(f, "has {n} characters, not 18"),
            IdNumberError::NotDigits => write!(f, "must be 17 digits and a digit or X"),
            IdNumberError::Region(r) => write!(f, "region {r} is not a province of China"),
            IdNumberError::BirthDate(d) => write!(f, "birth date {d} is not a real date"),
            IdNumberError::CheckCharacter { expected, found } => {
                write!(f, "check character is {found}, should be {expected}")
            }
        }
    }
}

/// The check character for the first 17 digits.
pub fn check_character(first17: &[u8; 17]) -> char {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize]
}

/// A valid 身份证号's birth date; otherwise what is wrong with it. A lowercase `x` is accepted as
/// the check character, as people often type it.
pub fn validate(id: &str) -> Result<NaiveDate, IdNumberError> {
    let bytes = id.as_bytes();
    if bytes.len() != 18 {
        return Err(IdNumberError::Length(id.chars().count()));
    }
    let (first17, last) = bytes.split_at(17);
    let last = last[0].to_ascii_uppercase();
    if !first17.iter().all(u8::is_ascii_digit) || !(last.is_ascii_digit() || last == b'X') {
        return Err(IdNumberError::NotDigits);
    }
    let region = &id[0..2];
    if !PROVINCES.contains(&region) {
        return Err(IdNumberError::Region(id[0..6].to_owned()));
    }
    let birth = birth_date(id).ok_or_else(|| IdNumberError::BirthDate(id[6..14].to_owned()))?;
    let mut digits = [0u8; 17];
    digits.copy_from_slice(first17);
    let expected = check_character(&digits);
    if expected != last as char {
        return Err(IdNumberError::CheckCharacter {
            expected,
            found: last as char,
        });
    }
    Ok(birth)
}

/// The birth date inside an 18-character number, if it is a real date not after today.
pub fn birth_date(id: &str) -> Option<NaiveDate> {
    let date = NaiveDate::parse_from_str(id.get(6..14)?, "%Y%m%d").ok()?;
    let today = chrono::Utc::now().date_naive();
    (date <= today && date.year_ce().1 >= 1900).then_some(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_check(first17: &str) -> String {
        let mut d = [0u8; 17];
        d.copy_from_slice(first17.as_bytes());
        format!("{first17}{}", check_character(&d))
    }

    #[test]
    fn known_numbers_validate() {
        // The published GB 11643 example and a Yiyang number.
        assert!(validate("11010519491231002X").is_ok());
        assert_eq!(
            validate(&with_check("41032719800101123")).unwrap(),
            NaiveDate::from_ymd_opt(1980, 1, 1).unwrap()
        );
    }

    #[test]
    fn every_check_character_is_reached() {
        // For each remainder 0..=10 find a number that lands on it, and check it validates and
        // that every other check character is refused.
        let mut seen = std::collections::HashSet::new();
        for serial in 0..2000u32 {
            let first17 = format!("410327198001{:02}{:03}", 1 + serial % 28, serial % 1000);
            let id = with_check(&first17);
            let check = id.chars().last().unwrap();
            seen.insert(check);
            assert!(validate(&id).is_ok(), "{id}");
            for other in CHECK.iter().filter(|c| **c != check) {
                let wrong = format!("{first17}{other}");
                assert_eq!(
                    validate(&wrong),
                    Err(IdNumberError::CheckCharacter {
                        expected: check,
                        found: *other
                    }),
                    "{wrong}"
                );
            }
        }
        assert_eq!(
            seen.len(),
            11,
            "all eleven check characters occur: {seen:?}"
        );
    }

    #[test]
    fn lowercase_x_is_accepted() {
        assert!(validate("11010519491231002x").is_ok());
    }

    #[test]
    fn each_kind_of_error_is_named() {
        assert_eq!(validate("4103271980"), Err(IdNumberError::Length(10)));
        assert_eq!(
            validate("41032719800101123Y"),
            Err(IdNumberError::NotDigits)
        );
        assert_eq!(
            validate("4103271980O101123X"),
            Err(IdNumberError::NotDigits)
        );
        assert!(matches!(
            validate(&with_check("99032719800101123")),
            Err(IdNumberError::Region(_))
        ));
        assert!(matches!(
            validate(&with_check("41032719800231123")),
            Err(IdNumberError::BirthDate(_))
        ));
        assert!(matches!(
            validate(&with_check("41032721000101123")),
            Err(IdNumberError::BirthDate(_))
        ));
    }
}
