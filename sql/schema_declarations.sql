-- The declaration a build computed: sha256 of the whole feature set and, per feature, of its
-- definition (JSON object name -> sha256). A released version must not change: a later build of
-- the same feature set and version with other hashes is refused, naming the changed features.
ALTER TABLE feature_builds ADD COLUMN IF NOT EXISTS declaration_sha256 VARCHAR;
ALTER TABLE feature_builds ADD COLUMN IF NOT EXISTS feature_sha256 VARCHAR;
