-- Payments, their deposits, and the scanner's state.
--
-- A payment is one fresh deposit address (derived from the operator's HD seed at
-- m/44'/195'/0'/0/{hd_index}) waiting for one user's money. No key is stored: only the index and the
-- address, each unique, so no two payments ever share an address.

-- The next HD index. nextval is atomic across every process that allocates addresses; an index taken
-- by a request whose command was then answered from the inbox is simply never used.
CREATE SEQUENCE deposit_address_index AS bigint MINVALUE 0 MAXVALUE 2147483647 START 0 NO CYCLE;

CREATE TABLE payments (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      BIGINT      NOT NULL REFERENCES tenants (id),
    user_id        BIGINT      NOT NULL REFERENCES users (id),
    gateway_id     BIGINT      NOT NULL CHECK (gateway_id = 1),
    currency       TEXT        NOT NULL,
    amount         NUMERIC     NOT NULL CHECK (amount > 0),
    -- Everything credited to the payment's address, late and surplus coins included.
    received       NUMERIC     NOT NULL DEFAULT 0 CHECK (received >= 0),
    status         TEXT        NOT NULL CHECK (status IN ('waiting', 'partial', 'success', 'expired')),
    hd_index       BIGINT      NOT NULL UNIQUE CHECK (hd_index BETWEEN 0 AND 2147483647),
    address        TEXT        NOT NULL UNIQUE,
    token_contract TEXT        NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status <> 'waiting' OR received = 0)
);

CREATE INDEX payments_by_tenant ON payments (tenant_id, id);
CREATE INDEX payments_by_user ON payments (user_id, id);
-- Expiry looks for waiting payments past their deadline.
CREATE INDEX payments_expiring ON payments (expires_at) WHERE status = 'waiting';

-- Deposits: one row per credited (txid, log index), the database's own guard of invariant 4.
CREATE TABLE deposits (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id   BIGINT      NOT NULL REFERENCES payments (id),
    txid         TEXT        NOT NULL CHECK (txid ~ '^[0-9a-f]{64}$'),
    log_index    INTEGER     NOT NULL CHECK (log_index >= 0),
    amount       NUMERIC     NOT NULL CHECK (amount > 0),
    block_number BIGINT      NOT NULL CHECK (block_number >= 0),
    block_time   TIMESTAMPTZ NOT NULL,
    -- Mined after the payment expired.
    late         BOOLEAN     NOT NULL,
    transfer_id  BIGINT      NOT NULL UNIQUE REFERENCES transfers (id),
    command_id   UUID        NOT NULL,
    credited_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (txid, log_index)
);

CREATE INDEX deposits_by_payment ON deposits (payment_id, id);

CREATE TRIGGER deposits_append_only BEFORE UPDATE OR DELETE ON deposits
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- The block follower's cursor: the next solidified block to read. Moved only by the lease holder,
-- only past blocks read completely.
-- `read_until` is the time of the last block read: every transfer mined before it has been observed,
-- so a waiting payment whose deadline is before it has really received nothing in time.
CREATE TABLE scanner_cursors (
    name       TEXT        PRIMARY KEY,
    next_block BIGINT      NOT NULL CHECK (next_block >= 0),
    read_until TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Leases: one scanner process runs a detector at a time; a holder that stops renewing loses it.
CREATE TABLE scanner_leases (
    name       TEXT        PRIMARY KEY,
    holder     UUID        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
