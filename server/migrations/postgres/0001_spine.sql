-- Users, tokens, photos, resumable uploads, campaigns and submissions.
-- Times are timestamptz; ids are UUIDs.

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('field_staff', 'reviewer', 'auditor', 'admin')),
    scope         TEXT NOT NULL,          -- JSON array of division-code prefixes
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,          -- hex SHA-256 of the bearer token; the token itself is never stored
    user_id    UUID NOT NULL REFERENCES users (id),
    device_id  TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX tokens_by_user ON tokens (user_id);

CREATE TABLE blobs (
    sha256       TEXT PRIMARY KEY,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE blob_uploaders (
    sha256  TEXT NOT NULL REFERENCES blobs (sha256),
    user_id UUID NOT NULL REFERENCES users (id),
    PRIMARY KEY (sha256, user_id)
);

CREATE TABLE uploads (
    id           UUID PRIMARY KEY,
    owner        UUID NOT NULL REFERENCES users (id),
    length       BIGINT NOT NULL,
    received     BIGINT NOT NULL DEFAULT 0,
    sha256       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ
);

-- The pieces of a resumable upload, one per PATCH, each its own object in the blob store so
-- any server process can resume or finish the upload.
CREATE TABLE upload_parts (
    upload_id  UUID NOT NULL REFERENCES uploads (id),
    start      BIGINT NOT NULL,
    len        BIGINT NOT NULL,
    object_key TEXT NOT NULL,
    PRIMARY KEY (upload_id, start)
);

CREATE TABLE campaigns (
    campaign_id     TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    starts_at       TIMESTAMPTZ NOT NULL,
    ends_at         TIMESTAMPTZ NOT NULL,
    timezone        TEXT NOT NULL,
    required_photos TEXT NOT NULL,        -- JSON array of photo kinds
    updated_at      TIMESTAMPTZ NOT NULL
);

-- Monotonic counters whose row doubles as the lock that orders a change feed: a writer holds
-- it from reading the counter to commit, so feed order is commit order.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('submissions', 0);

CREATE TABLE submissions (
    seq            BIGINT PRIMARY KEY,
    submission_id  UUID NOT NULL UNIQUE,
    household_id   TEXT NOT NULL,
    campaign       TEXT NOT NULL,
    submitted_by   UUID NOT NULL REFERENCES users (id),
    content_sha256 TEXT NOT NULL,
    content        TEXT NOT NULL,         -- the JCS canonical text the content hash is over
    device_id      TEXT,
    app_version    TEXT,
    surveyed_at    TIMESTAMPTZ NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    duplicate_of   UUID,
    review_state   TEXT NOT NULL DEFAULT 'received',
    review_reason  TEXT,
    state_seq      BIGINT NOT NULL,
    state_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX submissions_feed ON submissions (submitted_by, state_seq);
CREATE INDEX submissions_by_household ON submissions (household_id);

-- The first submission of each distinct content: later ones are `duplicate_of` it.
CREATE TABLE submission_contents (
    content_sha256 TEXT PRIMARY KEY,
    submission_id  UUID NOT NULL
);

CREATE TABLE submission_photos (
    submission_id UUID NOT NULL REFERENCES submissions (submission_id),
    position      BIGINT NOT NULL,
    sha256        TEXT NOT NULL REFERENCES blobs (sha256),
    kind          TEXT NOT NULL,
    PRIMARY KEY (submission_id, position)
);
CREATE INDEX submission_photos_by_blob ON submission_photos (sha256);
