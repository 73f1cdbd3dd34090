-- Signed checkpoints of the chain head: "the log was this, as of then", signed with the
-- server's ed25519 key, so a rewrite of the whole chain from some entry on is still caught.

CREATE TABLE audit_checkpoints (
    seq        BIGINT NOT NULL,
    head_hash  TEXT NOT NULL,
    at         TEXT NOT NULL,        -- the exact text that was signed
    public_key TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (seq, public_key)
);

CREATE TRIGGER audit_checkpoints_no_change BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
