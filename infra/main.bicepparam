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

// pythonVersion: not set here, so main.bicep's default applies (3.11, 3.12 or 3.13; the newest
// version the test suite passes on). Override with -p pythonVersion=3.13 on the CLI.

// Always-ready instances of the http group (webhook and API). 1: a call after idle is answered
// without a cold start. 0: no baseline charge, but the first call after idle may miss Graph's
// 15-second answer deadline. Cost per instance: docs/infrastructure.md.
param alwaysReadyHttpInstanceCount = int(readEnvironmentVariable('ALWAYS_READY_HTTP_INSTANCES', '1'))

// Always-ready instances of the download worker (function:download_recording). 0 risks a cold
// start between the recording's completion and its download.
param alwaysReadyDownloadInstanceCount = int(readEnvironmentVariable('ALWAYS_READY_DOWNLOAD_INSTANCES', '1'))

// --- Private networking (docs/infrastructure.md, "Private networking") ---------------------------

// VNET_ENABLED=true (the azd quickstarts' name): the app joins a delegated subnet and reaches
// storage (and Speech) only through private endpoints; their public network access is turned off.
// The webhook stays publicly reachable for Graph. About $23 a month more (three endpoints, three
// DNS zones; docs/infrastructure.md).
param vnetEnabled = bool(readEnvironmentVariable('VNET_ENABLED', 'false'))

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
// with the Graph Bicep extension. Needs Privileged Role Administrator (or Global Administrator);
// the preprovision hook (infra/hooks) sets GRANT_GRAPH_PERMISSIONS=false when you hold neither,
// and the postprovision hook prints the administrator's one-line consent step.
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

// Bot display name in Teams (and of its app registration). A dev environment names its own bot
// apart: azd env set BOT_DISPLAY_NAME "Record response bot (dev)".
param botDisplayName = readEnvironmentVariable('BOT_DISPLAY_NAME', 'Record response bot')

// Bot Framework messaging endpoint; '' uses <bot endpoint base>/api/messages (the Bot Service
// needs an https endpoint; see docs/infrastructure.md).
param botMessagingEndpoint = ''

// Base URL of the bot's calling webhook and messaging endpoint. '' (production): this environment's
// Function App. A dev environment sets its dev tunnel (docs/teams.md):
// azd env set BOT_ENDPOINT_BASE_URL https://<tunnel id>-7071.<region>.devtunnels.ms
param botEndpointBaseUrl = readEnvironmentVariable('BOT_ENDPOINT_BASE_URL', '')

// --- App settings (names and defaults of shared/settings.py) ----------------------------------
// The deployment sets every app setting, replacing what was there: change one with
// `azd env set <SETTING NAME> <value>` and `azd provision` (the settings below read an environment
// variable of the app setting's own name), never in the portal, where the next provision undoes it.

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
param botAutoAnswer = bool(readEnvironmentVariable('BOT_AUTO_ANSWER', 'true'))

// BOT_RECORD_MAX_DURATION_SECONDS: longest answer recorded (Graph's limit is 120).
param botRecordMaxDurationSeconds = int(readEnvironmentVariable('BOT_RECORD_MAX_DURATION_SECONDS', '10'))

// BOT_RECORD_PROMPT_URI: https URL of a WAV prompt played before the beep; '' plays none.
param botRecordPromptUri = readEnvironmentVariable('BOT_RECORD_PROMPT_URI', '')

// BOT_RECORD_INITIAL_SILENCE_SECONDS / BOT_RECORD_MAX_SILENCE_SECONDS: silence timeouts (1-120).
param botRecordInitialSilenceSeconds = int(readEnvironmentVariable('BOT_RECORD_INITIAL_SILENCE_SECONDS', '5'))

// BOT_RECORD_MAX_SILENCE_SECONDS: see above.
param botRecordMaxSilenceSeconds = int(readEnvironmentVariable('BOT_RECORD_MAX_SILENCE_SECONDS', '5'))

