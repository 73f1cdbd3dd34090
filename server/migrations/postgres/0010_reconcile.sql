-- Reconciliation keeps every visit's findings current: a finding no longer true is cleared
-- (kept, with when), and one true again is reopened. Open findings are those not cleared.

ALTER TABLE findings ADD COLUMN cleared_at TIMESTAMPTZ;
-- A visit's open findings, read from the index alone (roll-ups, the queue's filters): every
-- column a query names is in it, so no table row is read.
CREATE INDEX findings_open ON findings (submission_id, code, severity, cleared_at) WHERE cleared_at IS NULL;

-- Each household's current visit per campaign, as the contract defines it (the latest approved,
-- else the latest not rejected), with what the roll-ups count: the village it is registered in
-- (null when the household is not registered, or removed), whether it is approved, and whether
-- its every guarantee holds. Kept by the reconcile job, so a roll-up reads one small row per
-- household instead of ranking every visit.
CREATE TABLE current_visits (
    campaign      TEXT NOT NULL,
    household_id  TEXT NOT NULL,
    submission_id UUID NOT NULL REFERENCES submissions (submission_id),
    village_code  TEXT,
    approved      BOOLEAN NOT NULL,
    all_ok        BOOLEAN NOT NULL,
    PRIMARY KEY (campaign, household_id)
);
CREATE INDEX current_visits_by_household ON current_visits (household_id);
CREATE INDEX current_visits_by_village ON current_visits (campaign, village_code, approved, all_ok, submission_id)
    WHERE village_code IS NOT NULL;

-- The roll-ups count registered households by village, and a campaign's visits naming no
-- registered household, from indexes alone (the tables' rows hold whole records and visits).
CREATE INDEX households_registered ON households (village_code, removed);
CREATE INDEX households_present ON households (household_id, removed);
CREATE INDEX submissions_by_campaign ON submissions (campaign, household_id, duplicate_of);

-- The names of the units the roll-ups report on, as the registry last gave them.
ALTER TABLE registry_villages ADD COLUMN township TEXT;
ALTER TABLE registry_villages ADD COLUMN village TEXT;
UPDATE registry_villages SET
    township = (SELECT (h.record::json ->> 'township') FROM households h WHERE h.village_code = registry_villages.village_code LIMIT 1),
    village = (SELECT (h.record::json ->> 'village') FROM households h WHERE h.village_code = registry_villages.village_code LIMIT 1);

-- Visits stored before reconciliation existed are reconciled too.
INSERT INTO jobs (kind, subject, ready_at, enqueued_at)
SELECT DISTINCT 'reconcile', household_id, now(), now() FROM submissions;
