-- Wait until every sibling connection ($2, their locks' second keys) has sent its share.
SELECT pg_advisory_lock_shared($1, sibling) FROM unnest($2::int4[]) AS sibling
