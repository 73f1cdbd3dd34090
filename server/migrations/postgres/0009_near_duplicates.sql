-- The near-duplicate index: the perceptual hash cut into four bands of 16 bits,
-- each indexed with the whole hash and the photo beside it. Two hashes within d bits agree
-- closely on at least one band (multi-index hashing, evidence/near.rs), so a lookup probes the
-- band indexes and filters there (index-only scans), without reading the table.

ALTER TABLE photo_facts ADD COLUMN phash_band0 BIGINT;
ALTER TABLE photo_facts ADD COLUMN phash_band1 BIGINT;
ALTER TABLE photo_facts ADD COLUMN phash_band2 BIGINT;
ALTER TABLE photo_facts ADD COLUMN phash_band3 BIGINT;

UPDATE photo_facts SET phash_band0 = (phash >> 48) & 65535,
                       phash_band1 = (phash >> 32) & 65535,
                       phash_band2 = (phash >> 16) & 65535,
                       phash_band3 = phash & 65535
WHERE phash IS NOT NULL;

CREATE INDEX photo_facts_band0 ON photo_facts (phash_band0) INCLUDE (phash, sha256) WHERE phash IS NOT NULL;
CREATE INDEX photo_facts_band1 ON photo_facts (phash_band1) INCLUDE (phash, sha256) WHERE phash IS NOT NULL;
CREATE INDEX photo_facts_band2 ON photo_facts (phash_band2) INCLUDE (phash, sha256) WHERE phash IS NOT NULL;
CREATE INDEX photo_facts_band3 ON photo_facts (phash_band3) INCLUDE (phash, sha256) WHERE phash IS NOT NULL;
