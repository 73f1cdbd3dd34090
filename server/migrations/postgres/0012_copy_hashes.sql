-- Copied photos found under any crop (evidence/phash.rs): six view hashes per photo, held by an
-- in-memory index in every server process (evidence/index.rs) that catches up from `hash_seq`,
-- handed out in commit order under the `photo_hashes` counter. The database is the source of
-- truth; the band columns of the old in-database index go.

DROP INDEX photo_facts_band0;
DROP INDEX photo_facts_band1;
DROP INDEX photo_facts_band2;
DROP INDEX photo_facts_band3;
ALTER TABLE photo_facts DROP COLUMN phash_band0;
ALTER TABLE photo_facts DROP COLUMN phash_band1;
ALTER TABLE photo_facts DROP COLUMN phash_band2;
ALTER TABLE photo_facts DROP COLUMN phash_band3;

ALTER TABLE photo_facts ADD COLUMN hash_version BIGINT;  -- the scheme that hashed it; null: none yet
ALTER TABLE photo_facts ADD COLUMN hashes BYTEA;         -- 6 × 8 bytes, big-endian; null: not comparable
ALTER TABLE photo_facts ADD COLUMN hash_seq BIGINT;      -- position in the index's catch-up
CREATE UNIQUE INDEX photo_facts_by_hash_seq ON photo_facts (hash_seq) WHERE hash_seq IS NOT NULL;
INSERT INTO counters (name, value) VALUES ('photo_hashes', 0);

-- A near-duplicate finding names the other photo in a column of its own, so that when that
-- photo's hashes change the visits pointing at it are judged again.
ALTER TABLE findings ADD COLUMN other_photo TEXT;
UPDATE findings SET other_photo = (data::jsonb)->>'other_photo' WHERE code = 'photo_near_duplicate';
CREATE INDEX findings_by_other_photo ON findings (other_photo) WHERE other_photo IS NOT NULL;

-- Photos hashed by the old scheme are hashed again, and their visits judged again.
INSERT INTO jobs (kind, subject, ready_at, enqueued_at)
SELECT 'process_photo', sha256, now(), now()
FROM photo_facts WHERE state = 'processed'
ON CONFLICT (kind, subject) DO NOTHING;
