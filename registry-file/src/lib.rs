//! Reading the county's household registry file row by row, never whole: CSV in UTF-8 (with or
//! without BOM) or GBK, detected from the bytes, or the first sheet of an `.xlsx`. Blocking: the
//! server runs it on a blocking thread.

pub mod rows;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use calamine::{DataRef, Reader, Xlsx};
use huikan_shared::geo;
use huikan_shared::submission::Datum;

use rows::{Column, MemberRow, RawRow, map_headers, parse_row};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Xlsx,
}

/// What one data row became.
pub enum Item {
    Member(Box<MemberRow>),
    /// A row skipped, with its household when it named one (that household is still present).
    Rejected {
        row: u64,
        household_id: Option<String>,
        reason: String,
    },
}

/// Hands on one data row: its number and its cells by column.
type EmitRow<'a> = dyn FnMut(u64, Vec<(Column, &str)>) + 'a;

/// An `.xlsx` is a ZIP; anything else is taken as CSV. Leaves `source` at its start.
fn detect_format<R: Read + Seek>(source: &mut R) -> std::io::Result<Format> {
    let mut magic = Vec::with_capacity(4);
    source.by_ref().take(4).read_to_end(&mut magic)?;
    source.seek(SeekFrom::Start(0))?;
    Ok(if magic == b"PK\x03\x04" {
        Format::Xlsx
    } else {
        Format::Csv
    })
}

/// Reads every data row of the file at `path`, handing each to `sink`. Fails (naming what) only
/// when the file as a whole cannot be read: an unreadable file or missing required columns.
pub fn read(path: &Path, datum: Datum, sink: &mut dyn FnMut(Item)) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(unreadable)?;
    read_from(BufReader::with_capacity(256 * 1024, file), datum, sink)
}

/// As [`read`], from any seekable source (a file, or bytes in memory).
pub fn read_from<R: Read + Seek>(
    mut source: R,
    datum: Datum,
    sink: &mut dyn FnMut(Item),
) -> Result<(), String> {
    let mut emit = |row: u64, cells: Vec<(Column, &str)>| {
        if cells.iter().all(|(_, v)| v.trim().is_empty()) {
            return; // blank lines and rows are not data
        }
        match parse_row(&RawRow {
            row,
            cells: cells.clone(),
        }) {
            Ok(mut member) => {
                if let (Some(lat), Some(lon)) = (member.lat, member.lon) {
                    let (lat, lon) = geo::to_wgs84(lat, lon, datum);
                    member.lat = Some(lat);
                    member.lon = Some(lon);
                }
                sink(Item::Member(Box::new(member)));
            }
            Err(reason) => {
                let household_id = cells
                    .iter()
                    .find(|(c, v)| *c == Column::HouseholdId && !v.trim().is_empty())
                    .map(|(_, v)| v.trim().to_owned());
                sink(Item::Rejected {
                    row,
                    household_id,
                    reason,
                })
            }
        }
    };
    match detect_format(&mut source).map_err(unreadable)? {
        Format::Csv => read_csv(source, &mut emit),
        Format::Xlsx => read_xlsx(source, &mut emit),
    }
}

fn unreadable(e: std::io::Error) -> String {
    format!("cannot read the file: {e}")
}

/// UTF-8 if the file says so with a BOM or its start is valid UTF-8; GBK otherwise (the
/// national system's CSV export). Leaves `source` at its start.
fn sniff_encoding<R: Read + Seek>(
    source: &mut R,
) -> std::io::Result<&'static encoding_rs::Encoding> {
    let mut head = Vec::with_capacity(64 * 1024);
    source.by_ref().take(64 * 1024).read_to_end(&mut head)?;
    source.seek(SeekFrom::Start(0))?;
    let utf8 = match std::str::from_utf8(&head) {
        Ok(_) => true,
        // Cut mid-character at the end of the sample: still UTF-8.
        Err(e) => e.error_len().is_none(),
    };
    Ok(if head.starts_with(b"\xEF\xBB\xBF") || utf8 {
        encoding_rs::UTF_8
    } else {
        encoding_rs::GBK
    })
}

