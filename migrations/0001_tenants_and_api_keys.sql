-- Tenants and their API keys. A key authenticates a request and decides, through its role, what the
-- request may do; everything a tenant owns is scoped by tenant_id.

-- BIGINT identity: tenant ids travel as JSON integers and never need to be guessed-proof (keys are).
CREATE TABLE tenants (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 128),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The key's id is public (it is part of the key string and is shown by `apikey list`). Only the SHA-256
-- of the key's 256-bit random secret is stored: the secret has full entropy, so a fast hash is enough
-- and a leaked table does not yield usable keys.
CREATE TABLE api_keys (
    id            UUID        PRIMARY KEY,
    tenant_id     BIGINT      NOT NULL REFERENCES tenants (id),
    role          TEXT        NOT NULL CHECK (role IN ('platform', 'arbiter', 'admin')),
    secret_sha256 BYTEA       NOT NULL CHECK (octet_length(secret_sha256) = 32),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at    TIMESTAMPTZ
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);