// BOT_RECORD_PLAY_BEEP: a beep before each recording.
param botRecordPlayBeep = bool(readEnvironmentVariable('BOT_RECORD_PLAY_BEEP', 'true'))

// BOT_RECORD_STOP_TONES: comma-separated DTMF tones that end a recording.
param botRecordStopTones = split(readEnvironmentVariable('BOT_RECORD_STOP_TONES', '#'), ',')

// BOT_REPROMPT_URI: '' plays the shipped re-prompt, none plays nothing.
param botRepromptUri = readEnvironmentVariable('BOT_REPROMPT_URI', '')

// BOT_THANK_YOU_PROMPT_URI: '' plays the shipped thank-you, none plays nothing.
param botThankYouPromptUri = readEnvironmentVariable('BOT_THANK_YOU_PROMPT_URI', '')

// BOT_RECORD_ATTEMPTS: recordings per call while the caller stays silent (1-5).
param botRecordAttempts = int(readEnvironmentVariable('BOT_RECORD_ATTEMPTS', '2'))

// BOT_HANG_UP_AFTER_RECORDING: hang up after the thank-you.
param botHangUpAfterRecording = bool(readEnvironmentVariable('BOT_HANG_UP_AFTER_RECORDING', 'true'))

// BOT_HANG_UP_WAIT_SECONDS: longest wait for the recording to be stored before hanging up (0-600).
param botHangUpWaitSeconds = int(readEnvironmentVariable('BOT_HANG_UP_WAIT_SECONDS', '60'))

// BOT_CONFIRM_RECORDING: play the recording back, then "1 to keep, 2 to record again".
param botConfirmRecording = bool(readEnvironmentVariable('BOT_CONFIRM_RECORDING', 'false'))

// BOT_CONFIRM_PROMPT_URI: '' plays the shipped question, none turns the confirmation off.
param botConfirmPromptUri = readEnvironmentVariable('BOT_CONFIRM_PROMPT_URI', '')

// BOT_CONFIRM_TIMEOUT_SECONDS: how long the bot waits for 1 or 2 (1-19).
param botConfirmTimeoutSeconds = int(readEnvironmentVariable('BOT_CONFIRM_TIMEOUT_SECONDS', '5'))

// RECORDING_RETENTION_MINUTES: the cleanup timer deletes each recording this many minutes after it
// is stored (exact to the cleanup schedule). The lifecycle rule above is only the backstop.
param recordingRetentionMinutes = int(readEnvironmentVariable('RECORDING_RETENTION_MINUTES', '60'))

// CALLER_IDENTITY: how much of a caller's identity the ledger keeps (full, masked: a number's
// last 4 digits and ids without names, none); it follows the recordings' retention (docs/retention.md).
param callerIdentity = readEnvironmentVariable('CALLER_IDENTITY', 'full')

// CLEANUP_SCHEDULE: 6-field NCRONTAB of the cleanup timer (every 5 minutes).
param cleanupSchedule = readEnvironmentVariable('CLEANUP_SCHEDULE', '0 */5 * * * *')

// LEDGER_RETENTION_DAYS: days a ledger row (status, no media) is kept.
param ledgerRetentionDays = int(readEnvironmentVariable('LEDGER_RETENTION_DAYS', '7'))

// POISON_MESSAGE_MAX_AGE_MINUTES: age after which poison download jobs are dropped.
param poisonMessageMaxAgeMinutes = int(readEnvironmentVariable('POISON_MESSAGE_MAX_AGE_MINUTES', '5'))

// ABANDON_RUNNING_AFTER_MINUTES: a recording still running this long after its call ended is abandoned.
param abandonRunningAfterMinutes = int(readEnvironmentVariable('ABANDON_RUNNING_AFTER_MINUTES', '10'))

// STATUS_URL_TTL_MINUTES: validity of the status API's read URL (1-60).
param statusUrlTtlMinutes = int(readEnvironmentVariable('STATUS_URL_TTL_MINUTES', '5'))

