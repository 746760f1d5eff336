-- Every statement the application issues, by name. db.py loads this file; callers pass :named
-- parameters. {insert_ignore} and {for_update_skip_locked} are filled in per backend by db.py.
-- Booleans are compared with true/false so the operator SQL of the design documents reads the same.

-- name: create_schema_version_table
-- The bookkeeping table of schema.sql's migrations.
CREATE TABLE IF NOT EXISTS SchemaVersion (version INT NOT NULL PRIMARY KEY, appliedAt DATETIME(3) NOT NULL);

-- name: get_schema_version
-- The newest migration applied.
SELECT MAX(version) AS version FROM SchemaVersion;

-- name: applied_schema_versions
-- Every migration applied (a release may add a block numbered below the newest).
SELECT version FROM SchemaVersion;

-- name: record_schema_version
-- Remember that a migration was applied.
INSERT INTO SchemaVersion (version, appliedAt) VALUES (:version, :applied_at);

-- name: acquire_schema_lock
-- MySQL only: serialise migrations of processes that start together (waits up to 60 s).
SELECT GET_LOCK('schedule_jobs_schema', 60) AS acquired;

-- name: release_schema_lock
-- MySQL only: let the next process check the schema.
SELECT RELEASE_LOCK('schedule_jobs_schema') AS released;

-- name: ping
-- Does the database answer?
SELECT 1 AS ok;

-- name: server_now
-- The database server's clock, by which leases, heartbeats and deadness are judged.
SELECT {db_now} AS now;

-- ---------------------------------------------------------------------------------------------------
-- JobSchedule
-- ---------------------------------------------------------------------------------------------------

-- name: list_schedules
-- Every schedule row, in code or not.
SELECT * FROM JobSchedule ORDER BY id;

-- name: list_schedule_definitions
-- Sync: what each schedule row holds of its code definition (only these columns: 10,000 rows at start-up).
SELECT id, name, cron, timezone FROM JobSchedule;

-- name: get_schedule
-- One schedule row.
SELECT * FROM JobSchedule WHERE id = :id;

-- name: insert_schedule
-- Sync: a schedule new in code appears disabled; a row another process just inserted is left alone.
{insert_ignore} INTO JobSchedule (id, name, cron, timezone, enabled, runCount, failureCount, createdAt, updatedAt)
VALUES (:id, :name, :cron, :timezone, false, 0, 0, :now, :now);

-- name: update_schedule_definition
-- Sync: copy a changed name, cron or time zone; an enabled schedule is rescheduled from now.
UPDATE JobSchedule
SET name = :name, cron = :cron, timezone = :timezone, updatedAt = :now,
    nextRunAt = CASE WHEN enabled = true THEN :next_run_at ELSE NULL END
WHERE id = :id;

-- name: unschedule
-- A row with no definition in code, or a disabled one, has no next run.
UPDATE JobSchedule SET nextRunAt = NULL, updatedAt = :now WHERE id = :id AND nextRunAt IS NOT NULL;

-- name: enablement_to_follow
-- Schedules enabled or disabled behind the daemon's back (e.g. by SQL): enabled without a next run, or disabled with one.
SELECT id, enabled FROM JobSchedule
WHERE (enabled = false AND nextRunAt IS NOT NULL) OR (enabled = true AND nextRunAt IS NULL);

-- name: normalise_typed_times
-- SQLite only: times an operator typed by SQL ('T', no milliseconds, 'Z' or an offset) in the stored
-- form, so that the claim's equality on the value read back matches them.
UPDATE JobSchedule
SET nextRunAt = strftime('%Y-%m-%d %H:%M:%f', nextRunAt), lockedAt = strftime('%Y-%m-%d %H:%M:%f', lockedAt)
WHERE nextRunAt <> strftime('%Y-%m-%d %H:%M:%f', nextRunAt) OR lockedAt <> strftime('%Y-%m-%d %H:%M:%f', lockedAt);

-- name: schedule_first_run
-- Give a newly enabled schedule its first occurrence after now, unless someone already did.
UPDATE JobSchedule SET nextRunAt = :next_run_at, updatedAt = :now
WHERE id = :id AND enabled = true AND nextRunAt IS NULL;

