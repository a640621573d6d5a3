// Teams calling bot that records a caller's response (Graph call: recordResponse) on Azure
// Functions Flex Consumption. Subscription scope, as the azd templates do: the deployment creates
// the resource group and deploys every module into it.
//   azd up                                   (azure.yaml at the repository root)
//   az deployment sub create -l <region> -f infra/main.bicep -p infra/main.bicepparam
// See docs/infrastructure.md for the permissions the deployer needs.

targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

@description('Name of the environment (azd environment name); it seeds the resource token, the resource group name and the azd-env-name tag.')
@minLength(1)
@maxLength(64)
param environmentName string

// Regions that offer Flex Consumption, as listed by the azd Flex Consumption quickstart template
// (Azure-Samples/functions-quickstart-python-http-azd); `az functionapp list-flexconsumption-locations`
// gives the current list. The early-access region eastus2euap is left out.
@description('Azure region of every resource except the bot (global). Only regions that offer Flex Consumption.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the resource group to create. Empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the developer or pipeline running the deployment; when set, it gets the same storage data roles as the app (to inspect recordings and queues) and Monitoring Metrics Publisher on Application Insights. Empty skips both.')
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

@description('Python version of the Function App (Flex Consumption offers 3.10-3.13). The default is the newest version the whole test suite passes on (Makefile SUPPORTED_PYTHONS).')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.12'

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

@description('Flex Consumption always-ready instances for the http group (the calling webhook and every HTTP route). 1 answers an incoming call after idle without a cold start; 0 saves the baseline charge and risks missing Graph\'s 15-second answer deadline. See docs/infrastructure.md for the cost.')
@minValue(0)
@maxValue(20)
param alwaysReadyHttpInstanceCount int = 1

@description('Flex Consumption always-ready instances for the download worker (function:download_recording). 1 starts the download within seconds after idle; 0 risks losing recordings the platform discards soon after the call. See docs/infrastructure.md for the cost.')
@minValue(0)
@maxValue(20)
param alwaysReadyDownloadInstanceCount int = 1

// ---------------------------------------------------------------------------------------------
// Private networking (docs/infrastructure.md, "Private networking")
// ---------------------------------------------------------------------------------------------

@description('Private networking, as the azd Flex Consumption quickstarts offer it (VNET_ENABLED): the Function App joins a delegated subnet and reaches blob, queue and table (and Speech when transcription is on) through private endpoints and private DNS zones; their public network access is turned off. The app\'s own inbound stays public: Graph must reach the calling webhook. Costs per endpoint-hour: see the doc.')
param vnetEnabled bool = false

// ---------------------------------------------------------------------------------------------
// Alerts (docs/operations.md says what each one means and what to do)
// ---------------------------------------------------------------------------------------------

@description('Create the alert rules and the "calls today" workbook.')
param deployAlerts bool = true

@description('Resource id of an existing action group the alerts notify. Empty: alerts show in the portal only.')
param alertActionGroupId string = ''

@description('Alert when a call is answered more than this many ms after its notification (Graph drops a call not answered within 15 000 ms).')
@minValue(1000)
@maxValue(15000)
param answerLatencyAlertMs int = 10000

@description('Alert when a recording is stored more than this many ms after its completion notification (the platform discards recordings soon after the call).')
@minValue(1000)
param storedLatencyAlertMs int = 30000

@description('Alert when at least this many recordings fail, are poisoned or abandoned within 15 minutes.')
@minValue(1)
param recordingFailureAlertCount int = 5

// ---------------------------------------------------------------------------------------------
// Bot identity, Graph permissions, Azure Bot
// ---------------------------------------------------------------------------------------------

@description('Client id of an existing single-tenant Entra app registration to use as the bot. Empty (default): the deployment creates the app registration, its service principal and a federated credential that trusts the app\'s managed identity. An existing app needs that federated credential added by you (docs/infrastructure.md).')
param botAppId string = ''

@description('Grant the Graph application permissions to the bot\'s service principal with the Microsoft Graph Bicep extension (admin consent). False: an administrator grants them separately.')
param grantGraphPermissions bool = true

