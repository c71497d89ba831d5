-- Deal updates become HOT (heap-only: a new row version on the same page, no new index entries).
-- A row can only be updated HOT when no indexed column changes, and the columns of a partial index's
-- predicate count: `status` was in two predicates, so every confirm, close and dispute wrote a new
-- entry into each of the deal table's indexes.
--
-- 1. What a customer holds (the escrow of their funded deals) is kept on their available account,
--    changed by the ledger in the transaction of every hold, release and refund, under that
--    account's lock, instead of being summed from the funded deals through a partial index on the
--    status. `reconcile` checks it against the funded deals.
ALTER TABLE accounts ADD COLUMN held NUMERIC NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD CONSTRAINT held_on_available_accounts
    CHECK (held >= 0 AND (kind = 'user_available' OR held = 0));
UPDATE accounts a SET held = h.held
FROM (SELECT d.customer_id, d.currency, sum(e.balance) AS held
      FROM deals d JOIN accounts e ON e.kind = 'deal_escrow' AND e.deal_id = d.id
      WHERE d.status IN ('confirm_performer', 'confirmed', 'dispute')
      GROUP BY 1, 2) h
WHERE a.kind = 'user_available' AND a.user_id = h.customer_id AND a.currency = h.currency;
DROP INDEX deals_funded_by_customer;

-- 2. The waiting deals are found through a stored flag: only a change into or out of
--    `waiting_for_payment` changes it, so every other status change leaves the indexes alone.
ALTER TABLE deals ADD COLUMN waiting boolean GENERATED ALWAYS AS (status = 'waiting_for_payment') STORED;
DROP INDEX deals_waiting_for_payment;
CREATE INDEX deals_waiting_for_payment ON deals (customer_id, currency, id) WHERE waiting;

-- 3. Room on every page for the new versions of its deals (a deal changes a few times in its life,
--    mostly soon after it was created, while it is on one of the newest pages).
ALTER TABLE deals SET (fillfactor = 70);

-- 4. The write adds each account's change of `held` with its change of balance (p58, by p40).
DROP FUNCTION ledger_write(bigint[], bigint[], bigint[], bigint[], text[], text[], numeric[], text[], text[],
    timestamptz[], timestamptz[], timestamptz[], timestamptz[], bigint[], numeric[], bigint[], text[],
    timestamptz[], timestamptz[], bigint[], bigint[], text[], text[], timestamptz[], text[], timestamptz[],
    bigint[], text[], timestamptz[], bigint[], bigint[], bigint[], numeric[], text[], text[], bigint[], uuid[],
    text[], timestamptz, bigint[], numeric[], text[], bigint[], bigint[], uuid[], text[], text[], text[],
    bigint[], bigint[], bigint[], uuid[], bigint[], text[], text[], text[], jsonb[]);

-- As in 0008, with the accounts' `held` deltas.
CREATE FUNCTION ledger_write(
    p1 bigint[],
    p2 bigint[],
    p3 bigint[],
    p4 bigint[],
    p5 text[],
    p6 text[],
    p7 numeric[],
    p8 text[],
    p9 text[],
    p10 timestamptz[],
    p11 timestamptz[],
    p12 timestamptz[],
    p13 timestamptz[],
    p14 bigint[],
    p15 numeric[],
    p16 bigint[],
    p17 text[],
    p18 timestamptz[],
    p19 timestamptz[],
    p20 bigint[],
    p21 bigint[],
    p22 text[],
    p23 text[],
    p24 timestamptz[],
    p25 text[],
    p26 timestamptz[],
    p27 bigint[],
    p28 text[],
    p29 timestamptz[],
    p30 bigint[],
    p31 bigint[],
    p32 bigint[],
    p33 numeric[],
    p34 text[],
    p35 text[],
    p36 bigint[],
    p37 uuid[],
    p38 text[],
    p39 timestamptz,
    p40 bigint[],
    p41 numeric[],
    p42 text[],
    p43 bigint[],
    p44 bigint[],
    p45 uuid[],
    p46 text[],
    p47 text[],
    p48 text[],
    p49 bigint[],
    p50 bigint[],
    p51 bigint[],
    p52 uuid[],
    p53 bigint[],
    p54 text[],
    p55 text[],
    p56 text[],
    p57 jsonb[],
    p58 numeric[]
) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
DECLARE
    written integer;
