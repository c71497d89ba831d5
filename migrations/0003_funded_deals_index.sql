-- A customer's `held` balance is the escrow of their funded deals only (invariant 3: every other
-- escrow is zero), so it is found through this small partial index instead of every deal the
-- customer ever made.
CREATE INDEX deals_funded_by_customer ON deals (customer_id, currency)
    WHERE status IN ('confirm_performer', 'confirmed', 'dispute');
