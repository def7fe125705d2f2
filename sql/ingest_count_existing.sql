-- How many staged bars (view staged_bars) already exist in bars, and how many of those are
-- identical (an unchanged re-ingest). Run inside the ingest transaction, before the upsert.
SELECT
    count(*) AS existing,
    count(*) FILTER (
        WHERE b.open IS NOT DISTINCT FROM s.open
          AND b.high IS NOT DISTINCT FROM s.high
          AND b.low IS NOT DISTINCT FROM s.low
          AND b.close IS NOT DISTINCT FROM s.close
          AND b.volume IS NOT DISTINCT FROM s.volume
    ) AS unchanged
FROM staged_bars AS s
JOIN bars AS b ON b.symbol = s.symbol AND b.ts = s.ts;
