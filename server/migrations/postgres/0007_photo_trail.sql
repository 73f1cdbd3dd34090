-- A household's trail includes what happened to the photos of its visits (stored, processed),
-- whose entries name the photo, not the household: this index finds them by photo. Partial, so
-- the entries appended for every visit do not pay for it.
CREATE INDEX audit_log_photo_entries ON audit_log (subject, seq)
    WHERE action IN ('photo.stored', 'photo.processed');
