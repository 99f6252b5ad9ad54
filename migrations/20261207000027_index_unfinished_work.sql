-- The operator console's overview (issue 15) counts the queue's unfinished jobs and the last
-- day of webhooks on every load, and lists dead jobs; without these it read the jobs and the
-- inbox whole (about 150 ms of database time per overview at 200,000 jobs and 100,000
-- deliveries). Dead jobs are rare: the index costs a write only when a job dies.
CREATE INDEX jobs_dead ON jobs (kind, id) WHERE state = 'dead';
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries (received_at);
