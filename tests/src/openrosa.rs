//! An OpenRosa client as ODK Collect is one: HTTP Basic, the form list and its media, and
//! instances submitted as `multipart/form-data` with their photos, split like Collect splits them.

use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response};
use uuid::Uuid;

use crate::Api;
use crate::server::PASSWORD;

/// A user of the OpenRosa endpoint with the harness's password, over HTTP Basic.
pub struct Collect {
    pub api: Api,
    pub username: String,
    /// The server URL configured in Collect: `…/v1/openrosa` or `…/v1/openrosa/key/{token}`.
    pub server_url: String,
}

impl Collect {
    /// Collect set up with a username and password.
    pub fn basic(user: &Api) -> Collect {
        Collect {
            api: Api::new(&user.base, None),
            username: user.username(),
            server_url: format!("{}/v1/openrosa", user.base),
        }
    }

    /// Collect set up from a QR code carrying a token in the server URL.
    pub fn keyed(user: &Api) -> Collect {
        Collect {
            api: Api::new(&user.base, None),
            username: String::new(),
            server_url: format!(
                "{}/v1/openrosa/key/{}",
                user.base,
                user.token.as_deref().expect("a logged-in user")
            ),
        }
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let path = url
            .strip_prefix(&self.api.base)
            .expect("a URL of this server");
        let builder = self
            .api
            .request(method, path)
            .header("X-OpenRosa-Version", "1.0")
            .header("User-Agent", "org.odk.collect.android/v2024.3.0 test");
        if self.username.is_empty() {
            builder
        } else {
            builder.basic_auth(&self.username, Some(PASSWORD))
        }
    }

    /// GET an absolute URL the server handed out (or a path under the server URL).
    pub async fn get(&self, url_or_path: &str) -> Response {
        let url = if url_or_path.starts_with("http") {
            url_or_path.to_owned()
        } else {
            format!("{}{url_or_path}", self.server_url)
        };
        self.request(Method::GET, &url).send().await.expect("GET")
    }

    pub async fn head_submission(&self) -> Response {
        let url = format!("{}/submission", self.server_url);
        self.request(Method::HEAD, &url).send().await.expect("HEAD")
    }

    /// POSTs one request of a submission: the instance, these photos (file name, bytes), and
    /// the `*isIncomplete*` mark if more requests follow.
    pub async fn submit(&self, xml: &str, photos: &[(&str, &[u8])], incomplete: bool) -> Response {
        let mut form = Form::new().part(
            "xml_submission_file",
            Part::bytes(xml.as_bytes().to_vec())
                .file_name("submission.xml")
                .mime_str("text/xml")
                .unwrap(),
        );
        for (name, bytes) in photos {
            form = form.part(name.to_string(), photo_part(name, bytes));
        }
        if incomplete {
            form = form.text("*isIncomplete*", "yes");
        }
        self.post(form).await
    }

    /// A request with a photo and no instance part.
    pub async fn submit_parts_without_instance(&self, photo: &[u8]) -> Response {
        self.post(Form::new().part("photo.jpg", photo_part("photo.jpg", photo)))
            .await
    }

    async fn post(&self, form: Form) -> Response {
        let url = format!("{}/submission", self.server_url);
        self.request(Method::POST, &url)
            .multipart(form)
            .send()
            .await
            .expect("POST")
    }
}

/// A photo's part, named by its file name as Collect names it.
fn photo_part(name: &str, bytes: &[u8]) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str("image/jpeg")
        .unwrap()
}

/// The text of the first `<name>` element in `xml`.
pub fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// Every text of `<name>` elements in `xml`.
pub fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(text) = element(rest, name) {
        found.push(text);
        let at = rest.find(&format!("</{name}>")).unwrap() + name.len() + 3;
        rest = &rest[at..];
    }
    found
}

/// What a filled-in look-back form holds.
pub struct Filled {
    pub instance_id: String,
    pub form_id: String,
    pub version: String,
    pub village: String,
    pub household: String,
    pub food_secure: &'static str,
    pub relation: &'static str,
    /// Photo question (kind) → file name.
    pub photos: Vec<(&'static str, String)>,
}

impl Filled {
    pub fn new(form_id: &str, version: &str, household: &str) -> Filled {
        Filled {
            instance_id: format!("uuid:{}", Uuid::new_v4()),
            form_id: form_id.to_owned(),
            version: version.to_owned(),
            village: household[..12].to_owned(),
            household: household.to_owned(),
            food_secure: "yes",
            relation: "head",
            photos: Vec::new(),
        }
    }

    /// The instance as Collect writes it: the main instance, answered, non-relevant nodes left
    /// out, one element per repeat, photos as bare file names.
    pub fn xml(&self) -> String {
        let photos: String = self
            .photos
            .iter()
            .map(|(kind, file)| format!("<{kind}>{file}</{kind}>"))
            .collect();
        format!(
            r#"<?xml version='1.0' ?><data id="{form_id}" version="{version}" xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" xmlns:odk="http://www.opendatakit.org/xforms"><start>2020-03-02T10:15:00.000+08:00</start><end>2020-03-02T10:41:12.345+08:00</end><village>{village}</village><listed>yes</listed><household>{household}</household><location>34.51 112.17 301.5 12.0</location><member><id_number>41032719800101123X</id_number><name>张三</name><relation>{relation}</relation><present>yes</present><school_status>not_school_age</school_status><insured>yes</insured><health>healthy</health><labour>normal</labour></member><member><id_number>410327198202021244</id_number><name>李四</name><relation>spouse</relation><present>no</present><school_status>not_school_age</school_status><insured>yes</insured><health>disabled</health><disability_grade>2</disability_grade><labour>weak</labour></member><food_secure>{food}</food_secure><clothing_secure>yes</clothing_secure><housing><grade>B</grade><renovated>no</renovated></housing><water><source>well</source><quantity_ok>yes</quantity_ok><quality_ok>yes</quality_ok><convenience_ok>yes</convenience_ok><guarantee_ok>yes</guarantee_ok></water><income><per_capita_yuan>5200</per_capita_yuan><sources>wage dibao</sources></income><notes>门前有狗</notes><photos>{photos}</photos><meta><instanceID>{instance}</instanceID><deviceid>collect:Xq3k9aT0</deviceid></meta></data>"#,
            form_id = self.form_id,
            version = self.version,
            village = self.village,
            household = self.household,
            relation = self.relation,
            food = self.food_secure,
            instance = self.instance_id,
        )
    }
}
