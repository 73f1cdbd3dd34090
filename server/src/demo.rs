//! `huikan serve --demo`: a small synthetic county loaded through the server's own paths (the
//! registry import, user creation, photo ingest, visit ingest), so a newcomer sees the whole
//! product working at once: two townships, households of every kind, users of every role, and
//! visits whose photos and answers raise every finding. Loaded once; a later `--demo` start
//! finds it and only prints the logins.

use std::io::Write;

use axum::extract::{Path, State};
use bytes::Bytes;
use chrono::{DateTime, Duration, FixedOffset};
use huikan_shared::DivisionPrefix;
use huikan_shared::idcard::check_character;
use huikan_shared::submission::Datum;
use image::{Rgb, RgbImage};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::http::AppState;
use crate::http::json::ApiJson;
use crate::on_pool;
use crate::submissions::ingest::Incoming;

pub const PASSWORD: &str = "demo-password";
const CAMPAIGN: &str = "2020-lookback-1";

/// The demo's users: name, role, scope, what they are for.
const USERS: [(&str, Role, &[&str], &str); 5] = [
    ("demo-admin", Role::Admin, &[], "管理员 admin"),
    (
        "demo-reviewer",
        Role::Reviewer,
        &["410327"],
        "审核员 reviewer (whole county)",
    ),
    ("demo-auditor", Role::Auditor, &[], "审计员 auditor"),
    (
        "demo-field-a",
        Role::FieldStaff,
        &["410327101"],
        "调查员 field staff, 城关镇",
    ),
    (
        "demo-field-b",
        Role::FieldStaff,
        &["410327102"],
        "调查员 field staff, 东城街道",
    ),
];

/// The villages: code, township, village.
const VILLAGES: [(&str, &str, &str); 3] = [
    ("410327101001", "城关镇", "东关村"),
    ("410327101002", "城关镇", "西关村"),
    ("410327102001", "东城街道", "南河村"),
];
const HOUSEHOLDS_PER_VILLAGE: u32 = 8;
const HOUSE: (f64, f64) = (34.5138, 112.1702);

/// Loads the demo county if it is not there yet; returns the lines to print.
pub async fn load(state: &AppState) -> anyhow::Result<Vec<String>> {
    let loaded: Option<Uuid> = on_pool!(&state.db.read, |p| {
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'demo-reviewer'")
            .fetch_optional(p)
            .await
    })?;
    if loaded.is_none() {
        seed(state)
            .await
            .map_err(|e| anyhow::anyhow!("loading the demo: {e:?}"))?;
    }
    let mut lines =
        vec!["demo county loaded; log in with any of these (password demo-password):".to_owned()];
    for (name, _, _, what) in USERS {
        lines.push(format!("  {name:<15} {what}"));
    }
    Ok(lines)
}

fn id_number(first17: &str) -> String {
    let digits: [u8; 17] = first17.as_bytes().try_into().unwrap_or([b'0'; 17]);
    format!("{first17}{}", check_character(&digits))
}

struct Person {
    name: String,
    id_number: String,
    relation: &'static str,
    school: &'static str,
}

struct Home {
    id: String,
    village: usize,
    people: Vec<Person>,
}

