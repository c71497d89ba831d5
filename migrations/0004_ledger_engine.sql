-- The set-based ledger engine.
--
-- The inbox stores the ledger's verdict in domain terms (applied / refused / failed) instead of an
-- HTTP status: the ingress maps error codes to statuses. `body` is the result for `applied`, the error
-- in the documented shape otherwise.
ALTER TABLE commands ADD COLUMN outcome TEXT;
UPDATE commands SET outcome = CASE WHEN http_status < 400 THEN 'applied' ELSE 'refused' END;
ALTER TABLE commands ALTER COLUMN outcome SET NOT NULL;
ALTER TABLE commands ADD CONSTRAINT commands_outcome CHECK (outcome IN ('applied', 'refused', 'failed'));
ALTER TABLE commands ADD CONSTRAINT commands_error_has_body CHECK (outcome = 'applied' OR body IS NOT NULL);
ALTER TABLE commands DROP COLUMN http_status;

-- Per-aggregate event sequences: 1, 2, 3, ... with no gap, so a subscriber can detect order and loss.
-- A batch takes its rows last (sorted), so the row lock that orders an aggregate's events is held only
-- across the commit and never closes a lock cycle.
CREATE TABLE event_sequences (
    aggregate    TEXT   NOT NULL,
    aggregate_id BIGINT NOT NULL,
    last         BIGINT NOT NULL CHECK (last > 0),
    PRIMARY KEY (aggregate, aggregate_id)
);

INSERT INTO event_sequences (aggregate, aggregate_id, last)
SELECT split_part(subject, '.', 3), split_part(subject, '.', 4)::bigint, count(*)
FROM outbox GROUP BY 1, 2;

-- Commands the ledger started applying again after a delivery that ended without a verdict (a crash,
-- an expired ack, a deterministic failure). Counted by the ledger itself, not by JetStream, so that
-- deliveries spent while Postgres was away never count against a command: only real attempts do.
CREATE TABLE command_attempts (
    id         UUID        PRIMARY KEY,
    attempts   INTEGER     NOT NULL CHECK (attempts > 0),
    last_error TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A request with an Idempotency-Key is recorded with its fingerprint before its command is
-- published, so that the same key with another request is refused (409) at once, also while the
-- first command is still pending.
ALTER TABLE accepted_commands ADD COLUMN fingerprint TEXT;
