-- Per-Pool and per-key policy (issue 6): a Pool can turn its OpenAI-compatible `/v1` surface
-- off, and a key can be limited to some models and a reasoning effort.

-- On for every Pool, old and new; off answers /v1 with 403 v1_compatibility_disabled.
ALTER TABLE pools
    ADD COLUMN v1_enabled boolean NOT NULL DEFAULT true;

-- allowed_models: the model slugs a key may ask for (NULL: any model; compared after
-- normalization, see pooler.routing.snapshot.normalize_scope).
-- reasoning_effort + reasoning_effort_mode: 'enforce' rewrites every request's effort to
-- reasoning_effort; 'max' refuses an effort above it. Both NULL: no effort policy.
ALTER TABLE pool_api_keys
    ADD COLUMN allowed_models        text[]
                                     CHECK (cardinality(allowed_models) BETWEEN 1 AND 200
                                            AND array_position(allowed_models, NULL) IS NULL),
    ADD COLUMN reasoning_effort      text
                                     CHECK (reasoning_effort IN ('none', 'minimal', 'low',
                                                                 'medium', 'high', 'xhigh')),
    ADD COLUMN reasoning_effort_mode text
                                     CHECK (reasoning_effort_mode IN ('enforce', 'max')),
    ADD CONSTRAINT pool_api_keys_reasoning_effort_pair
        CHECK ((reasoning_effort IS NULL) = (reasoning_effort_mode IS NULL));
