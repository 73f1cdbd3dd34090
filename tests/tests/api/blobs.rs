use huikan_tests::api::{expect_problem, send_and_hang_up};
use huikan_tests::photos::{jpeg, sha256_hex, small_jpeg};
use huikan_tests::{Api, Backend, TestServer, backend_tests};
use reqwest::Method;
use serde_json::Value;

backend_tests!(
    a_photo_is_stored_once_and_read_back,
    wrong_and_truncated_bodies_keep_nothing,
    non_images_and_bad_names_are_refused,
    oversized_photos_are_refused,
    only_the_uploader_and_reviewers_read_a_photo,
    uploads_need_an_uploading_role,
    a_stopping_server_finishes_the_upload_in_flight,
);

/// Reads a photo's bytes, following the S3 store's redirect to a presigned URL.
async fn fetch(api: &Api, sha: &str) -> (u16, Vec<u8>) {
    let response = api.get_object(&format!("/v1/blobs/{sha}")).await;
    (
        response.status().as_u16(),
        response.bytes().await.unwrap().to_vec(),
    )
}

async fn a_photo_is_stored_once_and_read_back(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg(800, 600, 1, 90);
    let sha = sha256_hex(&photo);
    let head = field.head(&format!("/v1/blobs/{sha}")).await;
    assert_eq!(head.status(), 404);

    let created = field.put_blob(&sha, photo.clone()).await;
    assert_eq!(created.status(), 201);
    let blob: Value = created.json().await.unwrap();
    assert_eq!(blob["sha256"], sha.as_str());
    assert_eq!(blob["size"], photo.len());
    assert_eq!(blob["content_type"], "image/jpeg");
    assert_eq!(field.put_blob(&sha, photo.clone()).await.status(), 200);

    let head = field.head(&format!("/v1/blobs/{sha}")).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        photo.len().to_string().as_str()
    );

    let get = field.get(&format!("/v1/blobs/{sha}")).await;
    match server.backend {
        Backend::PostgresS3 => assert_eq!(get.status(), 307, "S3 answers GET with a presigned URL"),
        Backend::Embedded => assert_eq!(get.status(), 200),
    }
    assert_eq!(fetch(&field, &sha).await, (200, photo));
}

async fn wrong_and_truncated_bodies_keep_nothing(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg(400, 300, 2, 90);
    let sha = sha256_hex(&photo);
    let other = small_jpeg(3);
    let body = expect_problem(field.put_blob(&sha, other).await, 400, "hash_mismatch").await;
    assert!(body["detail"].as_str().unwrap().contains(&sha), "{body}");
    let truncated = photo[..photo.len() / 2].to_vec();
    expect_problem(field.put_blob(&sha, truncated).await, 400, "hash_mismatch").await;

    // The connection drops before the declared length arrives.
    let token = field.token.clone().unwrap();
    let head = format!(
        "PUT /v1/blobs/{sha} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        photo.len()
    );
    let (status, body) = send_and_hang_up(&server.base, &head, &photo[..photo.len() / 3]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("incomplete_body")),
        "{body}"
    );

    let head = field.head(&format!("/v1/blobs/{sha}")).await;
    assert_eq!(head.status(), 404, "nothing may be kept of a bad upload");
    assert_eq!(field.put_blob(&sha, photo).await.status(), 201);
}

async fn non_images_and_bad_names_are_refused(server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let text = b"%PDF-1.4 this is not a photo".to_vec();
    let sha = sha256_hex(&text);
    expect_problem(
        field.put_blob(&sha, text).await,
        415,
        "unsupported_media_type",
    )
    .await;
    let head = field.head(&format!("/v1/blobs/{sha}")).await;
    assert_eq!(head.status(), 404);

    let upper = sha256_hex(b"x").to_uppercase();
    expect_problem(
        field.put_blob(&upper, small_jpeg(1)).await,
        400,
        "invalid_path",
    )
    .await;
    expect_problem(
        field.put_blob("abc", small_jpeg(1)).await,
        400,
        "invalid_path",
    )
    .await;
    expect_problem(field.get("/v1/blobs/not-a-hash").await, 400, "invalid_path").await;
    expect_problem(
        field
            .get(&format!("/v1/blobs/{}", sha256_hex(b"absent")))
            .await,
        404,
        "not_found",
    )
    .await;
}

