// Microsoft Graph application permissions (admin consent) for the bot's service principal,
// granted with the Microsoft Graph Bicep extension (see ../bicepconfig.json).
// The deployer needs AppRoleAssignment.ReadWrite.All and Application.Read.All in Entra ID.
// Role ids are looked up by their value on Graph's own service principal, never hard-coded.

extension microsoftGraphV1

@description('Object id of the bot app registration\'s service principal, which receives the roles.')
param principalId string

@description('Also grant Calls.JoinGroupCall.All (bots invited to group calls or meetings).')
param grantJoinGroupCall bool

// Microsoft Graph's well-known application id (the same in every tenant).
var graphAppId = '00000003-0000-0000-c000-000000000000'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// Answering calls, recordResponse and downloading the recording need Calls.AccessMedia.All; a
// user calling the bot peer-to-peer needs nothing else.
resource accessMedia 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: filter(graph.appRoles, role => role.value == 'Calls.AccessMedia.All')[0].id
  principalId: principalId
  resourceId: graph.id
}

resource joinGroupCall 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (grantJoinGroupCall) {
  appRoleId: filter(graph.appRoles, role => role.value == 'Calls.JoinGroupCall.All')[0].id
  principalId: principalId
  resourceId: graph.id
}

output accessMediaAppRoleId string = accessMedia.appRoleId
