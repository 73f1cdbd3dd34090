//! The OpenRosa Form List API: one look-back form per campaign, generated from the survey
//! schema of `POST /v1/submissions` (`huikan_shared::submission`), so that a visit from Collect
//! maps onto exactly the fields a visit from our own app has. Its media are two CSV files made
//! for the caller: the villages and the households of their scope, from which the household is
//! chosen. A manifest gives each file's MD5, so a phone downloads again only a file that changed
//! (a registry import touching the caller's villages), and the form itself only when its
//! campaign changes.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use huikan_shared::PhotoKind;
use md5::{Digest, Md5};
use serde::Deserialize;

use super::{OpenRosaCaller, OpenRosaError, escape, xml_response};
use crate::auth::Role;
use crate::campaigns::Campaign;
use crate::error::AppError;
use crate::http::AppState;
use crate::http::page::ApiQuery;
use crate::on_pool;

/// Bumped whenever the generated form changes for the same campaign, so phones take the new one.
const FORM_REVISION: u32 = 1;

/// Who may download the forms: field staff fill them in; admins look at them.
const FORM_READERS: &[Role] = &[Role::FieldStaff, Role::Admin];

/// A campaign's form id: `huikan-<campaign id>`.
pub fn form_id(campaign_id: &str) -> String {
    format!("huikan-{campaign_id}")
}

/// The campaign a form id names, if it is one of ours.
pub fn campaign_of(form_id: &str) -> Option<&str> {
    form_id.strip_prefix("huikan-").filter(|c| !c.is_empty())
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

#[derive(Deserialize)]
pub struct FormListQuery {
    #[serde(rename = "formID")]
    form_id: Option<String>,
}

/// `GET …/formList`: every campaign's form (or the one `formID` names).
pub async fn form_list(
    State(state): State<AppState>,
    client: OpenRosaCaller,
    query: Result<ApiQuery<FormListQuery>, AppError>,
) -> Result<Response, OpenRosaError> {
    client.require(FORM_READERS)?;
    // The API's query checks, answered as an OpenRosaResponse.
    let ApiQuery(query) = query?;
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xforms xmlns=\"http://openrosa.org/xforms/xformsList\">\n",
    );
    for campaign in crate::campaigns::all(&state).await? {
        let id = form_id(&campaign.campaign_id);
        if query.form_id.as_deref().is_some_and(|wanted| wanted != id) {
            continue;
        }
        let form = xform(&campaign);
        let base = format!("{}/forms/{id}", client.base);
        let _ = write!(
            xml,
            "  <xform>\n    <formID>{id}</formID>\n    <name>{name}</name>\n    <version>{version}</version>\n    \
             <hash>md5:{hash}</hash>\n    <descriptionText>{description}</descriptionText>\n    \
             <downloadUrl>{url}/form.xml</downloadUrl>\n    <manifestUrl>{url}/manifest</manifestUrl>\n  </xform>\n",
            name = escape(&campaign.name),
            version = version(&campaign),
            hash = md5_hex(form.as_bytes()),
            description = escape(&format!(
                "{} – {}",
                campaign.starts_at.format("%Y-%m-%d"),
                campaign.ends_at.format("%Y-%m-%d")
            )),
            url = escape(&base),
        );
    }
    xml.push_str("</xforms>\n");
    Ok(xml_response(StatusCode::OK, xml))
}

#[derive(Deserialize)]
pub struct FormPath {
    form_id: String,
}

async fn campaign(state: &AppState, form_id: &str) -> Result<Campaign, OpenRosaError> {
    let not_found = || OpenRosaError(AppError::not_found(format!("no form {form_id}")));
    let campaign_id = campaign_of(form_id).ok_or_else(not_found)?;
    crate::campaigns::all(state)
        .await?
        .into_iter()
        .find(|c| c.campaign_id == campaign_id)
        .ok_or_else(not_found)
}

/// `GET …/forms/{form_id}/form.xml`: the XForm.
pub async fn form_xml(
    State(state): State<AppState>,
    client: OpenRosaCaller,
    Path(path): Path<FormPath>,
) -> Result<Response, OpenRosaError> {
    client.require(FORM_READERS)?;
    let campaign = campaign(&state, &path.form_id).await?;
    Ok(xml_response(StatusCode::OK, xform(&campaign)))
}

