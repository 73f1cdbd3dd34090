-- OpenRosa clients (ODK Collect, KoboCollect, Enketo) send a visit as an XForm instance, its
-- photos as multipart parts named by file name, split over several requests when they are large.
-- Each photo received is remembered under its instance and file name until the part carrying
-- the last of them arrives and the visit is stored.
CREATE TABLE openrosa_media (
    submitted_by  UUID NOT NULL REFERENCES users (id),
    instance_id   TEXT NOT NULL,
    filename      TEXT NOT NULL,
    sha256        TEXT NOT NULL REFERENCES blobs (sha256),
    received_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (submitted_by, instance_id, filename)
);

-- The instance a visit came as, and the one it edits (meta/deprecatedID).
CREATE TABLE openrosa_instances (
    submission_id  UUID PRIMARY KEY REFERENCES submissions (submission_id),
    instance_id    TEXT NOT NULL,
    deprecated_id  TEXT,
    form_id        TEXT NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX openrosa_instances_by_deprecated ON openrosa_instances (deprecated_id);