-- name: enable_schedule
-- Admin: enable; the first run is the next occurrence from now, never a stale one.
UPDATE JobSchedule SET enabled = true, nextRunAt = :next_run_at, updatedAt = :now
WHERE id = :id AND enabled = false;

-- name: disable_schedule
-- Admin: disable; a run in progress finishes, nothing new starts.
UPDATE JobSchedule SET enabled = false, nextRunAt = NULL, updatedAt = :now
WHERE id = :id AND enabled = true;

-- name: due_schedules
-- Enabled, unlocked schedules whose next occurrence has come, oldest first.
SELECT id, nextRunAt FROM JobSchedule
WHERE enabled = true AND nextRunAt <= :now AND lockedAt IS NULL
ORDER BY nextRunAt LIMIT :limit;

-- name: next_wakeup
-- The earliest next run among enabled schedules: the daemon sleeps until then at most.
SELECT nextRunAt FROM JobSchedule
WHERE enabled = true AND nextRunAt IS NOT NULL AND lockedAt IS NULL
ORDER BY nextRunAt LIMIT 1;

-- name: next_due_while_locked
-- The earliest next run among enabled schedules someone holds: due again once released (overlap BUFFER_ONE).
-- ORDER BY, not MIN(): SQLite's driver turns a column into a datetime by its declared type, which MIN() loses.
SELECT nextRunAt FROM JobSchedule
WHERE enabled = true AND nextRunAt IS NOT NULL AND lockedAt IS NOT NULL
ORDER BY nextRunAt LIMIT 1;

-- name: due_while_locked
-- Enabled schedules whose next occurrence came while someone holds them (overlap policy SKIP skips it).
SELECT id, nextRunAt FROM JobSchedule
WHERE enabled = true AND nextRunAt <= :now AND lockedAt IS NOT NULL;

-- name: skip_while_locked
-- Overlap policy SKIP: move past the occurrence read as due while the previous run still holds the schedule.
UPDATE JobSchedule SET nextRunAt = :next_run_at, updatedAt = :now
WHERE id = :id AND enabled = true AND nextRunAt = :due AND lockedAt IS NOT NULL;

-- name: claim_occurrence
-- Claim the occurrence read as nextRunAt = :due. Matches only if no one has claimed or skipped it
-- since (either would have moved nextRunAt) and no one holds the schedule: one row changed = ours.
UPDATE JobSchedule
SET lockedAt = :now, lockedBy = :owner, nextRunAt = :next_run_at, updatedAt = :now
WHERE id = :id AND enabled = true AND nextRunAt = :due AND lockedAt IS NULL;

-- name: skip_occurrences
-- Missed-run policy SKIP: move past occurrences that fell due while no daemon was running.
UPDATE JobSchedule SET nextRunAt = :next_run_at, updatedAt = :now
WHERE id = :id AND enabled = true AND nextRunAt = :due AND lockedAt IS NULL;

-- name: claim_schedule_now
-- "Run now": hold the schedule without touching its timing; fails while anyone runs it.
UPDATE JobSchedule SET lockedAt = :now, lockedBy = :owner, updatedAt = :now
WHERE id = :id AND lockedAt IS NULL;

-- name: renew_lock
-- The holder extends its lease while its jobs run.
UPDATE JobSchedule SET lockedAt = :now WHERE id = :id AND lockedBy = :owner;

-- name: release_schedule
-- The holder is done: record the outcome and let go. Matches nothing if the lease was taken away.
UPDATE JobSchedule
SET lockedAt = NULL, lockedBy = NULL, lastRunAt = :last_run_at, updatedAt = :now,
    runCount = runCount + :succeeded, failureCount = failureCount + :failed
WHERE id = :id AND lockedBy = :owner;

-- name: recovery_needed
-- One cheap look before recovery: another live-looking instance gone silent, a RUNNING run of an instance
-- no longer alive, or another's lease not renewed. 0 means every recovery statement would change nothing.
-- The asking instance (:own_id) is alive, whatever its heartbeat says after an outage.
SELECT (EXISTS (SELECT 1 FROM WorkerInstance
                WHERE status = 'RUNNING' AND lastHeartbeatAt < :dead_before AND id <> :own_id)
     OR EXISTS (SELECT 1 FROM JobRun WHERE status = 'RUNNING' AND workerId <> :own_id
                  AND workerId IN (SELECT id FROM WorkerInstance WHERE status <> 'RUNNING'))
     OR EXISTS (SELECT 1 FROM JobSchedule WHERE lockedAt < :dead_before AND lockedBy <> :own_id)) AS needed;