@description('Also grant Calls.JoinGroupCall.All, for a bot that is invited to group calls or meetings. A user calling the bot peer-to-peer needs only Calls.AccessMedia.All.')
param grantJoinGroupCall bool = false

@description('Object id of the service principal of an existing app registration (botAppId). Needed only with botAppId and grantGraphPermissions; ignored otherwise.')
param graphPermissionPrincipalId string = ''

@description('Create the Azure Bot resource with the Teams channel, calling enabled and the calling webhook pointing at this app.')
param deployBot bool = true

@description('Azure Bot SKU.')
@allowed([
  'F0'
  'S1'
])
param botSkuName string = 'F0'

@description('Bot display name in Teams; also the display name of the bot\'s app registration.')
param botDisplayName string = 'Record response bot'

@description('Bot Framework messaging endpoint (https). Empty: <bot endpoint base>/api/messages. See docs/infrastructure.md.')
param botMessagingEndpoint string = ''

@description('Base URL the Azure Bot sends calls (/api/calls) and messages (/api/messages) to. Empty (production): https://<this Function App>. A dev environment (docs/teams.md) sets its dev tunnel here, so its own bot calls a laptop and the production bot is never touched.')
param botEndpointBaseUrl string = ''

// ---------------------------------------------------------------------------------------------
// Management API: Entra ID tokens with the bot app's roles, audit trail (docs/security.md)
// ---------------------------------------------------------------------------------------------

@description('MANAGEMENT_FUNCTION_KEYS: off in Azure (default), so every management route needs an Entra ID token for api://<bot app id> carrying the route\'s app role. True turns them back into function-key routes: development only.')
param managementFunctionKeys bool = false

@description('AUDIT_RETENTION_DAYS: days the audit rows of the management API are kept; at least ledgerRetentionDays.')
@minValue(1)
param auditRetentionDays int = 90

@description('Object id of a user, group or managed identity (service principal) to assign one management API role at deployment; empty assigns none. Needs the created app registration (botAppId empty).')
param managementRoleAssigneePrincipalId string = ''

@description('The management API role assigned to managementRoleAssigneePrincipalId.')
@allowed([
  'Recordings.Read'
  'Recordings.Record'
  'Recordings.Erase'
  'Recordings.Audit'
])
param managementRoleAssigned string = 'Recordings.Read'

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

@description('INBOUND_ALLOWED_TENANTS: tenant ids accepted on inbound tokens (tid claim). Default: the deploying tenant, the only one the bot\'s single-tenant Graph credential serves. List other tenants explicitly.')
@minLength(1)
param inboundAllowedTenants array = [
  tenant().tenantId
]

