"""The OpenAPI 3 description of admin_server.py's routes, served at GET /admin/openapi.json.

Kept beside the server and checked against it by the schemathesis test in tests/test_admin_api.py.
"""

from __future__ import annotations

from typing import Any


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


STRING = {"type": "string"}
TIME = nullable({"type": "string", "format": "date-time"})
INTEGER = {"type": "integer"}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": json_response("Bad input: the message names the field or parameter", ref("Error")),
    "401": {
        **json_response("Missing or invalid token", ref("Error")),
        "headers": {"WWW-Authenticate": {"schema": STRING, "required": True}},
    },
    "403": json_response("Valid token without the ADMIN role", ref("Error")),
    "503": json_response("The database does not answer", ref("Error")),
}
NOT_FOUND = {"404": json_response("No such schedule or run", ref("Error"))}
SCHEDULE_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,50}$"},
}
PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {
        "name": "before",
        "in": "query",
        "description": "a run or entry id: return older ones (pagination)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
    },
]
RUN_STATUS = {"type": "string", "enum": ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "SKIPPED"]}
NOTE = {"type": "string", "maxLength": 500}


def operation(
    summary: str,
    responses: dict[str, Any],
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **(ERRORS if secured else {})}}
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    if not secured:
        op["security"] = []
    return op


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Schedule jobs admin API", "version": "1"},
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {
            "get": operation(
                "Database reachability, for the platform's health check",
                {
                    "200": json_response("Healthy", obj({"status": STRING})),
                    "503": json_response("The database does not answer", ref("Error")),
                },
                secured=False,
            )
        },
        "/admin": {
            "get": operation(
                "The admin page: HTML only, its data comes from the routes below",
                {
                    "200": {"description": "The page", "content": {"text/html": {"schema": STRING}}},
                },
                secured=False,
            )
        },
        "/admin/schedules": {
            "get": operation(
                "Every schedule: code definition merged with database state",
                {
                    "200": json_response("Schedules", obj({"schedules": {"type": "array", "items": ref("Schedule")}})),
                },
            )
        },
        "/admin/schedules/{id}": {
            "get": operation(
                "One schedule",
                {
                    "200": json_response("The schedule", obj({"schedule": ref("Schedule")})),
                    **NOT_FOUND,
                },
                [SCHEDULE_ID],
            ),
            "patch": operation(
                "Enable or disable a schedule (the only writable field)",
                {
                    "200": json_response("The schedule after the change", obj({"schedule": ref("Schedule")})),
                    **NOT_FOUND,
                    "409": json_response("The schedule is no longer in code, or not synced yet", ref("Error")),
                    "413": json_response("Body over 64 KiB", ref("Error")),
                },
                [SCHEDULE_ID],
                {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["enabled"],
                                "properties": {"enabled": {"type": "boolean"}, "note": NOTE},
                            }
                        }
                    },
                },
            ),
        },
        "/admin/schedules/{id}/trigger": {
            "post": operation(
                "Run now, under the daemon's claim",
                {
                    "200": json_response("Ran inline", ref("TriggerResult")),
                    "202": json_response("Queued (EXECUTION_MODE=queue)", ref("TriggerResult")),
                    **NOT_FOUND,
                    "409": json_response("Running now, or no longer in code", ref("Error")),
                    "413": json_response("Body over 64 KiB", ref("Error")),
                },
                [SCHEDULE_ID],
                {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "additionalProperties": False, "properties": {"note": NOTE}}
                        }
                    },
                },
            )
        },
        "/admin/schedules/{id}/history": {
            "get": operation(
                "A schedule's runs, newest first",
                {
                    "200": json_response("Runs", ref("RunPage")),
                    **NOT_FOUND,
                },
                [SCHEDULE_ID, *PAGING],
            )
        },
        "/admin/jobs": {
            "get": operation(
                "Runs across schedules, newest first",
                {
                    "200": json_response("Runs", ref("RunPage")),
                },
                [
                    *PAGING,
                    {"name": "status", "in": "query", "schema": RUN_STATUS},
                    {
                        "name": "scheduleId",
                        "in": "query",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 100},
                    },
                    {"name": "jobName", "in": "query", "schema": {"type": "string", "minLength": 1, "maxLength": 100}},
                ],
            )
        },
        "/admin/jobs/{runId}": {
            "get": operation(
                "One run with its log lines",
                {
                    "200": json_response(
                        "The run",
                        obj(
                            {
                                "run": ref("Run"),
                                "logs": {
                                    "type": "array",
                                    "items": obj({"createdAt": TIME, "level": STRING, "message": STRING}),
                                },
                            }
                        ),
                    ),
                    **NOT_FOUND,
                },
                [
                    {
                        "name": "runId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
                    }
                ],
            )
        },
        "/admin/workers": {
            "get": operation(
                "Daemons, workers and admin runs, with heartbeat age",
                {
                    "200": json_response(
                        "Instances",
                        obj(
                            {
                                "workers": {
                                    "type": "array",
                                    "items": obj(
                                        {
                                            "id": STRING,
                                            "workerType": STRING,
                                            "hostname": STRING,
                                            "pid": INTEGER,
                                            "status": STRING,
                                            "startedAt": TIME,
                                            "lastHeartbeatAt": TIME,
                                            "stoppedAt": TIME,
                                            "heartbeatAgeSeconds": {"type": "number"},
                                            "alive": {"type": "boolean"},
                                        }
                                    ),
                                }
                            }
                        ),
                    ),
                },
            )
        },
        "/admin/audit": {
            "get": operation(
                "Changes and manual runs, newest first",
                {
                    "200": json_response(
                        "Entries",
                        obj(
                            {
                                "entries": {
                                    "type": "array",
                                    "items": obj(
                                        {
                                            "id": INTEGER,
                                            "createdAt": TIME,
                                            "actor": STRING,
                                            "action": STRING,
                                            "scheduleId": nullable(STRING),
                                            "note": nullable(STRING),
                                            "remoteAddress": nullable(STRING),
                                        }
                                    ),
                                },
                                "nextBefore": nullable(INTEGER),
                            }
                        ),
                    ),
                },
                PAGING,
            )
        },
        "/admin/health": {
            "get": operation(
                "The health checks of `schedule_daemon.py --health`",
                {
                    "200": json_response(
                        "Checks",
                        obj(
                            {
                                "healthy": {"type": "boolean"},
                                "problems": {"type": "array", "items": STRING},
                                "checks": {"type": "object"},
                            }
                        ),
                    ),
                },
            )
        },
        "/admin/overview": {
            "get": operation(
                "The page's front: each schedule's last outcome, last 20 occurrences "
                "and 7-day success rate; the latest failures",
                {
                    "200": json_response(
                        "Overview",
                        obj(
                            {
                                "schedules": {
                                    "type": "array",
                                    "items": obj(
                                        {
                                            "id": STRING,
                                            "lastOutcome": nullable(STRING),
                                            "occurrences": {"type": "array", "items": ref("Occurrence")},
                                            "successRate7d": nullable(
                                                obj(
                                                    {
                                                        "total": INTEGER,
                                                        "succeeded": INTEGER,
                                                        "failed": INTEGER,
                                                        "percent": {"type": "number"},
                                                    }
                                                )
                                            ),
                                        }
                                    ),
                                },
                                "recentFailures": {"type": "array", "items": ref("Run")},
                            }
                        ),
                    ),
                },
            )
        },
        "/admin/schedules/{id}/occurrences": {
            "get": operation(
                "A schedule's history grouped by occurrence, newest first",
                {
                    "200": json_response(
                        "Occurrences",
                        obj(
                            {
                                "occurrences": {"type": "array", "items": ref("Occurrence")},
                                "nextBefore": nullable(INTEGER),
                            }
                        ),
                    ),
                    **NOT_FOUND,
                },
                [
                    SCHEDULE_ID,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    PAGING[1],
                ],
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus text format, from the database; bearer METRICS_TOKEN or the admin credentials",
                {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": STRING}}},
                },
            )
        },
        "/admin/openapi.json": {
            "get": operation(
                "This document",
                {
                    "200": json_response("OpenAPI 3", {"type": "object"}),
                },
            )
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "ADMIN_TOKEN, or an HS256 JWT with role ADMIN",
            }
        },
        "schemas": {
            "Error": obj({"error": obj({"code": STRING, "message": STRING})}),
            "Schedule": obj(
                {
                    "id": STRING,
                    "name": STRING,
                    "description": STRING,
                    "cron": STRING,
                    "cronDescription": STRING,
                    "timezone": STRING,
                    "executionMode": nullable(STRING),
                    "jobGroup": nullable(STRING),
                    "missedRunPolicy": nullable(STRING),
                    "overlapPolicy": nullable(STRING),
                    "jobs": {"type": "array", "items": STRING},
                    "orphaned": {"type": "boolean"},
                    "synced": {"type": "boolean"},
                    "enabled": {"type": "boolean"},
                    "lastRunAt": TIME,
                    "nextRunAt": TIME,
                    "runCount": INTEGER,
                    "failureCount": INTEGER,
                    "running": {"type": "boolean"},
                    "lockedBy": nullable(STRING),
                    "lockedAt": TIME,
                    "nextRunTimes": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                }
            ),
            "Run": obj(
                {
                    "id": INTEGER,
                    "jobName": STRING,
                    "status": RUN_STATUS,
                    "trigger": STRING,
                    "scheduleId": nullable(STRING),
                    "scheduledFor": TIME,
                    "attempt": INTEGER,
                    "workerId": nullable(STRING),
                    "queuedAt": TIME,
                    "startedAt": TIME,
                    "completedAt": TIME,
                    "durationMs": nullable(INTEGER),
                    "error": nullable(STRING),
                    "createdAt": TIME,
                    "batchId": nullable(STRING),
                }
            ),
            "Occurrence": obj(
                {
                    "key": STRING,
                    "scheduleId": nullable(STRING),
                    "scheduledFor": TIME,
                    "trigger": STRING,
                    "status": {"type": "string", "enum": ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "SKIPPED"]},
                    "startedAt": TIME,
                    "completedAt": TIME,
                    "durationMs": nullable(INTEGER),
                    "error": nullable(STRING),
                    "runs": {"type": "array", "items": ref("Run")},
                },
                [
                    "key",
                    "scheduleId",
                    "scheduledFor",
                    "trigger",
                    "status",
                    "startedAt",
                    "completedAt",
                    "durationMs",
                    "error",
                ],
            ),
            "RunPage": obj({"runs": {"type": "array", "items": ref("Run")}, "nextBefore": nullable(INTEGER)}),
            "TriggerResult": obj(
                {
                    "message": STRING,
                    "jobsExecuted": INTEGER,
                    "succeeded": INTEGER,
                    "failed": INTEGER,
                    "skipped": INTEGER,
                    "jobsQueued": INTEGER,
                    "runIds": {"type": "array", "items": INTEGER},
                    "runs": {"type": "array", "items": ref("Run")},
                },
                ["message", "runs"],
            ),
        },
    },
}