-- name: expired_locks
-- Leases not renewed for LOCK_TIMEOUT_MS: their holder is dead or cut off (not the asking instance, :own_id,
-- which is alive and renews its own at its next heartbeat).
SELECT id, lockedBy, lockedAt FROM JobSchedule WHERE lockedAt < :expired_before AND lockedBy <> :own_id;

-- name: free_expired_lock
-- Take back one expired lease, counting the interrupted occurrence as a failure.
UPDATE JobSchedule SET lockedAt = NULL, lockedBy = NULL, failureCount = failureCount + 1, updatedAt = :now
WHERE id = :id AND lockedBy = :owner AND lockedAt = :locked_at;

-- ---------------------------------------------------------------------------------------------------
-- JobRun and JobLog
-- ---------------------------------------------------------------------------------------------------

-- name: insert_run
-- One row per job execution (or per skipped occurrence, with jobName '*').
INSERT INTO JobRun (jobName, `trigger`, scheduleId, scheduledFor, batchId, attempt, status, workerId,
                    queuedAt, startedAt, completedAt, durationMs, error, createdAt)
VALUES (:job_name, :trigger, :schedule_id, :scheduled_for, :batch_id, :attempt, :status, :worker_id,
        :queued_at, :started_at, :completed_at, :duration_ms, :error, :now);

-- name: insert_skip_record
-- insert_run for a skipped occurrence; one already recorded for the same occurrence is left as it is.
{insert_ignore} INTO JobRun (jobName, `trigger`, scheduleId, scheduledFor, batchId, attempt, status, workerId,
                    queuedAt, startedAt, completedAt, durationMs, error, createdAt)
VALUES (:job_name, :trigger, :schedule_id, :scheduled_for, :batch_id, :attempt, :status, :worker_id,
        :queued_at, :started_at, :completed_at, :duration_ms, :error, :now);

-- name: find_run
-- A run by its occurrence key: after a connection lost at COMMIT, did the insert land?
SELECT id, workerId, createdAt FROM JobRun
WHERE scheduleId = :schedule_id AND scheduledFor = :scheduled_for AND jobName = :job_name
  AND `trigger` = :trigger AND attempt = :attempt;

-- name: finish_run
-- Record how a running job ended; matches nothing if recovery already failed it.
UPDATE JobRun SET status = :status, completedAt = :completed_at, durationMs = :duration_ms, error = :error
WHERE id = :id AND status = 'RUNNING';

-- name: fail_runs_of_dead_workers
-- Inline runs left RUNNING by a daemon that is no longer alive (queued runs go through queue recovery);
-- never the asking instance's (:own_id): another may have marked it DEAD during an outage, but it lives.
UPDATE JobRun SET status = 'FAILED', completedAt = :now, error = :error
WHERE status = 'RUNNING' AND queuedAt IS NULL AND workerId <> :own_id
  AND workerId IN (SELECT id FROM WorkerInstance WHERE status <> 'RUNNING');

-- name: inline_runs_of_dead_workers
-- The runs fail_runs_of_dead_workers is about to fail, read first so that each can alert.
SELECT id, scheduleId, jobName, `trigger` FROM JobRun
WHERE status = 'RUNNING' AND queuedAt IS NULL AND workerId <> :own_id
  AND workerId IN (SELECT id FROM WorkerInstance WHERE status <> 'RUNNING');

