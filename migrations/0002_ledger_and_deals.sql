-- Users, deals and disputes; the double-entry ledger; the command inbox; the event outbox.
--
-- Money columns are NUMERIC: exact decimals, never floating point. Amounts carry at most the
-- currency's decimals (checked by the services; USDT has 6). Currencies are their codes as TEXT.

CREATE TABLE users (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id),
    external_id TEXT        NOT NULL CHECK (char_length(external_id) BETWEEN 1 AND 128),
    name        TEXT        NOT NULL CHECK (char_length(name) <= 128),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id)
);

CREATE TABLE deals (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    BIGINT      NOT NULL REFERENCES tenants (id),
    customer_id  BIGINT      NOT NULL REFERENCES users (id),
    performer_id BIGINT      NOT NULL REFERENCES users (id),
    title        TEXT        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 128),
    description  TEXT        NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
    amount       NUMERIC     NOT NULL CHECK (amount > 0),
    currency     TEXT        NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN (
                     'created', 'deny_performer', 'waiting_for_payment', 'confirm_performer', 'confirmed',
                     'dispute', 'close', 'arb_close_customer', 'arb_close_performer', 'cancelled')),
    deadline_at  TIMESTAMPTZ,
    funded_at    TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (customer_id <> performer_id)
);

CREATE INDEX deals_by_tenant ON deals (tenant_id, id);
CREATE INDEX deals_by_customer ON deals (customer_id, id);
CREATE INDEX deals_by_performer ON deals (performer_id, id);
-- Funding looks up a customer's waiting deals in one currency, oldest first.
CREATE INDEX deals_waiting_for_payment ON deals (customer_id, currency, id) WHERE status = 'waiting_for_payment';

-- At most one dispute per deal: a resolved dispute ends the deal.
CREATE TABLE disputes (
    deal_id     BIGINT      PRIMARY KEY REFERENCES deals (id),
    opened_by   BIGINT      NOT NULL REFERENCES users (id),
    title       TEXT        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 128),
    description TEXT        NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
    opened_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolution  TEXT        CHECK (resolution IN ('customer', 'performer')),
    resolved_at TIMESTAMPTZ,
    CHECK ((resolution IS NULL) = (resolved_at IS NULL))
);

-- Accounts of the double-entry ledger. `balance` is the running sum of the account's transfers, kept
-- on the row so that the database itself refuses a negative user or escrow balance (invariant 2).
-- External accounts (where money enters or leaves the books) run negative by design.
CREATE TABLE accounts (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind      TEXT    NOT NULL CHECK (kind IN ('user_available', 'deal_escrow', 'deposits_received', 'operator_adjustments')),
    currency  TEXT    NOT NULL,
    user_id   BIGINT  REFERENCES users (id),
    deal_id   BIGINT  REFERENCES deals (id),
    balance   NUMERIC NOT NULL DEFAULT 0,
    CONSTRAINT balance_not_negative CHECK (kind NOT IN ('user_available', 'deal_escrow') OR balance >= 0),
    CONSTRAINT owner_matches_kind CHECK (
        (kind = 'user_available' AND user_id IS NOT NULL AND deal_id IS NULL)
        OR (kind = 'deal_escrow' AND deal_id IS NOT NULL AND user_id IS NULL)
        OR (kind IN ('deposits_received', 'operator_adjustments') AND user_id IS NULL AND deal_id IS NULL))
);

CREATE UNIQUE INDEX accounts_user_available ON accounts (user_id, currency) WHERE kind = 'user_available';
CREATE UNIQUE INDEX accounts_deal_escrow ON accounts (deal_id) WHERE kind = 'deal_escrow';
CREATE UNIQUE INDEX accounts_external ON accounts (kind, currency) WHERE kind IN ('deposits_received', 'operator_adjustments');

-- Transfers: append-only. Money leaves the debit account and arrives in the credit account.
CREATE TABLE transfers (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    debit_account_id  BIGINT      NOT NULL REFERENCES accounts (id),
    credit_account_id BIGINT      NOT NULL REFERENCES accounts (id),
    amount            NUMERIC     NOT NULL CHECK (amount > 0),
    currency          TEXT        NOT NULL,
    kind              TEXT        NOT NULL CHECK (kind IN ('deposit', 'hold', 'release', 'refund', 'adjustment')),
    deal_id           BIGINT      REFERENCES deals (id),
    command_id        UUID,
    reason            TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (debit_account_id <> credit_account_id)
);

CREATE INDEX transfers_by_debit ON transfers (debit_account_id);
CREATE INDEX transfers_by_credit ON transfers (credit_account_id);
CREATE INDEX transfers_by_deal ON transfers (deal_id) WHERE deal_id IS NOT NULL;

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- The ledger's inbox: one row per applied command, written in the same transaction as the command's
-- effect, so a redelivered or replayed command is recognised and applies nothing (invariant 4). The
-- row also keeps the answer the client got, for `GET /commands/{id}` and idempotent retries.
-- `fingerprint` is the SHA-256 of the command's route and body: the same Idempotency-Key with another
-- route or body is refused.
CREATE TABLE commands (
    id          UUID        PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id),
    kind        TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    http_status SMALLINT    NOT NULL,
    body        JSONB,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The transactional outbox: events written with the change they describe, published after commit
-- in id order (which, per aggregate, is commit order: an aggregate's row is locked while its events
-- are written).
CREATE TABLE outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    subject      TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Commands the ingress accepted but answered 202 for (the ledger had not replied in time), so that
-- `GET /commands/{id}` can tell "pending" from "unknown" until the ledger's row in `commands` exists.
CREATE TABLE accepted_commands (
    id          UUID        PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id),
    accepted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
