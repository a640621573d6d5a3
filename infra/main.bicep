// Teams calling bot that records a caller's response (Graph call: recordResponse) on Azure
// Functions Flex Consumption. Deploys into an existing resource group:
//   azd up                                   (azure.yaml at the repository root)
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
// See docs/infrastructure.md for the permissions the deployer needs.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

@description('Name of the environment (azd environment name); it seeds the resource token and the azd-env-name tag.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region of every resource except the bot (global). It must offer Flex Consumption.')
@minLength(1)
param location string = resourceGroup().location

@description('Object id of the developer or pipeline running the deployment; when set, it gets the same storage data roles as the app (to inspect recordings and queues). Empty skips it.')
param principalId string = ''

@description('Kind of principal in principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

// ---------------------------------------------------------------------------------------------
// Storage, monitoring, hosting
// ---------------------------------------------------------------------------------------------

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Lifecycle backstop: days after which any blob still in the recordings container is deleted. The app itself deletes recordings after RECORDING_RETENTION_MINUTES; this only catches what it missed.')
@minValue(1)
param recordingBackstopDays int = 1

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Flex Consumption: most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Flex Consumption: memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// ---------------------------------------------------------------------------------------------
// Bot identity, Graph permissions, Azure Bot
// ---------------------------------------------------------------------------------------------

@description('The bot\'s app id (BOT_APP_ID, audience of inbound tokens). Empty: the managed identity is the bot (its client id). Otherwise the client id of a single-tenant Entra app registration.')
param botAppId string = ''

@description('GRAPH_CREDENTIAL_MODE: managedIdentity (the identity is the bot and calls Graph itself) or federated (the identity asserts a token for the botAppId app registration through a federated credential).')
@allowed([
  'managedIdentity'
  'federated'
])
param graphCredentialMode string = 'managedIdentity'

@description('Grant the Graph application permissions with the Microsoft Graph Bicep extension (needs AppRoleAssignment.ReadWrite.All and Application.Read.All). False: an administrator grants them separately.')
param grantGraphPermissions bool = true

@description('Object id of the service principal that receives the Graph permissions. Empty: the managed identity. In federated mode give the object id of the botAppId app registration\'s service principal.')
param graphPermissionPrincipalId string = ''

@description('Graph application roles granted in addition to Calls.AccessMedia.All, by value (e.g. Calls.JoinGroupCall.All, Calls.Initiate.All).')
param additionalGraphAppRoles array = []

@description('Create the Azure Bot resource with the Teams channel, calling enabled and the calling webhook pointing at this app.')
param deployBot bool = false

@description('Azure Bot SKU.')
@allowed([
  'F0'
  'S1'
])
param botSkuName string = 'F0'

@description('Bot display name in Teams.')
param botDisplayName string = 'Record response bot'

@description('Bot Framework messaging endpoint. This app handles calls only; leave empty unless another service handles messages.')
param botMessagingEndpoint string = ''

// ---------------------------------------------------------------------------------------------
// App settings (names and defaults are those of shared/settings.py)
// ---------------------------------------------------------------------------------------------

@description('INBOUND_OPENID_CONFIGURATION_URL: where the signing keys of inbound notification tokens are published.')
param inboundOpenIdConfigurationUrl string = 'https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration'

@description('INBOUND_ALLOWED_ISSUERS: issuers accepted on inbound notification tokens.')
param inboundAllowedIssuers array = [
  'https://graph.microsoft.com'
  'https://api.botframework.com'
]

@description('INBOUND_ALLOWED_TENANTS: tenant ids accepted on inbound tokens (tid claim); empty accepts any tenant.')
param inboundAllowedTenants array = []

@description('GRAPH_BASE_URL.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('BOT_AUTO_ANSWER: answer incoming calls and start recording automatically.')
param botAutoAnswer bool = true

@description('BOT_RECORD_MAX_DURATION_SECONDS: longest answer recorded (Graph allows at most 120).')
@minValue(1)
@maxValue(120)
param botRecordMaxDurationSeconds int = 10

@description('BOT_RECORD_PROMPT_URI: https URL of a WAV prompt played before the beep; empty plays none.')
param botRecordPromptUri string = ''

@description('RECORDING_RETENTION_MINUTES: the cleanup timer deletes each recording this many minutes after it is stored.')
@minValue(1)
param recordingRetentionMinutes int = 60

@description('CLEANUP_SCHEDULE: 6-field NCRONTAB schedule of the cleanup timer.')
param cleanupSchedule string = '0 */5 * * * *'

@description('LEDGER_RETENTION_DAYS: days a recording operation\'s ledger row is kept (it holds no media).')
@minValue(1)
param ledgerRetentionDays int = 7

@description('POISON_MESSAGE_MAX_AGE_MINUTES: age after which the cleanup timer drops poison download jobs.')
@minValue(1)
param poisonMessageMaxAgeMinutes int = 5

@description('RECORDING_MAX_BYTES: largest recording the download worker accepts.')
@minValue(1)
param recordingMaxBytes int = 67108864

@description('RECORDING_ALLOWED_HOST_SUFFIXES: host suffixes a recordingLocation may use; empty leaves the code default.')
param recordingAllowedHostSuffixes array = []

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// Contract names (DESIGN.md): the code reads exactly these.
var recordingsContainerName = 'recordings'
var downloadQueueName = 'recording-downloads'
var ledgerTableName = 'recordingoperations'
var deploymentContainerName = 'deploymentpackage'

var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

var effectiveBotAppId = empty(botAppId) ? identity.outputs.clientId : botAppId
var effectiveGraphPrincipalId = empty(graphPermissionPrincipalId) ? identity.outputs.principalId : graphPermissionPrincipalId

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    recordingsContainerName: recordingsContainerName
    deploymentContainerName: deploymentContainerName
    downloadQueueName: downloadQueueName
    ledgerTableName: ledgerTableName
    recordingBackstopDays: recordingBackstopDays
  }
}

