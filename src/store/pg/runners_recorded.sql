-- Version 3: where each attempt ran (a runner's name, or `local`), once
-- it ended (attempts that ended before ran locally), and what each runner
-- claimed lately.
ALTER TABLE attempts ADD COLUMN runner TEXT COLLATE "C";
UPDATE attempts SET runner = 'local' WHERE finished_at IS NOT NULL;
-- What each runner claimed lately (`store::queue::Affinity`, JSON).
ALTER TABLE runners ADD COLUMN affinity TEXT NOT NULL DEFAULT '{}';