@description('GRAPH_BASE_URL.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('BOT_AUTO_ANSWER: answer incoming calls and start recording automatically.')
param botAutoAnswer bool = true

@description('BOT_RECORD_MAX_DURATION_SECONDS: longest answer recorded (Graph allows at most 120).')
@minValue(1)
@maxValue(120)
param botRecordMaxDurationSeconds int = 10

@description('BOT_RECORD_PROMPT_URI: https URL of a WAV prompt played before the beep; empty plays the shipped notice, none plays no prompt.')
param botRecordPromptUri string = ''

@description('BOT_RECORD_INITIAL_SILENCE_SECONDS: initialSilenceTimeoutInSeconds of each recording.')
@minValue(1)
@maxValue(120)
param botRecordInitialSilenceSeconds int = 5

@description('BOT_RECORD_MAX_SILENCE_SECONDS: maxSilenceTimeoutInSeconds of each recording.')
@minValue(1)
@maxValue(120)
param botRecordMaxSilenceSeconds int = 5

@description('BOT_RECORD_PLAY_BEEP: play a beep before recording.')
param botRecordPlayBeep bool = true

@description('BOT_RECORD_STOP_TONES: DTMF tones that end a recording.')
param botRecordStopTones array = [
  '#'
]

@description('BOT_REPROMPT_URI: https URL of the WAV played before a new attempt after silence; empty plays the shipped re-prompt, none plays nothing.')
param botRepromptUri string = ''

@description('BOT_THANK_YOU_PROMPT_URI: https URL of the WAV played once the recording is stored; empty plays the shipped thank-you, none plays nothing.')
param botThankYouPromptUri string = ''

@description('BOT_RECORD_ATTEMPTS: recordings per call while the caller stays silent (1 = no re-prompt).')
@minValue(1)
@maxValue(5)
param botRecordAttempts int = 2

@description('BOT_HANG_UP_AFTER_RECORDING: hang up after the thank-you.')
param botHangUpAfterRecording bool = true

@description('BOT_HANG_UP_WAIT_SECONDS: longest wait for the recording to be stored before the bot hangs up anyway.')
@minValue(0)
@maxValue(600)
param botHangUpWaitSeconds int = 60

@description('BOT_CONFIRM_RECORDING: play the recording back and ask "1 to keep, 2 to record again".')
param botConfirmRecording bool = false

@description('BOT_CONFIRM_PROMPT_URI: https URL of the confirmation question; empty plays the shipped one, none turns the confirmation off.')
param botConfirmPromptUri string = ''

@description('BOT_CONFIRM_TIMEOUT_SECONDS: how long the bot waits for 1 or 2.')
@minValue(1)
@maxValue(19)
param botConfirmTimeoutSeconds int = 5

@description('RECORDING_RETENTION_MINUTES: the cleanup timer deletes each recording this many minutes after it is stored.')
@minValue(1)
param recordingRetentionMinutes int = 60

@description('CALLER_IDENTITY: how much of a caller\'s identity the ledger keeps (full, masked, none).')
@allowed(['full', 'masked', 'none'])
param callerIdentity string = 'full'

@description('CLEANUP_SCHEDULE: 6-field NCRONTAB schedule of the cleanup timer.')
param cleanupSchedule string = '0 */5 * * * *'

@description('LEDGER_RETENTION_DAYS: days a recording operation\'s ledger row is kept (it holds no media).')
@minValue(1)
param ledgerRetentionDays int = 7

@description('POISON_MESSAGE_MAX_AGE_MINUTES: age after which the cleanup timer drops poison download jobs.')
@minValue(1)
param poisonMessageMaxAgeMinutes int = 5

@description('ABANDON_RUNNING_AFTER_MINUTES: a recording still running this long after its call ended is settled as abandoned.')
@minValue(1)
param abandonRunningAfterMinutes int = 10

@description('STATUS_URL_TTL_MINUTES: validity of the read URL the status API returns.')
@minValue(1)
@maxValue(60)
param statusUrlTtlMinutes int = 5

@description('RECORDING_MAX_BYTES: largest recording the download worker accepts.')
@minValue(1)
param recordingMaxBytes int = 67108864

@description('RECORDING_ALLOWED_HOST_SUFFIXES: host suffixes a recordingLocation may use; empty leaves the code default.')
param recordingAllowedHostSuffixes array = []

@description('TELEMETRY_SAMPLING_RATIO: share of recordings whose whole trace (webhook to stored) reaches Application Insights, from 0 to 1, as text (Bicep has no decimals). Log events are always kept.')
param telemetrySamplingRatio string = '1.0'

@description('Transcription (opt-in, docs/transcription.md): deploy an Azure AI Speech account (local auth off, custom subdomain), grant the app Cognitive Services Speech User and set TRANSCRIPTION_*.')
param transcription bool = false

@description('TRANSCRIPTION_LOCALES: candidate locales of the answers; empty lets Speech identify the language.')
param transcriptionLocales array = []

@description('TRANSCRIPTION_KEEP_AUDIO: false deletes each recording as soon as its transcript is stored.')
param transcriptionKeepAudio bool = true

@description('Recording lifecycle events (opt-in, docs/events.md): deploy an Event Grid custom topic (CloudEvents 1.0, local auth off), grant the app EventGrid Data Sender and set EVENTS_ENDPOINT.')
param events bool = false

@description('EVENTS_TYPE_PREFIX: reverse-DNS prefix of the event types (<prefix>.recording.<step>.v1).')
param eventsTypePrefix string = 'org.example.callrecording'

@description('EVENTS_REDRIVE_AFTER_MINUTES: an event still owed this long after its step is re-sent by the sweep.')
@minValue(1)
@maxValue(1440)
param eventsRedriveAfterMinutes int = 5

@description('EVENTS_PUBLISH_TIMEOUT_SECONDS: one publish\'s deadline; past it the event is retried from the recording-events queue.')
@minValue(1)
@maxValue(60)
param eventsPublishTimeoutSeconds int = 10

@description('An optional subscription on the topic: \'\' (none), \'WebHook\' (eventsWebhookUrl) or \'StorageQueue\' (recording-events-delivered in the app\'s storage account); dead letters go to the recording-events-deadletter container.')
@allowed([
  ''
  'WebHook'
  'StorageQueue'
])
param eventsSubscriptionEndpointType string = ''

@description('The webhook of a WebHook subscription (https, answering the CloudEvents validation handshake).')
param eventsWebhookUrl string = ''

@description('TRANSCRIPTION_MAX_RESPONSE_BYTES: the most of a Speech answer read, and of the transcript stored from it.')
@minValue(65536)
@maxValue(67108864)
param transcriptionMaxResponseBytes int = 4194304

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// Contract names (README, "Architecture": storage names): the code reads exactly these.
var recordingsContainerName = 'recordings'
var downloadQueueName = 'recording-downloads'
var ledgerTableName = 'recordingoperations'
var deploymentContainerName = 'deploymentpackage'

var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'

// Private networking (vnetEnabled): one private endpoint per storage service the app uses, each
// with the private DNS zone its host names resolve through, plus Speech's when it is deployed.
var blobPrivateDnsZoneName = 'privatelink.blob.${environment().suffixes.storage}'
var queuePrivateDnsZoneName = 'privatelink.queue.${environment().suffixes.storage}'
var tablePrivateDnsZoneName = 'privatelink.table.${environment().suffixes.storage}'
var speechPrivateDnsZoneName = 'privatelink.cognitiveservices.azure.com'
var eventsPrivateDnsZoneName = 'privatelink.eventgrid.azure.net'
var storagePrivateLinks = [
  {
    groupId: 'blob'
    privateDnsZoneName: blobPrivateDnsZoneName
  }
  {
    groupId: 'queue'
    privateDnsZoneName: queuePrivateDnsZoneName
  }
  {
    groupId: 'table'
    privateDnsZoneName: tablePrivateDnsZoneName
  }
]
var storagePrivateDnsZoneNames = [
  blobPrivateDnsZoneName
  queuePrivateDnsZoneName
  tablePrivateDnsZoneName
]
var speechPrivateDnsZoneNames = transcription ? [speechPrivateDnsZoneName] : []
var eventsPrivateDnsZoneNames = events ? [eventsPrivateDnsZoneName] : []
var privateDnsZoneNames = concat(storagePrivateDnsZoneNames, speechPrivateDnsZoneNames, eventsPrivateDnsZoneNames)

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? '${abbrs.resourcesResourceGroups}${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

// The bot's Entra app registration, keyless: the managed identity is its only credential
// (federated identity credential). Skipped when an existing app registration is given.
module botIdentity 'modules/bot-identity.bicep' = if (empty(botAppId)) {
  name: 'bot-identity'
  scope: rg
  params: {
    uniqueName: 'record-response-bot-${resourceToken}'
    displayName: botDisplayName
    managedIdentityPrincipalId: identity.outputs.principalId
    managementRoleAssigneePrincipalId: managementRoleAssigneePrincipalId
    managementRoleAssigned: managementRoleAssigned
    requestJoinGroupCall: grantJoinGroupCall
  }
}

// BOT_APP_ID: the bot's app id on the Azure Bot, in the Teams app package and as the audience the
// webhook checks; the Graph token the app obtains is for this app too.
var effectiveBotAppId = empty(botAppId) ? botIdentity!.outputs.appId : botAppId
var botServicePrincipalId = empty(botAppId) ? botIdentity!.outputs.servicePrincipalId : graphPermissionPrincipalId

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
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
    privateNetworkOnly: vnetEnabled
  }
}