/// `GET …/forms/{form_id}/manifest`: the form's media files for this caller, with their MD5s.
pub async fn manifest(
    State(state): State<AppState>,
    client: OpenRosaCaller,
    Path(path): Path<FormPath>,
) -> Result<Response, OpenRosaError> {
    client.require(FORM_READERS)?;
    campaign(&state, &path.form_id).await?;
    let media = Media::of(&state, &client).await?;
    let base = format!("{}/forms/{}/media", client.base, path.form_id);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<manifest xmlns=\"http://openrosa.org/xforms/xformsManifest\">\n",
    );
    for (filename, bytes) in [
        (VILLAGES_CSV, &media.villages),
        (HOUSEHOLDS_CSV, &media.households),
    ] {
        let _ = write!(
            xml,
            "  <mediaFile>\n    <filename>{filename}</filename>\n    <hash>md5:{}</hash>\n    \
             <downloadUrl>{}/{filename}</downloadUrl>\n  </mediaFile>\n",
            md5_hex(bytes),
            escape(&base),
        );
    }
    xml.push_str("</manifest>\n");
    Ok(xml_response(StatusCode::OK, xml))
}

#[derive(Deserialize)]
pub struct MediaPath {
    form_id: String,
    filename: String,
}

/// `GET …/forms/{form_id}/media/{filename}`: one of the CSV files.
pub async fn media(
    State(state): State<AppState>,
    client: OpenRosaCaller,
    Path(path): Path<MediaPath>,
) -> Result<Response, OpenRosaError> {
    client.require(FORM_READERS)?;
    campaign(&state, &path.form_id).await?;
    let media = Media::of(&state, &client).await?;
    let bytes = match path.filename.as_str() {
        VILLAGES_CSV => media.villages,
        HOUSEHOLDS_CSV => media.households,
        other => {
            return Err(OpenRosaError(AppError::not_found(format!(
                "form {} has no media file {other}",
                path.form_id
            ))));
        }
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::ETAG, format!("\"md5:{}\"", md5_hex(&bytes))),
        ],
        bytes,
    )
        .into_response();
    super::openrosa_headers(&mut response);
    Ok(response)
}

const VILLAGES_CSV: &str = "villages.csv";
const HOUSEHOLDS_CSV: &str = "households.csv";

/// The CSV media for one caller: the villages of their scope (`name`, `label`) and the
/// households registered there and not removed (`name`, `label`, `village`).
struct Media {
    villages: Vec<u8>,
    households: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct VillageRow {
    village_code: String,
    township: Option<String>,
    village: Option<String>,
}

#[derive(sqlx::FromRow)]
struct HouseholdRow {
    household_id: String,
    village_code: String,
    record: String,
}

#[derive(Deserialize)]
struct HeadOnly {
    head_name: String,
}

impl Media {
    async fn of(state: &AppState, client: &OpenRosaCaller) -> Result<Media, OpenRosaError> {
        let (villages, households): (Vec<VillageRow>, Vec<HouseholdRow>) = if client
            .caller
            .scope
            .is_empty()
        {
            (Vec::new(), Vec::new())
        } else {
            let set = crate::registry::scope_villages(&client.caller.scope);
            let villages_sql = format!(
                "SELECT village_code, township, village FROM registry_villages
                     WHERE village_code IN ({set}) ORDER BY village_code"
            );
            let households_sql = format!(
                    "SELECT household_id, village_code, record FROM households
                     WHERE NOT removed AND village_code IN ({set}) ORDER BY village_code, household_id"
                );
            on_pool!(&state.db.read, |p| {
                let villages = sqlx::query_as(&villages_sql).fetch_all(p).await?;
                let households = sqlx::query_as(&households_sql).fetch_all(p).await?;
                Ok::<_, sqlx::Error>((villages, households))
            })?
        };
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(["name", "label"])
            .map_err(anyhow::Error::from)?;
        for v in &villages {
            let label = match (&v.township, &v.village) {
                (Some(t), Some(v)) => format!("{t} {v}"),
                (_, Some(v)) => v.clone(),
                _ => v.village_code.clone(),
            };
            out.write_record([v.village_code.as_str(), label.as_str()])
                .map_err(anyhow::Error::from)?;
        }
        let villages = out.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(["name", "label", "village"])
            .map_err(anyhow::Error::from)?;
        for h in &households {
            let head = serde_json::from_str::<HeadOnly>(&h.record)
                .map(|r| r.head_name)
                .unwrap_or_default();
            let label = format!("{head}（{}）", h.household_id);
            out.write_record([
                h.household_id.as_str(),
                label.as_str(),
                h.village_code.as_str(),
            ])
            .map_err(anyhow::Error::from)?;
        }
        let households = out.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Media {
            villages,
            households,
        })
    }
}

