-- What each stored photo's bytes say, worked out once by the process_photo job. EXIF values are
-- the camera's own account, independent of what the phone reported with the visit.

CREATE TABLE photo_facts (
    sha256        TEXT PRIMARY KEY REFERENCES blobs (sha256),
    state         TEXT NOT NULL CHECK (state IN ('processed', 'not_decoded', 'undecodable')), -- processed: it has a thumbnail
    problem       TEXT,                 -- why it was not decoded
    width         BIGINT,
    height        BIGINT,
    taken_at      TEXT,                 -- EXIF DateTimeOriginal, local time as written
    taken_offset  TEXT,                 -- EXIF OffsetTimeOriginal, when written
    gps_lat       DOUBLE PRECISION,
    gps_lon       DOUBLE PRECISION,
    make          TEXT,
    model         TEXT,
    orientation   BIGINT,
    phash         BIGINT,               -- 64-bit perceptual hash, as the signed integer of its bits
    processed_at  TIMESTAMPTZ NOT NULL
);

-- Photos stored before this capability existed are processed too.
INSERT INTO jobs (kind, subject, ready_at, enqueued_at)
SELECT 'process_photo', sha256, now(), now() FROM blobs;
