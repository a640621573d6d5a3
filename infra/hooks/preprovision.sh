#!/bin/sh
# azd preprovision hook: can this deployer grant the Graph application permission
# Calls.AccessMedia.All (admin consent)? Only a Privileged Role Administrator or a Global
# Administrator can. If the deployer holds neither (checked with `az rest` on their active
# directory roles), GRANT_GRAPH_PERMISSIONS=false is set for this environment, so `azd up`
# succeeds and the postprovision hook prints the administrator's step. A value you set yourself
# (azd env set GRANT_GRAPH_PERMISSIONS ...) is never changed.
set -u

PRIVILEGED_ROLE_ADMINISTRATOR=e8611ab8-c189-46e8-94e1-60213ab1f814
GLOBAL_ADMINISTRATOR=62e90394-69f5-4237-9190-012177145e10

if [ -n "${GRANT_GRAPH_PERMISSIONS:-}" ]; then
    echo "Graph permission: GRANT_GRAPH_PERMISSIONS=$GRANT_GRAPH_PERMISSIONS (set in this environment), kept."
    exit 0
fi
if [ "${AZURE_PRINCIPAL_TYPE:-User}" != "User" ]; then
    echo "Graph permission: deploying as a ${AZURE_PRINCIPAL_TYPE}; set GRANT_GRAPH_PERMISSIONS explicitly (true needs AppRoleAssignment.ReadWrite.All for it)."
    exit 0
fi
if ! command -v az >/dev/null 2>&1; then
    echo "Graph permission: the Azure CLI is not installed, so your directory roles cannot be checked."
    echo "  The deployment will try to grant Calls.AccessMedia.All; without Privileged Role Administrator"
    echo "  or Global Administrator, run: azd env set GRANT_GRAPH_PERMISSIONS false"
    exit 0
fi
if ! roles=$(az rest --method GET \
    --uri 'https://graph.microsoft.com/v1.0/me/transitiveMemberOf/microsoft.graph.directoryRole?$select=roleTemplateId' \
    --query 'value[].roleTemplateId' --output tsv 2>/dev/null); then
    echo "Graph permission: could not read your directory roles with the Azure CLI (az login --tenant ${AZURE_TENANT_ID:-<tenant>}?)."
    echo "  The deployment will try the grant; if you may not, run: azd env set GRANT_GRAPH_PERMISSIONS false"
    exit 0
fi
case "$roles" in
    *"$PRIVILEGED_ROLE_ADMINISTRATOR"* | *"$GLOBAL_ADMINISTRATOR"*)
        echo "Graph permission: you hold Privileged Role Administrator or Global Administrator; the deployment grants Calls.AccessMedia.All."
        exit 0
        ;;
esac
echo "Graph permission: you hold neither Privileged Role Administrator nor Global Administrator (active roles;"
echo "  a role eligible in PIM counts only once activated). Deploying without the grant:"
echo "  GRANT_GRAPH_PERMISSIONS=false. After provisioning, the step for an administrator is printed."
azd env set GRANT_GRAPH_PERMISSIONS false
