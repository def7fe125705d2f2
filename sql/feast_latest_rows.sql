-- The offline fallback of the online store: the latest row of each requested symbol.
-- Placeholders: {table}, {columns}; parameter 1: the list of symbols (VARCHAR[]).
SELECT symbol, ts, {columns}
FROM {table}
WHERE list_contains(?, symbol)
QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) = 1
ORDER BY symbol;
