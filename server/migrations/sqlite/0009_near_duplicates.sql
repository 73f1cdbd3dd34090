-- The near-duplicate index: the perceptual hash cut into four bands of 16 bits,
-- each indexed with the whole hash beside it. Two hashes within d bits agree closely on at least
-- one band (multi-index hashing, evidence/near.rs), so a lookup probes the band indexes and
-- filters the hashes it finds there, without reading the table.

ALTER TABLE photo_facts ADD COLUMN phash_band0 INTEGER;
ALTER TABLE photo_facts ADD COLUMN phash_band1 INTEGER;
ALTER TABLE photo_facts ADD COLUMN phash_band2 INTEGER;
ALTER TABLE photo_facts ADD COLUMN phash_band3 INTEGER;

UPDATE photo_facts SET phash_band0 = (phash >> 48) & 65535,
                       phash_band1 = (phash >> 32) & 65535,
                       phash_band2 = (phash >> 16) & 65535,
                       phash_band3 = phash & 65535
WHERE phash IS NOT NULL;

CREATE INDEX photo_facts_band0 ON photo_facts (phash_band0, phash) WHERE phash IS NOT NULL;
CREATE INDEX photo_facts_band1 ON photo_facts (phash_band1, phash) WHERE phash IS NOT NULL;
CREATE INDEX photo_facts_band2 ON photo_facts (phash_band2, phash) WHERE phash IS NOT NULL;
CREATE INDEX photo_facts_band3 ON photo_facts (phash_band3, phash) WHERE phash IS NOT NULL;
