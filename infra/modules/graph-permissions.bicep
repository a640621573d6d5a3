// Microsoft Graph application permissions (admin consent) for the principal that calls Graph,
// granted with the Microsoft Graph Bicep extension (see ../bicepconfig.json).
// The deployer needs AppRoleAssignment.ReadWrite.All and Application.Read.All in Entra ID.
// Role ids are looked up by their value on Graph's own service principal, never hard-coded.

extension microsoftGraphV1

@description('Object id of the service principal that receives the roles (the managed identity\'s principal id, or the bot app registration\'s service principal in federated mode).')
param principalId string

@description('Further Graph application roles to grant, by value (e.g. Calls.JoinGroupCall.All, Calls.Initiate.All).')
param additionalAppRoles array

// Microsoft Graph's well-known application id (the same in every tenant).
var graphAppId = '00000003-0000-0000-c000-000000000000'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// recordResponse needs Calls.AccessMedia.All (application permission).
resource accessMedia 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: filter(graph.appRoles, role => role.value == 'Calls.AccessMedia.All')[0].id
  principalId: principalId
  resourceId: graph.id
}

resource additional 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for roleValue in additionalAppRoles: {
  appRoleId: filter(graph.appRoles, role => role.value == roleValue)[0].id
  principalId: principalId
  resourceId: graph.id
}]

output accessMediaAppRoleId string = accessMedia.appRoleId
