-- $1 code text, $2 scale smallint. Returns the scale the code has (new or existing).
WITH inserted AS (
    INSERT INTO wallet_ledger.currencies (code, scale) VALUES ($1, $2)
    ON CONFLICT (code) DO NOTHING
    RETURNING scale
)
SELECT scale FROM inserted
UNION ALL
SELECT scale FROM wallet_ledger.currencies WHERE code = $1
LIMIT 1
