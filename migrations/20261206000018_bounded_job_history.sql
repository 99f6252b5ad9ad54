-- A job's error history keeps its last 20 entries (a job deferred 2,000 times by 429s carried
-- 314 KB rewritten on every update). `attempts` and `deferrals` still count everything.
CREATE FUNCTION jobs_errors_append(errors JSONB, entry JSONB) RETURNS JSONB
    LANGUAGE sql IMMUTABLE STRICT
    RETURN CASE
        WHEN jsonb_array_length(errors) < 20 THEN errors || jsonb_build_array(entry)
        ELSE (SELECT jsonb_agg(e ORDER BY i)
                FROM jsonb_array_elements(errors) WITH ORDINALITY AS x(e, i)
               WHERE i > jsonb_array_length(errors) - 19) || jsonb_build_array(entry)
    END;
