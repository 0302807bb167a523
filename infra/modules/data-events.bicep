// New data (retrain.on.data): the Event Grid system topic of the storage account where training data
// lands, and one subscription per container/prefix the policy names, delivering its
// Microsoft.Storage.BlobCreated events to the app's Event Grid trigger (the same function as the
// workspace's events; the code tells them apart by type and source). Deployed to the account's
// resource group, only when the deployment names an account (newDataStorageAccountId in main.bicep).
//
// Filters. One subscription per source, because a subscription has one subject filter:
// subjectBeginsWith /blobServices/default/containers/<container>/blobs/<prefix> (the subject of a
// BlobCreated event; Event Grid docs, "Filter events for Blob Storage"). Only BlobCreated, and only
// the calls that finish a blob (data.api: PutBlob, PutBlockList, CopyBlob, and FlushWithClose for an
// account with a hierarchical namespace, whose CreateFile makes an empty file first). Everything else
// is dropped by Event Grid, never billed or processed; the code still checks account, container and
// prefix against the policy (the trust boundary), so a subscription added by hand changes nothing.
//
// Identities. The app needs no role on the data account: Event Grid pushes the events, and the
// retraining pipeline reads the data with the workspace's compute identity, not the app's. The topic's
// system-assigned identity dead-letters into this environment's dead-letter container (main.bicep
// gives it that one role, as for the workspace's topic).
//
// One system topic per source: an account that already has one must be named (newDataTopicName). A
// PUT replaces the topic's identity and tags as a whole: this module gives it a system-assigned
// identity only, so an existing topic's user-assigned identities would be dropped (docs/policy.md,
// New data, says so). The subscriptions are created only with deployEventSubscriptions, like the
// workspace's (the function must be deployed first).

@description('Name of the storage account (in this resource group) where new training data lands.')
param storageAccountName string

@description('Name of the account\'s system topic (one per account): an existing one\'s, or a new one\'s.')
param systemTopicName string

@description('Tags of the topic.')
param tags object = {}

@description('container/prefix pairs of the account that models retrain on, e.g. ["training/diabetes/", "labels"].')
param sources array

@description('The environment\'s token: prefixes the subscription names.')
param nameToken string

@description('Resource id of the function app.')
param functionAppId string

@description('Name of the Event Grid trigger function that receives the events.')
param functionName string

@description('Resource id of the storage account that holds the dead-letter container.')
param deadLetterStorageAccountId string

@description('Dead-letter container name.')
param deadLetterContainerName string

@description('Delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 10

@description('Whether to create the event subscriptions (the function must already be deployed).')
param deployEventSubscriptions bool = false

resource account 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

var prefix = 'retrain-${nameToken}-data'
var subscriptions = [for (source, i) in sources: {
  name: '${prefix}-${i}'
  subjectBeginsWith: '/blobServices/default/containers/${split(source, '/')[0]}/blobs/${contains(source, '/') ? substring(source, indexOf(source, '/') + 1) : ''}'
}]

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: account.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = [for sub in subscriptions: if (deployEventSubscriptions) {
  parent: systemTopic
  name: sub.name
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        // One event per invocation: the trigger binds a single EventGridEvent.
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: sub.subjectBeginsWith
      isSubjectCaseSensitive: true
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: [
            'PutBlob'
            'PutBlockList'
            'CopyBlob'
            'FlushWithClose'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}]

output systemTopicId string = systemTopic.id
// The principal Event Grid dead-letters as: main.bicep gives it this environment's container role.
output systemTopicPrincipalId string = systemTopic.identity.principalId
output subscriptionNames array = [for sub in subscriptions: sub.name]
