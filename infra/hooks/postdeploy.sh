#!/bin/sh
# azd postdeploy hook: the deployed app must answer GET /api/health with 200 (bounded wait while
# it starts). A failure fails `azd deploy`/`azd up` with the reason.
set -u
host=${AZURE_FUNCTION_APP_HOST_NAME:?AZURE_FUNCTION_APP_HOST_NAME is not in the azd environment: run azd provision first}
exec sh "$(dirname "$0")/smoke-check.sh" "https://$host/api/health"
