-- Room on each page of tasks for the next version of its rows. Every execution writes a
-- new version of its task's row (next_run_at changes, so the update is never HOT), and
-- PostgreSQL puts it on the row's own page when it fits there. Filled to the brim, as
-- inserts leave a page by default, the new version goes to another page: the claim's
-- lock and the update dirty two pages instead of one, and until a vacuum frees the old
-- versions the table grows by a row per execution. A tenth of each page kept free holds
-- the next versions of its rows; pruning (by any scan that finds the page nearly full)
-- frees the dead ones for the versions after. Pages written from now on keep the room;
-- existing ones gain it when a vacuum or an update frees space on them.
ALTER TABLE tasks SET (fillfactor = 90);