module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    location: location
    tags: tags
    privateDnsZoneNames: privateDnsZoneNames
  }
}

// No endpoints without private networking: the loop runs over an empty list.
module storagePrivateEndpoints 'modules/private-endpoint.bicep' = [for link in (vnetEnabled ? storagePrivateLinks : []): {
  name: 'private-endpoint-${link.groupId}'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}${link.groupId}-${resourceToken}'
    location: location
    tags: tags
    subnetId: network!.outputs.privateEndpointSubnetId
    targetId: storage.outputs.id
    groupId: link.groupId
    privateDnsZoneName: link.privateDnsZoneName
  }
}]

module speechPrivateEndpoint 'modules/private-endpoint.bicep' = if (vnetEnabled && transcription) {
  name: 'private-endpoint-speech'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}speech-${resourceToken}'
    location: location
    tags: tags
    subnetId: network!.outputs.privateEndpointSubnetId
    targetId: speech!.outputs.id
    groupId: 'account'
    privateDnsZoneName: speechPrivateDnsZoneName
  }
}

module appStorageRoles 'modules/storage-roles.bicep' = {
  name: 'app-storage-roles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
  }
}

module deployerStorageRoles 'modules/storage-roles.bicep' = if (!empty(principalId)) {
  name: 'deployer-storage-roles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    principalId: principalId
    principalType: principalType
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    logRetentionDays: logRetentionDays
    publisherPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module alerts 'modules/alerts.bicep' = if (deployAlerts) {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    nameSuffix: resourceToken
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    actionGroupId: alertActionGroupId
    answerLatencyThresholdMs: answerLatencyAlertMs
    storedLatencyThresholdMs: storedLatencyAlertMs
    failureCountThreshold: recordingFailureAlertCount
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  scope: rg
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
    alwaysReadyHttpInstanceCount: alwaysReadyHttpInstanceCount
    alwaysReadyDownloadInstanceCount: alwaysReadyDownloadInstanceCount
    pythonVersion: pythonVersion
    virtualNetworkSubnetId: vnetEnabled ? network!.outputs.appSubnetId : ''
    botAppId: effectiveBotAppId
    inboundOpenIdConfigurationUrl: inboundOpenIdConfigurationUrl
    inboundAllowedIssuers: inboundAllowedIssuers
    inboundAllowedTenants: inboundAllowedTenants
    graphBaseUrl: graphBaseUrl
    botAutoAnswer: botAutoAnswer
    botRecordMaxDurationSeconds: botRecordMaxDurationSeconds
    botRecordPromptUri: botRecordPromptUri
    botRecordInitialSilenceSeconds: botRecordInitialSilenceSeconds
    botRecordMaxSilenceSeconds: botRecordMaxSilenceSeconds
    botRecordPlayBeep: botRecordPlayBeep
    botRecordStopTones: botRecordStopTones
    botRepromptUri: botRepromptUri
    botThankYouPromptUri: botThankYouPromptUri
    botRecordAttempts: botRecordAttempts
    botHangUpAfterRecording: botHangUpAfterRecording
    botHangUpWaitSeconds: botHangUpWaitSeconds
    botConfirmRecording: botConfirmRecording
    botConfirmPromptUri: botConfirmPromptUri
    botConfirmTimeoutSeconds: botConfirmTimeoutSeconds
    abandonRunningAfterMinutes: abandonRunningAfterMinutes
    statusUrlTtlMinutes: statusUrlTtlMinutes
    recordingRetentionMinutes: recordingRetentionMinutes
    callerIdentity: callerIdentity
    cleanupSchedule: cleanupSchedule
    ledgerRetentionDays: ledgerRetentionDays
    poisonMessageMaxAgeMinutes: poisonMessageMaxAgeMinutes
    recordingMaxBytes: recordingMaxBytes
    recordingAllowedHostSuffixes: recordingAllowedHostSuffixes
    telemetrySamplingRatio: telemetrySamplingRatio
    transcriptionEndpoint: transcription ? speech!.outputs.endpoint : ''
    transcriptionLocales: transcriptionLocales
    transcriptionKeepAudio: transcriptionKeepAudio
    managementFunctionKeys: managementFunctionKeys
    auditRetentionDays: auditRetentionDays
    eventsEndpoint: events ? eventsTopic!.outputs.endpoint : ''
    eventsTypePrefix: eventsTypePrefix
    eventsRedriveAfterMinutes: eventsRedriveAfterMinutes
    eventsPublishTimeoutSeconds: eventsPublishTimeoutSeconds
    transcriptionMaxResponseBytes: transcriptionMaxResponseBytes
  }
  // The host reaches storage and Application Insights with the identity as soon as it starts
  // (and, with private networking, storage only through its private endpoints).
  dependsOn: [
    appStorageRoles
    monitoring
    storagePrivateEndpoints
  ]
}

