-- The engine of the newest build of a feature table: the engine every stored row was computed
-- by (a build whose engine differs must rewrite the whole table, see build_features).
SELECT engine
FROM feature_builds
WHERE feature_set = ? AND table_name = ?
ORDER BY built_at DESC
LIMIT 1
