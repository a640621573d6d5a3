// Azure Bot registration (single tenant) with the Microsoft Teams channel and calling enabled.
// Graph posts the call's notifications to the calling webhook, which is the app's POST /api/calls.

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

@description('The bot\'s app id: the client id of the single-tenant Entra app registration.')
@minLength(36)
@maxLength(36)
param msaAppId string

@description('Host name of the Function App.')
param appHostName string

@description('Base URL of the bot\'s endpoints. Empty: https://<app host>. A dev environment gives its dev tunnel here (docs/teams.md).')
param endpointBaseUrl string = ''

@description('Bot Framework messaging endpoint (https). Empty: <endpoint base>/api/messages.')
param messagingEndpoint string

var endpointBase = empty(endpointBaseUrl) ? 'https://${appHostName}' : endpointBaseUrl
var callingWebhook = '${endpointBase}/api/calls'

// The Bot Service requires an endpoint (BotProperties.endpoint is required in its REST API) and
// Azure Policy's built-in "Bot Service endpoint should be a valid HTTPS URI" audits or denies
// anything else. Teams sends calls to the calling webhook, never to this endpoint; it only
// receives Bot Framework activities (app installed, a chat message to the bot), at the app's
// /api/messages unless messagingEndpoint names another service.
var effectiveMessagingEndpoint = empty(messagingEndpoint) ? '${endpointBase}/api/messages' : messagingEndpoint

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
    endpoint: effectiveMessagingEndpoint
    msaAppId: msaAppId
    msaAppType: 'SingleTenant'
    msaAppTenantId: tenant().tenantId
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
      callingWebhook: callingWebhook
    }
  }
}

output name string = bot.name
output id string = bot.id
output messagingEndpoint string = effectiveMessagingEndpoint
output callingWebhook string = callingWebhook
