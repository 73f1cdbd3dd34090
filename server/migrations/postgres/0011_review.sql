-- Review: who holds a visit (a claim with a lease that runs out), every decision and comment as
-- a row of its own (the visit's review_state is the latest decision's state).

CREATE TABLE review_claims (
    submission_id    UUID PRIMARY KEY REFERENCES submissions (submission_id),
    reviewer_id      UUID NOT NULL REFERENCES users (id),
    reviewer         TEXT NOT NULL,
    claimed_at       TIMESTAMPTZ NOT NULL,
    lease_expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE review_decisions (
    decision_id   UUID PRIMARY KEY,
    submission_id UUID NOT NULL REFERENCES submissions (submission_id),
    decision      TEXT NOT NULL CHECK (decision IN ('approve', 'reject', 'resurvey')),
    from_state    TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT,
    decided_by    UUID NOT NULL REFERENCES users (id),
    reviewer      TEXT NOT NULL,
    decided_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX review_decisions_by_submission ON review_decisions (submission_id, decided_at);

CREATE TABLE review_comments (
    comment_id    UUID PRIMARY KEY,
    submission_id UUID NOT NULL REFERENCES submissions (submission_id),
    author_id     UUID NOT NULL REFERENCES users (id),
    author        TEXT NOT NULL,
    text          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX review_comments_by_submission ON review_comments (submission_id, created_at);

-- The queue reads undecided visits in arrival order.
CREATE INDEX submissions_undecided ON submissions (seq) WHERE review_state IN ('received', 'in_review');