/// Notes the offset of every line break in the decoded text, so that a record's end gives the
/// line a clerk's editor shows it on: the csv crate's own line count differs between `\n` and
/// `\r\n` files and skips blank lines. A line ends, as for the csv crate, at `\n`, `\r\n` or a
/// lone `\r` (old Mac exports); `\r\n` is noted at its `\n`.
struct LineCounter<R> {
    inner: R,
    read: u64,
    /// A `\r` seen last, not yet known to be lone or the start of `\r\n`.
    carriage_return: Option<u64>,
    newlines: Rc<RefCell<VecDeque<u64>>>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut newlines = self.newlines.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            let at = self.read + i as u64;
            if let Some(cr) = self.carriage_return.take()
                && *b != b'\n'
            {
                newlines.push_back(cr);
            }
            match b {
                b'\n' => newlines.push_back(at),
                b'\r' => self.carriage_return = Some(at),
                _ => {}
            }
        }
        if n == 0
            && let Some(cr) = self.carriage_return.take()
        {
            newlines.push_back(cr);
        }
        self.read += n as u64;
        Ok(n)
    }
}

fn read_csv<R: Read + Seek>(mut source: R, emit: &mut EmitRow) -> Result<(), String> {
    let encoding = sniff_encoding(&mut source).map_err(unreadable)?;
    let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding))
        .bom_sniffing(true)
        .build(source);
    let newlines = Rc::new(RefCell::new(VecDeque::new()));
    let counted = LineCounter {
        inner: decoded,
        read: 0,
        carriage_return: None,
        newlines: newlines.clone(),
    };
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(counted);
    // The line of a record that ended just before byte `end`: one more than the newlines
    // before its last character. Offsets only grow, so passed newlines are forgotten.
    let mut passed: u64 = 0;
    let mut line_ending_at = |end: u64| {
        let mut newlines = newlines.borrow_mut();
        while newlines.front().is_some_and(|n| *n + 1 < end) {
            newlines.pop_front();
            passed += 1;
        }
        passed + 1
    };
    let headers: Vec<String> = csv
        .headers()
        .map_err(|e| format!("cannot read the header row: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    let columns = map_headers(&headers)?;
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let row = line_ending_at(csv.position().byte());
                let cells = columns
                    .iter()
                    .zip(record.iter())
                    .filter_map(|(c, v)| c.map(|c| (c, v)))
                    .collect();
                emit(row, cells);
            }
            Err(e) => {
                let row = e.position().map_or(0, |p| p.line());
                return Err(format!("CSV unreadable at line {row}: {e}"));
            }
        }
    }
}

