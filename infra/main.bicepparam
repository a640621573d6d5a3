// Parameters for infra/main.bicep. azd reads this file on `azd up`; the plain CLI takes it with
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam [-p name=value ...]
// Values read from environment variables are set by azd (AZURE_*) or by you (`azd env set NAME value`,
// or `export NAME=value` before the CLI). Every value below equals main.bicep's default unless noted.
using './main.bicep'

// --- Environment -----------------------------------------------------------------------------

// Environment name: seeds the resource token (uniqueString(subscription, environment, location)),
// so the same name in the same subscription and region names the same resources. azd sets it.
param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'dev')

// location: not set here, so it defaults to the resource group's region (azd creates the group in
// AZURE_LOCATION). The region must offer Flex Consumption (`az functionapp list-flexconsumption-locations`).

// Object id of whoever deploys (azd sets AZURE_PRINCIPAL_ID to the signed-in user). It gets the
// same storage data roles as the app so you can inspect recordings and queues; '' skips it.
param principalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')

// Kind of that principal: User, Group or ServicePrincipal (a CI pipeline).
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

// --- Bot identity, Graph permissions, Azure Bot -----------------------------------------------

// The bot's app id. '' (default): the user-assigned managed identity is the bot (Azure Bot type
// UserAssignedMSI, BOT_APP_ID = its client id). Otherwise the client id of a single-tenant Entra
// app registration (then use graphCredentialMode 'federated'). Read from BOT_ENTRA_APP_ID, not
// BOT_APP_ID, which is an output azd writes back into the environment.
param botAppId = readEnvironmentVariable('BOT_ENTRA_APP_ID', '')

// GRAPH_CREDENTIAL_MODE: 'managedIdentity' with the managed identity as the bot, 'federated' with
// an app registration that trusts the identity through a federated credential.
param graphCredentialMode = readEnvironmentVariable('GRAPH_CREDENTIAL_MODE', 'managedIdentity')

// Grant Calls.AccessMedia.All (and additionalGraphAppRoles) with the Graph Bicep extension. Needs
// AppRoleAssignment.ReadWrite.All + Application.Read.All; set GRANT_GRAPH_PERMISSIONS=false if an
// administrator grants them separately.
param grantGraphPermissions = bool(readEnvironmentVariable('GRANT_GRAPH_PERMISSIONS', 'true'))

// Object id of the service principal that receives the Graph roles. '' = the managed identity.
// In federated mode: the app registration's service principal (`az ad sp show --id <appId> --query id`).
param graphPermissionPrincipalId = readEnvironmentVariable('GRAPH_PERMISSION_PRINCIPAL_ID', '')

// Graph application roles besides Calls.AccessMedia.All, by value. Answering calls needs none; a
// bot that joins meetings or places calls adds e.g. 'Calls.JoinGroupCall.All', 'Calls.Initiate.All'.
param additionalGraphAppRoles = []

// Create the Azure Bot with the Teams channel (calling on, webhook https://<app host>/api/calls).
param deployBot = bool(readEnvironmentVariable('DEPLOY_BOT', 'false'))

// Azure Bot SKU: F0 (free) or S1.
param botSkuName = 'F0'

// Bot display name in Teams.
param botDisplayName = 'Record response bot'

// Bot Framework messaging endpoint; this app handles calls only, so it stays empty.
param botMessagingEndpoint = ''

// --- App settings (names and defaults of shared/settings.py) ----------------------------------

// INBOUND_OPENID_CONFIGURATION_URL: signing keys of inbound notification tokens.
param inboundOpenIdConfigurationUrl = 'https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration'

// INBOUND_ALLOWED_ISSUERS: issuers accepted on inbound notification tokens.
param inboundAllowedIssuers = [
  'https://graph.microsoft.com'
  'https://api.botframework.com'
]

// INBOUND_ALLOWED_TENANTS: tenant ids accepted (tid claim); [] accepts any tenant. A single-tenant
// bot should list its own tenant id.
param inboundAllowedTenants = []

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
