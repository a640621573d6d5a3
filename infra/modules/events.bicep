// Recording lifecycle events (docs/events.md): an Event Grid custom topic taking CloudEvents 1.0,
// keyless like everything else. Local (key and SAS) auth is off, so the app publishes with its
// managed identity, which gets EventGrid Data Sender on this topic and nothing more. A custom
// topic rather than a namespace topic: it pushes to webhooks (with the CloudEvents validation
// handshake) and to storage queues, dead-letters to a blob container, and costs per operation.
// The subscription is optional: consumers usually add their own.

@description('Name of the topic.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Object (principal) id of the app\'s managed identity (the publisher).')
param publisherPrincipalId string

@description('Optional subscription: \'\' (none: consumers subscribe themselves), \'WebHook\' (eventsWebhookUrl) or \'StorageQueue\' (a queue in the app\'s storage account).')
@allowed([
  ''
  'WebHook'
  'StorageQueue'
])
param subscriptionEndpointType string = ''

@description('The webhook of a WebHook subscription (https; it must answer the CloudEvents validation handshake).')
param webhookUrl string = ''

@description('Name of the app\'s storage account: the StorageQueue destination and the dead-letter container live there.')
param storageAccountName string

@description('Queue of a StorageQueue subscription.')
param subscriptionQueueName string = 'recording-events-delivered'

@description('Container that receives events the subscription could not deliver.')
param deadLetterContainerName string = 'recording-events-deadletter'

@description('Alert on failed publishes and dead-lettered events.')
param deployAlerts bool = true

@description('Resource id of an action group to notify. Empty: the alerts fire in the portal only.')
param actionGroupId string = ''

@description('Public network access to the topic; false with private networking (vnetEnabled), where the app publishes through a private endpoint.')
param publicNetworkAccess bool = true

// EventGrid Data Sender: publish to this topic, nothing else.
var dataSenderRoleId = 'd5a91429-5739-47e2-a06b-3470a27159e7'
// The topic's own identity delivers: Storage Queue Data Message Sender (the queue destination)
// and Storage Blob Data Contributor (the dead-letter container).
var queueSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
var blobContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var subscribed = !empty(subscriptionEndpointType)
var actionGroups = empty(actionGroupId) ? [] : [
  {
    actionGroupId: actionGroupId
  }
]

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    // Entra ID tokens only (the EventGrid Data Sender role); with private networking the app
    // publishes through the topic's private endpoint and public access is off.
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, publisherPrincipalId, dataSenderRoleId)
  scope: topic
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataSenderRoleId)
  }
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (subscribed) {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource deliveredQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (subscriptionEndpointType == 'StorageQueue') {
  parent: queueService
  name: subscriptionQueueName
}

resource topicDeliversToStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in (subscribed ? [queueSenderRoleId, blobContributorRoleId] : []): {
  name: guid(account.id, topic.id, roleId)
  scope: account
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]

var webhookDestination = {
  endpointType: 'WebHook'
  properties: {
    endpointUrl: webhookUrl
    maxEventsPerBatch: 1
  }
}

var queueDestination = {
  endpointType: 'StorageQueue'
  properties: {
    resourceId: account.id
    queueName: subscriptionQueueName
    queueMessageTimeToLiveInSeconds: 86400
  }
}

resource subscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (subscribed) {
  parent: topic
  name: 'recording-lifecycle'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    // A webhook authenticates Event Grid by the handshake; a queue gets the topic's identity.
    destination: subscriptionEndpointType == 'WebHook' ? webhookDestination : null
    deliveryWithResourceIdentity: subscriptionEndpointType == 'StorageQueue' ? {
      identity: {
        type: 'SystemAssigned'
      }
      destination: queueDestination
    } : null
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: account.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    topicDeliversToStorage
    deadLetters
    deliveredQueue
  ]
}

// Publishes Event Grid refused (the app retries them: see docs/operations.md) and events the
// subscription gave up on (in the dead-letter container).
var metricRules = [
  {
    key: 'publish-failed'
    metric: 'PublishFailCount'
    description: 'Event Grid refused publishes of recording events. The app retries them from its recording-events queue and re-drives what is still owed; a steady count means a lost role assignment, a wrong EVENTS_ENDPOINT or refused events (EventFailureReason on the ledger row). See docs/operations.md#alert-events.'
  }
  {
    key: 'dead-lettered'
    metric: 'DeadLetteredCount'
    description: 'Recording events the subscription could not deliver within its retries are in the ${deadLetterContainerName} container. See docs/operations.md#alert-events.'
  }
]

resource alerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for rule in (deployAlerts ? metricRules : []): {
  name: '${name}-${rule.key}'
  location: 'global'
  tags: tags
  properties: {
    description: rule.description
    severity: 2
    enabled: true
    scopes: [
      topic.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: rule.key
          metricName: rule.metric
          metricNamespace: 'Microsoft.EventGrid/topics'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: actionGroups
  }
}]

output id string = topic.id
output name string = topic.name
// What the app publishes to (EVENTS_ENDPOINT).
output endpoint string = topic.properties.endpoint
