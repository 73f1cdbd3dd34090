-- The durable job queue: work a change needs done later (processing a photo, reconciling a
-- household), enqueued in the same transaction as the change, so nothing enqueued is lost.
-- A job is claimable while queued and `ready_at` has passed; a claim moves `ready_at` to the end
-- of its lease, so the job of a worker that died comes back by itself. Done jobs are deleted;
-- a job that keeps failing is parked with its error. Claims use FOR UPDATE SKIP LOCKED, so any
-- number of server processes share the work.

CREATE TABLE jobs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'parked')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    ready_at    TIMESTAMPTZ NOT NULL,
    leased_by   TEXT,
    last_error  TEXT,
    enqueued_at TIMESTAMPTZ NOT NULL,
    UNIQUE (kind, subject)
);
CREATE INDEX jobs_ready ON jobs (ready_at) WHERE state = 'queued';