// RECORDING_MAX_BYTES: largest recording the worker downloads (64 MiB).
param recordingMaxBytes = int(readEnvironmentVariable('RECORDING_MAX_BYTES', '67108864'))

// RECORDING_ALLOWED_HOST_SUFFIXES: host suffixes a recordingLocation may use; [] leaves the code default.
param recordingAllowedHostSuffixes = []

// TELEMETRY_SAMPLING_RATIO: share of recordings whose whole trace is kept ('1.0' keeps every one).
param telemetrySamplingRatio = readEnvironmentVariable('TELEMETRY_SAMPLING_RATIO', '1.0')

// --- Transcription (opt-in) ------------------------------------------------------------------

// transcription: true deploys an Azure AI Speech account (keyless) and turns TRANSCRIPTION_* on.
param transcription = bool(readEnvironmentVariable('TRANSCRIPTION', 'false'))

// transcriptionLocales: candidate locales ([] lets Speech identify the language).
param transcriptionLocales = []

// transcriptionKeepAudio: false deletes each recording once its transcript is stored.
param transcriptionKeepAudio = true

// --- Management API (docs/security.md) -------------------------------------------------------

// MANAGEMENT_FUNCTION_KEYS: false in Azure, so every management route needs an Entra ID token for
// api://<bot app id> with the route's app role; true (function keys) is for development only.
param managementFunctionKeys = bool(readEnvironmentVariable('MANAGEMENT_FUNCTION_KEYS', 'false'))

// AUDIT_RETENTION_DAYS: days the audit rows (who read, started or erased what) are kept.
param auditRetentionDays = int(readEnvironmentVariable('AUDIT_RETENTION_DAYS', '90'))

// managementRoleAssigneePrincipalId: object id of a user, group or managed identity that gets
// managementRoleAssigned at deployment ('' assigns none; MANAGEMENT_ROLE_ASSIGNEE in azd).
param managementRoleAssigneePrincipalId = readEnvironmentVariable('MANAGEMENT_ROLE_ASSIGNEE', '')

// managementRoleAssigned: Recordings.Read, Recordings.Record, Recordings.Erase or Recordings.Audit.
param managementRoleAssigned = readEnvironmentVariable('MANAGEMENT_ROLE', 'Recordings.Read')

// events: true deploys an Event Grid custom topic (keyless) and turns the lifecycle events on.
param events = bool(readEnvironmentVariable('EVENTS', 'false'))

// EVENTS_TYPE_PREFIX: reverse-DNS prefix of the event types (your organisation's domain, reversed).
param eventsTypePrefix = readEnvironmentVariable('EVENTS_TYPE_PREFIX', 'org.example.callrecording')

// EVENTS_REDRIVE_AFTER_MINUTES: an event still owed this long after its step is re-sent.
param eventsRedriveAfterMinutes = int(readEnvironmentVariable('EVENTS_REDRIVE_AFTER_MINUTES', '5'))

// EVENTS_PUBLISH_TIMEOUT_SECONDS: one publish's deadline before the event goes to its queue.
param eventsPublishTimeoutSeconds = int(readEnvironmentVariable('EVENTS_PUBLISH_TIMEOUT_SECONDS', '10'))

// eventsSubscriptionEndpointType: a subscription on the topic: '' (none), 'WebHook' or 'StorageQueue'.
param eventsSubscriptionEndpointType = readEnvironmentVariable('EVENTS_SUBSCRIPTION_ENDPOINT_TYPE', '')

// eventsWebhookUrl: the https webhook of a WebHook subscription.
param eventsWebhookUrl = readEnvironmentVariable('EVENTS_WEBHOOK_URL', '')

// transcriptionMaxResponseBytes: the most of a Speech answer read, and of the transcript stored.
param transcriptionMaxResponseBytes = int(readEnvironmentVariable('TRANSCRIPTION_MAX_RESPONSE_BYTES', '4194304'))