module speech 'modules/speech.bicep' = if (transcription) {
  name: 'speech'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesSpeech}${resourceToken}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    privateNetworkOnly: vnetEnabled
  }
}

module eventsTopic 'modules/events.bicep' = if (events) {
  name: 'events'
  scope: rg
  params: {
    name: '${abbrs.eventGridTopics}${resourceToken}'
    location: location
    tags: tags
    publisherPrincipalId: identity.outputs.principalId
    subscriptionEndpointType: eventsSubscriptionEndpointType
    webhookUrl: eventsWebhookUrl
    storageAccountName: storage.outputs.name
    deployAlerts: deployAlerts
    actionGroupId: alertActionGroupId
    publicNetworkAccess: !vnetEnabled
  }
}

module eventsPrivateEndpoint 'modules/private-endpoint.bicep' = if (vnetEnabled && events) {
  name: 'private-endpoint-events'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}events-${resourceToken}'
    location: location
    tags: tags
    subnetId: network!.outputs.privateEndpointSubnetId
    targetId: eventsTopic!.outputs.id
    groupId: 'topic'
    privateDnsZoneName: eventsPrivateDnsZoneName
  }
}

module graphPermissions 'modules/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: botServicePrincipalId
    grantJoinGroupCall: grantJoinGroupCall
  }
}

