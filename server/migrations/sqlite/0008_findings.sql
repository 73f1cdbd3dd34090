-- Findings: what a rule found wrong with a visit, each with its stable code and severity. Raised
-- once (a rule re-run finds the same and adds nothing); `data` names what it points to (the
-- other visit and household of a reused photo).

CREATE TABLE findings (
    finding_id    BLOB PRIMARY KEY,
    submission_id BLOB NOT NULL REFERENCES submissions (submission_id),
    household_id  TEXT NOT NULL,
    code          TEXT NOT NULL,
    severity      TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    subject       TEXT NOT NULL,
    detail        TEXT NOT NULL,
    data          TEXT NOT NULL,
    rule_version  INTEGER NOT NULL,
    raised_at     TEXT NOT NULL,
    UNIQUE (submission_id, code, subject)
);
CREATE INDEX findings_by_household ON findings (household_id);