/// The form's version: its revision and what of the campaign it shows.
pub fn version(campaign: &Campaign) -> String {
    let shown =
        serde_json::json!({"name": campaign.name, "required_photos": campaign.required_photos});
    let digest = md5_hex(shown.to_string().as_bytes());
    format!("{FORM_REVISION}.{}", &digest[..8])
}

const YES_NO: &[(&str, &str)] = &[("yes", "是"), ("no", "否")];
const RELATIONS: &[(&str, &str)] = &[
    ("head", "户主"),
    ("spouse", "配偶"),
    ("child", "子女"),
    ("grandchild", "孙子女"),
    ("parent", "父母"),
    ("other", "其他"),
];
const SCHOOL: &[(&str, &str)] = &[
    ("not_school_age", "非在校生"),
    ("preschool", "学龄前儿童"),
    ("enrolled", "在校生"),
    ("home_taught", "送教上门"),
    ("dropped_out", "辍学"),
    ("graduated", "已毕业"),
];
const HEALTH: &[(&str, &str)] = &[
    ("healthy", "健康"),
    ("chronic", "长期慢性病"),
    ("serious_illness", "患有大病"),
    ("disabled", "残疾"),
];
const LABOUR: &[(&str, &str)] = &[
    ("normal", "普通劳动力"),
    ("skilled", "技能劳动力"),
    ("weak", "弱劳动力或半劳动力"),
    ("lost", "丧失劳动力"),
    ("none", "无劳动力"),
];
const GRADES: &[(&str, &str)] = &[
    ("A", "A 级"),
    ("B", "B 级"),
    ("C", "C 级（局部危险）"),
    ("D", "D 级（整体危险）"),
];
const WATER_SOURCES: &[(&str, &str)] = &[
    ("piped", "自来水"),
    ("well", "水井"),
    ("spring", "山泉"),
    ("cistern", "水窖"),
    ("trucked", "拉水"),
    ("other", "其他"),
];
const INCOME_SOURCES: &[(&str, &str)] = &[
    ("industry", "产业收入"),
    ("wage", "务工收入"),
    ("public_welfare_job", "公益岗位"),
    ("dibao", "低保金"),
    ("tekun", "特困供养金"),
    ("disability_allowance", "残疾人补贴"),
    ("elderly_allowance", "高龄津贴"),
    ("pension", "养老金"),
    ("family_planning_allowance", "计生奖励扶助"),
    ("other", "其他"),
];
/// The photo questions, in the order asked; a campaign's required kinds are required.
pub const PHOTOS: &[(PhotoKind, &str)] = &[
    (PhotoKind::HousingExterior, "房屋外景"),
    (PhotoKind::HousingInterior, "房屋内景"),
    (PhotoKind::WaterSource, "饮水水源"),
    (PhotoKind::WaterStorage, "储水设施"),
    (PhotoKind::Document, "证件或资料"),
    (PhotoKind::Other, "其他照片"),
];

/// The XForm body and binds, built question by question.
#[derive(Default)]
struct Builder {
    binds: String,
    body: String,
}

#[derive(Default)]
struct Bind<'a> {
    kind: &'a str,
    required: bool,
    relevant: Option<&'a str>,
    constraint: Option<(&'a str, &'a str)>,
}