module bot 'modules/bot.bicep' = if (deployBot) {
  name: 'bot'
  scope: rg
  params: {
    name: '${abbrs.botServiceBotServices}${resourceToken}'
    tags: tags
    skuName: botSkuName
    displayName: botDisplayName
    msaAppId: effectiveBotAppId
    appHostName: functionApp.outputs.hostName
    endpointBaseUrl: botEndpointBaseUrl
    messagingEndpoint: botMessagingEndpoint
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd writes them to .azure/<env>/.env)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_HOST_NAME string = functionApp.outputs.hostName
output CALLING_WEBHOOK_URL string = deployBot ? bot!.outputs.callingWebhook : 'https://${functionApp.outputs.hostName}/api/calls'
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output BOT_APP_ID string = effectiveBotAppId
// What callers of the management API request tokens for (az account get-access-token --resource).
output MANAGEMENT_API_RESOURCE string = 'api://${effectiveBotAppId}'
// The postprovision hook (infra/hooks) prints an administrator's consent step when the grant was
// left out, naming this service principal.
output BOT_SERVICE_PRINCIPAL_ID string = botServicePrincipalId
output BOT_DISPLAY_NAME string = botDisplayName
output GRAPH_PERMISSIONS_GRANTED bool = grantGraphPermissions
output AZURE_BOT_RESOURCE_ID string = deployBot ? bot!.outputs.id : ''
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output EVENTS_TOPIC_NAME string = events ? eventsTopic!.outputs.name : ''
