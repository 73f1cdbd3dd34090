//! What the server stands on failing under it: the disk filling while photos spool, the
//! database dropping every connection under load, and the S3 photo store going away before an
//! upload or hanging in the middle of a resumable upload or of an export. Each is a clear
//! 503/507 problem with `Retry-After`, never a 500; nothing acknowledged is lost; and the server
//! recovers by itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use huikan_tests::api::expect_problem;
use huikan_tests::photos::{jpeg_of_about, sha256_hex};
use huikan_tests::server::installed;
use huikan_tests::visits::visit;
use huikan_tests::{Api, Backend, TestServer, backend_tests};
use serde_json::Value;

backend_tests!(a_full_disk_is_507_and_clears_when_space_returns);

/// A small tmpfs, unmounted when dropped (mounting needs root, as the test machines run).
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u64) -> Option<SmallDisk> {
        let mount = std::env::temp_dir().join(format!("huikan-full-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&mount).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let _ = std::fs::remove_dir(&mount);
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs a small tmpfs (mount as root) for the full-disk test"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs (not root?)");
            return None;
        }
        Some(SmallDisk { mount })
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// Fills the file system at `dir` but for about `leave` bytes, in one file.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let filler = dir.join(format!("filler-{}", uuid::Uuid::new_v4()));
    let size = free_bytes(dir).saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; size as usize]).expect("writing the filler");
    filler
}

fn free_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df's answer")
}

async fn a_full_disk_is_507_and_clears_when_space_returns(server: TestServer) {
    // The backend's own server only decides the backend; this test starts its own on a small
    // disk with the same backend.
    let backend = server.backend;
    drop(server);
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let data = tempfile::tempdir_in(disk.path()).unwrap();
    let data_path = data.path().to_owned();
    let server = TestServer::start_in(backend, data, None).await.unwrap();
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg_of_about(3_000_000, 1);
    let sha = sha256_hex(&photo);

    let filler = fill(&data_path, 1_000_000);
    let full = field.put_blob(&sha, photo.clone()).await;
    let retry_after = full.headers().get("retry-after").cloned();
    let body = expect_problem(full, 507, "insufficient_storage").await;
    assert!(retry_after.is_some(), "{body}");
    assert_eq!(field.head(&format!("/v1/blobs/{sha}")).await.status(), 404);
    if backend == Backend::Embedded {
        // The database is on the same disk: a visit cannot be stored either, and says so.
        let filler_2 = fill(&data_path, 0);
        let answer = field
            .post_json("/v1/submissions", &visit("4103271010010001", &[]))
            .await;
        let status = answer.status().as_u16();
        if status != 201 {
            expect_problem(answer, 507, "insufficient_storage").await;
        }
        std::fs::remove_file(filler_2).unwrap();
    }

    // Space comes back: the same request now succeeds, without a restart.
    std::fs::remove_file(filler).unwrap();
    let stored = field.put_blob(&sha, photo).await;
    let log = std::fs::read_to_string(data_path.join("server.log")).unwrap_or_default();
    let tail: String = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .map(|l| l.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        stored.status(),
        201,
        "{}\n{tail}",
        stored.text().await.unwrap()
    );
    let ok = field
        .post_json("/v1/submissions", &visit("4103271010010001", &[]))
        .await;
    assert_eq!(ok.status(), 201);
    drop(server);
    drop(disk);
}