BEGIN
    WITH
         new_deals AS (
             INSERT INTO deals (id, tenant_id, customer_id, performer_id, title, description, amount, currency,
                                status, deadline_at, funded_at, created_at, updated_at)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
                                  $7::numeric[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],
                                  $12::timestamptz[], $13::timestamptz[])),
         new_escrows AS (
             INSERT INTO accounts (id, kind, currency, deal_id, balance)
             OVERRIDING SYSTEM VALUE
             SELECT id, 'deal_escrow', currency, deal_id, balance
             FROM unnest($14::bigint[], $8::text[], $1::bigint[], $15::numeric[]) AS e(id, currency, deal_id, balance)),
         changed_deals AS (
             UPDATE deals d SET status = u.status, funded_at = u.funded_at, updated_at = u.updated_at
             FROM unnest($16::bigint[], $17::text[], $18::timestamptz[], $19::timestamptz[])
                 AS u(id, status, funded_at, updated_at)
             WHERE d.id = u.id),
         opened_disputes AS (
             INSERT INTO disputes (deal_id, opened_by, title, description, opened_at, resolution, resolved_at)
             SELECT * FROM unnest($20::bigint[], $21::bigint[], $22::text[], $23::text[], $24::timestamptz[],
                                  $25::text[], $26::timestamptz[])),
         resolved_disputes AS (
             UPDATE disputes s SET resolution = u.resolution, resolved_at = u.resolved_at
             FROM unnest($27::bigint[], $28::text[], $29::timestamptz[]) AS u(deal_id, resolution, resolved_at)
             WHERE s.deal_id = u.deal_id),
         moved AS (
             INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, deal_id,
                                    command_id, reason, created_at)
             OVERRIDING SYSTEM VALUE
             SELECT id, debit, credit, amount, currency, kind, deal_id, command_id, reason, $39
             FROM unnest($30::bigint[], $31::bigint[], $32::bigint[], $33::numeric[], $34::text[], $35::text[],
                         $36::bigint[], $37::uuid[], $38::text[])
                 AS t(id, debit, credit, amount, currency, kind, deal_id, command_id, reason)),
         balances AS (
             UPDATE accounts a SET balance = a.balance + u.delta, held = a.held + u.held
             FROM unnest($40::bigint[], $41::numeric[], $58::numeric[]) AS u(id, delta, held) WHERE a.id = u.id),
         sequences AS (
             INSERT INTO event_sequences (aggregate, aggregate_id, last)
             SELECT * FROM unnest($42::text[], $43::bigint[], $44::bigint[]) ORDER BY 1, 2
             ON CONFLICT (aggregate, aggregate_id) DO UPDATE SET last = event_sequences.last + EXCLUDED.last
             RETURNING aggregate, aggregate_id, last),
         events AS (
             INSERT INTO outbox (event_id, subject, payload)
             SELECT e.event_id, e.subject,
                    (left(e.payload, -1) || ',"sequence":' || (s.last - e.count + e.ordinal) || '}')::json
             FROM unnest($45::uuid[], $46::text[], $47::text[], $48::text[], $49::bigint[], $50::bigint[],
                         $51::bigint[]) WITH ORDINALITY
                 AS e(event_id, subject, payload, aggregate, aggregate_id, ordinal, count, position)
             JOIN sequences s ON s.aggregate = e.aggregate AND s.aggregate_id = e.aggregate_id
             ORDER BY e.position),
         answers AS (
             INSERT INTO commands (id, tenant_id, kind, fingerprint, outcome, body)
             SELECT * FROM unnest($52::uuid[], $53::bigint[], $54::text[], $55::text[], $56::text[], $57::jsonb[])
             ON CONFLICT (id) DO UPDATE
                 SET kind = EXCLUDED.kind, fingerprint = EXCLUDED.fingerprint, outcome = EXCLUDED.outcome,
                     body = EXCLUDED.body, applied_at = now()
                 WHERE commands.outcome = 'failed')
    SELECT 1 INTO written;
    RETURN written;
END;
$fn$;
