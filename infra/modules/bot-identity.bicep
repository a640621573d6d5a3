// The bot's identity: a single-tenant Entra app registration, its service principal, and a
// federated identity credential on the app that trusts the Function App's user-assigned managed
// identity (Microsoft's "managed identity as a federated identity credential" pattern). The app
// gets a managed-identity token for api://AzureADTokenExchange and presents it as the client
// assertion for a Graph token of this app registration: no secret or certificate exists anywhere.
// Every Microsoft calling sample registers the bot as an app registration like this one.
// The deployer needs Application.ReadWrite.All (or the Application Developer role) in Entra ID.

extension microsoftGraphV1

@description('Unique name of the app registration in the tenant (its alternate key for Bicep; immutable).')
param uniqueName string

@description('Display name of the app registration.')
param displayName string

@description('Principal (object) id of the user-assigned managed identity the federated credential trusts.')
param managedIdentityPrincipalId string

@description('Also declare Calls.JoinGroupCall.All among the permissions the app requires.')
param requestJoinGroupCall bool = false

// Managed identities' tokens are issued by the tenant's v2.0 endpoint; the token exchange audience
// is api://AzureADTokenExchange in the public cloud (the Graph Bicep extension is public-cloud only).
var issuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
var tokenExchangeAudience = 'api://AzureADTokenExchange'

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

// The Azure Bot (SingleTenant) and Graph's app role assignments need the service principal.
resource botServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: botApp.appId
}

output appId string = botApp.appId
output servicePrincipalId string = botServicePrincipal.id