async fn oversized_photos_are_refused(mut server: TestServer) {
    let base = server
        .process_with(&[("HUIKAN_MAX_PHOTO_BYTES", "20000")])
        .await;
    let field = server
        .user("field_staff", &["410327101001"])
        .await
        .at(&base);
    let photo = jpeg(600, 400, 4, 95);
    assert!(photo.len() > 20000);
    let sha = sha256_hex(&photo);
    expect_problem(
        field.put_blob(&sha, photo.clone()).await,
        413,
        "payload_too_large",
    )
    .await;

    // Without a declared length the limit holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        photo.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let streamed = field
        .request(Method::PUT, &format!("/v1/blobs/{sha}"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_problem(streamed, 413, "payload_too_large").await;
    let head = field.head(&format!("/v1/blobs/{sha}")).await;
    assert_eq!(head.status(), 404);
}

async fn only_the_uploader_and_reviewers_read_a_photo(server: TestServer) {
    let uploader = server.user("field_staff", &["410327101001"]).await;
    let stranger = server.user("field_staff", &["410327101002"]).await;
    let reviewer = server.user("reviewer", &["410327101"]).await;
    let auditor = server.user("auditor", &[]).await;
    let photo = small_jpeg(5);
    let sha = sha256_hex(&photo);
    assert_eq!(uploader.put_blob(&sha, photo.clone()).await.status(), 201);
    assert_eq!(fetch(&uploader, &sha).await.0, 200);
    assert_eq!(fetch(&reviewer, &sha).await.0, 200);
    assert_eq!(fetch(&auditor, &sha).await.0, 200);
    expect_problem(
        stranger.get(&format!("/v1/blobs/{sha}")).await,
        404,
        "not_found",
    )
    .await;
}

async fn uploads_need_an_uploading_role(server: TestServer) {
    let reviewer = server.user("reviewer", &["410327101"]).await;
    let photo = small_jpeg(6);
    let sha = sha256_hex(&photo);
    expect_problem(
        reviewer.put_blob(&sha, photo.clone()).await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        server.anonymous().put_blob(&sha, photo).await,
        401,
        "unauthorized",
    )
    .await;
}

/// SIGTERM while a phone is mid-upload: the upload completes and is acknowledged, then the
/// server exits cleanly.
async fn a_stopping_server_finishes_the_upload_in_flight(mut server: TestServer) {
    let field = server.user("field_staff", &["410327101001"]).await;
    let photo = jpeg(900, 700, 31, 92);
    let sha = sha256_hex(&photo);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let upload = {
        let field = field.clone();
        let sha = sha.clone();
        let len = photo.len();
        tokio::spawn(async move {
            let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
            let response = field
                .request(Method::PUT, &format!("/v1/blobs/{sha}"))
                .header("content-length", len.to_string())
                .body(body)
                .send()
                .await
                .expect("the upload is answered");
            response.status().as_u16()
        })
    };
    let half = photo.len() / 2;
    tx.send(Ok(photo[..half].to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = tokio::spawn(async move {
        let status = server.terminate().await;
        (status, server)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.send(Ok(photo[half..].to_vec())).await.unwrap();
    drop(tx);
    assert_eq!(
        upload.await.unwrap(),
        201,
        "the upload in flight is finished and acknowledged"
    );
    let (status, mut server) = stopping.await.unwrap();
    assert!(status.success(), "a clean exit: {status}");
    server.restart().await;
    let head = field
        .at(&server.base)
        .request(Method::HEAD, &format!("/v1/blobs/{sha}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
