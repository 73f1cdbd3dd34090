-- Reconciliation keeps every visit's findings current: a finding no longer true is cleared
-- (kept, with when), and one true again is reopened. Open findings are those not cleared.

ALTER TABLE findings ADD COLUMN cleared_at TEXT;
CREATE INDEX findings_open_by_code ON findings (code, submission_id) WHERE cleared_at IS NULL;

-- Each household's current visit per campaign, as the contract defines it (the latest approved,
-- else the latest not rejected), and whether its every guarantee holds: kept by the reconcile
-- job so the roll-ups read one row per household instead of ranking every visit.
CREATE TABLE current_visits (
    campaign      TEXT NOT NULL,
    household_id  TEXT NOT NULL,
    submission_id BLOB NOT NULL REFERENCES submissions (submission_id),
    all_ok        BOOLEAN NOT NULL,
    PRIMARY KEY (campaign, household_id)
);
CREATE INDEX current_visits_by_household ON current_visits (household_id);

-- The names of the units the roll-ups report on, as the registry last gave them.
ALTER TABLE registry_villages ADD COLUMN township TEXT;
ALTER TABLE registry_villages ADD COLUMN village TEXT;
UPDATE registry_villages SET
    township = (SELECT json_extract(h.record, '$.township') FROM households h WHERE h.village_code = registry_villages.village_code LIMIT 1),
    village = (SELECT json_extract(h.record, '$.village') FROM households h WHERE h.village_code = registry_villages.village_code LIMIT 1);

-- Visits stored before reconciliation existed are reconciled too.
INSERT INTO jobs (kind, subject, ready_at, enqueued_at)
SELECT DISTINCT 'reconcile', household_id, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') FROM submissions;
