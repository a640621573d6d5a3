#!/bin/sh
# azd postprovision hook: build the Teams app package for this environment's bot and print what
# is left to do: an administrator's consent if the Graph permission is not granted yet, the
# upload, the call. It never fails provisioning: everything it does can be redone by hand.
set -u

bot_app_id=${BOT_APP_ID:-}
sp_id=${BOT_SERVICE_PRINCIPAL_ID:-}
tenant=${AZURE_TENANT_ID:-}
graph_app_id=00000003-0000-0000-c000-000000000000
steps=""
step=0
next() {
    step=$((step + 1))
    steps="$steps
  $step. $1"
}

# 1. The Teams app package, with the real bot id.
package="dist/teams-app.zip"
if [ -n "$bot_app_id" ] && command -v make >/dev/null 2>&1 \
    && make --no-print-directory teams-app BOT_APP_ID="$bot_app_id"; then
    echo "Teams app package: $package (bot $bot_app_id)"
else
    echo "Teams app package not built here; build it with: make teams-app BOT_APP_ID=$bot_app_id" >&2
    package="the package from: make teams-app BOT_APP_ID=$bot_app_id"
fi

# 2. Is Calls.AccessMedia.All granted? The deployment granted it, or an administrator may have.
consent="pending"
if [ "${GRAPH_PERMISSIONS_GRANTED:-false}" = "true" ]; then
    consent="granted"
elif [ -n "$sp_id" ] && command -v az >/dev/null 2>&1; then
    role=$(az ad sp show --id "$graph_app_id" \
        --query "appRoles[?value=='Calls.AccessMedia.All'].id" --output tsv 2>/dev/null || true)
    assigned=$(az rest --method GET \
        --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$sp_id/appRoleAssignments" \
        --query 'value[].appRoleId' --output tsv 2>/dev/null || true)
    case "$assigned" in *"${role:-no role found}"*) consent="granted" ;; esac
fi
if [ "$consent" != "granted" ]; then
    next "Ask an administrator (Privileged Role Administrator or Global Administrator) to grant the
     Graph application permission Calls.AccessMedia.All to the bot '${BOT_DISPLAY_NAME:-bot}'
     (app id $bot_app_id, service principal ${sp_id:-<object id>}, tenant $tenant). Either:
       az login --tenant $tenant && az ad app permission admin-consent --id $bot_app_id
     or in the Entra admin center: App registrations > the app > API permissions >
     Grant admin consent for the tenant. Without it the bot cannot answer (Graph 403).
     GET /api/health reports whether the app's Graph token carries the role."
fi

# 3. Where calls go, then upload and call.
if [ -n "${BOT_ENDPOINT_BASE_URL:-}" ]; then
    next "This environment's bot calls ${BOT_ENDPOINT_BASE_URL}/api/calls (a dev tunnel): start it
     (devtunnel host -p 7071 --allow-anonymous) and the app (func start), as docs/teams.md says."
fi
next "Upload $package in Teams (Apps > Manage your apps > Upload an app) or, for everyone, in
     the Teams admin center (Teams apps > Manage apps > Upload new app)."
next "Open the app's chat and select the call button; the bot answers and records after the beep."
echo "
Next steps:$steps
"
exit 0
