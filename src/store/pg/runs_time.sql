-- Version 3: lists of runs filtered by workflow or status and by a range
-- of creation times (GET /api/v1/runs?created_after=…&created_before=…)
-- read an index range, newest first, instead of every run of the
-- workflow or status.
CREATE INDEX runs_workflow_created ON runs (workflow, created_at, pos);
CREATE INDEX runs_status_created ON runs (status, created_at, pos);
