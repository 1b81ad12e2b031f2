-- Version 5: a claim reads index ranges, never every waiting attempt.
-- The waiting attempts of a run, oldest first: a claim takes those of
-- the runs its runner serves through this index (a range per run with
-- the claim's LIMIT) instead of sorting every waiting row on "is it one
-- of my runs".
CREATE INDEX queue_waiting_run ON queue (run, seq) WHERE runner IS NULL;
