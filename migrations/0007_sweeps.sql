-- Sweeps: moving credited USDT from a deposit address to the operator's main wallet. Sweeps never
-- change balances (they move custody); they are what reconciliation with the chain adds up
-- (invariant 5: credited deposits = unswept coins on deposit addresses + confirmed sweeps).
--
-- Each sweep is a persisted state machine: fee_check → topping_up (only when the address lacks TRX)
-- → sending → confirmed, or failed (visible, retried by an operator). Every transaction is stored
-- signed, with its exact bytes, before it is broadcast; a retry re-broadcasts those bytes.

CREATE TABLE sweeps (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id     BIGINT      NOT NULL REFERENCES payments (id),
    tenant_id      BIGINT      NOT NULL REFERENCES tenants (id),
    address        TEXT        NOT NULL,
    hd_index       BIGINT      NOT NULL,
    -- USDT (6 decimals) this sweep moves.
    amount         NUMERIC     NOT NULL CHECK (amount > 0),
    status         TEXT        NOT NULL CHECK (status IN ('fee_check', 'topping_up', 'sending', 'confirmed', 'failed')),
    -- TRX (sun) the address needs for the transfer's energy and bandwidth, as last estimated.
    fee_needed_sun BIGINT      CHECK (fee_needed_sun >= 0),
    -- TRX (sun) really burned, by the top-up (its sender's fee) and the transfers, from receipts.
    fee_paid_sun   BIGINT      NOT NULL DEFAULT 0 CHECK (fee_paid_sun >= 0),
    attempts       INTEGER     NOT NULL DEFAULT 0,
    last_error     TEXT,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The sweeper process working on it, until when (a lease: one process per sweep at a time).
    locked_by      UUID,
    locked_until   TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One open sweep per address at a time.
CREATE UNIQUE INDEX sweeps_open_per_address ON sweeps (address) WHERE status NOT IN ('confirmed', 'failed');
CREATE INDEX sweeps_due ON sweeps (next_attempt_at) WHERE status NOT IN ('confirmed', 'failed');
CREATE INDEX sweeps_by_status ON sweeps (status, id);

CREATE TABLE sweep_transactions (
    txid        TEXT        PRIMARY KEY CHECK (txid ~ '^[0-9a-f]{64}$'),
    sweep_id    BIGINT      NOT NULL REFERENCES sweeps (id),
    kind        TEXT        NOT NULL CHECK (kind IN ('top_up', 'transfer')),
    -- The signed Transaction protobuf exactly as broadcast.
    raw         BYTEA       NOT NULL,
    -- The reference block it was built on: its validity window starts there.
    ref_block   BIGINT      NOT NULL CHECK (ref_block >= 0),
    expiration  TIMESTAMPTZ NOT NULL,
    -- `spent`: a confirmed top-up whose TRX a failed transfer burned (the next attempt tops up anew).
    status      TEXT        NOT NULL CHECK (status IN ('signed', 'confirmed', 'spent', 'failed', 'expired')),
    -- The receipt's result (SUCCESS, REVERT, OUT_OF_ENERGY, ...), its fee and block.
    result      TEXT,
    fee_sun     BIGINT,
    block_number BIGINT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX sweep_transactions_by_sweep ON sweep_transactions (sweep_id, created_at);
-- At most one transaction of a kind in flight per sweep, and at most one top-up per attempt that is
-- not known to have expired unmined: a sweep never pays for two top-ups for one transfer.
CREATE UNIQUE INDEX sweep_transactions_one_live ON sweep_transactions (sweep_id, kind) WHERE status = 'signed';
CREATE UNIQUE INDEX sweep_transactions_one_top_up ON sweep_transactions (sweep_id)
    WHERE kind = 'top_up' AND status IN ('signed', 'confirmed');
