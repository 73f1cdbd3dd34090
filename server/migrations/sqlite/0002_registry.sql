-- The household registry: the current version of each household, the history of versions,
-- and the imports that made them.

CREATE TABLE registry_imports (
    import_id     BLOB PRIMARY KEY,
    imported_by   BLOB REFERENCES users (id),
    source        TEXT NOT NULL,
    rows_read     INTEGER NOT NULL,
    added         INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    unchanged     INTEGER NOT NULL,
    removed       INTEGER NOT NULL,
    rejected_rows TEXT NOT NULL,        -- JSON [{"row","reason"}]
    created_at    TEXT NOT NULL
);

CREATE TABLE households (
    household_id  TEXT PRIMARY KEY,
    village_code  TEXT NOT NULL,
    record        TEXT NOT NULL,        -- JCS JSON of the household as registered, members included
    record_sha256 TEXT NOT NULL,
    version       INTEGER NOT NULL,
    removed       BOOLEAN NOT NULL DEFAULT FALSE,
    change_seq    INTEGER NOT NULL UNIQUE,   -- position in the registry change feed
    moved_from    TEXT,                 -- the village it last moved out of: those phones get a tombstone
    import_id     BLOB NOT NULL REFERENCES registry_imports (import_id),
    updated_at    TEXT NOT NULL
);
CREATE INDEX households_by_village ON households (village_code, change_seq);
CREATE INDEX households_by_former_village ON households (moved_from, change_seq);

-- Every version a household had; a removed household keeps its history.
CREATE TABLE household_versions (
    household_id  TEXT NOT NULL,
    record        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    record_sha256 TEXT NOT NULL,
    removed       BOOLEAN NOT NULL,
    change_seq    INTEGER NOT NULL,
    import_id     BLOB NOT NULL REFERENCES registry_imports (import_id),
    created_at    TEXT NOT NULL,
    PRIMARY KEY (household_id, version)
);

-- Every village the registry has held: a phone's township or county scope becomes the list of
-- its villages, each an index seek on households (village_code, change_seq).
CREATE TABLE registry_villages (
    village_code TEXT PRIMARY KEY
);

INSERT INTO counters (name, value) VALUES ('registry', 0);