/// Households of every kind: families with a child of compulsory-school age, with a
/// 16-year-old, couples alone, one registered with a wrong check character (its visit raises
/// `invalid_id_number`).
fn county() -> Vec<Home> {
    let surnames = ["张", "王", "李", "赵", "刘", "陈", "杨", "黄"];
    let mut homes = Vec::new();
    for (v, (code, _, _)) in VILLAGES.iter().enumerate() {
        for n in 1..=HOUSEHOLDS_PER_VILLAGE {
            let surname = surnames[(n as usize + v) % surnames.len()];
            let serial = v as u32 * 100 + n;
            let mut people = vec![
                Person {
                    name: format!("{surname}建国"),
                    id_number: id_number(&format!(
                        "41032719{:02}{:02}{:02}{:03}",
                        50 + n,
                        1 + n % 12,
                        10 + n,
                        serial % 1000
                    )),
                    relation: "户主",
                    school: "非在校生",
                },
                Person {
                    name: format!("{surname}秀英"),
                    id_number: id_number(&format!(
                        "41032719{:02}{:02}{:02}{:03}",
                        52 + n,
                        1 + (n + 5) % 12,
                        12 + n,
                        (serial + 500) % 1000
                    )),
                    relation: "配偶",
                    school: "非在校生",
                },
            ];
            if n % 3 != 0 {
                // Born 2006 (14 at the visits) or 2004-03-01 (16 the day before the visits).
                let born = if n % 3 == 1 { "20060815" } else { "20040301" };
                people.push(Person {
                    name: format!("{surname}小{}", ["明", "红", "军"][n as usize % 3]),
                    id_number: id_number(&format!("410327{born}{:03}", (serial + 250) % 1000)),
                    relation: "之子",
                    school: if n % 3 == 1 { "初中" } else { "高中" },
                });
            }
            homes.push(Home {
                id: format!("{code}{n:04}"),
                village: v,
                people,
            });
        }
    }
    // One registered with a wrong check character, as such records are found in the field.
    if let Some(person) = homes.get_mut(5).and_then(|h| h.people.get_mut(1)) {
        let last = person.id_number.pop().unwrap_or('0');
        person.id_number.push(if last == '1' { '2' } else { '1' });
    }
    homes
}

fn registry_csv(homes: &[Home]) -> String {
    let mut out = String::from(
        "\u{feff}户编号,村代码,乡镇,行政村,户主姓名,姓名,身份证号,与户主关系,性别,在校生状况,是否参加基本医疗保险,纬度,经度,饮水水源\n",
    );
    for home in homes {
        let (code, township, village) = VILLAGES[home.village];
        let (lat, lon) = house_of(home);
        for person in &home.people {
            out.push_str(&format!(
                "{},{code},{township},{village},{},{},{},{},{},{},是,{:.5},{:.5},自来水\n",
                home.id,
                home.people[0].name,
                person.name,
                person.id_number,
                person.relation,
                if person.relation == "配偶" {
                    "女"
                } else {
                    "男"
                },
                person.school,
                lat,
                lon,
            ));
        }
    }
    out
}

fn house_of(home: &Home) -> (f64, f64) {
    let offset = home.id[12..].parse::<f64>().unwrap_or(0.0) * 0.001;
    (
        HOUSE.0 + home.village as f64 * 0.02 + offset,
        HOUSE.1 + offset,
    )
}

/// A photograph-like scene: sky, ground, a house (or a well), trees and shadows whose place,
/// size and colours vary with `seed`, and sensor noise. Different seeds differ in their coarse
/// layout, as photographs of different houses do, so they are not near-duplicates.
fn scene(seed: u64, water: bool) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let (width, height) = (800u32, 600u32);
    let horizon = 120 + next() % 300;
    let left = next() % 500;
    let top = horizon.saturating_sub(80) + next() % 100;
    let wall = [
        150 + (next() % 90) as u8,
        120 + (next() % 90) as u8,
        90 + (next() % 60) as u8,
    ];
    let roof = [
        (next() % 160) as u8,
        (next() % 80) as u8,
        (next() % 80) as u8,
    ];
    let ground = [
        60 + (next() % 80) as u8,
        90 + (next() % 60) as u8,
        40 + (next() % 40) as u8,
    ];
    // Trees and shadows: dark or light discs where the coarse layout is decided.
    let blobs: Vec<(i64, i64, i64, [u8; 3])> = (0..4 + next() % 4)
        .map(|_| {
            let shade = if next() % 2 == 0 {
                [25, 60, 25]
            } else {
                [220, 215, 200]
            };
            (
                i64::from(next() % width),
                i64::from(next() % height),
                40 + i64::from(next() % 120),
                shade,
            )
        })
        .collect();
    let img = RgbImage::from_fn(width, height, |x, y| {
        let mut base = if y < horizon {
            [110, 160 + (y * 50 / height) as u8, 230]
        } else {
            let t = ((x / 9 + y / 7) % 13) as u8;
            [ground[0] + t * 3, ground[1] + t * 2, ground[2] + t]
        };
        for (bx, by, r, shade) in &blobs {
            let (dx, dy) = (i64::from(x) - bx, i64::from(y) - by);
            if dx * dx + dy * dy < r * r {
                base = *shade;
            }
        }
        if water {
            let (cx, cy) = (i64::from(left) + 150, i64::from(top) + 100);
            let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
            if dx * dx + dy * dy < 110 * 110 {
                base = if dx * dx + dy * dy < 85 * 85 {
                    [40, 80, 150]
                } else {
                    [120, 120, 120]
                };
            }
        } else if x >= left && x < left + 300 && y >= top && y < top + 200 {
            base = if y < top + 60 { roof } else { wall };
            if (y - top) > 110 && (x - left) % 100 < 40 && (x - left) % 100 > 10 {
                base = [60, 40, 30];
            }
        }
        let mut px = [0u8; 3];
        for (c, b) in px.iter_mut().zip(base) {
            *c = (i32::from(b) + (next() % 21) as i32 - 10).clamp(0, 255) as u8;
        }
        Rgb(px)
    });
    encode(&image::DynamicImage::ImageRgb8(img), 85)
}

