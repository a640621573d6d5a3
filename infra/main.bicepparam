// Parameters for infra/main.bicep (subscription scope: it creates the resource group). azd reads
// this file on `azd up`; the plain CLI takes it with
//   az deployment sub create -l <region> -f infra/main.bicep -p infra/main.bicepparam [-p name=value ...]
// Values read from environment variables are set by azd (AZURE_*) or by you (`azd env set NAME value`,
// or `export NAME=value` before the CLI). Every value below equals main.bicep's default unless noted.
using './main.bicep'

// --- Environment -----------------------------------------------------------------------------

// Environment name: seeds the resource token (uniqueString(subscription, environment, location))
// and the resource group name rg-<name>, so the same name in the same subscription and region
// names the same resources. azd sets it.
param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'dev')

// Region of every resource (the bot is global). azd asks for it and sets AZURE_LOCATION; with the
// CLI, export AZURE_LOCATION. Only regions that offer Flex Consumption are accepted (main.bicep
// lists them; `az functionapp list-flexconsumption-locations` gives the current list).
param location = readEnvironmentVariable('AZURE_LOCATION')

// resourceGroupName: not set here, so the group is rg-<environmentName>.

// Object id of whoever deploys (azd sets AZURE_PRINCIPAL_ID to the signed-in user). It gets the
// same storage data roles as the app, so you can inspect recordings and queues, and Monitoring
// Metrics Publisher on Application Insights; '' skips both.
param principalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')

// Kind of that principal: User, Group or ServicePrincipal (a CI pipeline). azd sets it.
param principalType = readEnvironmentVariable('AZURE_PRINCIPAL_TYPE', 'User')

// --- Storage, monitoring, hosting ------------------------------------------------------------

// Standard_LRS or Standard_ZRS. No geo-redundancy: call media must not be copied to another region.
param storageSkuName = 'Standard_LRS'

// Lifecycle backstop in days: deletes any blob still in `recordings` after this many days. The
// app's cleanup timer already deletes each recording after recordingRetentionMinutes; this only
// catches what it missed (app stopped, bug). Keep it >= the retention rounded up to whole days.
param recordingBackstopDays = 1

// Days Log Analytics keeps logs (30-730).
param logRetentionDays = 30

// Flex Consumption: most instances the app scales out to (1-1000).
param maximumInstanceCount = 100

// Flex Consumption: instance memory, 512, 2048 or 4096 MB.
param instanceMemoryMB = 2048

// Always-ready instances of the http group (webhook and API). 1: a call after idle is answered
// without a cold start. 0: no baseline charge, but the first call after idle may miss Graph's
// 15-second answer deadline. Cost per instance: docs/infrastructure.md.
param alwaysReadyHttpInstanceCount = int(readEnvironmentVariable('ALWAYS_READY_HTTP_INSTANCES', '1'))

// Always-ready instances of the download worker (function:download_recording). 0 risks a cold
// start between the recording's completion and its download.
param alwaysReadyDownloadInstanceCount = int(readEnvironmentVariable('ALWAYS_READY_DOWNLOAD_INSTANCES', '1'))

// --- Alerts (docs/operations.md) -------------------------------------------------------------

// deployAlerts: true (default) creates the four log alert rules and the "calls today" workbook.
// alertActionGroupId: resource id of an existing action group to notify; set it with
// ALERT_ACTION_GROUP_ID. '' (default): the alerts show in the portal only.
param alertActionGroupId = readEnvironmentVariable('ALERT_ACTION_GROUP_ID', '')

// Thresholds, not set here (their defaults apply):
// answerLatencyAlertMs: 10000; Graph drops a call not answered within 15 s of its notification.
// storedLatencyAlertMs: 30000; completion notification to recording stored.
// recordingFailureAlertCount: 5 failed, poisoned or abandoned recordings within 15 minutes.

// --- Bot identity, Graph permissions, Azure Bot -----------------------------------------------

// '' (default): the deployment creates the bot's single-tenant app registration, its service
// principal and a federated credential trusting the app's managed identity (no secret anywhere).
// Otherwise the client id of an existing app registration, which then needs that federated
// credential added by you (docs/infrastructure.md). Read from BOT_ENTRA_APP_ID, not BOT_APP_ID,
// which is an output azd writes back into the environment.
param botAppId = readEnvironmentVariable('BOT_ENTRA_APP_ID', '')