/// PostgreSQL drops every connection of the server twice while phones post visits: each answer
/// is a receipt or a 503 `not_ready` with `Retry-After`; every receipt's visit is there after,
/// and posting works again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_dropping_every_connection_under_load_loses_nothing() {
    let Some(server) = TestServer::start(Backend::PostgresS3).await else {
        return;
    };
    let field = server.user("field_staff", &["410327101001"]).await;
    let until = Instant::now() + Duration::from_secs(4);
    let phones: Vec<_> = (0..4)
        .map(|_| {
            let field = field.clone();
            tokio::spawn(async move {
                let (mut stored, mut refused) = (Vec::new(), 0);
                while Instant::now() < until {
                    let body = visit("4103271010010001", &[]);
                    let answer = field.post_json("/v1/submissions", &body).await;
                    match answer.status().as_u16() {
                        201 => stored.push(body["submission_id"].as_str().unwrap().to_owned()),
                        _ => {
                            assert!(answer.headers().contains_key("retry-after"));
                            let problem: Value = expect_problem(answer, 503, "not_ready").await;
                            assert!(problem["detail"].as_str().unwrap().contains("database"));
                            refused += 1;
                        }
                    }
                }
                (stored, refused)
            })
        })
        .collect();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        server
            .sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .await
            .unwrap();
    }
    let (mut stored, mut refused) = (Vec::new(), 0);
    for phone in phones {
        let (s, r) = phone.await.unwrap();
        stored.extend(s);
        refused += r;
    }
    eprintln!(
        "{} visits acknowledged, {refused} refused with 503",
        stored.len()
    );
    assert!(!stored.is_empty());
    for id in &stored {
        let read = field.get(&format!("/v1/submissions/{id}")).await;
        assert_eq!(read.status(), 200, "acknowledged visit {id} is missing");
    }
    let after = field
        .post_json("/v1/submissions", &visit("4103271010010001", &[]))
        .await;
    assert_eq!(after.status(), 201);
    let ready = server.anonymous().get("/readyz").await;
    assert_eq!(ready.status(), 200);
}

