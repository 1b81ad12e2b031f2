-- Version 3: where each attempt ran (a runner's name, or `local`), once
-- it ended. Attempts that ended before runners were recorded ran locally.
ALTER TABLE attempts ADD COLUMN runner TEXT COLLATE "C";
UPDATE attempts SET runner = 'local' WHERE finished_at IS NOT NULL;
