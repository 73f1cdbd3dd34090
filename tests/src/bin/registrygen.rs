//! Writes a generated county registry as a CSV with the national system's Chinese headers, for
//! the import benchmark: `--households` households in villages of `--per-village`, 1 to 6
//! members each (about 3.3 on average, so 300,000 households are about 1,000,000 members).
//! `--changed N` alters the last member's name in N households spread over the file, for a
//! re-import that updates exactly N.
//!
//!   registrygen --households 300000 --out registry.csv [--changed 10] [--gbk]

use std::io::Write;

use clap::Parser;
use huikan_tests::registry::{HEADERS, id_number};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 300_000)]
    households: u32,
    #[arg(long, default_value_t = 1000)]
    per_village: u32,
    #[arg(long, default_value_t = 0)]
    changed: u32,
    /// Write GBK, as the national system exports, instead of UTF-8.
    #[arg(long)]
    gbk: bool,
    #[arg(long)]
    out: std::path::PathBuf,
}

const RELATIONS: [&str; 6] = ["户主", "配偶", "之子", "之女", "之孙子", "之母"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&args.out)?);
    let mut write = |line: String| -> std::io::Result<()> {
        if args.gbk {
            out.write_all(&encoding_rs::GBK.encode(&line).0)
        } else {
            out.write_all(line.as_bytes())
        }
    };
    write(format!("{}\r\n", HEADERS.join(",")))?;
    let change_every = args
        .households
        .checked_div(args.changed)
        .map_or(u32::MAX, |n| n.max(1));
    let mut members_written: u64 = 0;
    for h in 0..args.households {
        let village = h / args.per_village;
        let village_code = format!("410327{:03}{:03}", 100 + village / 100, 1 + village % 100);
        let household_id = format!("{village_code}{:04}", h % args.per_village + 1);
        // 1..=6 members, weighted towards 3 and 4.
        let size = [1, 2, 3, 3, 4, 4, 5, 6, 3, 2][(h as usize * 7) % 10];
        let head = format!("户主{h}");
        for m in 0..size {
            let mut name = if m == 0 {
                head.clone()
            } else {
                format!("成员{h}-{m}")
            };
            if h % change_every == 0 && h / change_every < args.changed && m == size - 1 {
                name.push('新');
            }
            let (lat, lon) = (
                34.3 + (h % 1000) as f64 * 0.0004,
                112.0 + (h % 997) as f64 * 0.0004,
            );
            write(format!(
                "{household_id},{village_code},{}镇,{}村,{head},{name},{},{},{},非在校生,是,{lat:.5},{lon:.5},自来水\r\n",
                &village_code[6..9],
                &village_code[9..],
                id_number((h.wrapping_mul(6).wrapping_add(m)) % 63_000),
                RELATIONS[m as usize],
                if m % 2 == 0 { "男" } else { "女" },
            ))?;
            members_written += 1;
        }
    }
    out.flush()?;
    eprintln!(
        "registrygen: {} households, {members_written} members → {}",
        args.households,
        args.out.display()
    );
    Ok(())
}