-- name: queued_runs_of_dead_workers
-- Queued runs a job worker was running when it died: each is retried or failed (not the asking
-- instance's own, :own_id, as above).
SELECT * FROM JobRun
WHERE status = 'RUNNING' AND queuedAt IS NOT NULL AND workerId <> :own_id
  AND workerId IN (SELECT id FROM WorkerInstance WHERE status <> 'RUNNING');

-- name: queued_runs_of_worker
-- Queued runs this live worker holds as RUNNING: the ones it no longer has in hand were lost track of.
SELECT * FROM JobRun WHERE status = 'RUNNING' AND queuedAt IS NOT NULL AND workerId = :worker_id;

-- name: list_runs
-- Run history, newest first, filtered by whichever of status, schedule and job are given; page with :before.
SELECT * FROM JobRun
WHERE (:status IS NULL OR status = :status)
  AND (:schedule_id IS NULL OR scheduleId = :schedule_id)
  AND (:job_name IS NULL OR jobName = :job_name)
  AND (:before IS NULL OR id < :before)
ORDER BY id DESC LIMIT :limit;

-- name: get_run
-- One run.
SELECT * FROM JobRun WHERE id = :id;

-- name: insert_log
-- One line a job wrote with ctx.log().
INSERT INTO JobLog (runId, createdAt, level, message) VALUES (:run_id, :created_at, :level, :message);

-- name: list_logs
-- The lines a run wrote, in order.
SELECT createdAt, level, message FROM JobLog WHERE runId = :run_id ORDER BY id;

-- name: prune_logs
-- Maintenance: log lines of finished runs older than the retention period.
DELETE FROM JobLog WHERE runId IN (
  SELECT id FROM JobRun WHERE createdAt < :before AND status NOT IN ('QUEUED', 'RUNNING'));

-- name: prune_log_lines
-- Maintenance: one batch of log lines older than JOB_LOG_RETENTION_DAYS (the derived table lets MySQL take LIMIT).
DELETE FROM JobLog WHERE id IN (
  SELECT id FROM (SELECT id FROM JobLog WHERE createdAt < :before ORDER BY id LIMIT :limit) AS batch);

-- name: prune_runs
-- Maintenance: finished runs older than the retention period.
DELETE FROM JobRun WHERE createdAt < :before AND status NOT IN ('QUEUED', 'RUNNING');

-- ---------------------------------------------------------------------------------------------------
-- WorkerInstance
-- ---------------------------------------------------------------------------------------------------

-- name: register_worker
-- A daemon, worker or admin server announces itself.
INSERT INTO WorkerInstance (id, workerType, hostname, pid, status, startedAt, lastHeartbeatAt)
VALUES (:id, :worker_type, :hostname, :pid, 'RUNNING', :now, :now);

-- name: heartbeat
-- Still alive (and alive again, if recovery had given up on us during an outage).
UPDATE WorkerInstance SET lastHeartbeatAt = :now, status = 'RUNNING' WHERE id = :id;

-- name: stop_worker
-- A clean shutdown.
UPDATE WorkerInstance SET status = 'STOPPED', stoppedAt = :now, lastHeartbeatAt = :now WHERE id = :id;

-- name: mark_dead_workers
-- Instances silent for LOCK_TIMEOUT_MS are dead: they stop counting as RUNNING. Not the asking instance
-- (:own_id): after an outage its own heartbeat is stale too, but it knows it is alive, and its runs go on.
UPDATE WorkerInstance SET status = 'DEAD', stoppedAt = lastHeartbeatAt
WHERE status = 'RUNNING' AND lastHeartbeatAt < :dead_before AND id <> :own_id;

-- name: list_workers
-- Every instance, newest first.
SELECT * FROM WorkerInstance ORDER BY startedAt DESC;

-- name: get_worker
-- One instance.
SELECT * FROM WorkerInstance WHERE id = :id;

-- name: running_workers
-- The instances of one type that count as running (the design documents' "ghost" check).
SELECT * FROM WorkerInstance WHERE workerType = :worker_type AND status = 'RUNNING';

-- name: daemon_lifetimes
-- When schedule daemons were alive, to tell an occurrence missed during downtime from a late one.
SELECT startedAt, lastHeartbeatAt FROM WorkerInstance
WHERE workerType = 'schedule_daemon' AND lastHeartbeatAt >= :since;

-- name: prune_workers
-- Maintenance: rows of instances that stopped or died before the retention period.
DELETE FROM WorkerInstance WHERE status <> 'RUNNING' AND lastHeartbeatAt < :before;

-- ---------------------------------------------------------------------------------------------------
-- AdminAudit
-- ---------------------------------------------------------------------------------------------------

-- name: insert_audit
-- Remember an admin's change or manual run.
INSERT INTO AdminAudit (createdAt, actor, action, scheduleId, note, remoteAddress)
VALUES (:now, :actor, :action, :schedule_id, :note, :remote_address);

-- name: list_audit
-- Audit entries, newest first; page with :before.
SELECT * FROM AdminAudit WHERE (:before IS NULL OR id < :before) ORDER BY id DESC LIMIT :limit;

-- ---------------------------------------------------------------------------------------------------
-- Queue mode
-- ---------------------------------------------------------------------------------------------------

-- name: server_version
-- Which MySQL or MariaDB this is (queue mode needs SKIP LOCKED).
SELECT VERSION() AS version;

-- name: server_questions
-- MySQL only: how many statements the server has answered, from every client (bench/ counts round trips).
SHOW GLOBAL STATUS LIKE 'Questions';

-- name: advance_occurrence
-- Queue mode's claim: move nextRunAt past the occurrence read as due; one row changed = ours to enqueue.
UPDATE JobSchedule SET nextRunAt = :next_run_at, lastRunAt = :now, updatedAt = :now
WHERE id = :id AND enabled = true AND nextRunAt = :due AND lockedAt IS NULL;

-- name: insert_batch
-- One occurrence handed to the queue.
INSERT INTO JobBatch (id, scheduleId, scheduledFor, `trigger`, jobs, remaining, failed, createdAt)
VALUES (:id, :schedule_id, :scheduled_for, :trigger, :jobs, :jobs, 0, :now);

-- name: insert_queued_run
-- A job waiting for a worker; blocked until its dependencies in the same occurrence completed.
INSERT INTO JobRun (jobName, `trigger`, scheduleId, scheduledFor, batchId, attempt, status, queuedAt, availableAt,
                    blockedBy, createdAt)
VALUES (:job_name, :trigger, :schedule_id, :scheduled_for, :batch_id, :attempt, 'QUEUED', :now, :available_at,
        :blocked_by, :now);

-- name: batch_runs
-- The runs of one occurrence.
SELECT * FROM JobRun WHERE batchId = :batch_id ORDER BY id;

-- name: next_queued_runs
-- Runs ready for a worker, oldest first; on MySQL rows other workers are claiming are skipped, not waited for.
SELECT * FROM JobRun
WHERE status = 'QUEUED' AND blockedBy = 0 AND availableAt <= :now
ORDER BY availableAt, id LIMIT :limit {for_update_skip_locked};

-- name: claim_queued_runs
-- A worker takes the runs it selected in the same transaction (:ids, a tuple).
UPDATE JobRun SET status = 'RUNNING', workerId = :worker_id, startedAt = :now WHERE id IN :ids AND status = 'QUEUED';

-- name: claimed_runs
-- After a claim whose COMMIT answer was lost: which of the runs (:ids) this worker holds.
SELECT * FROM JobRun WHERE id IN :ids AND status = 'RUNNING' AND workerId = :worker_id;

-- name: give_back_runs
-- Claimed runs this worker cannot start soon go back to the queue for another worker.
UPDATE JobRun SET status = 'QUEUED', workerId = NULL, startedAt = NULL
WHERE id IN :ids AND status = 'RUNNING' AND workerId = :worker_id;

-- name: finish_queued_runs
-- Record how several queued runs ended, and when each really started (its claim may have waited a moment
-- in hand; unknown for a run that never started), in one statement: :ids and each value tuple hold
-- one entry per run, in the same order. Matches none that recovery already failed.
UPDATE JobRun
SET status = CASE id {cases :ids :statuses} END,
    completedAt = CASE id {cases :ids :completed_at} END,
    durationMs = CASE id {cases :ids :duration_ms} END,
    error = CASE id {cases :ids :error} END,
    startedAt = COALESCE(CASE id {cases :ids :started_at} END, startedAt)
WHERE id IN :ids AND status = 'RUNNING';

-- name: runs_by_id
-- The runs of :ids, as stored (a recording transaction checks which of its runs recovery failed first).
SELECT * FROM JobRun WHERE id IN :ids;

-- name: unblock_dependent
-- A dependency completed: one fewer for the dependent job in the same occurrence to wait for.
UPDATE JobRun SET blockedBy = blockedBy - 1
WHERE batchId = :batch_id AND jobName = :job_name AND status = 'QUEUED';

-- name: skip_dependent
-- A dependency failed for good: the dependent job will not run on stale input.
UPDATE JobRun SET status = 'SKIPPED', completedAt = :now, error = :error
WHERE batchId = :batch_id AND jobName = :job_name AND status = 'QUEUED';

-- name: skip_blocked_in_batch
-- A job no worker knows failed: its dependents cannot be known, so every run of the occurrence still
-- waiting on a dependency is skipped rather than left QUEUED forever.
UPDATE JobRun SET status = 'SKIPPED', completedAt = :now, error = :error
WHERE batchId = :batch_id AND status = 'QUEUED' AND blockedBy > 0;

-- name: finish_batch_jobs
-- Count jobs of occurrences as finished (:ids, and per occurrence how many :finished, of which :failed);
-- the rows stay locked until commit, so one finisher sees an occurrence reach zero. completedAt comes
-- first: MySQL evaluates assignments left to right, SQLite all on the old row.
UPDATE JobBatch
SET completedAt = CASE WHEN remaining - CASE id {cases :ids :finished} END <= 0 THEN :now ELSE NULL END,
    remaining = remaining - CASE id {cases :ids :finished} END,
    failed = failed + CASE id {cases :ids :failed} END
WHERE id IN :ids;

-- name: get_batches
-- What is left of some occurrences.
SELECT * FROM JobBatch WHERE id IN :ids;

-- name: get_batch
-- What is left of an occurrence.
SELECT * FROM JobBatch WHERE id = :id;

-- name: count_occurrence
-- Queue mode: record the outcome of a finished occurrence on its schedule.
UPDATE JobSchedule SET runCount = runCount + :succeeded, failureCount = failureCount + :failed, updatedAt = :now
WHERE id = :id;

-- name: long_running_runs
-- Health: runs RUNNING since before :started_before, with their holder's liveness and who holds their schedule.
SELECT r.id, r.jobName, r.scheduleId, r.workerId, r.startedAt, r.queuedAt,
       w.status AS holderStatus, w.lastHeartbeatAt AS holderHeartbeatAt, s.lockedBy AS scheduleLockedBy
FROM JobRun r LEFT JOIN WorkerInstance w ON w.id = r.workerId LEFT JOIN JobSchedule s ON s.id = r.scheduleId
WHERE r.status = 'RUNNING' AND r.startedAt < :started_before
ORDER BY r.id LIMIT 100;

-- name: stranded_queued_runs
-- Health: blocked queued runs whose occurrence has nothing left queued-and-ready or running to unblock them.
SELECT r.id, r.jobName, r.scheduleId FROM JobRun r
WHERE r.status = 'QUEUED' AND r.blockedBy > 0
  AND NOT EXISTS (SELECT 1 FROM JobRun o WHERE o.batchId = r.batchId
                  AND (o.status = 'RUNNING' OR (o.status = 'QUEUED' AND o.blockedBy = 0)))
ORDER BY r.id LIMIT 100;

-- name: queue_depth
-- How many runs wait for a worker.
SELECT COUNT(*) AS queued FROM JobRun WHERE status = 'QUEUED';

-- name: oldest_queued
-- The run that has waited longest.
SELECT id, queuedAt FROM JobRun WHERE status = 'QUEUED' ORDER BY queuedAt LIMIT 1;

-- ---------------------------------------------------------------------------------------------------
-- Alerts (alerts.py)
-- ---------------------------------------------------------------------------------------------------

-- name: insert_alert_state
-- The state row of something that can go wrong; one another process just inserted is left alone.
{insert_ignore} INTO AlertState (subject, active, episode, pending, updatedAt) VALUES (:subject, false, 0, 0, :now);

-- name: lock_alert_state
-- Read the state row under its exclusive lock for this transaction: one process at a time decides about it.
SELECT * FROM AlertState WHERE subject = :subject {for_update};

-- name: get_alert_state
-- One state row.
SELECT * FROM AlertState WHERE subject = :subject;

-- name: update_alert_state
-- Store a decision taken under lock_alert_state.
UPDATE AlertState
SET active = :active, episode = :episode, pending = :pending, since = :since, lastAlertAt = :last_alert_at, updatedAt = :now
WHERE subject = :subject;

-- name: active_alert_states
-- What is alerted on and not recovered yet.
SELECT * FROM AlertState WHERE active = true;

-- name: insert_alert
-- Queue an alert for one webhook; the same event queued again by another process is ignored.
{insert_ignore} INTO AlertOutbox (dedupKey, target, event, scheduleId, runId, body, status, attempts, nextAttemptAt, createdAt)
VALUES (:dedup_key, :target, :event, :schedule_id, :run_id, :body, 'PENDING', 0, :now, :now);

-- name: due_alerts
-- Alerts for one webhook waiting to be sent whose next attempt has come, oldest first.
SELECT * FROM AlertOutbox WHERE status = 'PENDING' AND target = :target AND nextAttemptAt <= :now ORDER BY id LIMIT :limit;

-- name: next_alert_due
-- The earliest next attempt of an alert still to send to one webhook: the sender sleeps until then at most.
SELECT nextAttemptAt FROM AlertOutbox WHERE status = 'PENDING' AND target = :target ORDER BY nextAttemptAt LIMIT 1;

-- name: give_up_stale_alerts
-- Housekeeping: alerts still unsent after the retry window (their webhook's processes are gone) are given up.
UPDATE AlertOutbox SET status = 'GAVE_UP', lastError = :error WHERE status = 'PENDING' AND createdAt < :before;

-- name: claim_alert
-- Take one alert to send: its next attempt moves to :lease_until, so no one else sends it meanwhile.
UPDATE AlertOutbox SET nextAttemptAt = :lease_until, attempts = attempts + 1
WHERE id = :id AND status = 'PENDING' AND nextAttemptAt <= :now;

-- name: alert_sent
-- The webhook took it.
UPDATE AlertOutbox SET status = 'SENT', sentAt = :now WHERE id = :id;

-- name: alert_failed
-- A delivery failed: try again at :next_attempt_at, or give up (:status = 'GAVE_UP').
UPDATE AlertOutbox SET status = :status, nextAttemptAt = :next_attempt_at, lastError = :error WHERE id = :id;

-- name: prune_alerts
-- Maintenance: alerts sent (or given up) before the retention period.
DELETE FROM AlertOutbox WHERE createdAt < :before AND status <> 'PENDING';

-- name: list_alerts
-- Alerts, newest first.
SELECT * FROM AlertOutbox ORDER BY id DESC LIMIT :limit;

-- name: live_instances
-- Instances per type whose heartbeat is younger than HEALTH_MAX_HEARTBEAT_AGE_S, as the health check counts them.
SELECT workerType, COUNT(*) AS live FROM WorkerInstance
WHERE status = 'RUNNING' AND lastHeartbeatAt >= :heartbeat_after GROUP BY workerType;

-- name: overdue_schedules
-- Enabled schedules whose next occurrence was not started within the tolerance (as health.py judges it).
SELECT id, nextRunAt FROM JobSchedule WHERE enabled = true AND nextRunAt < :due_before;

-- name: skip_record_id
-- The id of the JobRun row recording a skipped occurrence (insert_skip_record).
SELECT id FROM JobRun
WHERE scheduleId = :schedule_id AND scheduledFor = :scheduled_for AND jobName = '*' AND `trigger` = 'CRON' AND attempt = 1;

-- ---------------------------------------------------------------------------------------------------
-- Metrics (metrics.py) and the page
-- ---------------------------------------------------------------------------------------------------

-- name: last_success_per_schedule
-- Each schedule's latest completed run.
SELECT scheduleId, completedAt FROM JobRun
WHERE id IN (SELECT MAX(id) FROM JobRun WHERE status = 'COMPLETED' AND scheduleId IS NOT NULL GROUP BY scheduleId);

-- name: last_duration_per_schedule
-- Each schedule's latest finished job run with a duration.
SELECT scheduleId, durationMs FROM JobRun
WHERE id IN (SELECT MAX(id) FROM JobRun WHERE status IN ('COMPLETED', 'FAILED') AND scheduleId IS NOT NULL GROUP BY scheduleId);

-- name: skipped_per_schedule
-- Occurrences recorded as skipped (missed-run policy, late daemon), per schedule.
SELECT scheduleId, COUNT(*) AS skipped FROM JobRun
WHERE status = 'SKIPPED' AND jobName = '*' AND scheduleId IS NOT NULL GROUP BY scheduleId;

-- name: success_rate
-- The design documents' "Job Success Rate" over the runs created since :since (7 days on the page).
SELECT scheduleId, COUNT(*) AS total,
       SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END) AS succeeded,
       SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS failed
FROM JobRun WHERE scheduleId IS NOT NULL AND createdAt > :since GROUP BY scheduleId;
