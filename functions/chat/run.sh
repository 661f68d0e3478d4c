#!/bin/sh
# The streaming chat (template.yaml: ChatStreamFunction): the same chat app under uvicorn,
# behind the Lambda Web Adapter, which relays its Server-Sent Events as they are written.
# Its Function URL is not behind API Gateway, so it serves `signed_in_app`: every request
# needs the API's JWT (401 otherwise), and it will not start without a JWT key.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT:-.}:${PYTHONPATH:-}"
exec python -m uvicorn app:signed_in_app --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log
