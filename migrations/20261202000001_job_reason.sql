-- Why a job started, finer than its trigger: `schedule`, `manual`, `startup`, or the health
-- condition that made its table due (`trigger:small-files`, ...). Null on jobs recorded before.
ALTER TABLE jobs ADD COLUMN reason TEXT;
