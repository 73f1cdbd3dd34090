//! Registry files as a county office exports them: one row per member with Chinese headers, as
//! UTF-8, UTF-8 with BOM, GBK or `.xlsx`.

use huikan_shared::idcard::check_character;

pub const HEADERS: [&str; 14] = [
    "户编号",
    "村代码",
    "乡镇",
    "行政村",
    "户主姓名",
    "姓名",
    "身份证号",
    "与户主关系",
    "性别",
    "在校生状况",
    "是否参加基本医疗保险",
    "纬度",
    "经度",
    "饮水水源",
];

#[derive(Clone, Debug)]
pub struct Household {
    pub id: String,
    pub village_code: String,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub id_number: String,
    pub relation: &'static str,
    pub sex: &'static str,
}

/// A valid 身份证号 for a person born in 1980 in Yiyang county, distinct per serial.
pub fn id_number(serial: u32) -> String {
    let first17 = format!(
        "4103271980{:02}{:02}{:03}",
        1 + serial % 9,
        1 + serial % 28,
        serial % 1000
    );
    let mut digits = [0u8; 17];
    digits.copy_from_slice(first17.as_bytes());
    format!("{first17}{}", check_character(&digits))
}

/// `n` households in village `village_code`, ids `{village_code}{0001..}`, with 3 members each.
pub fn village(village_code: &str, n: u32) -> Vec<Household> {
    (1..=n)
        .map(|i| {
            let serial = i * 7 + village_code.bytes().map(u32::from).sum::<u32>();
            Household {
                id: format!("{village_code}{i:04}"),
                village_code: village_code.to_owned(),
                members: vec![
                    Member {
                        name: format!("户主{i}"),
                        id_number: id_number(serial),
                        relation: "户主",
                        sex: "男",
                    },
                    Member {
                        name: format!("配偶{i}"),
                        id_number: id_number(serial + 1),
                        relation: "配偶",
                        sex: "女",
                    },
                    Member {
                        name: format!("子女{i}"),
                        id_number: id_number(serial + 2),
                        relation: "之女",
                        sex: "女",
                    },
                ],
            }
        })
        .collect()
}

/// The rows of a registry file: header first.
pub fn rows(households: &[Household]) -> Vec<Vec<String>> {
    let mut rows = vec![HEADERS.iter().map(|h| h.to_string()).collect()];
    for h in households {
        let township = &h.village_code[..9];
        for m in &h.members {
            rows.push(vec![
                h.id.clone(),
                h.village_code.clone(),
                format!("{township}镇"),
                format!("{}村", &h.village_code[9..]),
                h.members[0].name.clone(),
                m.name.clone(),
                m.id_number.clone(),
                m.relation.to_owned(),
                m.sex.to_owned(),
                "非在校生".to_owned(),
                "是".to_owned(),
                "34.51".to_owned(),
                "112.17".to_owned(),
                "自来水".to_owned(),
            ]);
        }
    }
    rows
}

pub fn csv_text(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| {
                if c.contains([',', '"', '\n']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.clone()
                }
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

pub fn utf8_bom(rows: &[Vec<String>]) -> Vec<u8> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    out.extend_from_slice(csv_text(rows).as_bytes());
    out
}

pub fn gbk(rows: &[Vec<String>]) -> Vec<u8> {
    let text = csv_text(rows);
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable, "test data must be GBK-encodable");
    bytes.into_owned()
}

pub fn xlsx(rows: &[Vec<String>]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            sheet
                .write_string(r as u32, c as u16, cell)
                .expect("xlsx cell");
        }
    }
    book.save_to_buffer().expect("xlsx")
}

pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
