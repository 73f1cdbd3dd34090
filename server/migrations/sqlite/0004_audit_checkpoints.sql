-- Signed checkpoints of the chain head: "the log was this, as of then", signed with the
-- server's ed25519 key, so a rewrite of the whole chain from some entry on is still caught.

CREATE TABLE audit_checkpoints (
    seq        INTEGER NOT NULL,
    head_hash  TEXT NOT NULL,
    at         TEXT NOT NULL,        -- the exact text that was signed
    public_key TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (seq, public_key)
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints cannot be changed');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints cannot be deleted');
END;
