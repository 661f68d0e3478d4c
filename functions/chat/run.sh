#!/bin/sh
# The streaming chat (template.yaml: ChatStreamFunction): the same chat app under uvicorn,
# behind the Lambda Web Adapter, which relays its Server-Sent Events as they are written.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT:-.}:${PYTHONPATH:-}"
exec python -m uvicorn app:app --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log
