-- Keep the lost tries of tasks a locked batch gives back unrun. Its claim took over the
-- claims rows of dead hosts' batches holding these tasks and deleted them (claim_locked.sql),
-- counting their tries only into the attempt it handed out; committing the batch
-- without a write for these tasks would make that delete permanent and the tries
-- forgotten. So they are added to the row, as the claims sweep adds them (lost.sql).
-- Runs in the claim's own transaction, whose row locks fence it.
-- $1 ids, $2 the tries to add.
UPDATE tasks AS t
SET attempt = t.attempt + c.n
FROM unnest($1::bigint[], $2::integer[]) AS c(id, n)
WHERE t.id = c.id
