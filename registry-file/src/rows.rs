//! One registry row (one household member): which column is which, and the checks that turn a
//! row of text into a member, or into a reason a county clerk can act on.

use huikan_shared::division::is_village_code;
use huikan_shared::idcard;
use huikan_shared::limits;
use serde::Serialize;

/// The columns we read, with their Chinese header and English alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    HouseholdId,
    VillageCode,
    Township,
    Village,
    HeadName,
    Name,
    IdNumber,
    Relation,
    Sex,
    SchoolStatus,
    Health,
    DisabilityGrade,
    Labour,
    Insured,
    Attribute,
    Status,
    KeyGroups,
    HelperName,
    HelperPhone,
    Lat,
    Lon,
    HousingGrade,
    WaterSource,
}

pub const COLUMNS: [(Column, &str, &str, bool); 23] = [
    (Column::HouseholdId, "户编号", "household_id", true),
    (Column::VillageCode, "村代码", "village_code", true),
    (Column::Township, "乡镇", "township", true),
    (Column::Village, "行政村", "village", true),
    (Column::HeadName, "户主姓名", "head_name", true),
    (Column::Name, "姓名", "name", true),
    (Column::IdNumber, "身份证号", "id_number", true),
    (Column::Relation, "与户主关系", "relation", true),
    (Column::Sex, "性别", "sex", false),
    (Column::SchoolStatus, "在校生状况", "school_status", false),
    (Column::Health, "健康状况", "health", false),
    (
        Column::DisabilityGrade,
        "残疾等级",
        "disability_grade",
        false,
    ),
    (Column::Labour, "劳动技能", "labour", false),
    (Column::Insured, "是否参加基本医疗保险", "insured", false),
    (Column::Attribute, "贫困户属性", "attribute", false),
    (Column::Status, "脱贫状态", "status", false),
    (Column::KeyGroups, "重点人群", "key_groups", false),
    (Column::HelperName, "帮扶责任人", "helper_name", false),
    (Column::HelperPhone, "帮扶责任人电话", "helper_phone", false),
    (Column::Lat, "纬度", "lat", false),
    (Column::Lon, "经度", "lon", false),
    (Column::HousingGrade, "住房安全等级", "housing_grade", false),
    (Column::WaterSource, "饮水水源", "water_source", false),
];

/// Maps a header row to column positions; unknown headers are ignored. Fails naming the
/// required columns that are missing.
pub fn map_headers(headers: &[String]) -> Result<Vec<Option<Column>>, String> {
    let mapped: Vec<Option<Column>> = headers
        .iter()
        .map(|h| {
            let h = h.trim().trim_start_matches('\u{feff}');
            COLUMNS
                .iter()
                .find(|(_, zh, en, _)| h == *zh || h.eq_ignore_ascii_case(en))
                .map(|(c, ..)| *c)
        })
        .collect();
    let missing: Vec<String> = COLUMNS
        .iter()
        .filter(|(c, _, _, required)| *required && !mapped.contains(&Some(*c)))
        .map(|(_, zh, en, _)| format!("{zh} ({en})"))
        .collect();
    if missing.is_empty() {
        Ok(mapped)
    } else {
        Err(format!(
            "缺少必需的列 missing required columns: {}",
            missing.join(", ")
        ))
    }
}