impl Builder {
    fn bind(&mut self, nodeset: &str, bind: Bind) {
        let _ = write!(
            self.binds,
            "<bind nodeset=\"{nodeset}\" type=\"{}\"",
            bind.kind
        );
        if bind.required {
            self.binds.push_str(" required=\"true()\"");
        }
        if let Some(relevant) = bind.relevant {
            let _ = write!(self.binds, " relevant=\"{}\"", escape(relevant));
        }
        if let Some((constraint, message)) = bind.constraint {
            let _ = write!(
                self.binds,
                " constraint=\"{}\" jr:constraintMsg=\"{}\"",
                escape(constraint),
                escape(message)
            );
        }
        self.binds.push_str("/>\n");
    }

    fn label(&mut self, label: &str) {
        let _ = write!(self.body, "<label>{}</label>", escape(label));
    }

    fn input(&mut self, nodeset: &str, label: &str, bind: Bind) {
        let _ = write!(self.body, "<input ref=\"{nodeset}\">");
        self.label(label);
        self.body.push_str("</input>\n");
        self.bind(nodeset, bind);
    }

    fn choose(
        &mut self,
        element: &str,
        nodeset: &str,
        label: &str,
        items: &[(&str, &str)],
        bind: Bind,
    ) {
        let _ = write!(self.body, "<{element} ref=\"{nodeset}\">");
        self.label(label);
        for (value, label) in items {
            let _ = write!(
                self.body,
                "<item><label>{}</label><value>{value}</value></item>",
                escape(label)
            );
        }
        let _ = writeln!(self.body, "</{element}>");
        self.bind(nodeset, bind);
    }

    fn select_one(&mut self, nodeset: &str, label: &str, items: &[(&str, &str)], bind: Bind) {
        self.choose(
            "select1",
            nodeset,
            label,
            items,
            Bind {
                kind: "string",
                ..bind
            },
        );
    }

    fn yes_no(&mut self, nodeset: &str, label: &str) {
        self.select_one(nodeset, label, YES_NO, required());
    }

    /// A choice from a CSV instance's items matching `filter`.
    fn select_from(
        &mut self,
        nodeset: &str,
        label: &str,
        itemset: &str,
        appearance: &str,
        bind: Bind,
    ) {
        let _ = write!(
            self.body,
            "<select1 ref=\"{nodeset}\" appearance=\"{appearance}\">"
        );
        self.label(label);
        let _ = writeln!(
            self.body,
            "<itemset nodeset=\"{}\"><value ref=\"name\"/><label ref=\"label\"/></itemset></select1>",
            escape(itemset)
        );
        self.bind(
            nodeset,
            Bind {
                kind: "string",
                ..bind
            },
        );
    }
}

fn required<'a>() -> Bind<'a> {
    Bind {
        kind: "string",
        required: true,
        ..Bind::default()
    }
}