/// A moto S3 server of the test's own on a free port, which the test may stop and start again.
struct OwnS3 {
    program: String,
    port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnS3 {
    async fn start() -> Option<OwnS3> {
        let program = installed("HUIKAN_TEST_MOTO_SERVER", "the moto S3 server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let mut s3 = OwnS3 {
            program,
            port,
            child: None,
        };
        s3.resume().await;
        Some(s3)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn resume(&mut self) {
        let child = tokio::process::Command::new(&self.program)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting moto");
        self.child = Some(child);
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(self.endpoint()).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("moto did not answer on port {}", self.port);
    }

    /// Freezes the S3 server (SIGSTOP): connections are still accepted by the kernel, but
    /// nothing answers, as when the store hangs or the network to it stalls.
    fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("moto runs");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// A PostgreSQL + S3 server on an S3 server of the test's own, and a field worker of the first
/// village; none where the backends cannot be had (a failure under CI).
async fn on_own_s3() -> Option<(OwnS3, TestServer, Api)> {
    let s3 = OwnS3::start().await?;
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(Backend::PostgresS3, data, Some(s3.endpoint())).await?;
    let field = server.user("field_staff", &["410327101001"]).await;
    Some((s3, server, field))
}

/// The S3 server goes away: photo uploads and reads are 503 `not_ready` naming the photo store,
/// within seconds, and nothing is acknowledged; when it is back (a new, empty one, whose bucket is
/// made again), the same upload succeeds without restarting huikan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_photo_store_stopping_is_503_and_recovers() {
    let Some((mut s3, server, field)) = on_own_s3().await else {
        return;
    };
    let photo = jpeg_of_about(1_000_000, 7);
    let sha = sha256_hex(&photo);

    s3.stop().await;
    let started = Instant::now();
    let refused = field.put_blob(&sha, photo.clone()).await;
    assert!(refused.headers().contains_key("retry-after"));
    let body = expect_problem(refused, 503, "not_ready").await;
    assert!(
        body["detail"].as_str().unwrap().contains("photo store"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let ready = server.anonymous().get("/readyz").await;
    assert_eq!(ready.status(), 503);

    s3.resume().await;
    let bucket = server.s3_bucket().expect("an S3 bucket");
    let made = reqwest::Client::new()
        .put(format!("{}/{bucket}", s3.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());
    let stored = field.put_blob(&sha, photo).await;
    assert_eq!(stored.status(), 201, "{}", stored.text().await.unwrap());
    assert_eq!(field.head(&format!("/v1/blobs/{sha}")).await.status(), 200);
}

/// The S3 server hangs while an export streams the household's photos: the download breaks off
/// (within the S3 read timeout), so no client takes a short bundle for a whole one, and huikan
/// keeps serving; once the store answers again the same export is whole and verifies offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_photo_store_hanging_mid_export_breaks_the_download_off() {
    let Some((s3, server, field)) = on_own_s3().await else {
        return;
    };
    let photos: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let photo = jpeg_of_about(3_000_000, 40 + i);
            (sha256_hex(&photo), photo)
        })
        .collect();
    for (sha, photo) in &photos {
        assert_eq!(field.put_blob(sha, photo.clone()).await.status(), 201);
    }
    let named: Vec<(&str, &str)> = photos
        .iter()
        .map(|(sha, _)| (sha.as_str(), "housing_exterior"))
        .collect();
    let posted = field
        .post_json("/v1/submissions", &visit("4103271010010001", &named))
        .await;
    assert_eq!(posted.status(), 201);
    let auditor = server.user("auditor", &[]).await;
    let request = serde_json::json!({"household_id": "4103271010010001"});

    let mut download = auditor.post_json("/v1/audit/exports", &request).await;
    assert_eq!(download.status(), 200);
    let mut received = download.chunk().await.unwrap().map_or(0, |c| c.len());
    s3.freeze(true);
    let started = Instant::now();
    let broke_off = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(90), download.chunk())
            .await
            .expect("the download neither ended nor broke off");
        match chunk {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    let waited = started.elapsed();
    s3.freeze(false);
    assert!(
        broke_off,
        "the download ended as if whole after {received} bytes with the photo store hung"
    );
    eprintln!("broke off after {received} bytes, {waited:?} after the store hung");
    assert_eq!(server.anonymous().get("/healthz").await.status(), 200);

    let whole = auditor.post_json("/v1/audit/exports", &request).await;
    assert_eq!(whole.status(), 200);
    let bundle = server.data_dir().join("after-the-store-returned.zip");
    std::fs::write(&bundle, whole.bytes().await.unwrap()).unwrap();
    let (ok, printed) = super::exports::verify_bundle(&bundle, &[]);
    assert!(ok, "{printed}");
    assert!(printed.contains("1 visits, 8 photos"), "{printed}");
}

/// The S3 server hangs in the middle of a resumable (tus) upload, whose pieces are kept in the
/// photo store: the PATCH then is 503 `not_ready` and its bytes are not counted; once S3 answers
/// again the phone asks for the offset, sends the rest from there, and the photo is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_photo_store_hanging_mid_upload_is_503_and_the_upload_resumes() {
    use super::uploads::{create, location, offset_of, patch};

    let Some((s3, _server, field)) = on_own_s3().await else {
        return;
    };
    let photo = jpeg_of_about(3_000_000, 51);
    let sha = sha256_hex(&photo);
    let third = photo.len() / 3;
    let created = create(&field, &sha, photo.len()).await;
    assert_eq!(created.status(), 201);
    let upload = location(&created);
    assert_eq!(
        patch(&field, &upload, 0, &photo[..third]).await.status(),
        204
    );

    s3.freeze(true);
    let refused = tokio::time::timeout(
        Duration::from_secs(120),
        patch(&field, &upload, third, &photo[third..2 * third]),
    )
    .await
    .expect("a PATCH to a hung photo store neither failed nor succeeded");
    s3.freeze(false);
    assert!(refused.headers().contains_key("retry-after"));
    expect_problem(refused, 503, "not_ready").await;

    let offset = offset_of(&field, &upload).await;
    assert_eq!(offset, third, "the refused piece was counted");
    assert_eq!(
        patch(&field, &upload, offset, &photo[offset..])
            .await
            .status(),
        204
    );
    // Photos in S3 are read through a presigned redirect.
    let answer = field.get(&format!("/v1/blobs/{sha}")).await;
    assert_eq!(answer.status(), 307);
    let presigned = answer.headers()["location"].to_str().unwrap().to_owned();
    let stored = reqwest::get(presigned).await.unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.bytes().await.unwrap().as_ref(), photo.as_slice());
}