// Value vocabularies: the registry's Chinese labels and the English codes on the wire.
const RELATIONS: [(&str, &str); 9] = [
    ("户主", "head"),
    ("配偶", "spouse"),
    ("之子", "child"),
    ("之女", "child"),
    ("之孙子", "grandchild"),
    ("之孙女", "grandchild"),
    ("之父", "parent"),
    ("之母", "parent"),
    ("其他", "other"),
];
const SEXES: [(&str, &str); 2] = [("男", "male"), ("女", "female")];
const SCHOOL: [(&str, &str); 9] = [
    ("非在校生", "not_in_school"),
    ("学龄前儿童", "preschool"),
    ("小学", "primary"),
    ("初中", "junior_secondary"),
    ("高中", "senior_secondary"),
    ("中职", "vocational"),
    ("大专及以上", "tertiary"),
    ("辍学", "dropped_out"),
    ("送教上门", "home_taught"),
];
const HEALTH: [(&str, &str); 4] = [
    ("健康", "healthy"),
    ("长期慢性病", "chronic"),
    ("患有大病", "serious_illness"),
    ("残疾", "disabled"),
];
const LABOUR: [(&str, &str); 5] = [
    ("普通劳动力", "normal"),
    ("技能劳动力", "skilled"),
    ("弱劳动力或半劳动力", "weak"),
    ("丧失劳动力", "lost"),
    ("无劳动力", "none"),
];
const YES_NO: [(&str, bool); 2] = [("是", true), ("否", false)];
const ATTRIBUTES: [(&str, &str); 3] = [
    ("一般贫困户", "general"),
    ("低保贫困户", "dibao"),
    ("特困供养贫困户", "tekun"),
];
const STATUSES: [(&str, &str); 4] = [
    ("未脱贫", "not_lifted"),
    ("已脱贫", "lifted"),
    ("边缘户", "marginal"),
    ("监测户", "monitored"),
];
const KEY_GROUPS: [(&str, &str); 5] = [
    ("分散供养特困户", "dispersed_tekun"),
    ("独居老人户", "elderly_alone"),
    ("无劳动能力户", "no_labour"),
    ("大病户", "serious_illness"),
    ("残疾人户", "disability"),
];
const WATER: [(&str, &str); 6] = [
    ("自来水", "piped"),
    ("水井", "well"),
    ("山泉", "spring"),
    ("水窖", "cistern"),
    ("拉水", "trucked"),
    ("其他", "other"),
];
const GRADES: [&str; 4] = ["A", "B", "C", "D"];

/// A member as registered, with the household-level fields its row carried.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct MemberRow {
    pub row: u64,
    pub household_id: String,
    pub village_code: String,
    pub township: String,
    pub village: String,
    pub head_name: String,
    pub name: String,
    pub id_number: String,
    /// Why the 身份证号 is invalid; an invalid one is imported and marked, never refused.
    pub id_number_problem: Option<String>,
    pub birth_date: Option<chrono::NaiveDate>,
    pub relation: String,
    pub sex: Option<String>,
    pub school_status: Option<String>,
    pub health: Option<String>,
    pub disability_grade: Option<u8>,
    pub labour: Option<String>,
    pub insured: Option<bool>,
    pub attribute: Option<String>,
    pub status: Option<String>,
    pub key_groups: Vec<String>,
    pub helper_name: Option<String>,
    pub helper_phone: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub housing_grade: Option<String>,
    pub water_source: Option<String>,
}

/// The cells of one row by column; blank cells are `None`.
pub struct RawRow<'a> {
    pub row: u64,
    pub cells: Vec<(Column, &'a str)>,
}

impl RawRow<'_> {
    fn get(&self, column: Column) -> Option<&str> {
        self.cells
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn header(column: Column) -> &'static str {
        COLUMNS
            .iter()
            .find(|(c, ..)| *c == column)
            .map_or("?", |(_, zh, ..)| zh)
    }

    fn required(&self, column: Column) -> Result<String, String> {
        self.get(column)
            .map(str::to_owned)
            .ok_or_else(|| format!("缺少{} (missing {})", Self::header(column), english(column)))
    }

    fn coded<T: Copy>(&self, column: Column, table: &[(&str, T)]) -> Result<Option<T>, String> {
        let Some(value) = self.get(column) else {
            return Ok(None);
        };
        table
            .iter()
            .find(|(label, _)| *label == value)
            .map(|(_, code)| Some(*code))
            .ok_or_else(|| {
                let allowed: Vec<&str> = table.iter().map(|(l, _)| *l).collect();
                format!(
                    "{}“{value}”不是可用的值，应为 {} ({} {value:?} is not one of these)",
                    Self::header(column),
                    allowed.join("、"),
                    english(column)
                )
            })
    }

    fn number(
        &self,
        column: Column,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<Option<f64>, String> {
        let Some(value) = self.get(column) else {
            return Ok(None);
        };
        match value.parse::<f64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{}“{value}”不是 {} 到 {} 之间的数 ({} must be a number from {} to {})",
                Self::header(column),
                range.start(),
                range.end(),
                english(column),
                range.start(),
                range.end()
            )),
        }
    }
}