fn cell_text(value: &DataRef) -> String {
    match value {
        DataRef::Empty => String::new(),
        DataRef::String(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_owned(),
        // Codes typed as numbers: 410327101001.0 is the code 410327101001.
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        DataRef::Float(f) => f.to_string(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Bool(b) => b.to_string(),
        other => calamine::DataType::as_string(other).unwrap_or_default(),
    }
}

fn read_xlsx<R: Read + Seek>(source: R, emit: &mut EmitRow) -> Result<(), String> {
    let mut workbook = Xlsx::new(source).map_err(|e| format!("not a readable .xlsx file: {e}"))?;
    let sheet = workbook
        .sheet_names()
        .first()
        .cloned()
        .ok_or_else(|| "the workbook has no sheet".to_owned())?;
    let mut cells = workbook
        .worksheet_cells_reader(&sheet)
        .map_err(|e| format!("cannot read sheet {sheet}: {e}"))?;
    // Cells arrive row by row; a row is complete when the next one starts.
    let mut columns: Option<Vec<Option<Column>>> = None;
    let mut current: Option<u32> = None;
    let mut values: Vec<(u32, String)> = Vec::new();
    let mut finish = |row: u32,
                      values: &mut Vec<(u32, String)>,
                      columns: &mut Option<Vec<Option<Column>>>|
     -> Result<(), String> {
        match columns {
            None => {
                let width = values.iter().map(|(c, _)| *c + 1).max().unwrap_or(0) as usize;
                let mut headers = vec![String::new(); width];
                for (c, v) in values.drain(..) {
                    headers[c as usize] = v;
                }
                *columns = Some(map_headers(&headers)?);
            }
            Some(columns) => {
                let cells = values
                    .iter()
                    .filter_map(|(c, v)| {
                        columns
                            .get(*c as usize)
                            .copied()
                            .flatten()
                            .map(|col| (col, v.as_str()))
                    })
                    .collect();
                emit(u64::from(row) + 1, cells);
                values.clear();
            }
        }
        Ok(())
    };
    loop {
        let cell = cells
            .next_cell()
            .map_err(|e| format!("cannot read sheet {sheet}: {e}"))?;
        let Some(cell) = cell else { break };
        let (row, col) = cell.get_position();
        if current.is_some_and(|r| r != row) {
            finish(current.unwrap_or_default(), &mut values, &mut columns)?;
        }
        current = Some(row);
        values.push((col, cell_text(cell.get_value())));
    }
    if let Some(row) = current {
        finish(row, &mut values, &mut columns)?;
    }
    if columns.is_none() {
        return Err("the first sheet is empty".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(text: &[u8]) -> Vec<(u64, Result<String, String>)> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let mut out = Vec::new();
        read(file.path(), Datum::Wgs84, &mut |item| {
            out.push(match item {
                Item::Member(m) => (m.row, Ok(m.name.clone())),
                Item::Rejected { row, reason, .. } => (row, Err(reason)),
            })
        })
        .unwrap();
        out
    }

    const HEADER: &str = "户编号,村代码,乡镇,行政村,户主姓名,姓名,身份证号,与户主关系\r\n";

    #[test]
    fn rows_are_numbered_from_the_header_as_row_one() {
        let text = format!(
            "{HEADER}h1,410327101001,镇,村,张三,张三,11010519491231002X,户主\r\n\r\nh2,410327101001,镇,村,李四,李四,11010519491231002X,表哥\r\n"
        );
        let rows = rows_of(text.as_bytes());
        assert_eq!(rows[0], (2, Ok("张三".to_owned())));
        assert_eq!(rows[1].0, 4, "the blank line 3 still counts");
        assert!(rows[1].1.is_err());
    }

    #[test]
    fn plain_newlines_number_the_same() {
        let text = format!(
            "{}h1,410327101001,镇,村,张三,张三,11010519491231002X,户主\n\nh2,410327101001,镇,村,李四,李四,11010519491231002X,表哥",
            HEADER.replace("\r\n", "\n")
        );
        let rows = rows_of(text.as_bytes());
        assert_eq!((rows[0].0, rows[1].0), (2, 4));
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line() {
        let text = format!(
            "{}h1,410327101001,镇,村,张三,张三,11010519491231002X,户主\rh2,410327101001,镇,村,李四,李四,11010519491231002X,表哥\r\n\rh3,410327101001,镇,村,王五,王五,11010519491231002X,户主\r",
            HEADER.replace("\r\n", "\r")
        );
        let rows: Vec<u64> = rows_of(text.as_bytes()).iter().map(|r| r.0).collect();
        assert_eq!(rows, [2, 3, 5]);
    }

    #[test]
    fn gbk_and_bom_are_detected() {
        let text =
            format!("{HEADER}h1,410327101001,城关镇,东村,张三,张三,11010519491231002X,户主\r\n");
        let (gbk, _, _) = encoding_rs::GBK.encode(&text);
        assert_eq!(rows_of(&gbk)[0].1, Ok("张三".to_owned()));
        let bom = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
        assert_eq!(rows_of(&bom)[0].1, Ok("张三".to_owned()));
    }
}