fn encode(img: &image::DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    if img.write_with_encoder(encoder).is_err() {
        return Vec::new();
    }
    out
}

/// A forger's copy: brightened and recompressed.
fn forged(photo: &[u8]) -> Vec<u8> {
    let Ok(img) = image::load_from_memory(photo) else {
        return photo.to_vec();
    };
    encode(&img.brighten(12), 60)
}

/// The JPEG as the demo's phone camera writes it: local time with offset, and GPS.
fn with_camera_exif(jpeg: &[u8], taken: DateTime<FixedOffset>, gps: (f64, f64)) -> Vec<u8> {
    let taken_at = taken.format("%Y:%m:%d %H:%M:%S").to_string();
    let offset = taken.format("%:z").to_string();
    with_exif(
        jpeg,
        &Exif {
            taken_at: Some(&taken_at),
            offset: Some(&offset),
            gps: Some(gps),
            make: Some("HUAWEI"),
            model: Some("nova 5"),
            orientation: None,
        },
    )
}

/// EXIF as a phone writes it (also used by the test suite for its photos).
#[derive(Default)]
pub struct Exif<'a> {
    /// `YYYY:MM:DD HH:MM:SS`, local time.
    pub taken_at: Option<&'a str>,
    /// `+08:00`
    pub offset: Option<&'a str>,
    /// (latitude, longitude), WGS-84.
    pub gps: Option<(f64, f64)>,
    pub make: Option<&'a str>,
    pub model: Option<&'a str>,
    pub orientation: Option<u16>,
}

/// The JPEG with an EXIF segment (APP1) holding `exif`, right after its SOI marker (the bytes
/// unchanged if they are not a JPEG or the fields cannot be written).
pub fn with_exif(jpeg: &[u8], exif: &Exif) -> Vec<u8> {
    use exif::{Field, In, Rational, Tag, Value};
    // The segment goes right after the SOI marker; without one there is nowhere to put it.
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return jpeg.to_vec();
    }
    let ascii = |s: &str| Value::Ascii(vec![s.as_bytes().to_vec()]);
    let dms = |v: f64| {
        let v = v.abs();
        let degrees = v.trunc();
        let minutes = ((v - degrees) * 60.0).trunc();
        let seconds = ((v - degrees) * 60.0 - minutes) * 60.0;
        Value::Rational(vec![
            Rational {
                num: degrees as u32,
                denom: 1,
            },
            Rational {
                num: minutes as u32,
                denom: 1,
            },
            Rational {
                num: (seconds * 10_000.0).round() as u32,
                denom: 10_000,
            },
        ])
    };
    let mut fields = Vec::new();
    let mut push = |tag, value| {
        fields.push(Field {
            tag,
            ifd_num: In::PRIMARY,
            value,
        })
    };
    if let Some(make) = exif.make {
        push(Tag::Make, ascii(make));
    }
    if let Some(model) = exif.model {
        push(Tag::Model, ascii(model));
    }
    if let Some(orientation) = exif.orientation {
        push(Tag::Orientation, Value::Short(vec![orientation]));
    }
    if let Some(taken_at) = exif.taken_at {
        push(Tag::DateTimeOriginal, ascii(taken_at));
    }
    if let Some(offset) = exif.offset {
        push(Tag::OffsetTimeOriginal, ascii(offset));
    }
    if let Some((lat, lon)) = exif.gps {
        push(
            Tag::GPSLatitudeRef,
            ascii(if lat < 0.0 { "S" } else { "N" }),
        );
        push(Tag::GPSLatitude, dms(lat));
        push(
            Tag::GPSLongitudeRef,
            ascii(if lon < 0.0 { "W" } else { "E" }),
        );
        push(Tag::GPSLongitude, dms(lon));
    }
    let mut writer = exif::experimental::Writer::new();
    for field in &fields {
        writer.push_field(field);
    }
    let mut tiff = std::io::Cursor::new(Vec::new());
    if writer.write(&mut tiff, false).is_err() {
        return jpeg.to_vec();
    }
    let tiff = tiff.into_inner();
    // An EXIF segment this small always fits its 16-bit length.
    let Ok(segment_len) = u16::try_from(tiff.len() + 8) else {
        return jpeg.to_vec();
    };
    let mut out = Vec::with_capacity(jpeg.len() + tiff.len() + 10);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&segment_len.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn caller_for(user: &crate::auth::User) -> Caller {
    Caller {
        user_id: user.id,
        username: user.username.clone(),
        role: user.role,
        scope: user.scope.clone(),
        token_hash: String::new(),
    }
}

