// The bot's identity: a single-tenant Entra app registration, its service principal, and a
// federated identity credential on the app that trusts the Function App's user-assigned managed
// identity (Microsoft's "managed identity as a federated identity credential" pattern). The app
// gets a managed-identity token for api://AzureADTokenExchange and presents it as the client
// assertion for a Graph token of this app registration: no secret or certificate exists anywhere.
// Every Microsoft calling sample registers the bot as an app registration like this one.
// The deployer needs Application.ReadWrite.All (or the Application Developer role) in Entra ID.
//
// The same app registration is the management API's resource (docs/security.md): it exposes app
// roles (Recordings.Read, .Record, .Erase, .Audit) assignable to users, groups and managed
// identities, and the identifier URI api://<appId> that callers request tokens for. An optional
// assignment gives one role to one principal (e.g. a downstream Function's managed identity);
// that needs AppRoleAssignment.ReadWrite.All too.

extension microsoftGraphV1

@description('Unique name of the app registration in the tenant (its alternate key for Bicep; immutable).')
param uniqueName string

@description('Display name of the app registration.')
param displayName string

@description('Principal (object) id of the user-assigned managed identity the federated credential trusts.')
param managedIdentityPrincipalId string

@description('Object id of a user, group or service principal (managed identity) to assign a management API role; empty assigns none.')
param managementRoleAssigneePrincipalId string = ''

@description('The management API role that principal gets.')
@allowed([
  'Recordings.Read'
  'Recordings.Record'
  'Recordings.Erase'
  'Recordings.Audit'
])
param managementRoleAssigned string = 'Recordings.Read'

@description('Also declare Calls.JoinGroupCall.All among the permissions the app requires.')
param requestJoinGroupCall bool = false

// Managed identities' tokens are issued by the tenant's v2.0 endpoint; the token exchange audience
// is api://AzureADTokenExchange in the public cloud (the Graph Bicep extension is public-cloud only).
var issuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
var tokenExchangeAudience = 'api://AzureADTokenExchange'

// The management API's roles: values are the code's (shared/auth/management.py, Role); ids are
// stable per app registration so redeployments update rather than replace them.
var managementRoleDescriptions = {
  'Recordings.Read': 'Read a recording\'s status and its short-lived read URL, and list a call\'s recordings.'
  'Recordings.Record': 'Start a recording (recordResponse) on a live call.'
  'Recordings.Erase': 'Erase a recording, or every recording of a call.'
  'Recordings.Audit': 'Read who read, started or erased a recording (the audit trail).'
}
var managementRoles = [for role in items(managementRoleDescriptions): {
  id: guid(uniqueName, role.key)
  value: role.key
  displayName: role.key
  description: role.value
  allowedMemberTypes: [
    'User'
    'Application'
  ]
  isEnabled: true
}]
// A delegated scope exists only so that user tools can ask for a token (Azure CLI is
// pre-authorized: az account get-access-token --resource api://<appId>); the roles decide.
var userAccessScopeId = guid(uniqueName, 'user_impersonation')
var azureCliAppId = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'
var managementApi = {
  // v2 access tokens (aud = the app id); the code accepts v1 (aud = api://<appId>) too.
  requestedAccessTokenVersion: 2
  oauth2PermissionScopes: [
    {
      id: userAccessScopeId
      value: 'user_impersonation'
      type: 'User'
      isEnabled: true
      adminConsentDisplayName: 'Call the recording management API'
      adminConsentDescription: 'Call the recording management API as the signed-in user; what the user may do is decided by the app roles assigned to them.'
      userConsentDisplayName: 'Call the recording management API'
      userConsentDescription: 'Call the recording management API as you, within the roles you were assigned.'
    }
  ]
  preAuthorizedApplications: [
    {
      appId: azureCliAppId
      delegatedPermissionIds: [
        userAccessScopeId
      ]
    }
  ]
}

// The Graph application permissions the bot requires, declared on the app registration. They are
// granted separately (graph-permissions.bicep, or an administrator when the deployer may not):
// declaring them is what gives an administrator the one-step handoff, "Grant admin consent" on
// the app's API permissions page or `az ad app permission admin-consent --id <app id>`, and
// what shows anyone later whether consent was given ("Granted for <tenant>" or not).
var graphAppId = '00000003-0000-0000-c000-000000000000'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

var accessMedia = [
  {
    id: filter(graph.appRoles, role => role.value == 'Calls.AccessMedia.All')[0].id
    type: 'Role'
  }
]
var joinGroupCall = requestJoinGroupCall ? [
  {
    id: filter(graph.appRoles, role => role.value == 'Calls.JoinGroupCall.All')[0].id
    type: 'Role'
  }
] : []

resource botApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  // Single tenant: the Azure Bot is SingleTenant and Graph tokens are issued by this tenant only.
  signInAudience: 'AzureADMyOrg'
  appRoles: managementRoles
  api: managementApi
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: concat(accessMedia, joinGroupCall)
    }
  ]

  resource managedIdentityCredential 'federatedIdentityCredentials@v1.0' = {
    name: '${botApp.uniqueName}/function-app-managed-identity'
    description: 'The Function App\'s user-assigned managed identity is this app\'s only credential.'
    issuer: issuer
    subject: managedIdentityPrincipalId
    audiences: [
      tokenExchangeAudience
    ]
  }
}

// The identifier URI api://<appId> needs the app id, known only once the app exists: a second
// declaration of the same app (same uniqueName) sets it, repeating what the first one declares,
// as Microsoft's samples for the Graph Bicep extension do.
resource botAppIdentifierUri 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  appRoles: managementRoles
  api: managementApi
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: concat(accessMedia, joinGroupCall)
    }
  ]
  identifierUris: [
    'api://${botApp.appId}'
  ]
}

// The Azure Bot (SingleTenant) and Graph's app role assignments need the service principal.
resource botServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: botApp.appId
}

// Optional: one management API role for one principal (a user, a group, a managed identity).
resource managementRoleAssignment 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (!empty(managementRoleAssigneePrincipalId)) {
  appRoleId: guid(uniqueName, managementRoleAssigned)
  principalId: managementRoleAssigneePrincipalId
  resourceId: botServicePrincipal.id
}

output appId string = botApp.appId
output identifierUri string = botAppIdentifierUri.identifierUris[0]
output servicePrincipalId string = botServicePrincipal.id
