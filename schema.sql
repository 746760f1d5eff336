-- Schema of the schedule jobs system, written in MySQL's dialect (the production database).
--
-- Each "-- migration: N" block is applied once, in order, and recorded in SchemaVersion, so a newer
-- release upgrades an existing database without losing rows. Never edit a released block: add a new one.
-- SQLite reads the same text after db.py rewrites the two MySQL-only spellings (AUTO_INCREMENT keys and
-- ENGINE clauses). All times are UTC, to the millisecond; the application writes every one of them.

-- migration: 1
CREATE TABLE JobSchedule (
  id              VARCHAR(50)  NOT NULL PRIMARY KEY,   -- the schedule id in definitions.py
  name            VARCHAR(200) NOT NULL,
  cron            VARCHAR(100) NOT NULL,               -- copied from code so a change is noticed at sync
  timezone        VARCHAR(64)  NOT NULL,
  enabled         BOOLEAN      NOT NULL DEFAULT false, -- the admin's switch; code never changes it
  lockedAt        DATETIME(3)  NULL,                   -- lease: set by the claim, renewed while running
  lockedBy        VARCHAR(100) NULL,                   -- WorkerInstance.id of the holder
  lastRunAt       DATETIME(3)  NULL,
  nextRunAt       DATETIME(3)  NULL,                   -- NULL while disabled
  runCount        INT          NOT NULL DEFAULT 0,     -- occurrences whose jobs all completed
  failureCount    INT          NOT NULL DEFAULT 0,     -- occurrences with a failed job or a dead runner
  createdAt       DATETIME(3)  NOT NULL,
  updatedAt       DATETIME(3)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX JobSchedule_enabled_nextRunAt ON JobSchedule (enabled, nextRunAt);
CREATE INDEX JobSchedule_lockedAt ON JobSchedule (lockedAt);

CREATE TABLE JobRun (
  id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  jobName         VARCHAR(100) NOT NULL,               -- '*' for a record about a whole occurrence
  `trigger`       VARCHAR(20)  NOT NULL,               -- CRON | MANUAL
  scheduleId      VARCHAR(50)  NULL,
  scheduledFor    DATETIME(3)  NULL,                   -- the occurrence this run belongs to
  batchId         VARCHAR(36)  NULL,                   -- the runs of one occurrence share it
  attempt         INT          NOT NULL DEFAULT 1,
  status          VARCHAR(20)  NOT NULL,               -- QUEUED | RUNNING | COMPLETED | FAILED | SKIPPED
  workerId        VARCHAR(100) NULL,                   -- WorkerInstance.id that ran it
  queuedAt        DATETIME(3)  NULL,
  startedAt       DATETIME(3)  NULL,
  completedAt     DATETIME(3)  NULL,
  durationMs      INT          NULL,
  error           TEXT         NULL,                   -- message and traceback, or why it was skipped
  createdAt       DATETIME(3)  NOT NULL,
  CONSTRAINT JobRun_schedule FOREIGN KEY (scheduleId) REFERENCES JobSchedule (id) ON DELETE SET NULL,
  -- The last line of defence for "exactly once": one row per job, occurrence, trigger and attempt.
  CONSTRAINT JobRun_occurrence UNIQUE (scheduleId, scheduledFor, jobName, `trigger`, attempt)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX JobRun_scheduleId ON JobRun (scheduleId);
CREATE INDEX JobRun_status ON JobRun (status, workerId);
CREATE INDEX JobRun_createdAt ON JobRun (createdAt);

CREATE TABLE JobLog (
  id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  runId           BIGINT       NOT NULL,
  createdAt       DATETIME(3)  NOT NULL,
  level           VARCHAR(10)  NOT NULL,
  message         TEXT         NOT NULL,
  CONSTRAINT JobLog_run FOREIGN KEY (runId) REFERENCES JobRun (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX JobLog_runId ON JobLog (runId);

CREATE TABLE WorkerInstance (
  id              VARCHAR(100) NOT NULL PRIMARY KEY,
  workerType      VARCHAR(30)  NOT NULL,               -- schedule_daemon | job_worker | admin_server
  hostname        VARCHAR(255) NOT NULL,
  pid             INT          NOT NULL,
  status          VARCHAR(20)  NOT NULL,               -- RUNNING | STOPPED | DEAD
  startedAt       DATETIME(3)  NOT NULL,
  lastHeartbeatAt DATETIME(3)  NOT NULL,
  stoppedAt       DATETIME(3)  NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX WorkerInstance_type_status ON WorkerInstance (workerType, status);

-- migration: 2
-- Who enabled, disabled or ran what, when, from where, and why.
CREATE TABLE AdminAudit (
  id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  createdAt       DATETIME(3)  NOT NULL,
  actor           VARCHAR(200) NOT NULL,               -- the JWT's sub, or 'admin-token'
  action          VARCHAR(20)  NOT NULL,               -- enable | disable | trigger
  scheduleId      VARCHAR(50)  NULL,
  note            VARCHAR(500) NULL,
  remoteAddress   VARCHAR(64)  NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX AdminAudit_scheduleId ON AdminAudit (scheduleId);

-- migration: 3
-- Queue mode: the runs of an occurrence wait in JobRun (QUEUED) for a job worker; JobBatch counts
-- what is left of each occurrence so that exactly one worker records the occurrence's outcome.
ALTER TABLE JobRun ADD COLUMN blockedBy INT NOT NULL DEFAULT 0;    -- dependencies not completed yet
ALTER TABLE JobRun ADD COLUMN availableAt DATETIME(3) NULL;         -- claimable from (retry backoff)
CREATE INDEX JobRun_queue ON JobRun (status, blockedBy, availableAt);
CREATE INDEX JobRun_batchId ON JobRun (batchId);
CREATE TABLE JobBatch (
  id              VARCHAR(36)  NOT NULL PRIMARY KEY,   -- JobRun.batchId
  scheduleId      VARCHAR(50)  NULL,
  scheduledFor    DATETIME(3)  NOT NULL,
  `trigger`       VARCHAR(20)  NOT NULL,
  jobs            INT          NOT NULL,
  remaining       INT          NOT NULL,               -- jobs not finished (completed, failed for good or skipped)
  failed          INT          NOT NULL DEFAULT 0,
  createdAt       DATETIME(3)  NOT NULL,
  completedAt     DATETIME(3)  NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- migration: 5
-- Supervised execution captures everything a job prints; JOB_LOG_RETENTION_DAYS prunes old lines by age, in batches.
CREATE INDEX JobLog_createdAt ON JobLog (createdAt);

-- migration: 6
-- Alerts. AlertState is one row per thing that can be wrong (a schedule failing or overdue, no live
-- daemon or worker): the watchdogs and run paths of every process lock it to decide, once, whether an
-- event alerts. AlertOutbox holds each alert once per webhook (target: a hash of the URL, never the
-- URL); any process that knows the URL delivers it, retrying with backoff.
CREATE TABLE AlertState (
  subject         VARCHAR(120) NOT NULL PRIMARY KEY,   -- failing:<id> | overdue:<id> | daemon_down | worker_down
  active          BOOLEAN      NOT NULL DEFAULT false, -- alerted on and not recovered yet
  episode         INT          NOT NULL DEFAULT 0,     -- how many times it went wrong: part of the alert keys
  pending         INT          NOT NULL DEFAULT 0,     -- failures since the last alert (not alerted on)
  since           DATETIME(3)  NULL,
  lastAlertAt     DATETIME(3)  NULL,
  updatedAt       DATETIME(3)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE AlertOutbox (
  id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  dedupKey        VARCHAR(200) NOT NULL,               -- the event: run_failed:<runId>, recovered:<subject>:<episode> ...
  target          VARCHAR(16)  NOT NULL,               -- sha256 of the webhook URL, first 16 hex digits
  event           VARCHAR(30)  NOT NULL,
  scheduleId      VARCHAR(50)  NULL,
  runId           BIGINT       NULL,
  body            TEXT         NOT NULL,               -- the JSON POSTed
  status          VARCHAR(20)  NOT NULL,               -- PENDING | SENT | GAVE_UP
  attempts        INT          NOT NULL DEFAULT 0,
  nextAttemptAt   DATETIME(3)  NOT NULL,               -- also the lease of the process sending it
  lastError       VARCHAR(500) NULL,
  createdAt       DATETIME(3)  NOT NULL,
  sentAt          DATETIME(3)  NULL,
  CONSTRAINT AlertOutbox_once UNIQUE (dedupKey, target)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX AlertOutbox_due ON AlertOutbox (status, nextAttemptAt);
-- /metrics and the page: a schedule's latest runs by status without reading its whole history.
CREATE INDEX JobRun_schedule_status ON JobRun (scheduleId, status, id);