// Grant Calls.AccessMedia.All (and Calls.JoinGroupCall.All below) to the bot's service principal
// with the Graph Bicep extension. Needs AppRoleAssignment.ReadWrite.All + Application.Read.All;
// set GRANT_GRAPH_PERMISSIONS=false if an administrator grants them separately.
param grantGraphPermissions = bool(readEnvironmentVariable('GRANT_GRAPH_PERMISSIONS', 'true'))

// Calls.JoinGroupCall.All, for a bot invited to group calls or meetings; answering a user's
// peer-to-peer call needs only Calls.AccessMedia.All.
param grantJoinGroupCall = bool(readEnvironmentVariable('GRANT_JOIN_GROUP_CALL', 'false'))

// Only with BOT_ENTRA_APP_ID: object id of that app's service principal, which receives the Graph
// roles (`az ad sp show --id <appId> --query id -o tsv`).
param graphPermissionPrincipalId = readEnvironmentVariable('GRAPH_PERMISSION_PRINCIPAL_ID', '')

// Create the Azure Bot with the Teams channel (calling on, webhook https://<app host>/api/calls).
param deployBot = bool(readEnvironmentVariable('DEPLOY_BOT', 'true'))

// Azure Bot SKU: F0 (free) or S1.
param botSkuName = 'F0'

// Bot display name in Teams (and of its app registration).
param botDisplayName = 'Record response bot'

// Bot Framework messaging endpoint; '' uses https://<app host>/api/messages (the Bot Service needs
// an https endpoint; this app handles calls only, see docs/infrastructure.md).
param botMessagingEndpoint = ''

// --- App settings (names and defaults of shared/settings.py) ----------------------------------

// INBOUND_OPENID_CONFIGURATION_URL: signing keys of inbound notification tokens.
param inboundOpenIdConfigurationUrl = 'https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration'

// INBOUND_ALLOWED_ISSUERS: issuers accepted on inbound notification tokens.
param inboundAllowedIssuers = [
  'https://graph.microsoft.com'
  'https://api.botframework.com'
]

// inboundAllowedTenants: not set here, so INBOUND_ALLOWED_TENANTS is the deploying tenant, the only
// one the bot's single-tenant Graph credential serves. To accept another tenant, list every
// tenant id explicitly: -p inboundAllowedTenants='["<tenant id>", "<other tenant id>"]'.

// GRAPH_BASE_URL.
param graphBaseUrl = 'https://graph.microsoft.com/v1.0'

// BOT_AUTO_ANSWER: answer incoming calls and start recording automatically.
param botAutoAnswer = true

// BOT_RECORD_MAX_DURATION_SECONDS: longest answer recorded (Graph's limit is 120).
param botRecordMaxDurationSeconds = 10

// BOT_RECORD_PROMPT_URI: https URL of a WAV prompt played before the beep; '' plays none.
param botRecordPromptUri = ''

// RECORDING_RETENTION_MINUTES: the cleanup timer deletes each recording this many minutes after it
// is stored (exact to the cleanup schedule). The lifecycle rule above is only the backstop.
param recordingRetentionMinutes = 60

// CLEANUP_SCHEDULE: 6-field NCRONTAB of the cleanup timer (every 5 minutes).
param cleanupSchedule = '0 */5 * * * *'

// LEDGER_RETENTION_DAYS: days a ledger row (status, no media) is kept.
param ledgerRetentionDays = 7

// POISON_MESSAGE_MAX_AGE_MINUTES: age after which poison download jobs are dropped.
param poisonMessageMaxAgeMinutes = 5

// RECORDING_MAX_BYTES: largest recording the worker downloads (64 MiB).
param recordingMaxBytes = 67108864

// RECORDING_ALLOWED_HOST_SUFFIXES: host suffixes a recordingLocation may use; [] leaves the code default.
param recordingAllowedHostSuffixes = []

// --- Transcription (opt-in) ------------------------------------------------------------------

// transcription: true deploys an Azure AI Speech account (keyless) and turns TRANSCRIPTION_* on.
param transcription = bool(readEnvironmentVariable('TRANSCRIPTION', 'false'))

// transcriptionLocales: candidate locales ([] lets Speech identify the language).
param transcriptionLocales = []

// transcriptionKeepAudio: false deletes each recording once its transcript is stored.
param transcriptionKeepAudio = true

// transcriptionMaxResponseBytes: the most of a Speech answer read, and of the transcript stored.
param transcriptionMaxResponseBytes = 4194304