async fn store(state: &AppState, caller: &Caller, bytes: Vec<u8>) -> crate::error::Result<String> {
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let expected = crate::blobs::parse_sha(&sha)?;
    let mut body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
    let spooled = state
        .spool
        .spool(&mut body, state.config.max_photo_bytes)
        .await
        .map_err(|e| crate::blobs::spool_error(e, state.config.max_photo_bytes))?;
    crate::blobs::ingest(state, caller, &expected, spooled).await?;
    Ok(sha)
}

/// What a visit does differently from a sound one.
#[derive(Default, Clone, Copy)]
struct Twist {
    far: bool,
    mock: bool,
    no_water_photo: bool,
    late_photo: bool,
    drop_member: bool,
    housing_d: bool,
    water_fails: bool,
    food_insecure: bool,
    uninsured: bool,
    poor: bool,
    dropout: bool,
    unknown_campaign: bool,
    day: i64,
}

async fn seed(state: &AppState) -> crate::error::Result<()> {
    let mut users = Vec::new();
    for (name, role, scope, _) in USERS {
        let scope: Vec<DivisionPrefix> = scope
            .iter()
            .filter_map(|p| DivisionPrefix::parse(p).ok())
            .collect();
        let user = crate::auth::insert_user(
            &state.db,
            "demo",
            name.to_owned(),
            PASSWORD.to_owned(),
            role,
            scope,
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("demo user {name} exists already"))?;
        users.push(caller_for(&user));
    }
    let (admin, field_a, field_b) = (&users[0], &users[3], &users[4]);

    let homes = county();
    let mut file = tempfile::NamedTempFile::new_in(&state.config.data_dir)?;
    file.write_all(registry_csv(&homes).as_bytes())?;
    let path = file.into_temp_path();
    crate::registry::import_file(
        &state.db,
        path.to_path_buf(),
        Datum::Wgs84,
        Some(admin.user_id),
        &admin.username,
        "demo",
    )
    .await?;
    drop(path);

    let body: crate::campaigns::CampaignBody = serde_json::from_value(json!({
        "name": "2020年第一轮回头看", "starts_at": "2020-03-01T00:00:00+08:00",
        "ends_at": "2020-06-30T23:59:59+08:00", "timezone": "Asia/Shanghai",
        "required_photos": ["housing_exterior", "water_source"]}))
    .map_err(anyhow::Error::from)?;
    let _defined = crate::campaigns::define(
        State(state.clone()),
        admin.clone(),
        Path(CAMPAIGN.to_owned()),
        ApiJson(body),
    )
    .await?;

    // Which household gets which visit: most are sound; each twist raises its finding.
    let twist = |n: usize| -> Twist {
        let mut t = Twist::default();
        match n {
            1 => t.far = true,
            2 => t.late_photo = true,
            3 => t.no_water_photo = true,
            4 => t.drop_member = true,
            6 => t.mock = true,
            9 => t.housing_d = true,
            10 => t.water_fails = true,
            // A household with a child of 14.
            11 => t.dropout = true,
            12 => t.uninsured = true,
            13 => t.food_insecure = true,
            14 => t.poor = true,
            _ => {}
        }
        t
    };
    let surveyed_base: DateTime<FixedOffset> =
        DateTime::parse_from_rfc3339("2020-03-10T09:30:00+08:00").map_err(anyhow::Error::from)?;
    let mut exteriors: Vec<Vec<u8>> = Vec::new();
    let mut visits: Vec<(Caller, Value)> = Vec::new();
    for (n, home) in homes.iter().enumerate() {
        let t = twist(n);
        let field = if home.village == 2 { field_b } else { field_a };
        let surveyed = surveyed_base + Duration::minutes(37 * n as i64);
        let house = house_of(home);
        let taken = if t.late_photo {
            surveyed + Duration::hours(20)
        } else {
            surveyed + Duration::minutes(3)
        };
        let exterior_bytes = with_camera_exif(&scene(1000 + n as u64, false), taken, house);
        exteriors.push(exterior_bytes.clone());
        let exterior = store(state, field, exterior_bytes).await?;
        let water = store(
            state,
            field,
            with_camera_exif(
                &scene(5000 + n as u64, true),
                surveyed + Duration::minutes(9),
                house,
            ),
        )
        .await?;
        let mut photos = vec![
            json!({"sha256": exterior, "kind": "housing_exterior", "taken_at": taken.to_rfc3339()}),
        ];
        if !t.no_water_photo {
            photos.push(json!({"sha256": water, "kind": "water_source"}));
        }
        visits.push((field.clone(), visit(home, &t, surveyed, house, photos)));
    }
    // A neighbour's photo sent again, and a brightened, recompressed copy of another.
    let reuse = [(7usize, 0usize, false), (15, 8, true)];
    for (n, from, copy) in reuse {
        let home = &homes[n];
        let field = if home.village == 2 { field_b } else { field_a };
        let bytes = if copy {
            forged(&exteriors[from])
        } else {
            exteriors[from].clone()
        };
        let sha = store(state, field, bytes).await?;
        if let Some(photos) = visits[n].1["photos"].as_array_mut() {
            photos[0] = json!({"sha256": sha, "kind": "housing_exterior"});
        }
    }
    // Surveyed twice in the round, disagreeing on water; a household the registry missed; a
    // household outside the surveyor's villages; a campaign nobody defined.
    let extra: [(usize, Twist, &Caller); 2] = [
        (
            16,
            Twist {
                water_fails: true,
                day: 2,
                ..Twist::default()
            },
            field_b,
        ),
        (
            18,
            Twist {
                unknown_campaign: true,
                ..Twist::default()
            },
            field_b,
        ),
    ];
    for (n, t, field) in extra {
        let home = &homes[n];
        let surveyed = surveyed_base + Duration::days(t.day.max(1)) + Duration::minutes(n as i64);
        let seed = 9000 + 2 * n as u64;
        visits.push(photographed(state, field, home, &t, surveyed, house_of(home), seed).await?);
    }
    let missed = Home {
        id: "4103271010019001".to_owned(),
        village: 0,
        people: vec![Person {
            name: "孙有福".into(),
            id_number: id_number("41032719550603001"),
            relation: "户主",
            school: "非在校生",
        }],
    };
    let house = (HOUSE.0 + 0.003, HOUSE.1 - 0.002);
    let surveyed = surveyed_base + Duration::days(1);
    let sound = Twist::default();
    visits.push(photographed(state, field_a, &missed, &sound, surveyed, house, 7001).await?);
    // Township A's surveyor visiting a household of township B.
    let outside = &homes[20];
    let house = house_of(outside);
    visits.push(photographed(state, field_a, outside, &sound, surveyed, house, 7101).await?);

    for (field, body) in visits {
        let item = Incoming::prepare(&body, field.user_id, &field.username)
            .map_err(crate::error::AppError::from)?;
        state.submissions.submit(item).await?;
    }
    state.jobs.notify();
    Ok(())
}

