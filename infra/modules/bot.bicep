// Azure Bot registration with the Microsoft Teams channel and calling enabled. Graph posts the
// call's notifications to the calling webhook, which is the app's POST /api/calls route.

@description('Azure Bot resource name.')
param name string

@description('Tags applied to the bot.')
param tags object

@description('Bot SKU: F0 (free) or S1.')
@allowed([
  'F0'
  'S1'
])
param skuName string

@description('Display name shown in Teams.')
param displayName string

@description('The bot\'s app id: an Entra app registration\'s client id, or the managed identity\'s client id.')
param msaAppId string

@description('SingleTenant for an Entra app registration, UserAssignedMSI for the managed identity.')
@allowed([
  'SingleTenant'
  'UserAssignedMSI'
])
param msaAppType string

@description('Resource id of the user-assigned identity (used when msaAppType is UserAssignedMSI).')
param identityId string

@description('Host name of the Function App.')
param appHostName string

@description('Bot Framework messaging endpoint; this app handles calling only, so it may stay empty.')
param messagingEndpoint string

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: name
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: skuName
  }
  properties: {
    displayName: displayName
    endpoint: messagingEndpoint
    msaAppId: msaAppId
    msaAppType: msaAppType
    msaAppTenantId: tenant().tenantId
    msaAppMSIResourceId: msaAppType == 'UserAssignedMSI' ? identityId : ''
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource teams 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
      enableCalling: true
      callingWebhook: 'https://${appHostName}/api/calls'
    }
  }
}

output name string = bot.name
output callingWebhook string = 'https://${appHostName}/api/calls'
