// Flex Consumption (FC1) plan and the Linux Python Function App. Every connection is
// identity-based through the user-assigned identity; no app setting holds a key or a secret.
// App setting names below are the exact names shared/settings.py reads (tests/infra checks it).

@description('Function App name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region (must offer Flex Consumption).')
param location string

@description('Tags applied to the plan; the app also gets azd-service-name.')
param tags object

@description('Name of the service in azure.yaml that azd deploys to this app.')
param azdServiceName string

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Blob endpoint of the storage account (https://<account>.blob.core.windows.net/).')
param storageBlobEndpoint string

@description('Queue endpoint of the storage account.')
param storageQueueEndpoint string

@description('Table endpoint of the storage account.')
param storageTableEndpoint string

@description('URL of the blob container that holds the deployment package.')
param deploymentContainerUrl string

@description('Application Insights connection string (not a secret: local auth is disabled).')
param applicationInsightsConnectionString string

@description('Flex Consumption: most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Flex Consumption: memory of each instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Always-ready instances for the http group (every HTTP-triggered function, the calling webhook included).')
@minValue(0)
param alwaysReadyHttpInstanceCount int

@description('Always-ready instances for the download worker (queue trigger, scaled on its own).')
@minValue(0)
param alwaysReadyDownloadInstanceCount int

@description('Python version (runtime.version).')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string

@description('Resource id of the subnet (delegated to Microsoft.App/environments) the app\'s outbound traffic goes through; empty: no virtual network integration.')
param virtualNetworkSubnetId string = ''

@description('BOT_APP_ID: the bot\'s app registration (client id). Audience of inbound notification tokens, and the app Graph tokens are obtained for (federated credential).')
param botAppId string

@description('INBOUND_OPENID_CONFIGURATION_URL.')
param inboundOpenIdConfigurationUrl string

@description('INBOUND_ALLOWED_ISSUERS, one issuer per item.')
param inboundAllowedIssuers array

@description('INBOUND_ALLOWED_TENANTS, one tenant id per item (at least one: the deploying tenant by default).')
@minLength(1)
param inboundAllowedTenants array

@description('GRAPH_BASE_URL.')
param graphBaseUrl string

@description('BOT_AUTO_ANSWER.')
param botAutoAnswer bool

@description('BOT_RECORD_MAX_DURATION_SECONDS.')
@minValue(1)
@maxValue(120)
param botRecordMaxDurationSeconds int

@description('BOT_RECORD_PROMPT_URI; empty: the shipped notice.')
param botRecordPromptUri string

@description('BOT_RECORD_INITIAL_SILENCE_SECONDS.')
@minValue(1)
@maxValue(120)
param botRecordInitialSilenceSeconds int

@description('BOT_RECORD_MAX_SILENCE_SECONDS.')
@minValue(1)
@maxValue(120)
param botRecordMaxSilenceSeconds int

@description('BOT_RECORD_PLAY_BEEP.')
param botRecordPlayBeep bool

@description('BOT_RECORD_STOP_TONES, one DTMF tone per item.')
param botRecordStopTones array

@description('BOT_REPROMPT_URI; empty: the shipped re-prompt.')
param botRepromptUri string

@description('BOT_THANK_YOU_PROMPT_URI; empty: the shipped thank-you.')
param botThankYouPromptUri string

@description('BOT_RECORD_ATTEMPTS.')
@minValue(1)
@maxValue(5)
param botRecordAttempts int

@description('BOT_HANG_UP_AFTER_RECORDING.')
param botHangUpAfterRecording bool

@description('BOT_HANG_UP_WAIT_SECONDS.')
@minValue(0)
@maxValue(600)
param botHangUpWaitSeconds int

@description('BOT_CONFIRM_RECORDING.')
param botConfirmRecording bool

@description('BOT_CONFIRM_PROMPT_URI; empty: the shipped question.')
param botConfirmPromptUri string

@description('BOT_CONFIRM_TIMEOUT_SECONDS.')
@minValue(1)
@maxValue(19)
param botConfirmTimeoutSeconds int

@description('ABANDON_RUNNING_AFTER_MINUTES.')
@minValue(1)
param abandonRunningAfterMinutes int

@description('STATUS_URL_TTL_MINUTES.')
@minValue(1)
@maxValue(60)
param statusUrlTtlMinutes int

@description('RECORDING_RETENTION_MINUTES: the cleanup timer deletes a recording this long after it is stored.')
@minValue(1)
param recordingRetentionMinutes int

@description('CALLER_IDENTITY: how much of a caller\'s identity the ledger keeps.')
param callerIdentity string

@description('CLEANUP_SCHEDULE (6-field NCRONTAB).')
param cleanupSchedule string

@description('LEDGER_RETENTION_DAYS.')
@minValue(1)
param ledgerRetentionDays int

@description('POISON_MESSAGE_MAX_AGE_MINUTES.')
@minValue(1)
param poisonMessageMaxAgeMinutes int

@description('RECORDING_MAX_BYTES.')
@minValue(1)
param recordingMaxBytes int

@description('RECORDING_ALLOWED_HOST_SUFFIXES, one host suffix per item; empty leaves the code default.')
param recordingAllowedHostSuffixes array

@description('TELEMETRY_SAMPLING_RATIO: share of recordings whose whole trace is kept, 0 to 1 (text: Bicep has no decimals).')
param telemetrySamplingRatio string

@description('TRANSCRIPTION_ENDPOINT: the Speech account\'s custom-subdomain endpoint; empty leaves transcription off.')
param transcriptionEndpoint string = ''

@description('TRANSCRIPTION_LOCALES, one locale per item; empty lets Speech identify the language.')
param transcriptionLocales array = []

@description('TRANSCRIPTION_KEEP_AUDIO.')
param transcriptionKeepAudio bool = true

@description('MANAGEMENT_FUNCTION_KEYS: false (default) requires an Entra ID token with the bot app\'s roles on every management route; true makes them function-key routes (development only).')
param managementFunctionKeys bool = false

@description('AUDIT_RETENTION_DAYS: days the management API\'s audit rows are kept (at least LEDGER_RETENTION_DAYS).')
@minValue(1)
param auditRetentionDays int = 90

@description('EVENTS_ENDPOINT: the Event Grid topic\'s endpoint; empty leaves lifecycle events off.')
param eventsEndpoint string = ''

@description('EVENTS_TYPE_PREFIX.')
param eventsTypePrefix string = 'org.example.callrecording'

@description('EVENTS_REDRIVE_AFTER_MINUTES.')
@minValue(1)
@maxValue(1440)
param eventsRedriveAfterMinutes int = 5

@description('EVENTS_PUBLISH_TIMEOUT_SECONDS.')
@minValue(1)
@maxValue(60)
param eventsPublishTimeoutSeconds int = 10

@description('TRANSCRIPTION_MAX_RESPONSE_BYTES (read whether or not transcription is on).')
@minValue(65536)
param transcriptionMaxResponseBytes int

// Flex Consumption scales each non-HTTP function on its own instances, so the download worker gets
// its own always-ready entry, named function:<name> after the function's name in function_app.py
// (tests/infra checks that the name is registered). A count of 0 leaves the entry out.
var downloadFunctionName = 'download_recording'
var alwaysReadyHttp = (alwaysReadyHttpInstanceCount > 0) ? [
  {
    name: 'http'
    instanceCount: alwaysReadyHttpInstanceCount
  }
] : []
var alwaysReadyDownload = (alwaysReadyDownloadInstanceCount > 0) ? [
  {
    name: 'function:${downloadFunctionName}'
    instanceCount: alwaysReadyDownloadInstanceCount
  }
] : []
var alwaysReady = concat(alwaysReadyHttp, alwaysReadyDownload)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': azdServiceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Inbound stays public even with private networking: Graph posts call notifications to
    // /api/calls from the internet (the webhook checks their tokens itself).
    publicNetworkAccess: 'Enabled'
    // Outbound through the delegated subnet when private networking is on (storage and Speech
    // then resolve to their private endpoints); Graph and the recording hosts stay reachable.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Host and platform settings (read by the Functions host and the Azure SDKs, not by Settings).
// PYTHON_ENABLE_OPENTELEMETRY (host.json sets telemetryMode to OpenTelemetry): the Python worker
// joins the host's trace context on each invocation and tells the host that it exports its own
// logs (no duplicates). The app configures the Azure Monitor distro itself, with the managed
// identity (shared/telemetry.py). PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY stays unset: the
// worker would configure the distro a second time without a credential, which Application
// Insights refuses with local auth off.
var hostSettings = {
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
}

// The app's own settings: every name is an alias of a field of shared.settings.Settings, and
// every choice has a main.bicep parameter (tests/infra/test_settings_parity.py). This resource
// replaces the whole set on each deployment: a setting changed only in the portal is lost at the
// next `azd provision`, so choices are made through the parameters (docs/infrastructure.md).
var appSettings = {
  AZURE_CLIENT_ID: identityClientId
  BOT_APP_ID: botAppId
  INBOUND_OPENID_CONFIGURATION_URL: inboundOpenIdConfigurationUrl
  INBOUND_ALLOWED_ISSUERS: join(inboundAllowedIssuers, ',')
  INBOUND_ALLOWED_TENANTS: join(inboundAllowedTenants, ',')
  GRAPH_BASE_URL: graphBaseUrl
  // Keyless Graph access: the managed identity (AZURE_CLIENT_ID) asserts a token for the bot's
  // app registration through the federated credential on that app.
  GRAPH_CREDENTIAL_MODE: 'federated'
  CALLBACK_BASE_URL: 'https://${site.properties.defaultHostName}'
  BOT_AUTO_ANSWER: string(botAutoAnswer)
  BOT_RECORD_MAX_DURATION_SECONDS: string(botRecordMaxDurationSeconds)
  BOT_RECORD_INITIAL_SILENCE_SECONDS: string(botRecordInitialSilenceSeconds)
  BOT_RECORD_MAX_SILENCE_SECONDS: string(botRecordMaxSilenceSeconds)
  BOT_RECORD_PLAY_BEEP: string(botRecordPlayBeep)
  BOT_RECORD_STOP_TONES: join(botRecordStopTones, ',')
  BOT_RECORD_ATTEMPTS: string(botRecordAttempts)
  BOT_HANG_UP_AFTER_RECORDING: string(botHangUpAfterRecording)
  BOT_HANG_UP_WAIT_SECONDS: string(botHangUpWaitSeconds)
  BOT_CONFIRM_RECORDING: string(botConfirmRecording)
  BOT_CONFIRM_TIMEOUT_SECONDS: string(botConfirmTimeoutSeconds)
  // Prompt URLs: '' means the shipped prompt (the code ignores empty settings), 'none' no prompt.
  BOT_RECORD_PROMPT_URI: botRecordPromptUri
  BOT_REPROMPT_URI: botRepromptUri
  BOT_THANK_YOU_PROMPT_URI: botThankYouPromptUri
  BOT_CONFIRM_PROMPT_URI: botConfirmPromptUri
  ALLOW_INSECURE_RECORDING_URLS: 'false'
  RECORDING_ALLOWED_HOST_SUFFIXES: join(recordingAllowedHostSuffixes, ',')
  RECORDING_MAX_BYTES: string(recordingMaxBytes)
  RECORDING_RETENTION_MINUTES: string(recordingRetentionMinutes)
  CALLER_IDENTITY: callerIdentity
  CLEANUP_SCHEDULE: cleanupSchedule
  LEDGER_RETENTION_DAYS: string(ledgerRetentionDays)
  POISON_MESSAGE_MAX_AGE_MINUTES: string(poisonMessageMaxAgeMinutes)
  // The management API takes Entra ID tokens of this tenant for the bot's app, with its roles
  // (docs/security.md); function keys stay off unless managementFunctionKeys says otherwise.
  MANAGEMENT_TENANT_ID: tenant().tenantId
  MANAGEMENT_FUNCTION_KEYS: string(managementFunctionKeys)
  AUDIT_RETENTION_DAYS: string(auditRetentionDays)
  ABANDON_RUNNING_AFTER_MINUTES: string(abandonRunningAfterMinutes)
  STATUS_URL_TTL_MINUTES: string(statusUrlTtlMinutes)
  TELEMETRY_SAMPLING_RATIO: telemetrySamplingRatio
  TRANSCRIPTION_MAX_RESPONSE_BYTES: string(transcriptionMaxResponseBytes)
}

// The app registration and tenant the federated credential mode needs.
var federatedSettings = {
  GRAPH_APP_CLIENT_ID: botAppId
  GRAPH_TENANT_ID: tenant().tenantId
}

// Transcription (opt-in): set only with a Speech account, so TRANSCRIPTION_ENABLED is never true
// without an endpoint.
var transcriptionSettings = {
  TRANSCRIPTION_ENABLED: 'true'
  TRANSCRIPTION_ENDPOINT: transcriptionEndpoint
  TRANSCRIPTION_LOCALES: join(transcriptionLocales, ',')
  TRANSCRIPTION_KEEP_AUDIO: string(transcriptionKeepAudio)
}

// Lifecycle events (opt-in): set only with a topic, so EVENTS_ENDPOINT is the topic's own.
var eventsSettings = {
  EVENTS_ENDPOINT: eventsEndpoint
  EVENTS_TYPE_PREFIX: eventsTypePrefix
  EVENTS_REDRIVE_AFTER_MINUTES: string(eventsRedriveAfterMinutes)
  EVENTS_PUBLISH_TIMEOUT_SECONDS: string(eventsPublishTimeoutSeconds)
}

resource siteSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(
    hostSettings,
    appSettings,
    federatedSettings,
    empty(transcriptionEndpoint) ? {} : transcriptionSettings,
    empty(eventsEndpoint) ? {} : eventsSettings
  )
}

// No FTP or Web Deploy basic-auth publishing; azd and the CLI deploy with Entra ID.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output hostName string = site.properties.defaultHostName
output id string = site.id