fn english(column: Column) -> &'static str {
    COLUMNS
        .iter()
        .find(|(c, ..)| *c == column)
        .map_or("?", |(_, _, en, _)| en)
}

/// Checks a row; a bad row yields the reason it was skipped.
pub fn parse_row(raw: &RawRow) -> Result<MemberRow, String> {
    // Checked first, so that no message below quotes an over-long cell.
    for (column, value) in &raw.cells {
        if let Err(e) = limits::check(value.trim(), limits::REGISTRY_CELL) {
            return Err(format!(
                "{}过长 ({}: {e})",
                RawRow::header(*column),
                english(*column)
            ));
        }
    }
    let household_id = raw.required(Column::HouseholdId)?;
    if household_id.len() > 64 || household_id.chars().any(char::is_whitespace) {
        return Err(format!(
            "户编号“{household_id}”含空白或过长 (household_id must be at most 64 characters without spaces)"
        ));
    }
    let village_code = raw.required(Column::VillageCode)?;
    if !is_village_code(&village_code) {
        return Err(format!(
            "村代码“{village_code}”应为 12 位数字，现为 {} 位 (village_code must be 12 digits)",
            village_code.chars().count()
        ));
    }
    let id_number = raw.required(Column::IdNumber)?.to_ascii_uppercase();
    let (birth_date, id_number_problem) = match idcard::validate(&id_number) {
        Ok(birth) => (Some(birth), None),
        Err(e) => (None, Some(format!("身份证号无效 invalid 身份证号: {e}"))),
    };
    let disability_grade = match raw.get(Column::DisabilityGrade) {
        None => None,
        Some(g) => match g.trim_end_matches('级').parse::<u8>() {
            Ok(n) if (1..=4).contains(&n) => Some(n),
            _ => {
                return Err(format!(
                    "残疾等级“{g}”应为 1–4 或留空 (disability_grade must be 1 to 4 or empty)"
                ));
            }
        },
    };
    let key_groups = match raw.get(Column::KeyGroups) {
        None => Vec::new(),
        Some(list) => list
            .split(['、', ',', '，', ';', '；'])
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| {
                KEY_GROUPS
                    .iter()
                    .find(|(label, _)| *label == g)
                    .map(|(_, code)| (*code).to_owned())
                    .ok_or_else(|| format!("重点人群“{g}”不是可用的值 (key_groups {g:?} is not one of the five groups)"))
            })
            .collect::<Result<_, _>>()?,
    };
    let lat = raw.number(Column::Lat, -90.0..=90.0)?;
    let lon = raw.number(Column::Lon, -180.0..=180.0)?;
    if lat.is_some() != lon.is_some() {
        return Err("纬度和经度须同时填写 (lat and lon go together)".to_owned());
    }
    let housing_grade = match raw.get(Column::HousingGrade) {
        None => None,
        Some(g) if GRADES.contains(&g.to_ascii_uppercase().as_str()) => {
            Some(g.to_ascii_uppercase())
        }
        Some(g) => {
            return Err(format!(
                "住房安全等级“{g}”应为 A、B、C 或 D (housing_grade must be A, B, C or D)"
            ));
        }
    };
    let owned = |v: Option<&str>| v.map(str::to_owned);
    Ok(MemberRow {
        row: raw.row,
        household_id,
        village_code,
        township: raw.required(Column::Township)?,
        village: raw.required(Column::Village)?,
        head_name: raw.required(Column::HeadName)?,
        name: raw.required(Column::Name)?,
        id_number,
        id_number_problem,
        birth_date,
        relation: raw
            .coded(Column::Relation, &RELATIONS)?
            .ok_or_else(|| "缺少与户主关系 (missing relation)".to_owned())?
            .to_owned(),
        sex: raw.coded(Column::Sex, &SEXES)?.map(str::to_owned),
        school_status: raw.coded(Column::SchoolStatus, &SCHOOL)?.map(str::to_owned),
        health: raw.coded(Column::Health, &HEALTH)?.map(str::to_owned),
        disability_grade,
        labour: raw.coded(Column::Labour, &LABOUR)?.map(str::to_owned),
        insured: raw.coded(Column::Insured, &YES_NO)?,
        attribute: raw
            .coded(Column::Attribute, &ATTRIBUTES)?
            .map(str::to_owned),
        status: raw.coded(Column::Status, &STATUSES)?.map(str::to_owned),
        key_groups,
        helper_name: owned(raw.get(Column::HelperName)),
        helper_phone: owned(raw.get(Column::HelperPhone)),
        lat,
        lon,
        housing_grade,
        water_source: raw.coded(Column::WaterSource, &WATER)?.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[(Column, &'static str)]) -> RawRow<'static> {
        RawRow {
            row: 2,
            cells: cells.to_vec(),
        }
    }

    fn good() -> Vec<(Column, &'static str)> {
        vec![
            (Column::HouseholdId, "4103271010010001"),
            (Column::VillageCode, "410327101001"),
            (Column::Township, "城关镇"),
            (Column::Village, "东村"),
            (Column::HeadName, "张三"),
            (Column::Name, "张三"),
            (Column::IdNumber, "11010519491231002X"),
            (Column::Relation, "户主"),
            (Column::KeyGroups, "独居老人户、大病户"),
            (Column::Lat, "34.51"),
            (Column::Lon, "112.17"),
        ]
    }

    #[test]
    fn an_over_long_cell_skips_the_row_naming_its_column() {
        let long: &'static str = Box::leak("名".repeat(100_000).into_boxed_str());
        let mut cells = good();
        cells[4] = (Column::HeadName, long);
        let e = parse_row(&row(&cells)).unwrap_err();
        assert!(e.starts_with("户主姓名过长 (head_name: at most 128"), "{e}");
        assert!(e.len() < 200);
    }

    #[test]
    fn a_good_row_parses() {
        let m = parse_row(&row(&good())).unwrap();
        assert_eq!(m.relation, "head");
        assert_eq!(m.key_groups, ["elderly_alone", "serious_illness"]);
        assert_eq!(m.id_number_problem, None);
        assert_eq!(m.lat, Some(34.51));
    }

    #[test]
    fn bad_rows_say_why() {
        let mut cells = good();
        cells.retain(|(c, _)| *c != Column::HouseholdId);
        assert!(parse_row(&row(&cells)).unwrap_err().contains("户编号"));
        let mut cells = good();
        cells[1].1 = "4103271010011";
        assert!(parse_row(&row(&cells)).unwrap_err().contains("12"));
        let mut cells = good();
        cells[7].1 = "表哥";
        assert!(parse_row(&row(&cells)).unwrap_err().contains("与户主关系"));
        let mut cells = good();
        cells[9].1 = "北纬34度";
        assert!(parse_row(&row(&cells)).unwrap_err().contains("纬度"));
    }

    #[test]
    fn an_invalid_id_number_is_marked_not_refused() {
        let mut cells = good();
        cells[6].1 = "110105194912310021";
        let m = parse_row(&row(&cells)).unwrap();
        assert!(m.id_number_problem.unwrap().contains("check character"));
    }

    #[test]
    fn headers_map_in_chinese_or_english_and_missing_ones_are_named() {
        let headers: Vec<String> = [
            "户编号",
            "village_code",
            "乡镇",
            "行政村",
            "户主姓名",
            "姓名",
            "ID_NUMBER",
            "与户主关系",
            "备注",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mapped = map_headers(&headers).unwrap();
        assert_eq!(mapped[6], Some(Column::IdNumber));
        assert_eq!(mapped[8], None);
        let e = map_headers(&headers[..3]).unwrap_err();
        assert!(e.contains("行政村") && e.contains("身份证号"), "{e}");
    }
}
