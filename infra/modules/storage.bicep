// Storage account shared by the Functions host and the app (identity-based access only):
// the download queue and its poison queue, the recordings container, the deployment package
// container, the operations ledger table, and a lifecycle rule that is the day-granular backstop
// behind the app's own minute-exact retention cleanup.

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object

@description('Storage SKU.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param skuName string

@description('Blob container that receives the recordings (fixed by the app contract).')
param recordingsContainerName string

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Queue of download jobs (fixed by the app contract).')
param downloadQueueName string

@description('Table that holds the recording operations ledger (fixed by the app contract).')
param ledgerTableName string

@description('Days after creation after which the lifecycle rule deletes any blob left in the recordings container.')
@minValue(1)
param recordingBackstopDays int

@description('Private networking: public network access off; the app reaches blob, queue and table through private endpoints (main.bicep, vnetEnabled).')
param privateNetworkOnly bool = false

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Public (identity-only) by default; with private networking, reachable only through the
    // private endpoints, as the policy "storage accounts should disable public network access" asks.
    publicNetworkAccess: privateNetworkOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: privateNetworkOnly ? 'None' : 'AzureServices'
      defaultAction: privateNetworkOnly ? 'Deny' : 'Allow'
    }
    // No `encryption` block: Microsoft-managed keys encrypt every service by default, and the
    // settings one would add here (requireInfrastructureEncryption, queue/table keyType) can only
    // be chosen when an account is created: a deployment over an account made without them fails.
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Call media must not outlive its deletion: no soft delete, no versioning.
    deleteRetentionPolicy: {
      enabled: false
    }
    containerDeleteRetentionPolicy: {
      enabled: false
    }
    isVersioningEnabled: false
  }
}

resource recordingsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: recordingsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource downloadQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: downloadQueueName
}

// The host creates it on the first poison message; creating it here lets the cleanup timer and
// operators rely on it from day one.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${downloadQueueName}-poison'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

// Backstop only: the app's cleanup timer deletes each recording when RECORDING_RETENTION_MINUTES
// ends. This rule catches anything the timer missed (app stopped, bug) at day granularity.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'delete-recordings-backstop'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${recordingsContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterCreationGreaterThan: recordingBackstopDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    recordingsContainer
  ]
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainer.name}'
output recordingsContainerName string = recordingsContainer.name
output downloadQueueName string = downloadQueue.name
output poisonQueueName string = poisonQueue.name
output ledgerTableName string = ledgerTable.name
