-- The outbox becomes a queue: the relay deletes the events it published (in the transaction that
-- commits once JetStream has acknowledged them), so a row in `outbox` is an event not yet published
-- and the record of every event is the `GUARANTOR_EVT` stream. Marking a row sent wrote a second
-- version of it with new entries in every index (the mark was in the partial index's predicate), and
-- the `event_id` index guarded ids that the ledger generates as UUIDv7 and JetStream deduplicates by;
-- an event now costs one row and one primary-key entry. `event_sequences` keeps each aggregate's
-- count of events ever written.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
ALTER TABLE outbox DROP COLUMN published_at;

-- No query looks transfers up by account (balances are kept on the accounts, `reconcile` sums all
-- transfers in one pass): these two indexes were two more entries per transfer for nothing.
DROP INDEX transfers_by_debit;
DROP INDEX transfers_by_credit;