/// A visit with a photo of the house and one of its water source, taken at the visit, stored.
async fn photographed(
    state: &AppState,
    field: &Caller,
    home: &Home,
    twist: &Twist,
    surveyed: DateTime<FixedOffset>,
    house: (f64, f64),
    seed: u64,
) -> crate::error::Result<(Caller, Value)> {
    let exterior = store(
        state,
        field,
        with_camera_exif(&scene(seed, false), surveyed, house),
    )
    .await?;
    let water = store(
        state,
        field,
        with_camera_exif(&scene(seed + 1, true), surveyed, house),
    )
    .await?;
    let photos = vec![
        json!({"sha256": exterior, "kind": "housing_exterior"}),
        json!({"sha256": water, "kind": "water_source"}),
    ];
    Ok((field.clone(), visit(home, twist, surveyed, house, photos)))
}

fn visit(
    home: &Home,
    t: &Twist,
    surveyed: DateTime<FixedOffset>,
    house: (f64, f64),
    photos: Vec<Value>,
) -> Value {
    let mut members: Vec<Value> = home
        .people
        .iter()
        .map(|p| {
            let relation = match p.relation {
                "户主" => "head",
                "配偶" => "spouse",
                _ => "child",
            };
            let school = if p.school == "非在校生" { "not_school_age" } else { "enrolled" };
            json!({"id_number": p.id_number, "name": p.name, "relation": relation, "present": true,
                   "school_status": school, "insured": true, "health": "healthy",
                   "disability_grade": null, "labour": if relation == "child" { "none" } else { "normal" }})
        })
        .collect();
    if t.drop_member && members.len() > 2 {
        members.pop();
    }
    if t.dropout
        && let Some(child) = members.iter_mut().find(|m| m["relation"] == "child")
    {
        child["school_status"] = "dropped_out".into();
    }
    if t.uninsured
        && let Some(spouse) = members.get_mut(1)
    {
        spouse["insured"] = false.into();
    }
    let (lat, lon) = if t.far {
        (house.0 + 0.02, house.1)
    } else {
        (house.0 + 0.0001, house.1)
    };
    json!({
        "submission_id": Uuid::now_v7().to_string(),
        "household_id": home.id,
        "campaign": if t.unknown_campaign { "2020-lookback-9" } else { CAMPAIGN },
        "form_version": "1",
        "surveyed_at": surveyed.to_rfc3339(),
        "location": {"lat": lat, "lon": lon, "accuracy_m": if t.mock { 0.0 } else { 8.0 }, "mock": t.mock},
        "answers": {
            "members": members,
            "food_secure": !t.food_insecure,
            "clothing_secure": true,
            "housing": {"grade": if t.housing_d { "D" } else { "B" }, "renovated": !t.housing_d},
            "water": {"source": "piped", "quantity_ok": true, "quality_ok": !t.water_fails,
                      "convenience_ok": true, "guarantee_ok": true},
            "income": {"per_capita_yuan": if t.poor { 3100 } else { 6800 + 150 * home.people.len() },
                       "sources": ["wage", "industry"]},
            "notes": "演示数据"
        },
        "photos": photos,
        "device_id": "demo-phone",
        "app_version": "1.0.0"
    })
}

#[cfg(test)]
mod tests {
    use super::{Exif, with_exif};

    #[test]
    fn bytes_that_are_not_a_jpeg_are_left_as_they_are() {
        let exif = Exif {
            make: Some("HUAWEI"),
            ..Exif::default()
        };
        for bytes in [&b""[..], b"\xFF", b"not a jpeg"] {
            assert_eq!(with_exif(bytes, &exif), bytes);
        }
        let jpeg = [0xFF, 0xD8, 0xFF, 0xD9];
        let tagged = with_exif(&jpeg, &exif);
        assert_eq!(&tagged[..4], &[0xFF, 0xD8, 0xFF, 0xE1]);
        assert!(tagged.ends_with(&[0xFF, 0xD9]));
    }
}