/// The look-back form of a campaign. Element names are the JSON visit's field names, and
/// choice values its enum values, so `submission::visit_json` maps an instance onto a visit
/// field by field.
pub fn xform(campaign: &Campaign) -> String {
    let mut b = Builder::default();
    b.select_from(
        "/data/village",
        "行政村",
        "instance('villages')/root/item",
        "minimal",
        required(),
    );
    b.select_one("/data/listed", "这户在帮扶名单中吗？", YES_NO, required());
    b.select_from(
        "/data/household",
        "户（户主姓名或户编号）",
        "instance('households')/root/item[village = /data/village]",
        "autocomplete",
        Bind {
            relevant: Some("/data/listed = 'yes'"),
            ..required()
        },
    );
    b.input(
        "/data/household_unlisted",
        "不在名单中的户编号",
        Bind {
            relevant: Some("/data/listed = 'no'"),
            constraint: Some((
                "string-length(.) <= 64 and not(contains(., ' '))",
                "户编号最多 64 个字符，不含空格",
            )),
            ..required()
        },
    );
    b.input(
        "/data/location",
        "房屋位置（在户门前定位）",
        Bind {
            kind: "geopoint",
            ..required()
        },
    );

    let _ = write!(b.body, "<group ref=\"/data/member\">");
    b.label("家庭成员");
    b.body.push_str("<repeat nodeset=\"/data/member\">\n");
    b.input(
        "/data/member/id_number",
        "身份证号",
        Bind {
            constraint: Some((
                "regex(., '^[0-9]{17}[0-9Xx]$')",
                "身份证号是 18 位：17 位数字加一位数字或 X",
            )),
            ..required()
        },
    );
    b.input(
        "/data/member/name",
        "姓名",
        Bind {
            kind: "string",
            ..Bind::default()
        },
    );
    b.select_one("/data/member/relation", "与户主关系", RELATIONS, required());
    b.yes_no("/data/member/present", "本人在家");
    b.select_one(
        "/data/member/school_status",
        "在校生状况",
        SCHOOL,
        required(),
    );
    b.yes_no("/data/member/insured", "参加基本医疗保险");
    b.select_one("/data/member/health", "健康状况", HEALTH, required());
    b.input(
        "/data/member/disability_grade",
        "残疾等级（1–4）",
        Bind {
            kind: "int",
            relevant: Some("../health = 'disabled'"),
            constraint: Some((". >= 1 and . <= 4", "残疾等级是 1 到 4")),
            ..Bind::default()
        },
    );
    b.select_one("/data/member/labour", "劳动技能", LABOUR, required());
    b.body.push_str("</repeat></group>\n");

    b.yes_no("/data/food_secure", "不愁吃");
    b.yes_no("/data/clothing_secure", "不愁穿");
    b.select_one("/data/housing/grade", "住房安全等级", GRADES, required());
    b.yes_no("/data/housing/renovated", "已做危房改造");
    b.select_one("/data/water/source", "饮水水源", WATER_SOURCES, required());
    b.yes_no("/data/water/quantity_ok", "水量达标");
    b.yes_no("/data/water/quality_ok", "水质达标");
    b.yes_no("/data/water/convenience_ok", "取水方便");
    b.yes_no("/data/water/guarantee_ok", "供水有保障");
    b.input(
        "/data/income/per_capita_yuan",
        "家庭人均纯收入（元/年）",
        Bind {
            kind: "decimal",
            constraint: Some((". >= 0", "收入不能为负")),
            ..required()
        },
    );
    b.choose(
        "select",
        "/data/income/sources",
        "收入来源",
        INCOME_SOURCES,
        required(),
    );
    b.input(
        "/data/notes",
        "备注",
        Bind {
            kind: "string",
            ..Bind::default()
        },
    );
    for (kind, label) in PHOTOS {
        let nodeset = format!("/data/photos/{}", kind.as_str());
        let _ = write!(b.body, "<upload ref=\"{nodeset}\" mediatype=\"image/*\">");
        b.label(label);
        b.body.push_str("</upload>\n");
        b.bind(
            &nodeset,
            Bind {
                kind: "binary",
                required: campaign.required_photos.contains(kind),
                ..Bind::default()
            },
        );
    }

    let photo_nodes: String = PHOTOS
        .iter()
        .map(|(kind, _)| format!("<{0}/>", kind.as_str()))
        .collect();
    let id = form_id(&campaign.campaign_id);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" xmlns:odk="http://www.opendatakit.org/xforms">
<h:head>
<h:title>{title}</h:title>
<model odk:xforms-version="1.0.0">
<instance>
<data id="{id}" version="{version}">
<start/><end/><village/><listed>yes</listed><household/><household_unlisted/><location/>
<member jr:template=""><id_number/><name/><relation/><present/><school_status/><insured/><health/><disability_grade/><labour/></member>
<food_secure/><clothing_secure/><housing><grade/><renovated/></housing>
<water><source/><quantity_ok/><quality_ok/><convenience_ok/><guarantee_ok/></water>
<income><per_capita_yuan/><sources/></income><notes/>
<photos>{photo_nodes}</photos>
<meta><instanceID/><deviceid/></meta>
</data>
</instance>
<instance id="villages" src="jr://file-csv/{VILLAGES_CSV}"/>
<instance id="households" src="jr://file-csv/{HOUSEHOLDS_CSV}"/>
<bind nodeset="/data/start" jr:preload="timestamp" jr:preloadParams="start" type="dateTime"/>
<bind nodeset="/data/end" jr:preload="timestamp" jr:preloadParams="end" type="dateTime"/>
<bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
<bind nodeset="/data/meta/deviceid" type="string" jr:preload="property" jr:preloadParams="deviceid"/>
{binds}</model>
</h:head>
<h:body>
{body}</h:body>
</h:html>
"#,
        title = escape(&campaign.name),
        version = version(campaign),
        binds = b.binds,
        body = b.body,
    )
}