module appStorageRoles 'modules/storage-roles.bicep' = {
  name: 'app-storage-roles'
  params: {
    storageAccountName: storage.outputs.name
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
  }
}

module deployerStorageRoles 'modules/storage-roles.bicep' = if (!empty(principalId)) {
  name: 'deployer-storage-roles'
  params: {
    storageAccountName: storage.outputs.name
    principalId: principalId
    principalType: principalType
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    logRetentionDays: logRetentionDays
    publisherPrincipalId: identity.outputs.principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    azdServiceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    botAppId: effectiveBotAppId
    inboundOpenIdConfigurationUrl: inboundOpenIdConfigurationUrl
    inboundAllowedIssuers: inboundAllowedIssuers
    inboundAllowedTenants: inboundAllowedTenants
    graphBaseUrl: graphBaseUrl
    graphCredentialMode: graphCredentialMode
    botAutoAnswer: botAutoAnswer
    botRecordMaxDurationSeconds: botRecordMaxDurationSeconds
    botRecordPromptUri: botRecordPromptUri
    recordingRetentionMinutes: recordingRetentionMinutes
    cleanupSchedule: cleanupSchedule
    ledgerRetentionDays: ledgerRetentionDays
    poisonMessageMaxAgeMinutes: poisonMessageMaxAgeMinutes
    recordingMaxBytes: recordingMaxBytes
    recordingAllowedHostSuffixes: recordingAllowedHostSuffixes
  }
  // The host reaches storage and Application Insights with the identity as soon as it starts.
  dependsOn: [
    appStorageRoles
    monitoring
  ]
}

module graphPermissions 'modules/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  params: {
    principalId: effectiveGraphPrincipalId
    additionalAppRoles: additionalGraphAppRoles
  }
}

module bot 'modules/bot.bicep' = if (deployBot) {
  name: 'bot'
  params: {
    name: '${abbrs.botServiceBotServices}${resourceToken}'
    tags: tags
    skuName: botSkuName
    displayName: botDisplayName
    msaAppId: effectiveBotAppId
    msaAppType: empty(botAppId) ? 'UserAssignedMSI' : 'SingleTenant'
    identityId: identity.outputs.id
    appHostName: functionApp.outputs.hostName
    messagingEndpoint: botMessagingEndpoint
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd writes them to .azure/<env>/.env)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_HOST_NAME string = functionApp.outputs.hostName
output CALLING_WEBHOOK_URL string = 'https://${functionApp.outputs.hostName}/api/calls'
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output BOT_APP_ID string = effectiveBotAppId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
