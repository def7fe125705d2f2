-- Insert the staged bars when none of their keys exists yet (checked in the same transaction).
INSERT INTO bars (symbol, ts, open, high, low, close, volume)
SELECT symbol, ts, open, high, low, close, volume
FROM staged_bars;
