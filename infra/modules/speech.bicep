// Azure AI Speech for the opt-in transcription (TRANSCRIPTION_ENABLED): keyless, like everything
// else. Local (key) auth is disabled, so the app can only use Entra tokens, and those need the
// account's custom subdomain (regional endpoints accept keys only). The app's managed identity
// gets Cognitive Services Speech User, which allows fast transcription and nothing more.

@description('Name of the Speech account; also its custom subdomain (<name>.cognitiveservices.azure.com).')
param name string

@description('Azure region (fast transcription must be offered there).')
param location string

@description('Tags applied to the account.')
param tags object

@description('Object (principal) id of the app\'s managed identity.')
param principalId string

@description('Private networking: public network access off; the app reaches the account through a private endpoint (main.bicep, vnetEnabled).')
param privateNetworkOnly bool = false

// Cognitive Services Speech User: speech-to-text and text-to-speech data actions only.
var speechUserRoleId = 'f2dc8367-1007-4938-bd23-fe263f013447'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'SpeechServices'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: privateNetworkOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworkOnly ? 'Deny' : 'Allow'
    }
    restrictOutboundNetworkAccess: true
  }
}

resource speechUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, speechUserRoleId)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', speechUserRoleId)
  }
}

output name string = account.name
output id string = account.id
output endpoint string = 'https://${name}.cognitiveservices.azure.com'
