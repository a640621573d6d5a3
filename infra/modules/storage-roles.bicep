// Data-plane roles for one principal on the storage account (no keys anywhere: every client,
// the Functions host included, authenticates with Entra ID).

@description('Name of the existing storage account.')
param storageAccountName string

@description('Object (principal) id that receives the roles.')
param principalId string

@description('ServicePrincipal for the managed identity, User (or Group/ServicePrincipal) for the deployer.')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string

// Storage Blob Data Owner: the Functions host needs it (blob leases, deployment package);
// Storage Queue Data Contributor: download jobs and poison messages;
// Storage Table Data Contributor: the operations ledger.
var roleDefinitionIds = [
  'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in roleDefinitionIds: {
  name: guid(account.id, principalId, roleId)
  scope: account
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]
